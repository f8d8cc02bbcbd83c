"""Triton kernels against their torch references (CPU: TRITON_INTERPRET=1, fp32; GPU: also bf16/fp16)."""

from __future__ import annotations

import pytest
import torch

from ladabert.kernels.block_sparse_linear import block_sparse_linear, to_bsr, torch_block_sparse_linear
from ladabert.kernels.lowrank_linear import block_map, fused_lowrank_linear, torch_lowrank_linear
from ladabert.pipeline.prune import block_mask, keep_count

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [(torch.float32, 1e-4, 1e-4)] + (
    [(torch.bfloat16, 3e-2, 3e-2), (torch.float16, 1e-2, 1e-2)] if DEVICE == "cuda" else []
)


def _rand(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape, device=DEVICE) * scale).to(dtype)


@pytest.mark.parametrize("dtype,atol,rtol", DTYPES)
@pytest.mark.parametrize("m", [1, 7, 128, 1000])
@pytest.mark.parametrize("k_in,n,rank", [(48, 33, 8), (64, 96, 33), (37, 50, 64), (32, 16, 256)])
@pytest.mark.parametrize("gelu", [False, True])
def test_fused_lowrank_matches_reference(m, k_in, n, rank, gelu, dtype, atol, rtol):
    if m == 1000 and rank == 256 and DEVICE == "cpu":
        m = 130  # the interpreter is slow; the ragged tail is still exercised
    x, v, u, b = (
        _rand(m, k_in, dtype=dtype),
        _rand(rank, k_in, dtype=dtype, scale=0.2),
        _rand(n, rank, dtype=dtype, scale=0.2),
        _rand(n, dtype=dtype),
    )
    got = fused_lowrank_linear(x, v, u, b, gelu=gelu)
    ref = torch_lowrank_linear(x.float(), v.float(), u.float(), b.float(), gelu)
    torch.testing.assert_close(got.float(), ref, atol=atol * max(1.0, ref.abs().max().item()), rtol=rtol)


def test_fused_lowrank_without_bias_and_with_leading_dims():
    x, v, u = _rand(2, 5, 24), _rand(8, 24), _rand(40, 8)
    got = fused_lowrank_linear(x, v, u)
    assert got.shape == (2, 5, 40)
    torch.testing.assert_close(got, torch_lowrank_linear(x, v, u), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("block", [16, 32])
@pytest.mark.parametrize("density", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("m", [1, 50, 129])
def test_fused_lowrank_with_block_sparse_factors(m, block, density):
    k_in, n, rank = 96, 64, 2 * block
    v, u = _rand(rank, k_in), _rand(n, rank)
    v = v * block_mask(v, 1 - density, block).to(DEVICE)
    u = u * block_mask(u, 1 - density, block).to(DEVICE)
    x, b = _rand(m, k_in), _rand(n)
    got = fused_lowrank_linear(
        x, v, u, b, gelu=True, vmap=block_map(v, block), umap=block_map(u, block), block=block
    )
    torch.testing.assert_close(got, torch_lowrank_linear(x, v, u, b, True), atol=1e-4, rtol=1e-4)


def test_block_map_marks_exactly_the_live_blocks():
    w = torch.zeros(40, 36)
    w[0, 0] = 1.0
    w[39, 35] = 2.0  # in a ragged edge block
    bm = block_map(w, 16)
    assert bm.shape == (3, 3) and bm.sum() == 2 and bm[0, 0] == 1 and bm[2, 2] == 1


@pytest.mark.parametrize("block", [16, 32])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("m", [1, 7, 128, 1000])
def test_block_sparse_linear_matches_reference(m, block, sparsity):
    n, k_in = 64, 96
    w = _rand(n, k_in)
    w = w * block_mask(w, sparsity, block).to(DEVICE)
    bsr = to_bsr(w, block)
    assert bsr.blocks.shape[0] == keep_count(
        (n // block) * (k_in // block), sparsity
    )  # only live blocks kept
    x, b = _rand(m, k_in), _rand(n)
    for gelu in (False, True):
        got = block_sparse_linear(x, bsr, b, gelu)
        torch.testing.assert_close(got, torch_block_sparse_linear(x, w, b, gelu), atol=1e-4, rtol=1e-4)


def test_launchers_check_their_inputs():
    x, v, u = _rand(4, 16), _rand(8, 16), _rand(8, 8)
    with pytest.raises(ValueError, match="do not chain"):
        fused_lowrank_linear(x, v, _rand(8, 4))
    with pytest.raises(ValueError, match="share a dtype"):
        fused_lowrank_linear(x, v.double(), u)
    with pytest.raises(ValueError, match="exceeds the fused kernel's maximum"):
        fused_lowrank_linear(_rand(2, 8), _rand(300, 8), _rand(4, 300))
    with pytest.raises(ValueError, match="both vmap and umap"):
        fused_lowrank_linear(x, v, u, vmap=block_map(v, 16))
    with pytest.raises(ValueError, match="whole number of 16x16 blocks"):
        to_bsr(_rand(20, 32), 16)


@pytest.mark.parametrize("pattern", ["unstructured", "block"])
def test_student_logits_match_between_backends(tmp_path, pattern):
    from transformers import BertForSequenceClassification

    from ladabert.config import CompressConfig
    from ladabert.pipeline.build import build_student
    from ladabert.pipeline.layers import MaskedLinear
    from ladabert.pipeline.student import LadaBertForSequenceClassification
    from tests.conftest import make_tiny_bert

    teacher = BertForSequenceClassification.from_pretrained(
        make_tiny_bert(tmp_path / "t", hidden=64, intermediate=128, heads=4)
    ).eval()
    # hybrid 0.5 gives factorized layers; the prune-only variant checks the BSR path for dense layers.
    for share in (0.5, 0.0):
        cfg = CompressConfig(ratio=2.5, hybrid=share, pattern=pattern, block_size=16, data_aware=False)
        build_student(teacher, cfg).save_pretrained(tmp_path / f"s{share}")
        model = LadaBertForSequenceClassification.from_pretrained(tmp_path / f"s{share}").eval().to(DEVICE)
        ids = torch.randint(1, 50, (2, 9), device=DEVICE)
        mask = torch.ones_like(ids)
        mask[1, 5:] = 0
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=mask).logits
            model.set_backend("triton")
            got = model(input_ids=ids, attention_mask=mask).logits
            if share == 0.0 and pattern == "block":
                assert all("bsr" in m._kernel for m in model.modules() if isinstance(m, MaskedLinear))
            model.set_backend("torch")
            back = model(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(back, ref, atol=0, rtol=0)
