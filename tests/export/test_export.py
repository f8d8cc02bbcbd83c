from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import BertForSequenceClassification

from ladabert.errors import LadaBertError
from ladabert.export import rewrites as rw
from ladabert.export.bundle import ExportConfig, ExportValidationError, export_bundle
from ladabert.export.onnx_export import export_onnx
from tests.conftest import make_tiny_bert


@pytest.fixture(scope="module")
def dense_teacher(tmp_path_factory):
    path = make_tiny_bert(tmp_path_factory.mktemp("d"), hidden=48, intermediate=96, heads=2)
    return BertForSequenceClassification.from_pretrained(path).eval()


def undistilled_student(teacher, pattern="unstructured", ratio=3.0):
    """A student at ``ratio`` before distillation, rank components that pruning emptied still in place (what
    the graph-level shrink rewrite removes)."""
    from ladabert.config import CompressConfig
    from ladabert.pipeline.build import plan_student

    cfg = CompressConfig(ratio=ratio, initial_ratio=ratio, hybrid=0.5, pattern=pattern, data_aware=False)
    return plan_student(teacher, cfg).student.eval()


def _feeds(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, (3, 11))
    mask = np.ones_like(ids)
    mask[0, 6:] = 0  # a padded example
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _run(model: onnx.ModelProto, feeds) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _export(model, tmp_path, name="m.onnx") -> onnx.ModelProto:
    export_onnx(model, tmp_path / name)
    return onnx.load(str(tmp_path / name))


def test_factorized_export_matches_pytorch_with_one_fused_attention_per_layer(dense_teacher, tmp_path):
    student = undistilled_student(dense_teacher)
    graph = _export(student, tmp_path)
    feeds = _feeds()
    ref = student(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.detach().numpy()
    assert np.abs(_run(graph, feeds) - ref).max() < 1e-5
    assert rw.fused_attention_count(graph) == dense_teacher.config.num_hidden_layers
    assert student.training is False  # export leaves the model in eval mode


def test_dense_teacher_is_fused_by_the_ort_optimizer(dense_teacher, tmp_path):
    graph = _export(dense_teacher, tmp_path)
    assert rw.fused_attention_count(graph) == 0
    fused = rw.fuse(graph, 2, 48)
    assert rw.fused_attention_count(fused) == dense_teacher.config.num_hidden_layers
    assert np.abs(_run(fused, _feeds()) - _run(graph, _feeds())).max() < 1e-5


@pytest.mark.parametrize(
    "name,rewrite",
    [
        ("shrink", rw.shrink_factors),
        ("merge-all", lambda g: rw.merge_factors(g, "all")),
        ("merge-break-even", rw.merge_factors),
        ("align", rw.align_factors),
        ("fuse", lambda g: rw.fuse(g, 2, 48)),
    ],
)
def test_each_rewrite_preserves_outputs_and_its_input(dense_teacher, tmp_path, name, rewrite):
    graph = _export(undistilled_student(dense_teacher, pattern="rank"), tmp_path)
    before = graph.SerializeToString()
    out = rewrite(graph)
    assert graph.SerializeToString() == before  # pure: the input is not mutated
    for seed in (0, 1):
        np.testing.assert_allclose(_run(out, _feeds(seed)), _run(graph, _feeds(seed)), atol=1e-5, rtol=0)
    assert rw.fused_attention_count(out) == 2


def test_shrink_drops_zeroed_components_and_merge_makes_dense_matmuls(dense_teacher, tmp_path):
    graph = _export(undistilled_student(dense_teacher, pattern="rank"), tmp_path)
    size = sum(t.ByteSize() for t in graph.graph.initializer)
    shrunk = rw.shrink_factors(graph)
    assert (
        sum(t.ByteSize() for t in shrunk.graph.initializer) < size
    )  # rank pruning left whole zero components
    merged = rw.merge_factors(graph, "all")
    # Every factor chain (2 per layer outside attention, plus the Q/K/V group) becomes plain MatMuls.
    assert rw.count_ops(merged)["MatMul"] < rw.count_ops(graph)["MatMul"]
    assert "Split" not in rw.count_ops(merged)
    assert rw.merge_factors(graph, "break-even").SerializeToString() == graph.SerializeToString()
    with pytest.raises(ValueError, match="policy must be"):
        rw.merge_factors(graph, "sometimes")


def test_align_pads_every_rank_with_zeros_and_keeps_the_outputs(dense_teacher, tmp_path):
    # shrink first: its Split-size initializers and align's must not collide (one name, one tensor).
    graph = rw.shrink_factors(
        _export(undistilled_student(dense_teacher, pattern="rank", ratio=4.0), tmp_path)
    )
    ranks = rw.factor_ranks(graph)
    assert any(k % 8 for k in ranks)  # the test needs ranks that are not aligned yet
    aligned = rw.align_factors(graph, 8, max_growth=10.0)
    onnx.checker.check_model(aligned)
    assert len({t.name for t in aligned.graph.initializer}) == len(aligned.graph.initializer)
    assert rw.factor_ranks(aligned) == [-(-k // 8) * 8 for k in ranks]
    # max_growth: a rank is padded only when that adds at most this share of it
    limited = rw.factor_ranks(rw.align_factors(graph, 8, max_growth=0.25))
    assert limited == [(-(-k // 8) * 8 if -(-k // 8) * 8 - k <= k / 4 else k) for k in ranks]
    assert limited != rw.factor_ranks(aligned)  # the test's ranks include one that stays
    for seed in (0, 1):
        np.testing.assert_allclose(_run(aligned, _feeds(seed)), _run(graph, _feeds(seed)), atol=1e-6, rtol=0)
    # the padding is zeros: shrinking the aligned graph gives the original ranks back
    assert rw.factor_ranks(rw.shrink_factors(aligned)) == ranks
    assert rw.align_factors(aligned, 8, 10.0).SerializeToString() == aligned.SerializeToString()  # idempotent
    assert rw.align_factors(graph, 1).SerializeToString() == graph.SerializeToString()
    with pytest.raises(ValueError, match="multiple must be >= 1"):
        rw.align_factors(graph, 0)
    with pytest.raises(ValueError, match="max_growth must be >= 0"):
        rw.align_factors(graph, 8, -0.5)


def test_int8_quantization_stays_close(dense_teacher, tmp_path):
    graph = _export(undistilled_student(dense_teacher), tmp_path)
    q = rw.quantize_int8(graph)
    assert "MatMulInteger" in rw.count_ops(q) or "DynamicQuantizeMatMul" in rw.count_ops(q)
    assert np.abs(_run(q, _feeds()) - _run(graph, _feeds())).max() < 0.1


def test_bundle_loads_in_optimum_and_predict_needs_no_torch(tmp_path, tiny_teacher, synthetic_glue):
    from ladabert.pipeline.compress import CompressConfig, compress

    student = tmp_path / "student"
    compress(
        CompressConfig(
            ratio=3.0,
            max_steps=20,
            batch_size=16,
            learning_rate=2e-3,
            max_length=32,
            eval_steps=0,
            schedule_updates=2,
        ),
        tiny_teacher,
        student,
        data_dir=synthetic_glue,
    )
    out = tmp_path / "bundle"
    meta = export_bundle(student, out, ExportConfig(max_length=32), data_dir=synthetic_glue)
    assert meta["fused_attention_nodes"] == meta["num_layers"] == 2
    assert meta["validation"]["fp32"]["max_abs_diff"] < 1e-4
    assert abs(meta["validation"]["fp32"]["value"] - meta["validation"]["pytorch_value"]) <= 0.001
    # The int8 file carries the name optimum's quantizer gives it; the OpenVINO IR is what optimum-intel reads.
    assert set(meta["files"]) == {"fp32", "int8"} and (out / "model_quantized.onnx").is_file()
    assert meta["openvino_ir"] == "openvino_model.xml" and (out / "openvino_model.bin").is_file()
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 32
    assert json.loads((out / "config.json").read_text())["model_type"] == "bert"
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "compression_ratio: 3." in card and "latency_at_export:" in card
    assert "OVModelForSequenceClassification.from_pretrained" in card and str(out) in card
    assert {"export", "shrink", "merge", "align", "fuse", "quantize_int8"} <= set(meta["stages"])
    assert json.loads((out / "ladabert.json").read_text())["ratio"] == pytest.approx(3.0, rel=0.01)

    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    from ladabert.pipeline.student import load_classifier

    tok = AutoTokenizer.from_pretrained(out)
    batch = tok(["good w1 w2", "w3 bad w4 w5 w6"], padding=True, return_tensors="pt")
    ort_model = ORTModelForSequenceClassification.from_pretrained(out)
    ref = load_classifier(student).eval()(**batch).logits
    assert (ort_model(**batch).logits - ref).abs().max() < 1e-4
    assert ort_model.config.id2label == {0: "negative", 1: "positive"}
    import openvino as ov
    from optimum.intel import OVModelForSequenceClassification

    ov_model = OVModelForSequenceClassification.from_pretrained(out)  # no from_onnx or other flags
    # OpenVINO's default precision is the CPU's: bf16 where it has bf16 units, whose 8-bit mantissa
    # moves logits by about 1e-2 of their scale.
    default_bf16 = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT") != ov.Type.f32
    got = ov_model(**batch).logits
    assert (got - ref).abs().max() < (3e-2 * ref.abs().max() if default_bf16 else 1e-4)
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    ov_f32 = OVModelForSequenceClassification.from_pretrained(
        out, ov_config={"INFERENCE_PRECISION_HINT": "f32"}
    )
    assert (ov_f32(**batch).logits - ref).abs().max() < 1e-4

    code = (
        "import sys; from ladabert.cli import main; rc = main(['predict', sys.argv[1], 'good w1 w2', 'w3 bad w4',"
        " '--json']); assert 'torch' not in sys.modules, 'predict imported torch'; sys.exit(rc)"
    )
    res = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    preds = json.loads(res.stdout)
    assert [p["label"] for p in preds] == ["positive", "negative"]
    assert all(set(p) == {"label", "score"} and 0.5 < p["score"] <= 1 for p in preds)


def test_a_model_that_fails_validation_is_refused_and_nothing_is_written(
    tmp_path, tiny_teacher, synthetic_glue
):
    def corrupt(graph: onnx.ModelProto) -> onnx.ModelProto:
        out = onnx.ModelProto()
        out.CopyFrom(graph)
        rng = np.random.default_rng(0)
        for t in out.graph.initializer:  # perturb every weight matrix
            arr = onnx.numpy_helper.to_array(t)
            if arr.ndim == 2 and arr.dtype == np.float32:
                t.CopyFrom(
                    onnx.numpy_helper.from_array(
                        arr + 0.05 * rng.standard_normal(arr.shape, np.float32), t.name
                    )
                )
        return out

    out = tmp_path / "bundle"
    with pytest.raises(
        ExportValidationError, match=r"fp32 validation failed: max \|ONNX Runtime - PyTorch\|"
    ):
        export_bundle(
            tiny_teacher,
            out,
            ExportConfig(max_length=32, validate_samples=16),
            data_dir=synthetic_glue,
            rewrite_hook=corrupt,
        )
    assert not out.exists() and not list(tmp_path.glob(".bundle.tmp-*"))
    with pytest.raises(LadaBertError, match="fp16 validation needs ONNX Runtime's CUDAExecutionProvider"):
        export_bundle(
            tiny_teacher,
            out,
            ExportConfig(max_length=32, precisions=("fp32", "fp16")),
            data_dir=synthetic_glue,
        )
    assert not out.exists()
    with pytest.raises(ValueError, match="precisions must include fp32"):
        ExportConfig(precisions=("int8",))


def test_openvino_runs_the_bundle_like_onnx_runtime(tmp_path, tiny_teacher, synthetic_glue):
    from ladabert.export.runner import OnnxClassifier

    out = tmp_path / "bundle"
    export_bundle(
        tiny_teacher, out, ExportConfig(max_length=32, precisions=("fp32",)), data_dir=synthetic_glue
    )
    texts = ["good w1 w2", "w3 bad w4 w5 w6", "w7 nice"]
    ort_logits = OnnxClassifier(out).logits(texts)
    ov_logits = OnnxClassifier(out, runtime="openvino", threads=1).logits(texts)
    np.testing.assert_allclose(ov_logits, ort_logits, atol=1e-3)
    with pytest.raises(LadaBertError, match="unknown runtime 'tvm'"):
        OnnxClassifier(out, runtime="tvm")
    with pytest.raises(LadaBertError, match="has no int8 model"):
        OnnxClassifier(out, precision="int8")


def test_skip_layer_norm_is_fused_for_dense_graphs_only_unless_asked(dense_teacher, tmp_path):
    from ladabert.cli import build_parser

    dense = _export(dense_teacher, tmp_path, "dense.onnx")
    student = _export(undistilled_student(dense_teacher), tmp_path, "student.onnx")
    assert rw.count_ops(rw.fuse(dense, 2, 48)).get("SkipLayerNormalization", 0) > 0
    auto = rw.fuse(student, 2, 48)
    assert rw.count_ops(auto).get("SkipLayerNormalization", 0) == 0
    assert rw.count_ops(auto).get("LayerNormalization", 0) > 0 and rw.fused_attention_count(auto) == 2
    forced = rw.fuse(student, 2, 48, skip_layer_norm=True)
    assert rw.count_ops(forced).get("SkipLayerNormalization", 0) > 0
    assert np.abs(_run(auto, _feeds()) - _run(forced, _feeds())).max() < 1e-5
    parse = build_parser().parse_args
    assert parse(["export", "m", "--out", "o"]).skip_layer_norm is None
    assert parse(["export", "m", "--out", "o", "--skip-layer-norm"]).skip_layer_norm is True
    assert parse(["export", "m", "--out", "o", "--no-skip-layer-norm"]).skip_layer_norm is False
