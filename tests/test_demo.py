"""The main job runs anywhere: in an empty directory, without a data folder or LADABERT_DATA_DIR, on the
embedded SST-2 and the embedded all-MiniLM-L6-v2, and its predict step speaks in label names."""

from __future__ import annotations

import json

from ladabert.cli import main
from ladabert.pipeline import data as data_mod


def test_run_needs_no_data_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(data_mod.DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path.parent / "shared").exists()
    # `make demo` is `ladabert run --quick`; this is the same path with fewer examples and steps.
    small = ["--max-train-samples", "256", "--max-eval-samples", "64", "--max-length", "64"]
    small += ["--max-steps", "8", "--compress-max-steps", "8", "--calibration-samples", "64"]
    small += ["--validate-samples", "32", "--batch-size", "16", "--precision", "fp32"]
    assert main(["run", "--quick", *small, "--out", "runs/demo"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    demo = out[out.index("[4/4] predict") :].strip().splitlines()[1:]
    assert len(demo) == 2 and all(line.split("\t")[0].strip() in ("positive", "negative") for line in demo)
    teacher = json.loads((tmp_path / "runs/demo/teacher/metrics.json").read_text())
    assert teacher["train_examples"] == 256 and teacher["labels"] == ["negative", "positive"]
    assert json.loads((tmp_path / "runs/demo/student-5x-onnx/config.json").read_text())["id2label"] == {
        "0": "negative",
        "1": "positive",
    }
