"""Fault injection: bad input a user can cause, each ending in one line with exit code 2, the inputs
byte-identical afterwards and nothing at --out."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from ladabert.cli import main
from tests.conftest import synthetic_sentences

FAST = ["--max-length", "32", "--batch-size", "16", "--eval-steps", "0"]


@pytest.fixture(scope="module")
def fx(tmp_path_factory, tiny_teacher, synthetic_glue):
    """Read-only inputs every case may use: teacher, student, bundle, GLUE root and a CSV pair."""
    from ladabert.export.bundle import ExportConfig, export_bundle
    from ladabert.pipeline.compress import CompressConfig, compress

    root = tmp_path_factory.mktemp("faults")
    student = root / "student"
    compress(
        CompressConfig(ratio=2, max_steps=10, batch_size=16, max_length=32, eval_steps=0, schedule_updates=2),
        tiny_teacher,
        student,
        data_dir=synthetic_glue,
    )
    bundle = root / "bundle"
    export_bundle(student, bundle, ExportConfig(max_length=32, int8_max_drop=1.0), data_dir=synthetic_glue)
    for name, n, seed in (("train.csv", 200, 1), ("dev.csv", 60, 2)):
        rows = ["text,label"] + [f"{s},{'pos' if y else 'neg'}" for s, y in synthetic_sentences(n, seed)]
        (root / name).write_text("\n".join(rows) + "\n")
    return {
        "teacher": Path(tiny_teacher),
        "student": student,
        "bundle": bundle,
        "glue": Path(synthetic_glue),
        "root": root,
    }


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for top in paths:
        files = sorted(p for p in Path(top).rglob("*") if p.is_file()) if Path(top).is_dir() else [Path(top)]
        for f in (f for f in files if f.name != ".lock"):  # ladabert's own lock file, not an input
            h.update(str(f).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _damage(name: str, how: Callable[[Path], None]) -> Callable:
    """A setup that copies input ``name`` into the case's directory and damages the copy with ``how``."""

    def setup(fx: dict, tmp: Path) -> Path:
        d = _copy(fx[name], tmp / f"{name}-copy")
        how(d)
        return d

    return setup


def _truncate(file: str, keep: int = 100) -> Callable[[Path], None]:
    return lambda d: (d / file).write_bytes((d / file).read_bytes()[:keep])


def _write(file: str, data: bytes) -> Callable[[Path], None]:
    return lambda d: (d / file).write_bytes(data)


def _edit_json(file: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def how(d: Path) -> None:
        obj = json.loads((d / file).read_text())
        result = change(obj)
        (d / file).write_text(json.dumps(obj if result is None else result))

    return how


# A student's latency budget record, as compress writes it into config.json.
_ORT_INT8 = {"budget_ms": 1.0, "backend": "ort-int8", "batch": 1, "seq": 32, "threads": 1}


def _swap_files(d: Path) -> None:
    meta = json.loads((d / "ladabert.json").read_text())
    meta["files"]["fp32"], meta["files"]["int8"] = meta["files"]["int8"], meta["files"]["fp32"]
    (d / "ladabert.json").write_text(json.dumps(meta))


def _junk_without_checksums(d: Path) -> None:
    """A bundle written before checksums were recorded, whose model.onnx is junk."""
    meta = json.loads((d / "ladabert.json").read_text())
    del meta["sha256"]
    (d / "ladabert.json").write_text(json.dumps(meta))
    (d / "model.onnx").write_bytes(b"not a graph")


def _glue_dev(data: bytes) -> Callable:
    def setup(fx: dict, tmp: Path) -> Path:
        d = _copy(fx["glue"], tmp / "glue")
        (d / "SST-2" / "dev.tsv").write_bytes(data)
        return d

    return setup


def _csv(name: str, text: bytes) -> Callable:
    def setup(fx: dict, tmp: Path) -> Path:
        (tmp / name).write_bytes(text)
        return tmp / name

    return setup


def _run_dir(teacher_config: dict | None) -> Callable:
    """A ``ladabert run`` directory holding a teacher stage (finished with ``teacher_config``, or foreign)."""

    def setup(fx: dict, tmp: Path) -> Path:
        d = tmp / "run"
        t = _copy(fx["teacher"], d / "teacher")
        if teacher_config is None:
            (t / "metrics.json").unlink()
        else:
            from ladabert.config import FinetuneConfig

            m = json.loads((t / "metrics.json").read_text())
            m["config"] = {**json.loads(FinetuneConfig.preset("quick").to_json()), **teacher_config}
            (t / "metrics.json").write_text(json.dumps(m))
        return d

    return setup


def _stale_checkpoints(fx: dict, tmp: Path) -> Path:
    """``<out>.checkpoints`` of a compression to 5x, killed after a complete checkpoint."""
    from ladabert.config import CompressConfig
    from ladabert.pipeline.harness import COMPLETE, SETTINGS, resume_settings

    out = tmp / "k2"
    ckpt = tmp / "k2.checkpoints" / "checkpoint-5"
    ckpt.mkdir(parents=True)
    (ckpt / COMPLETE).write_text("{}")
    cfg = CompressConfig(ratio=5, max_steps=20, batch_size=16, max_length=32, eval_steps=0)
    settings = resume_settings(cfg, teacher=str(fx["teacher"]))
    (tmp / "k2.checkpoints" / SETTINGS).write_text(json.dumps(settings))
    return out


T, S, B, G = "{teacher}", "{student}", "{bundle}", "{glue}"
CASES: list[tuple[str, Callable | None, list[str], str]] = [
    # settings
    (
        "unknown task",
        None,
        ["finetune", "--model", T, "--task", "nope", "--out", "{out}"],
        "unknown task 'nope'",
    ),
    (
        "nan learning rate",
        None,
        ["finetune", "--model", T, "--lr", "nan", "--out", "{out}"],
        "learning_rate must be",
    ),
    (
        "nan ratio",
        None,
        ["compress", "--teacher", T, "--ratio", "nan", "--out", "{out}"],
        "ratio must be >= 1",
    ),
    (
        "nan temperature",
        None,
        ["compress", "--teacher", T, "--temperature", "nan", "--out", "{out}"],
        "temperature must be",
    ),
    (
        "ratio below 1",
        None,
        ["compress", "--teacher", T, "--ratio", "0.5", "--out", "{out}"],
        "ratio must be >= 1",
    ),
    (
        "unreachable ratio",
        None,
        ["compress", "--teacher", T, "--ratio", "1e9", "--data-dir", G, *FAST, "--out", "{out}"],
        "is out of reach",
    ),
    (
        "initial above target",
        None,
        ["compress", "--teacher", T, "--initial-ratio", "8", "--ratio", "3", "--out", "{out}"],
        "initial_ratio (8) must be <= ratio (3)",
    ),
    ("opset 5", None, ["export", S, "--opset", "5", "--out", "{out}"], "opset must be >= 14"),
    (
        "max length 100000",
        None,
        ["export", S, "--max-length", "100000", "--out", "{out}"],
        "max_length must be >= 8 and <= 512",
    ),
    (
        "max length over positions",
        None,
        ["export", S, "--max-length", "100", "--data-dir", G, "--out", "{out}"],
        "exceeds",
    ),
    (
        "both files needed",
        None,
        ["finetune", "--model", T, "--train-file", "{root}/train.csv", "--out", "{out}"],
        "train_file needs validation_file too",
    ),
    # outputs that would destroy an input
    (
        "compress over its teacher",
        _damage("teacher", lambda d: None),
        ["compress", "--teacher", "{setup}", "--out", "{setup}", "--overwrite", "--data-dir", G, *FAST],
        "is the input",
    ),
    (
        "export over its student",
        _damage("student", lambda d: None),
        ["export", "{setup}", "--out", "{setup}", "--overwrite", "--data-dir", G],
        "is the input",
    ),
    (
        "export without the file its latency budget is served from",
        _damage(
            "student", _edit_json("config.json", lambda c: c["ladabert"].update(latency_budget=_ORT_INT8))
        ),
        ["export", "{setup}", "--precision", "fp32", "--data-dir", G, "--out", "{out}"],
        "is served on ort-int8, which runs the int8 ONNX file; pass --precisions fp32 int8",
    ),
    (
        "export into its student",
        None,
        ["export", S, "--out", S + "/onnx", "--data-dir", G],
        "is inside the input",
    ),
    (
        "densify over its student",
        _damage("student", lambda d: None),
        ["densify", "{setup}", "--out", "{setup}", "--overwrite"],
        "is the input",
    ),
    (
        "finetune over its data",
        None,
        [
            "finetune",
            "--model",
            T,
            "--train-file",
            "{root}/train.csv",
            "--validation-file",
            "{root}/dev.csv",
            *FAST,
            "--out",
            "{root}",
            "--overwrite",
        ],
        "contains the input",
    ),
    # data
    (
        "missing column",
        None,
        [
            "finetune",
            "--model",
            T,
            "--train-file",
            "{root}/train.csv",
            "--validation-file",
            "{root}/dev.csv",
            "--label-column",
            "y",
            "--out",
            "{out}",
        ],
        "column(s) y not found (columns: text, label)",
    ),
    (
        "latin-1 csv",
        _csv("l.csv", "text,label\ncaf\xe9,a\nb,b\n".encode("latin-1")),
        [
            "finetune",
            "--model",
            T,
            "--train-file",
            "{setup}",
            "--validation-file",
            "{setup}",
            "--out",
            "{out}",
        ],
        "is not UTF-8",
    ),
    (
        "empty csv",
        _csv("e.csv", b""),
        [
            "finetune",
            "--model",
            T,
            "--train-file",
            "{setup}",
            "--validation-file",
            "{root}/dev.csv",
            "--out",
            "{out}",
        ],
        "is empty",
    ),
    (
        "dev label unseen",
        _csv("d.csv", b"text,label\na,pos\nb,maybe\n"),
        [
            "finetune",
            "--model",
            T,
            "--train-file",
            "{root}/train.csv",
            "--validation-file",
            "{setup}",
            "--out",
            "{out}",
        ],
        "label 'maybe' does not occur",
    ),
    (
        "spreadsheet file",
        _csv("x.xlsx", b"PK\x03\x04"),
        [
            "finetune",
            "--model",
            T,
            "--train-file",
            "{setup}",
            "--validation-file",
            "{setup}",
            "--out",
            "{out}",
        ],
        "unknown data file type '.xlsx'",
    ),
    (
        "utf-16 dev.tsv",
        _glue_dev("sentence\tlabel\nok\t1\n".encode("utf-16")),
        ["eval", T, "--data-dir", "{setup}"],
        "is not UTF-8",
    ),
    (
        "binary dev.tsv",
        _glue_dev(bytes(range(256)) * 4),
        ["eval", T, "--data-dir", "{setup}"],
        "is not UTF-8",
    ),
    ("missing data dir", None, ["eval", T, "--data-dir", "{root}/nowhere"], "GLUE data for sst2 not found"),
    # models
    (
        "model dir missing",
        None,
        ["finetune", "--model", "{root}/nowhere/model", "--out", "{out}"],
        "does not exist",
    ),
    ("model is a file", None, ["finetune", "--model", "{root}/train.csv", "--out", "{out}"], "is a file"),
    (
        "model without config",
        _damage("teacher", lambda d: (d / "config.json").unlink()),
        ["eval", "{setup}", "--data-dir", G],
        "has no config.json",
    ),
    (
        "student as teacher",
        None,
        ["compress", "--teacher", S, "--out", "{out}"],
        "already a LadaBERT student",
    ),
    (
        "two labels for stsb",
        None,
        ["compress", "--teacher", T, "--task", "stsb", *FAST, "--out", "{out}"],
        "needs 1",
    ),
    (
        "eval two labels on stsb",
        None,
        ["eval", T, "--task", "stsb", "--data-dir", G],
        "label(s) but stsb has 1",
    ),
    (
        "eval two labels on mnli",
        None,
        ["eval", T, "--task", "mnli", "--data-dir", G],
        "label(s) but mnli has 3",
    ),
    (
        "truncated safetensors",
        _damage("teacher", _truncate("model.safetensors")),
        ["eval", "{setup}", "--data-dir", G],
        "cannot load the model",
    ),
    (
        "random safetensors",
        _damage("teacher", _write("model.safetensors", bytes(range(256)) * 8)),
        ["eval", "{setup}", "--data-dir", G],
        "cannot load the model",
    ),
    (
        "empty safetensors",
        _damage("student", _write("model.safetensors", b"")),
        ["export", "{setup}", "--data-dir", G, "--out", "{out}"],
        "cannot load the model",
    ),
    (
        "config does not match weights",
        _damage(
            "teacher", _edit_json("config.json", lambda c: c.update(hidden_size=64, intermediate_size=128))
        ),
        ["eval", "{setup}", "--data-dir", G],
        "cannot load the model",
    ),
    ("densify a teacher", None, ["densify", T, "--out", "{out}"], "is not a LadaBERT student"),
    # bundles and predict
    (
        "truncated model.onnx",
        _damage("bundle", _truncate("model.onnx", 2000)),
        ["predict", "{setup}", "good"],
        "does not match what was exported",
    ),
    (
        "junk model.onnx, no checksums",
        _damage("bundle", _junk_without_checksums),
        ["predict", "{setup}", "good"],
        "ONNX Runtime cannot load",
    ),
    (
        "invalid ladabert.json",
        _damage("bundle", _write("ladabert.json", b"{nope")),
        ["predict", "{setup}", "good"],
        "is not valid JSON",
    ),
    (
        "ladabert.json is a list",
        _damage("bundle", _write("ladabert.json", b"[1, 2]")),
        ["predict", "{setup}", "good"],
        "holds a JSON list, not an object",
    ),
    (
        "corrupt tokenizer.json",
        _damage("bundle", _truncate("tokenizer.json", 50)),
        ["predict", "{setup}", "good"],
        "is not a readable tokenizer",
    ),
    (
        "swapped files",
        _damage("bundle", _swap_files),
        ["predict", "{setup}", "good"],
        "does not match what was exported as the fp32 model",
    ),
    (
        "missing model file",
        _damage("bundle", lambda d: (d / "model.onnx").unlink()),
        ["predict", "{setup}", "good"],
        "model model.onnx is missing",
    ),
    (
        "damaged teacher tokenizer",
        _damage("teacher", _truncate("tokenizer.json", 40)),
        ["eval", "{setup}", "--data-dir", G],
        "cannot load the tokenizer",
    ),
    ("predict text not UTF-8", None, ["predict", B, "caf\udce9"], "input 1 is not valid UTF-8"),
    ("negative threads", None, ["predict", B, "good", "--threads", "-1"], "threads must be >= 1"),
    ("empty text", None, ["predict", B, ""], "input 1 is empty"),
    (
        "texts after --pair",
        None,
        ["predict", B, "--pair", "a", "good"],
        "only 2 --pair segment(s); put the texts before --pair",
    ),
    ("precision not exported", None, ["predict", B, "good", "--precision", "fp16"], "has no fp16 model"),
    ("not a bundle", None, ["predict", T, "good"], "has no ladabert.json"),
    # run and resume
    (
        "run on another task",
        _run_dir({"task": "mrpc"}),
        ["run", "--out", "{setup}", "--quick"],
        "was made with other settings (task 'mrpc' -> 'sst2')",
    ),
    (
        "run over a foreign teacher",
        _run_dir(None),
        ["run", "--out", "{setup}", "--quick"],
        "is not a finished stage of ladabert run",
    ),
    (
        "resume with other settings",
        _stale_checkpoints,
        [
            "compress",
            "--teacher",
            T,
            "--ratio",
            "3",
            "--max-steps",
            "20",
            "--data-dir",
            G,
            *FAST,
            "--out",
            "{setup}",
        ],
        "holds checkpoints of a run with other settings (ratio 5 -> 3.0)",
    ),
    # sequence lengths past the tiny models' 64 position embeddings, refused before any graph runs
    (
        "budget timed past the positions",
        None,
        [
            "compress",
            "--teacher",
            T,
            "--latency-budget",
            "5",
            "--seq",
            "128",
            "--data-dir",
            G,
            *FAST,
            "--out",
            "{out}",
        ],
        "--seq 128 exceeds the teacher's 64 position embeddings",
    ),
    (
        "bench past the positions",
        None,
        ["bench", "--bundle", B, "--seqs", "32", "128", "--out", "{out}"],
        "--seqs 128 exceeds",
    ),
    (
        "eval a bundle past its positions",
        None,
        ["eval", B, "--max-length", "100", "--data-dir", G],
        "bundle's 64 position embeddings; pass --max-length 64 or less",
    ),
    (
        "infinite latency budget",
        None,
        ["compress", "--teacher", T, "--latency-budget", "inf", "--out", "{out}"],
        "latency_budget must be a finite number, got inf",
    ),
    (
        "infinite speedup",
        None,
        ["compress", "--teacher", T, "--latency-speedup", "inf", "--out", "{out}"],
        "latency_speedup must be a finite number, got inf",
    ),
    (
        "run with a bad compress setting",
        None,
        ["run", "--out", "{out}", "--quick", "--ratio", "0.5"],
        "ratio must be >= 1, got 0.5",
    ),
    (
        "unknown option",
        None,
        ["gate", "--reference", B, "--candidate", B, "--rounds", "3", "--json", "{out}"],
        "unrecognized arguments: --rounds 3; see ladabert gate --help",
    ),
    (
        "unknown backend",
        None,
        ["compress", "--teacher", T, "--backend", "ort-int9", "--out", "{out}"],
        "invalid choice: 'ort-int9'",
    ),
    (
        "bench into a directory",
        lambda fx, tmp: (tmp / "results").mkdir() or tmp / "results",
        ["bench", "--bundle", B, "--seqs", "32", "--out", "{setup}"],
        "is a directory; pass a file path",
    ),
    (
        "bench over its bundle's metadata",
        None,
        ["bench", "--bundle", B, "--seqs", "32", "--out", B + "/ladabert.json"],
        "is inside the input",
    ),
    (
        "gate past the positions",
        None,
        ["gate", "--reference", B, "--candidate", B, "--seqs", "128", "--json", "{out}"],
        "--seqs 128 exceeds",
    ),
]


@pytest.mark.parametrize(("name", "setup", "argv", "phrase"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(fx, tmp_path, capsys, name, setup, argv, phrase):
    case = tmp_path / "case"
    case.mkdir()
    made = setup(fx, case) if setup else None
    out = tmp_path / "out"
    values = {k: str(v) for k, v in fx.items()} | {"out": str(out), "setup": str(made)}
    args = [a.format(**values) for a in argv]
    inputs = [fx["teacher"], fx["student"], fx["bundle"], fx["glue"], fx["root"], case]
    before = _digest(inputs)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert phrase in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _digest(inputs) == before, "an input changed"
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    assert not (tmp_path / "out.checkpoints").exists()


def test_enough_cases():
    assert len(CASES) >= 40


def test_a_second_run_on_the_same_out_stops_at_once(fx, tmp_path, capsys):
    from ladabert.pipeline.harness import checkpoint_dir_for

    out = tmp_path / "s"
    lock_dir = checkpoint_dir_for(out)
    lock_dir.mkdir()
    with open(lock_dir / ".lock", "w") as held:  # another run holds --out
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc = main(
            [
                "compress",
                "--teacher",
                str(fx["teacher"]),
                "--data-dir",
                str(fx["glue"]),
                *FAST,
                "--out",
                str(out),
            ]
        )
    assert rc == 2 and "another run is writing" in capsys.readouterr().err
    assert not out.exists()


def test_a_failed_command_creates_no_directories(fx, tmp_path, capsys):
    # Fails after the output was prepared (the ratio check needs the teacher): no a/, no a/b/.
    argv = [
        "compress",
        "--teacher",
        str(fx["teacher"]),
        "--ratio",
        "1e9",
        "--data-dir",
        str(fx["glue"]),
        *FAST,
    ]
    assert main([*argv, "--out", str(tmp_path / "a" / "b" / "out")]) == 2
    assert "is out of reach" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    # Fails inside the atomic write, after fp32 passed: fp16 is validated only on ONNX Runtime's CUDA provider.
    export = ["export", str(fx["student"]), "--data-dir", str(fx["glue"]), "--precision", "fp32", "fp16"]
    assert main([*export, "--out", str(tmp_path / "c" / "d")]) == 2
    assert "fp16 validation needs" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
