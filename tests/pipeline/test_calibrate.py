from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertForSequenceClassification

from ladabert.errors import LadaBertError
from ladabert.pipeline import hybrid
from ladabert.pipeline.calibrate import activation_stats, token_frequency
from ladabert.pipeline.layers import MaskedLinear
from tests.conftest import make_tiny_bert


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = make_tiny_bert(tmp_path_factory.mktemp("t"), hidden=32, intermediate=64, heads=2)
    return BertForSequenceClassification.from_pretrained(path).eval()


def _batches(vocab: int, n: int = 3, low: int = 5):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(low, vocab, (4, 12), generator=g)
        mask = torch.ones(4, 12, dtype=torch.long)
        mask[1, 7:] = 0  # padding that must not count
        mask[3, 3:] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "labels": torch.zeros(4, dtype=torch.long)})
    return out


def test_covariances_match_the_hidden_states_over_unpadded_tokens(model):
    batches = _batches(model.config.vocab_size)
    names = hybrid.compressible_names(model)
    stats = activation_stats(model, batches, names)
    assert set(stats) == {n for n in names if "word_embeddings" not in n}
    rows = {0: [], 1: []}
    with torch.no_grad():
        for b in batches:
            hs = model(
                input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True
            )
            for layer in rows:
                rows[layer].append(hs.hidden_states[layer][b["attention_mask"].bool()].double())
    for layer, r in rows.items():
        x = torch.cat(r)
        want = (x.T @ x / len(x)).float()
        got = stats[f"bert.encoder.layer.{layer}.attention.self.query"]
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
        # query, key and value read the same input and share one tensor
        assert stats[f"bert.encoder.layer.{layer}.attention.self.key"] is got
    ffn = stats["bert.encoder.layer.0.output.dense"]
    assert ffn.shape == (64, 64) and torch.linalg.eigvalsh(ffn.double()).min() > -1e-5
    assert model.training is False


def test_calibration_errors_are_clear(model):
    with pytest.raises(LadaBertError, match="no Linear layers"):
        activation_stats(model, _batches(model.config.vocab_size), ["bert.embeddings.word_embeddings"])
    b = {"input_ids": torch.ones(1, 4, dtype=torch.long)}
    with pytest.raises(LadaBertError, match="attention_mask"):
        activation_stats(model, [b], hybrid.compressible_names(model))


def test_token_frequency_counts_and_always_keeps_special_tokens():
    f = token_frequency([[1, 2, 2], [2, 3]], 6, always=[5])
    assert torch.allclose(f * 8, torch.tensor([0, 1, 3, 1, 0, 3.0]))  # [5] counts as often as token 2
    assert f.sum() == pytest.approx(1.0)
    with pytest.raises(LadaBertError, match="out of range"):
        token_frequency([[7]], 6)


def test_data_aware_pruning_drops_weights_on_dead_inputs_first():
    lin = MaskedLinear.from_linear(torch.nn.Linear(8, 4))
    with torch.no_grad():
        lin.weight.copy_(torch.arange(32, dtype=torch.float32).reshape(4, 8) + 1)
    cov = torch.eye(8)
    cov[6, 6] = cov[7, 7] = 0.0  # inputs 6 and 7 are never active; their weights are the largest
    plan = hybrid.MatrixPlan(4, 8, None, 0.25, 24)
    hybrid._compute_masks(lin, plan, "unstructured", 16, cov)
    assert not lin.weight_mask[:, 6:].any() and lin.weight_mask[:, :6].all()
    lin.weight_mask.fill_(True)
    hybrid._compute_masks(lin, plan, "unstructured", 16)  # magnitude: the smallest weights go
    assert not lin.weight_mask[0, :8].any() and lin.weight_mask[1:].all()


def test_data_aware_student_is_closer_to_the_teacher_on_the_data(model):
    # As in a real task, the data uses a part of the vocabulary (the last 12 tokens).
    batches = _batches(model.config.vocab_size, 6, low=model.config.vocab_size - 12)
    names = hybrid.compressible_names(model)
    stats = activation_stats(model, batches, names)
    ids = [b["input_ids"][b["attention_mask"].bool()].tolist() for b in batches]
    stats[names[0]] = token_frequency(ids, model.config.vocab_size)
    n = sum(p.numel() for p in model.parameters())
    plan = hybrid.allocate(hybrid.matrix_shapes(model), n, 4.0, 0.75)
    errors = {}
    for kind, st in (("plain", None), ("aware", stats)):
        student = hybrid.install(copy.deepcopy(model), plan, st).eval()
        assert hybrid.count_parameters(student)["total"] == plan.nonzero_params
        errors[kind] = sum(_last_hidden_error(student, model, b) for b in batches)
    assert errors["aware"] < 0.75 * errors["plain"]  # measured 0.54


@torch.no_grad()
def _last_hidden_error(student, teacher, batch) -> float:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    mask = batch["attention_mask"].bool()
    a = student(**inputs, output_hidden_states=True).hidden_states[-1][mask]
    b = teacher(**inputs, output_hidden_states=True).hidden_states[-1][mask]
    return float((a - b).pow(2).sum())
