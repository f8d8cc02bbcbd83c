from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from ladabert.errors import LadaBertError
from ladabert.pipeline import hybrid as hyb
from ladabert.pipeline.build import build_student, plan_student
from ladabert.pipeline.compress import CompressConfig, compress
from ladabert.pipeline.structured import head_scores, kept_count, neuron_scores, prune_structure
from ladabert.pipeline.student import LadaBertForSequenceClassification
from ladabert.pipeline.teacher import evaluate
from tests.pipeline.test_compress import compress_cfg


def _bert(heads=4, hidden=64, ffn=128, layers=2, vocab=120) -> BertForSequenceClassification:
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=32,
        num_labels=2,
    )
    return BertForSequenceClassification(cfg).eval()


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def test_kept_counts_round_to_whole_units():
    assert kept_count(12, 0.25) == 3 and kept_count(12, 0.01) == 1 and kept_count(12, 1.0) == 12
    assert kept_count(3072, 0.25, 16) == 768 and kept_count(3072, 0.1, 16) == 304
    assert kept_count(8, 0.5, 16) == 4  # narrower than the multiple: plain rounding
    with pytest.raises(LadaBertError, match="kept share"):
        kept_count(12, 0.0)


def test_units_that_contribute_nothing_go_first_and_the_outputs_do_not_change():
    model = _bert()
    hd = 16
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            # Heads 1 and 3 and all odd FFN neurons write nothing to the residual stream.
            for h in (1, 3):
                layer.attention.output.dense.weight[:, h * hd : (h + 1) * hd] = 0
            layer.output.dense.weight[:, 1::2] = 0
    ids = torch.randint(5, 120, (3, 12))
    ref = _logits(model, ids)
    assert [s.argsort()[:2].sort().values.tolist() for s in head_scores(model)] == [[1, 3], [1, 3]]
    assert all((s[1::2] == 0).all() and (s[0::2] > 0).all() for s in neuron_scores(model))
    summary = prune_structure(model, keep_heads=0.5, keep_ffn=0.5)
    assert summary == {"heads": [2, 2], "ffn": [64, 64]}
    assert model.config.pruned_heads == {0: [1, 3], 1: [1, 3]}
    layer = model.bert.encoder.layer[0]
    assert layer.attention.self.query.out_features == 32 and layer.output.dense.in_features == 64
    assert (_logits(model, ids) - ref).abs().max() < 1e-5


def test_calibration_statistics_pick_the_units_and_are_sliced_to_them():
    model = _bert(heads=2, hidden=32, ffn=64, layers=1)
    prefix = "bert.encoder.layer.0"
    cov_o = torch.eye(32)
    cov_o[:16, :16] *= 1e-6  # head 0's context is (almost) never active on the data
    d = torch.ones(64)
    d[:32] = 1e-6  # neither are the first 32 neurons
    stats = {f"{prefix}.attention.output.dense": cov_o, f"{prefix}.output.dense": torch.diag(d)}
    prune_structure(model, keep_heads=0.5, keep_ffn=0.5, stats=stats)
    assert model.config.pruned_heads == {0: [0]}
    assert stats[f"{prefix}.attention.output.dense"].shape == (16, 16)
    assert torch.equal(stats[f"{prefix}.output.dense"], torch.eye(32))  # the kept (active) neurons


def test_a_narrow_student_reaches_the_ratio_and_reloads_with_its_shapes(tmp_path):
    teacher = _bert()
    n = sum(p.numel() for p in teacher.parameters())
    cfg = CompressConfig(ratio=4.0, keep_heads=0.5, keep_ffn=0.5, max_steps=100, data_aware=False)
    built = plan_student(teacher, cfg)
    student, plans, schedule = built.student, built.plans, built.schedule
    assert teacher.config.pruned_heads == {}  # the teacher is untouched
    assert plans[max(plans)].ratio == pytest.approx(4.0, rel=0.01)
    # The schedule starts at the larger of the initial ratio and what removing units alone gives.
    assert schedule.initial_ratio >= 2.0
    assert n / hyb.count_parameters(student)["total"] == pytest.approx(schedule.initial_ratio, rel=0.02)
    student.eval()
    ids = torch.randint(5, 120, (2, 10))
    student.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {int(k): len(v) for k, v in saved["pruned_heads"].items()} == {0: 2, 1: 2}
    again = LadaBertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert again.bert.encoder.layer[1].attention.self.num_attention_heads == 2
    assert again.bert.encoder.layer[1].intermediate.dense.out_features == 64
    assert (_logits(again, ids) - _logits(student, ids)).abs().max() < 1e-6


def test_structured_settings_are_checked():
    with pytest.raises(ValueError, match="keep_heads must be > 0 and <= 1"):
        CompressConfig(keep_heads=0.0)
    with pytest.raises(ValueError, match="keep_ffn must be > 0 and <= 1"):
        CompressConfig(keep_ffn=1.5)
    with pytest.raises(ValueError, match="distill-only sets its own width"):
        CompressConfig(method="distill-only", keep_ffn=0.5)
    teacher = _bert()
    # A quarter of the heads and an eighth of the FFN alone give more than 3x: 1.2x is below that.
    with pytest.raises(LadaBertError, match="removing layers, heads and FFN neurons alone gives"):
        build_student(teacher, CompressConfig(ratio=1.2, keep_heads=0.25, keep_ffn=0.125, data_aware=False))
    dense = _bert()
    prune_structure(dense, 0.25, 0.125)
    shapes = hyb.matrix_shapes(dense)
    fixed = sum(p.numel() for p in dense.parameters()) - sum(r * c for r, c in shapes.values())
    n = sum(p.numel() for p in teacher.parameters())
    with pytest.raises(
        LadaBertError, match="below what removing layers, heads and FFN neurons already gives"
    ):
        hyb.allocate(shapes, n, 1.1, fixed_params=fixed)


@pytest.mark.parametrize("method", ["hybrid", "prune"])
def test_narrow_compression_learns_exports_and_runs_on_both_runtimes(
    tmp_path, tiny_teacher, synthetic_glue, method
):
    import numpy as np

    from ladabert.export.bundle import ExportConfig, export_bundle
    from ladabert.export.runner import OnnxClassifier

    out = tmp_path / "student"
    cfg = compress_cfg(method=method, keep_heads=0.5, keep_ffn=0.5)  # the compress tests' tiny-run settings
    m = compress(cfg, tiny_teacher, out, data_dir=synthetic_glue)
    assert m["ratio"] == pytest.approx(3.0, rel=0.01)
    assert m["value"] >= 0.9  # chance is 0.5
    assert (m["keep_heads"], m["keep_ffn"]) == (0.5, 0.5)
    again = evaluate(out, "sst2", data_dir=synthetic_glue, max_length=32)
    assert again["value"] == pytest.approx(m["value"], abs=1e-12)
    bundle = tmp_path / "bundle"
    meta = export_bundle(out, bundle, ExportConfig(max_length=32), data_dir=synthetic_glue)
    assert meta["validation"]["fp32"]["max_abs_diff"] < 1e-4
    texts = ["good w1 w2", "w3 bad w4 w5 w6", "w7 nice"]
    ort_logits = OnnxClassifier(bundle).logits(texts)
    ov_logits = OnnxClassifier(bundle, runtime="openvino", threads=1).logits(texts)
    np.testing.assert_allclose(ov_logits, ort_logits, atol=1e-3)


def test_each_kept_head_is_distilled_from_the_teacher_head_it_comes_from():
    from ladabert.pipeline.compress import head_map
    from ladabert.pipeline.distill import DistillLoss, attention_kl

    teacher = _bert(heads=4, layers=3)
    teacher.config._attn_implementation = "eager"
    with torch.no_grad():  # peaked attention, so that heads' maps differ from one another
        for layer in teacher.bert.encoder.layer:
            layer.attention.self.query.weight *= 8
            layer.attention.self.key.weight *= 8
    # Structure only (no factorization, no pruned weights): layer 0 of the student sees the teacher's
    # embeddings through the teacher's own Q/K rows, so its maps are the kept heads' maps exactly.
    dense = copy.deepcopy(teacher)
    prune_structure(dense, 0.5, 1.0, None, [0, 2])
    ratio = sum(p.numel() for p in teacher.parameters()) / sum(p.numel() for p in dense.parameters())
    cfg = CompressConfig(
        method="prune", pattern="unstructured", keep_heads=0.5, keep_layers=2, ratio=ratio, data_aware=False
    )
    built = plan_student(teacher, cfg, None, [0, 2])
    student = built.student.eval()
    student.config._attn_implementation = "eager"
    heads = head_map(student, teacher)
    assert len(heads) == 2 and all(len(h) == 2 and list(h) == sorted(h) for h in heads)
    kept0 = [h for h in range(4) if h not in student.config.pruned_heads[0]]
    assert list(heads[0]) == kept0
    ids = torch.randint(5, 120, (3, 12))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        t = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        s = student(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert s.attentions[0].shape == (3, 2, 12, 12)
    diff = (s.attentions[0] - t.attentions[0][:, list(heads[0])]).abs().max()
    assert diff < 1e-5
    # The other heads' maps differ: the map matters, the shapes alone would not say so.
    others = [h for h in range(4) if h not in heads[0]]
    assert float(attention_kl((s.attentions[0],), (t.attentions[0][:, others],), mask)) > 0.05
    loss = DistillLoss(logits=0.0, hidden=0.0, attention=1.0, layer_map=(0, 2), head_map=heads)
    _, parts = loss(s, t, None, mask)
    layer1 = float(attention_kl((s.attentions[1],), (t.attentions[2][:, list(heads[1])],), mask))
    assert parts["attention"] == pytest.approx(layer1 / 2, rel=1e-4, abs=1e-6)  # layer 0 adds ~0
    with pytest.raises(ValueError, match="mapped to the teacher's"):
        DistillLoss(logits=0.0, hidden=0.0, attention=1.0, layer_map=(0, 2))(s, t, None, mask)
    assert head_map(_bert(), _bert()) is None


def test_head_map_pairs_heads_with_a_teacher_that_removed_heads_itself():
    from types import SimpleNamespace

    from ladabert.pipeline.compress import head_map

    def model(pruned, layers=3, layer_map=None):
        extra = {"layer_map": layer_map} if layer_map else {}
        cfg = SimpleNamespace(
            num_attention_heads=4, num_hidden_layers=layers, pruned_heads=pruned, ladabert=extra
        )
        return SimpleNamespace(config=cfg)

    teacher = model({0: [1], 2: [0, 3]})
    # The student inherited the teacher's record and removed head 2 of layer 0 besides; the maps it
    # returns are indexed among the teacher's remaining heads (layer 0: 0, 2, 3; layer 2: 1, 2).
    assert head_map(model({0: [1, 2], 2: [0, 3]}), teacher) == ((0, 2), (0, 1, 2, 3), (0, 1))
    assert head_map(model({0: [1], 2: [0, 3]}), teacher) is None
    # Layers dropped: student layer i compares with teacher layer layer_map[i], whatever the records say.
    assert head_map(model({0: [1], 1: [0, 3]}, 2, [1, 2]), teacher) == ((0, 2, 3), (0, 1))
    assert head_map(model({0: [1], 1: [0, 3]}, 2, [0, 2]), teacher) is None  # the same heads throughout
    # The same records, other layers: student layer 0 (teacher layer 1) removed a head the teacher kept.
    assert head_map(model({0: [1]}, 2, [1, 2]), model({0: [1]})) == ((0, 2, 3), (0, 1, 2, 3))


@pytest.mark.parametrize("method", ["hybrid", "distill-only"])
def test_a_student_keeps_the_teachers_eager_attention_for_the_attention_term(method):
    # SDPA modules fall back to eager (with a warning) when asked for the maps the attention term reads;
    # compression switches the teacher to eager attention the same way.
    teacher = _bert()
    teacher.config._attn_implementation = "eager"
    built = plan_student(teacher, CompressConfig(ratio=4.0, method=method, max_steps=10, data_aware=False))
    kinds = {type(m.attention.self).__name__ for m in built.student.bert.encoder.layer}
    assert kinds == {"BertSelfAttention"}
    assert built.student.config._attn_implementation == "eager"
