from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertForSequenceClassification

from ladabert.errors import LadaBertError
from ladabert.pipeline import hybrid
from ladabert.pipeline.layers import COMPRESSED_LAYERS, FactorizedEmbedding, FactorizedLinear, MaskedLinear
from ladabert.pipeline.student import LadaBertForSequenceClassification, layer_specs, shrink_factors
from tests.conftest import make_tiny_bert


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    # hidden 64 and intermediate 128 are multiples of 16, so block tiles are whole.
    path = make_tiny_bert(tmp_path_factory.mktemp("t"), hidden=64, intermediate=128, heads=4)
    return BertForSequenceClassification.from_pretrained(path).eval()


def _nonzero(model) -> int:
    """Count non-zero entries of the weights the masks cover, plus every other parameter in full."""
    covered, nz = set(), 0
    for mod in model.modules():
        if isinstance(mod, COMPRESSED_LAYERS):
            ws = [mod.U, mod.V] if hasattr(mod, "U") else [mod.weight]
            covered.update(id(w) for w in ws)
            nz += sum(int((w != 0).sum()) for w in ws)
    return nz + sum(p.numel() for p in model.parameters() if id(p) not in covered)


def _total(model) -> int:
    return sum(p.numel() for p in model.parameters())


CASES = [
    ("unstructured", 0.5, 4.0),
    ("unstructured", 0.0, 4.0),
    ("unstructured", 1.0, 4.0),
    ("n:m", 0.5, 4.0),
    ("block", 0.5, 4.0),
    ("block", 0.0, 3.0),
    ("rank", 0.5, 4.0),
]


@pytest.mark.parametrize("pattern,share,ratio", CASES)
def test_counts_are_exact_and_the_ratio_is_met(teacher, pattern, share, ratio):
    n_teacher = _total(teacher)
    plan = hybrid.allocate(hybrid.matrix_shapes(teacher), n_teacher, ratio, share, pattern, block_size=16)
    student = hybrid.install(copy.deepcopy(teacher), plan)
    hybrid.plan_with_actual_counts(student, plan)
    counts = hybrid.count_parameters(student)
    assert counts["total"] == plan.nonzero_params  # the plan's count is the masks' count ...
    # ... and the weights really are zero where the masks say (the padding row may add a few more zeros).
    assert 0 <= counts["total"] - _nonzero(student) <= 2 * teacher.config.hidden_size
    # Pruning fine-tunes the count to the weight; rank steps, 2:4 groups and tiles are coarser on tiny matrices.
    tolerance = 0.01 if pattern == "unstructured" and share < 1.0 else 0.06
    assert n_teacher / counts["total"] == pytest.approx(ratio, rel=tolerance)
    assert hybrid.count_parameters(teacher)["total"] == n_teacher


def test_layer_kinds_follow_the_hybrid_share(teacher):
    shapes = hybrid.matrix_shapes(teacher)
    assert len(shapes) == 1 + 6 * teacher.config.num_hidden_layers
    n = _total(teacher)
    dense = hybrid.install(copy.deepcopy(teacher), hybrid.allocate(shapes, n, 3, hybrid=0.0))
    fact = hybrid.install(copy.deepcopy(teacher), hybrid.allocate(shapes, n, 3, hybrid=0.5))
    assert isinstance(dense.bert.encoder.layer[0].intermediate.dense, MaskedLinear)
    assert isinstance(fact.bert.encoder.layer[0].intermediate.dense, FactorizedLinear)
    assert isinstance(fact.bert.embeddings.word_embeddings, FactorizedEmbedding)
    for mp in hybrid.allocate(shapes, n, 3, hybrid=0.5).matrices.values():
        assert mp.rank < mp.rows * mp.cols / (mp.rows + mp.cols)  # below break-even


def test_recompress_raises_the_ratio_and_keeps_factors_close(teacher):
    shapes, n = hybrid.matrix_shapes(teacher), _total(teacher)
    student = hybrid.install(copy.deepcopy(teacher), hybrid.allocate(shapes, n, 2.0, 0.5))
    before = student.bert.encoder.layer[0].output.dense.dense_weight().clone()
    plan = hybrid.allocate(shapes, n, 4.0, 0.5)
    changed = hybrid.recompress(student, plan)
    assert len(changed) == 2 * len(shapes)
    assert n / hybrid.count_parameters(student)["total"] == pytest.approx(4.0, rel=0.01)
    after = student.bert.encoder.layer[0].output.dense.dense_weight()
    assert torch.linalg.norm(after - before) < torch.linalg.norm(before)


def test_unreachable_ratio_and_bad_combinations(teacher):
    shapes, n = hybrid.matrix_shapes(teacher), _total(teacher)
    with pytest.raises(LadaBertError, match=r"ratio 1000 is out of reach: .* allow at most"):
        hybrid.allocate(shapes, n, 1000)
    with pytest.raises(LadaBertError, match="rank pattern .* needs factorized layers"):
        hybrid.allocate(shapes, n, 3, hybrid=0.0, pattern="rank")
    with pytest.raises(LadaBertError, match="2:4 pattern reaches at most 2x"):
        hybrid.allocate(shapes, n, 4, hybrid=0.0, pattern="n:m")
    with pytest.raises(LadaBertError, match="unknown pruning pattern"):
        hybrid.allocate(shapes, n, 3, pattern="diagonal")


@pytest.mark.parametrize("pattern", ["unstructured", "rank"])
def test_student_saves_and_reloads_with_identical_logits(teacher, tmp_path, pattern):
    shapes, n = hybrid.matrix_shapes(teacher), _total(teacher)
    student = hybrid.install(copy.deepcopy(teacher), hybrid.allocate(shapes, n, 2.0, 0.5, pattern))
    hybrid.recompress(student, hybrid.allocate(shapes, n, 4.0, 0.5, pattern))
    before = hybrid.count_parameters(student)["total"]
    shrink_factors(student)  # drops the truncated components physically
    assert hybrid.count_parameters(student)["total"] == before
    student.config.ladabert = {"method": "hybrid", "layers": layer_specs(student)}
    student.save_pretrained(tmp_path)
    again = LadaBertForSequenceClassification.from_pretrained(tmp_path).eval()
    x = torch.randint(0, teacher.config.vocab_size, (3, 11))
    torch.testing.assert_close(again(x).logits, student.eval()(x).logits, rtol=0, atol=0)
    spec = again.config.ladabert["layers"]["bert.encoder.layer.0.attention.self.query"]
    assert spec["rank"] == again.bert.encoder.layer[0].attention.self.query.rank
    assert hybrid.count_parameters(again)["total"] == before


@pytest.mark.parametrize("scale", [0.25, 1.0, 4.0])
def test_embedding_scale_moves_budget_between_table_and_encoder(teacher, scale):
    shapes, n = hybrid.matrix_shapes(teacher), _total(teacher)
    plan = hybrid.allocate(shapes, n, 3.0, 0.0, embedding_scale=scale)  # prune-only: kept share is exact
    student = hybrid.install(copy.deepcopy(teacher), plan)
    assert n / hybrid.count_parameters(student)["total"] == pytest.approx(3.0, rel=0.01)
    kept = {name: mp.nonzero / (mp.rows * mp.cols) for name, mp in plan.matrices.items()}
    f_emb = kept.pop("bert.embeddings.word_embeddings")
    f_enc = sorted(set(round(v, 3) for v in kept.values()))
    assert len(f_enc) == 1  # one share for every encoder matrix
    if f_emb < 1 and f_enc[0] < 1:
        assert f_emb / f_enc[0] == pytest.approx(scale, rel=0.02)
    with pytest.raises(LadaBertError, match="embedding scale must be > 0"):
        hybrid.allocate(shapes, n, 3.0, embedding_scale=0)


def test_embedding_scale_caps_a_side_at_dense(teacher):
    shapes, n = hybrid.matrix_shapes(teacher), _total(teacher)
    plan = hybrid.allocate(shapes, n, 1.2, 0.0, embedding_scale=50.0)
    assert plan.matrices["bert.embeddings.word_embeddings"].sparsity == 0  # capped at 1: kept whole
    assert n / plan.nonzero_params == pytest.approx(1.2, rel=0.01)  # the encoder took the surplus


@pytest.fixture(scope="module")
def stats(teacher):
    from ladabert.pipeline.calibrate import activation_stats, token_frequency

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, teacher.config.vocab_size, (16, 10), generator=g)
    mask = torch.ones_like(ids)
    batches = [{"input_ids": ids[i : i + 4], "attention_mask": mask[i : i + 4]} for i in range(0, 16, 4)]
    names = hybrid.compressible_names(teacher)
    out = activation_stats(teacher, batches, names)
    out[names[0]] = token_frequency(ids.tolist(), teacher.config.vocab_size, always=[0])
    return out


@pytest.mark.parametrize("pattern,share,ratio", CASES)
def test_data_aware_counts_are_exact_through_install_and_recompress(teacher, stats, pattern, share, ratio):
    n_teacher = _total(teacher)
    shapes = hybrid.matrix_shapes(teacher)
    plan0 = hybrid.allocate(shapes, n_teacher, 2.0, share, pattern, block_size=16)
    student = hybrid.install(copy.deepcopy(teacher), plan0, stats)
    plan = hybrid.allocate(shapes, n_teacher, ratio, share, pattern, block_size=16)
    hybrid.recompress(student, plan, stats)
    hybrid.plan_with_actual_counts(student, plan)
    counts = hybrid.count_parameters(student)
    assert counts["total"] == plan.nonzero_params
    assert 0 <= counts["total"] - _nonzero(student) <= 2 * teacher.config.hidden_size
    tolerance = 0.01 if pattern == "unstructured" and share < 1.0 else 0.06
    assert n_teacher / counts["total"] == pytest.approx(ratio, rel=tolerance)


@pytest.mark.parametrize("ratio", [4.0, 6.0, 7.5])
def test_data_aware_masks_spend_no_budget_on_dead_components(teacher, stats, ratio):
    # High sparsity in both factors: a component whose U column (or V row) is pruned entirely must not
    # keep entries in its partner, which would be counted but do nothing (and be dropped on saving).
    n_teacher = _total(teacher)
    plan = hybrid.allocate(hybrid.matrix_shapes(teacher), n_teacher, ratio, 0.25)
    student = hybrid.install(copy.deepcopy(teacher), plan, stats)
    for name, mp in plan.matrices.items():
        layer = student.get_submodule(name)
        if mp.rank is None:
            continue
        k = mp.rank
        assert torch.equal(layer.U_mask[:, :k].any(0), layer.V_mask[:k].any(1)), name
    before = hybrid.count_parameters(student)["total"]
    shrink_factors(student)
    assert hybrid.count_parameters(student)["total"] == before == plan.nonzero_params
