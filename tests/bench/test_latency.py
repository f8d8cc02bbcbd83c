from __future__ import annotations

import json

import pytest

from ladabert.bench.latency import BASE, Runner, add_speedups, best_backends, measure, teacher_bundle


def test_measure_interleaves_runners_and_computes_ratios(monkeypatch):
    import ladabert.bench.latency as lat

    calls, clock = [], [0.0]
    # Each call of a runner advances a fake clock by a known time (seconds), so the statistics are exact.
    cost = {
        ("bert-base", "ort-fp32"): [0.004, 0.001, 0.003, 0.002, 0.005],
        ("student-10x", "ort-fp32"): [0.001] * 5,
    }
    monkeypatch.setattr(lat.time, "perf_counter", lambda: clock[0])

    def runner(name, backend):
        def run(feeds):
            calls.append((name, backend))
            timed = sum(1 for c in calls if c == (name, backend)) - 2  # after one warm-up call
            clock[0] += cost[(name, backend)][max(timed, 0)]

        return Runner(name, 1.0 if name == BASE else 10.0, backend, run)

    runners = [runner(BASE, "ort-fp32"), runner("student-10x", "ort-fp32")]
    rows = measure(runners, batches=[1], seqs=[8], rounds=5, warmup=1, vocab=30522, progress=False)
    # After one warm-up call each, every round calls every runner once, in order.
    assert calls[2:] == [(r.model, r.backend) for r in runners] * 5
    base, student = rows
    assert base["samples"] == 5 and base["median_ms"] == pytest.approx(3.0)
    assert base["p20_ms"] == pytest.approx(1.0) and base["p90_ms"] == pytest.approx(5.0)
    assert student["median_ms"] == pytest.approx(1.0) and student["speedup_vs_ort_fp32"] == pytest.approx(3.0)


def test_speedups_are_ratios_to_bert_base_in_the_same_run():
    rows = [
        {"model": BASE, "backend": "ort-fp32", "batch": 1, "seq": 128, "median_ms": 80.0},
        {"model": BASE, "backend": "ort-int8", "batch": 1, "seq": 128, "median_ms": 25.0},
        {"model": BASE, "backend": "openvino-int8", "batch": 1, "seq": 128, "median_ms": 15.0},
        {"model": "student-10x", "backend": "openvino-bf16", "batch": 1, "seq": 128, "median_ms": 5.0},
        {"model": BASE, "backend": "ort-fp32", "batch": 8, "seq": 128, "median_ms": 600.0},
    ]
    add_speedups(rows)
    s = rows[3]
    assert s["speedup_vs_ort_fp32"] == pytest.approx(16.0)
    assert s["speedup_vs_ort_int8"] == pytest.approx(5.0)
    assert s["speedup_vs_fastest"] == pytest.approx(3.0) and s["fastest_reference"] == "openvino-int8"
    assert rows[4]["speedup_vs_ort_int8"] is None  # no int8 reference at batch 8 in this run


def test_best_backends_compare_each_side_on_its_fastest(tmp_path):
    import json

    def row(model, backend, ms, ratio=1.0, batch=1):
        return {
            "model": model,
            "ratio": ratio,
            "backend": backend,
            "batch": batch,
            "seq": 128,
            "median_ms": ms,
        }

    rows = [
        row(BASE, "ort-fp32", 80.0),
        row(BASE, "openvino-int8", 16.0),
        row("teacher-onnx", "ort-fp32", 12.0),
        row("teacher-onnx", "openvino-bf16", 5.0),
        row("student-onnx", "openvino-int8", 4.0, ratio=5.0),
        row("student-onnx", "openvino-bf16", 2.5, ratio=5.0),
    ]
    best = {b["model"]: b for b in best_backends(rows, reference="teacher-onnx")}
    assert best[BASE]["backend"] == "openvino-int8" and best[BASE]["speedup_vs_bert_base_fastest"] == 1.0
    s = best["student-onnx"]
    assert s["backend"] == "openvino-bf16" and s["median_ms"] == 2.5
    assert s["speedup_vs_bert_base_fastest"] == pytest.approx(6.4)
    assert s["speedup_vs_reference_fastest"] == pytest.approx(2.0) and s["reference"] == "teacher-onnx"
    assert all(b["reference"] is None for b in best_backends(rows))

    for name, kind in (("s", "student"), ("t", "teacher")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ladabert.json").write_text(json.dumps({"kind": kind}))
    assert teacher_bundle([tmp_path / "s", tmp_path / "t"]) == "t"
    assert teacher_bundle([tmp_path / "s"]) is None


def test_openvino_runner_compiles_per_shape_and_matches_onnx_runtime(tmp_path):
    import numpy as np
    import onnxruntime as ort
    from transformers import BertForSequenceClassification

    from ladabert.bench.latency import export_graphs, random_feeds
    from ladabert.export.runtime import openvino_runner
    from tests.conftest import make_tiny_bert
    from tests.export.test_export import undistilled_student

    teacher = BertForSequenceClassification.from_pretrained(
        make_tiny_bert(tmp_path / "t", hidden=48, intermediate=96, heads=2)
    ).eval()
    paths = export_graphs(undistilled_student(teacher, pattern="rank"), tmp_path, "s")  # with every rewrite
    sess = ort.InferenceSession(str(paths["fp32"]), providers=["CPUExecutionProvider"])
    static = openvino_runner(paths["fp32"], 1, "f32", static=True)
    dynamic = openvino_runner(paths["fp32"], 1, "f32", static=False)
    for batch, seq in [(1, 9), (3, 16), (1, 9)]:  # a shape seen before reuses its compiled model
        feeds = random_feeds(batch, seq, teacher.config.vocab_size, seed=seq)
        ref = sess.run(None, feeds)[0]
        for run in (static, dynamic):
            got = np.asarray(run(feeds))
            assert got.shape == (batch, 2)
            assert np.abs(got - ref).max() < 1e-4


def test_openvino_int8_runner_beside_runners_not_compiled_yet(tmp_path):
    """Runners compile lazily (per shape); quantizing one model with NNCF must still work while runners of
    other models exist and have not run (it failed with "Could not find a node ... in NNCFGraph" while
    their read-but-uncompiled models were kept alive)."""
    import numpy as np
    import onnxruntime as ort
    from transformers import BertForSequenceClassification

    from ladabert.bench.latency import export_graphs, random_feeds
    from ladabert.export.runtime import openvino_runner
    from tests.conftest import make_tiny_bert
    from tests.export.test_export import undistilled_student

    teacher = BertForSequenceClassification.from_pretrained(
        make_tiny_bert(tmp_path / "t", hidden=48, intermediate=96, heads=2)
    ).eval()
    dense = export_graphs(teacher, tmp_path, "dense")
    student = export_graphs(undistilled_student(teacher, pattern="rank"), tmp_path, "student")
    vocab = teacher.config.vocab_size
    calib = [random_feeds(1, 16, vocab, seed=i) for i in range(4)]
    waiting = [openvino_runner(dense["fp32"], 1, p, calib, static=True) for p in ("bf16", "int8")]
    int8 = openvino_runner(student["fp32"], 1, "int8", calib, static=True)
    feeds = random_feeds(2, 16, vocab, seed=9)
    ref = ort.InferenceSession(str(student["fp32"]), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.abs(np.asarray(int8(feeds)) - ref).max() < 0.1  # int8 weights and activations, bf16 rest
    assert all(np.asarray(r(feeds)).shape == (2, 2) for r in waiting)


def test_a_bundle_with_a_small_vocabulary_is_timed_beside_bert_base(
    tmp_path, tiny_teacher, synthetic_glue, monkeypatch
):
    """Every model reads the same ids, drawn below the smallest vocabulary: ids of BERT-base's 30,522
    are out of range for a bundle of another tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from ladabert.bench import latency
    from ladabert.config import BenchConfig
    from ladabert.export.bundle import ExportConfig, export_bundle

    bundle = tmp_path / "bundle"
    export_bundle(
        tiny_teacher, bundle, ExportConfig(max_length=32, precisions=("fp32",)), data_dir=synthetic_glue
    )
    vocab = json.loads((bundle / "config.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    # BERT-base's vocabulary on a model small enough to export in a second.
    small = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    monkeypatch.setattr(
        latency,
        "bert_base_students",
        lambda *a, **k: {BASE: (1.0, BertForSequenceClassification(small).eval())},
    )
    seen = []
    real = latency.random_feeds
    monkeypatch.setattr(latency, "random_feeds", lambda b, s, v, **k: seen.append(v) or real(b, s, v, **k))
    cfg = BenchConfig(
        ratios=(2.0,),
        backends=("ort-fp32",),
        batches=(1,),
        seqs=(16,),
        rounds=3,
        narrow=False,
        bundles=(str(bundle),),
    )
    res = latency.benchmark(cfg, progress=False)
    assert {r["model"] for r in res["rows"]} == {BASE, "bundle"}
    assert vocab < small.vocab_size and seen[-1] == vocab
    assert all(r["median_ms"] > 0 for r in res["rows"])
