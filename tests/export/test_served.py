from __future__ import annotations

import json
import shutil

import pytest

from ladabert.cli import main
from ladabert.config import GATE_BACKENDS
from ladabert.errors import LadaBertError
from ladabert.export.bundle import ExportConfig, export_bundle
from ladabert.export.served import evaluate_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_teacher, synthetic_glue):
    out = tmp_path_factory.mktemp("served") / "bundle"
    export_bundle(tiny_teacher, out, ExportConfig(max_length=32), data_dir=synthetic_glue)
    return out


def test_every_backend_scores_the_dev_set_and_onnx_runtime_matches_the_export_validation(
    bundle, synthetic_glue
):
    validation = json.loads((bundle / "ladabert.json").read_text())["validation"]
    scores = {b: evaluate_bundle(bundle, b, data_dir=synthetic_glue, threads=1) for b in GATE_BACKENDS}
    n = validation["examples"]
    assert {s["eval_examples"] for s in scores.values()} == {n}
    assert {s["backend"] for s in scores.values()} == set(GATE_BACKENDS)
    # The same graphs on the same inputs as the export's own checks.
    assert scores["ort-fp32"]["value"] == validation["fp32"]["value"]
    assert scores["ort-int8"]["value"] == validation["int8"]["value"]
    # OpenVINO f32 runs other kernels: the logits differ by rounding, a prediction at most flips.
    assert abs(scores["openvino-f32"]["value"] - validation["fp32"]["value"]) <= 1 / n
    # The teacher learns the synthetic task; bf16 and NNCF int8 keep it far above chance.
    assert validation["fp32"]["value"] > 0.9
    for b in ("openvino-bf16", "openvino-int8"):
        assert scores[b]["value"] > 0.8, (b, scores[b])


def test_bad_backends_and_bundles_are_refused_in_one_line(bundle, tmp_path, synthetic_glue):
    with pytest.raises(LadaBertError, match="unknown backend 'tvm'; choose one of ort-fp32"):
        evaluate_bundle(bundle, "tvm")
    fp32_only = tmp_path / "fp32-only"
    shutil.copytree(bundle, fp32_only)
    meta = json.loads((fp32_only / "ladabert.json").read_text())
    del meta["files"]["int8"]
    (fp32_only / "ladabert.json").write_text(json.dumps(meta))
    with pytest.raises(LadaBertError, match="has no int8 model"):
        evaluate_bundle(fp32_only, "ort-int8", data_dir=synthetic_glue)
    # A model of no GLUE task and without a recorded training file has nothing to calibrate int8 on.
    config = json.loads((fp32_only / "config.json").read_text())
    config["finetuning_task"] = None
    (fp32_only / "config.json").write_text(json.dumps(config))
    dev = tmp_path / "mydev.csv"
    dev.write_text("sentence,label\ngood w1,positive\nbad w2,negative\n")
    with pytest.raises(LadaBertError, match="OpenVINO int8 calibrates on training examples"):
        evaluate_bundle(fp32_only, "openvino-int8", validation_file=str(dev))
    assert evaluate_bundle(fp32_only, "openvino-f32", validation_file=str(dev))["eval_examples"] == 2


def test_the_cli_evaluates_a_bundle_on_a_backend_and_refuses_a_backend_for_a_model(
    bundle, tiny_teacher, synthetic_glue, capsys
):
    validation = json.loads((bundle / "ladabert.json").read_text())["validation"]
    rc = main(
        ["eval", str(bundle), "--backend", "ort-int8", "--data-dir", str(synthetic_glue), "--threads", "1"]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["backend"], out["value"]) == ("ort-int8", validation["int8"]["value"])
    assert main(["eval", str(tiny_teacher), "--backend", "ort-int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not an exported bundle" in err[0], err
