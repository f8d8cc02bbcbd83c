from __future__ import annotations

import json
import subprocess
import sys

from ladabert.cli import main


def test_help_is_instant_because_heavy_imports_are_lazy():
    code = "import sys, ladabert.cli as c; c.build_parser(); print(sorted(m for m in ('torch','transformers','onnx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    res = subprocess.run([sys.executable, "-m", "ladabert.cli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "finetune" in res.stdout and "predict" in res.stdout


def test_every_subcommand_is_available():
    res = subprocess.run([sys.executable, "-m", "ladabert.cli", "--help"], capture_output=True, text=True)
    for cmd in ("finetune", "compress", "eval", "export", "predict", "bench", "run"):
        assert cmd in res.stdout


def test_every_subcommand_prints_its_help(capsys):
    import argparse

    import pytest

    from ladabert.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {"compress", "export", "bench", "gate"} <= set(sub.choices)
    for cmd in sub.choices:
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and out.startswith(f"usage: ladabert {cmd}"), cmd
        # Each flag states its default once, even where the field's help names it itself.
        flags = " ".join(out.split()).split(" --")
        assert not [f for f in flags if f.count("(default:") > 1], cmd


def test_user_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert main(["finetune", "--task", "imdb", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown task 'imdb'" in err and "Traceback" not in err
    assert main(["finetune", "--task", "sst2", "--lr", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "learning_rate must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bench_rejects_bad_settings_before_building_any_model(tmp_path, capsys, monkeypatch):
    import ladabert.bench.latency as lat

    def boom(*a, **k):
        raise AssertionError("a model was built before the settings were checked")

    monkeypatch.setattr(lat, "bert_base_students", boom)
    cases = [
        (["--bundle", str(tmp_path / "nope")], "has no ladabert.json"),
        (["--backends", "tensorrt"], "backends must come from"),
        (["--ratios", "0.5"], "ratios must be > 1"),
        (["--threads", "0"], "threads must be >= 1"),
        (["--narrow-keep-heads", "0"], "narrow_keep_heads must be > 0"),
        (["--seqs", "1024"], "seqs must be >= 1 and <= 512"),
    ]
    for extra, message in cases:
        assert main(["bench", "--quick", "--out", str(tmp_path / "b.json"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, err
    assert not (tmp_path / "b.json").exists()


def test_finetune_then_eval_through_the_cli(tmp_path, tiny_bert_dir, synthetic_glue, capsys):
    out = tmp_path / "t"
    args = ["--data-dir", str(synthetic_glue), "--max-length", "32"]
    rc = main(
        [
            "finetune",
            "--model",
            str(tiny_bert_dir),
            "--out",
            str(out),
            "--max-steps",
            "5",
            "--batch-size",
            "8",
            "--eval-steps",
            "0",
            *args,
        ]
    )
    assert rc == 0 and (out / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["eval", str(out), "--max-eval-samples", "50", *args]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["eval_examples"] == 50 and 0.0 <= m["value"] <= 1.0


def test_run_goes_end_to_end_on_a_tiny_model(tmp_path, tiny_bert_dir, synthetic_glue, capsys):
    argv = [
        "run",
        "--quick",
        "--out",
        str(tmp_path / "run"),
        "--model",
        str(tiny_bert_dir),
        "--data-dir",
        str(synthetic_glue),
        "--max-length",
        "32",
        "--compress-max-steps",
        "20",
        "--ratio",
        "3",
    ]
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert (
        "[4/4] predict" in out and (tmp_path / "run" / "student-3x-onnx" / "model_quantized.onnx").is_file()
    )
    # The same command again reuses every stage; other settings are refused, not silently reused.
    assert main(argv) == 0
    assert capsys.readouterr().out.count("reusing") == 3
    assert main([a if a != "20" else "30" for a in argv]) == 2
    assert "student-3x was made with other settings (max_steps 20 -> 30)" in capsys.readouterr().err


def test_every_config_field_has_a_flag_that_reaches_the_config():
    import dataclasses

    from ladabert.cli import RUN_PREFIXED, _compress_config, _export_config, _finetune_config, build_parser
    from ladabert.config import BenchConfig, CompressConfig, ExportConfig, FinetuneConfig

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for command, cls in (
        ("finetune", FinetuneConfig),
        ("compress", CompressConfig),
        ("export", ExportConfig),
        ("bench", BenchConfig),
    ):
        flags = {o for a in sub[command]._actions for o in a.option_strings}
        missing = [f.name for f in dataclasses.fields(cls) if "--" + f.name.replace("_", "-") not in flags]
        assert not missing, (command, missing)
    argv = ["compress", "--teacher", "t", "--out", "o", "--ratio", "10", "--schedule-fraction", "0.3"]
    cfg = _compress_config(
        parser.parse_args(argv + ["--initial-ratio", "3", "--no-data-aware", "--lr", "1e-4"])
    )
    assert (cfg.ratio, cfg.schedule_fraction, cfg.initial_ratio, cfg.data_aware, cfg.learning_rate) == (
        10.0,
        0.3,
        3.0,
        False,
        1e-4,
    )
    assert (
        _compress_config(parser.parse_args(argv + ["--preset", "quick"])).max_steps
        == CompressConfig.PRESETS["quick"]["max_steps"]
    )
    # `run`: shared flags reach both stages, the --compress- ones only compression.
    run = parser.parse_args(
        ["run", "--out", "o", "--max-steps", "5", "--compress-max-steps", "7", "--batch-size", "8"]
    )
    ft, cc = _finetune_config(run), _compress_config(run)
    assert (ft.max_steps, cc.max_steps, ft.batch_size, cc.batch_size) == (5, 7, 8, 8)
    assert set(RUN_PREFIXED) == {
        "max_steps",
        "learning_rate",
        "warmup_ratio",
        "weight_decay",
        "average_last",
        "average_every",
    }
    cfg = _export_config(parser.parse_args(["export", "s", "--out", "o", "--precision", "fp32", "--no-fuse"]))
    assert (cfg.precisions, cfg.fuse) == (("fp32",), False)


def test_export_options_reach_the_config():
    from ladabert.cli import _export_config, build_parser

    args = build_parser().parse_args(["export", "s", "--out", "o", "--align", "1", "--merge", "none"])
    cfg = _export_config(args)
    assert (cfg.align, cfg.merge) == (1, "none")
    assert _export_config(build_parser().parse_args(["export", "s", "--out", "o"])).align == 32


def test_version_is_the_source_version_in_cli_and_results(capsys):
    from pathlib import Path

    import tomllib

    from ladabert.utils import library_versions

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ladabert {project['version']}"
    assert library_versions()["ladabert"] == project["version"]
