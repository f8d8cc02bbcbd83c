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


def test_user_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert main(["finetune", "--task", "imdb", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown task 'imdb'" in err and "Traceback" not in err
    assert main(["finetune", "--task", "sst2", "--lr", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "learning_rate must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bench_rejects_bad_settings_before_building_any_model(tmp_path, capsys, monkeypatch):
    import ladabert.export.latency as lat

    def boom(*a, **k):
        raise AssertionError("a model was built before the settings were checked")

    monkeypatch.setattr(lat, "bert_base_students", boom)
    cases = [
        (["--bundle", str(tmp_path / "nope")], "has no ladabert.json"),
        (["--backends", "tensorrt"], "unknown backend(s) ['tensorrt']"),
        (["--ratios", "0.5"], "compression ratios must be > 1"),
        (["--threads", "0"], "--threads and --rounds must be >= 1"),
        (["--narrow", "0", "0.5"], "narrow takes two kept shares in (0, 1]"),
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
    rc = main(
        [
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
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "[4/4] predict" in out and (tmp_path / "run" / "student-3x-onnx" / "model_int8.onnx").is_file()
    # A second run reuses every stage.
    assert (
        main(
            [
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
                "--ratio",
                "3",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.count("reusing") == 3


def test_compress_options_reach_the_config():
    from ladabert.cli import _compress_config, build_parser

    argv = ["compress", "--teacher", "t", "--out", "o", "--ratio", "10", "--schedule-fraction", "0.3"]
    cfg = _compress_config(build_parser().parse_args(argv + ["--initial-ratio", "3", "--max-steps", "900"]))
    assert (cfg.ratio, cfg.schedule_fraction, cfg.initial_ratio, cfg.max_steps) == (10.0, 0.3, 3.0, 900)
    cfg = _compress_config(build_parser().parse_args(argv + ["--keep-heads", "0.5", "--keep-ffn", "0.25"]))
    assert (cfg.keep_heads, cfg.keep_ffn, cfg.structured) == (0.5, 0.25, True)
    run = build_parser().parse_args(
        ["run", "--out", "o", "--schedule-fraction", "0.4", "--compress-max-steps", "7"]
    )
    cfg = _compress_config(run, prefix="compress_")
    assert (cfg.schedule_fraction, cfg.max_steps) == (0.4, 7)
    assert _compress_config(build_parser().parse_args(argv + ["--length-weight", "0"])).length_weight == 0.0
    assert _compress_config(build_parser().parse_args(argv)).length_weight == 1.5
    cfg = _compress_config(build_parser().parse_args(argv + ["--dropout", "0", "--w-attention", "0"]))
    assert (cfg.dropout, cfg.w_attention) == (0.0, 0.0)
    assert _compress_config(build_parser().parse_args(argv)).w_attention == 1.0


def test_export_options_reach_the_config():
    from ladabert.cli import _export_config, build_parser

    args = build_parser().parse_args(["export", "s", "--out", "o", "--align", "1", "--merge", "none"])
    cfg = _export_config(args)
    assert (cfg.align, cfg.merge) == (1, "none")
    assert _export_config(build_parser().parse_args(["export", "s", "--out", "o"])).align == 32
