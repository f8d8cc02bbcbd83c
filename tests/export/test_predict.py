"""``ladabert predict`` for serving: texts, files and stdin, batching, the pipeline's JSON shape, and a
slim install (no torch, no transformers)."""

from __future__ import annotations

import importlib.metadata as md
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ladabert.cli import main

TEXTS = ["good w1 w2", "w3 bad w4", "w5 nice", "awful w6 w7 w8"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_teacher, synthetic_glue):
    from ladabert.export.bundle import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("predict") / "bundle"
    export_bundle(
        tiny_teacher, out, ExportConfig(max_length=32, precisions=("fp32",)), data_dir=synthetic_glue
    )
    return out


def _lines(capsys):
    return capsys.readouterr().out.strip().splitlines()


def test_texts_file_jsonl_and_stdin_give_the_same_answers(bundle, tmp_path, capsys, monkeypatch):
    assert main(["predict", str(bundle), *TEXTS]) == 0
    from_args = _lines(capsys)
    assert [ln.split("\t")[0] for ln in from_args] == ["positive", "negative", "positive", "negative"]
    assert all(re.fullmatch(r"(positive|negative)\t0\.\d{4}\t.+", ln) for ln in from_args)
    assert [ln.split("\t")[2] for ln in from_args] == TEXTS

    plain = tmp_path / "texts.txt"
    plain.write_text("\n".join(TEXTS) + "\n\n")
    assert main(["predict", str(bundle), "--input", str(plain), "--batch-size", "3"]) == 0
    assert _lines(capsys) == from_args  # batching does not change an answer

    # Texts on either side of the options, in the order given.
    assert main(["predict", str(bundle), TEXTS[0], "--threads", "1", *TEXTS[1:]]) == 0
    assert _lines(capsys) == from_args

    monkeypatch.setattr(sys, "stdin", io.StringIO("\r\n".join(TEXTS) + "\r\n"))
    assert main(["predict", str(bundle), "-", "--batch-size", "1"]) == 0
    assert _lines(capsys) == from_args

    jl = tmp_path / "in.jsonl"
    jl.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS) + "\n")
    assert main(["predict", str(bundle), "--input", str(jl), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [set(p) for p in out] == [{"label", "score"}] * 4  # transformers' pipeline shape
    assert [p["label"] for p in out] == [ln.split("\t")[0] for ln in from_args]
    assert [f"{p['score']:.4f}" for p in out] == [ln.split("\t")[1] for ln in from_args]


def test_predict_truncates_where_the_bundle_was_validated(bundle, capsys):
    from ladabert.export.runner import OnnxClassifier

    clf = OnnxClassifier(bundle)
    long = "good " + " ".join(f"w{i % 40}" for i in range(200))
    assert clf.tokenizer.encode(long).ids.__len__() == 32
    tok_cfg = json.loads((bundle / "tokenizer_config.json").read_text())
    assert tok_cfg["model_max_length"] == 32 == clf.meta["max_length"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ([], "no text given; pass texts, --input FILE, or - to read stdin"),
        (["a", "--input", "x.txt"], "pass texts or --input, not both"),
        (["a", "b", "--pair", "c"], "got 2 text(s) but 1 --pair segment(s)"),
        (["--input", "missing.txt"], "cannot read --input missing.txt"),
        (["a", "--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_bad_predict_input_is_one_line_and_exit_2(bundle, tmp_path, capsys, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(bundle), *args]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_a_bad_jsonl_line_is_named(bundle, tmp_path, capsys):
    jl = tmp_path / "in.jsonl"
    jl.write_text('{"text": "good"}\n{"txt": "bad"}\n')
    assert main(["predict", str(bundle), "--input", str(jl)]) == 2
    assert 'in.jsonl:2: need an object with a "text" string' in capsys.readouterr().err


# Runs a ladabert command in a fresh interpreter where torch and transformers cannot be imported, as on a box
# with only the base install; then lists the distributions that the imported modules came from.
_NO_TORCH = """
import sys, json, importlib.abc
before = set(sys.modules)  # what the interpreter loads at start-up (site, .pth hooks) is not predict's
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "transformers", "triton", "optimum", "accelerate", "matplotlib"):
            raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, Block())
from ladabert.cli import main
rc = main(json.loads(sys.argv[1]))
import importlib.metadata as md
dists = md.packages_distributions()
tops = {m.split(".")[0] for m in set(sys.modules) - before}
open(sys.argv[2], "w").write(json.dumps(sorted({d for t in tops for d in dists.get(t, [])})))
sys.exit(rc)
"""


def _requirement_closure(names: list[str]) -> set[str]:
    """The distributions ``names`` need, with their own requirements (environment markers honoured)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for req in md.requires(name) or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return seen


@pytest.mark.parametrize("command", ["predict", "gate"])
def test_predict_and_gate_run_on_the_base_install_without_torch(command, bundle, tmp_path):
    import tomllib

    argv = {
        "predict": ["predict", str(bundle), "good w1 w2", "--json"],
        "gate": ["gate", "--reference", str(bundle), "--candidate", str(bundle), "--seqs", "32"]
        + ["--max-slowdown", "0.5", "--budget-s", "10", "--json", str(tmp_path / "gate.json")],
    }[command]
    used_file = tmp_path / "dists.json"
    res = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, json.dumps(argv), str(used_file)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    if command == "predict":
        assert json.loads(res.stdout)[0]["label"] == "positive"
    else:
        assert json.loads((tmp_path / "gate.json").read_text())["outcome"] == "pass"
    dists = json.loads(used_file.read_text())
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    from packaging.requirements import Requirement

    base = [Requirement(r).name for r in pyproject["project"]["dependencies"]]
    assert sorted(base) == ["numpy", "onnxruntime", "tokenizers", "tqdm"]
    allowed = _requirement_closure(base) | {"ladabert"}
    used = {d.lower().replace("_", "-") for d in dists}
    assert used <= allowed, (
        f"{command} imports modules from {sorted(used - allowed)}, outside the base install"
    )
