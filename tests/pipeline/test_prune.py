from __future__ import annotations

import pytest
import torch

from ladabert.pipeline.prune import (
    block_mask,
    keep_count,
    magnitude_mask,
    nm_mask,
    rank_component_mask,
    unstructured_mask,
)


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.8, 0.97, 1.0])
@pytest.mark.parametrize("shape", [(7, 13), (64, 32), (1, 5)])
def test_unstructured_sparsity_is_exact_and_keeps_the_largest(shape, sparsity):
    w = torch.randn(*shape)
    mask = unstructured_mask(w, sparsity)
    assert int(mask.sum()) == keep_count(w.numel(), sparsity)
    if 0 < mask.sum() < w.numel():
        assert w[mask].abs().min() >= w[~mask].abs().max()


def test_ties_are_broken_deterministically_with_exact_counts():
    w = torch.ones(10, 10)
    assert int(unstructured_mask(w, 0.37).sum()) == 63


def test_two_four_keeps_two_largest_of_every_four():
    w = torch.randn(6, 16)
    mask = nm_mask(w, 2, 4)
    groups = mask.reshape(6, 4, 4)
    assert (groups.sum(-1) == 2).all()
    kept_min = (w.abs() * mask).reshape(6, 4, 4).masked_fill(~groups, float("inf")).min(-1).values
    dropped_max = (w.abs() * ~mask).reshape(6, 4, 4).max(-1).values
    assert (kept_min >= dropped_max).all()
    with pytest.raises(ValueError, match="multiple of m=4"):
        nm_mask(torch.randn(3, 6))
    with pytest.raises(ValueError, match="2:4 pruning gives sparsity 0.5"):
        magnitude_mask(w, 0.3, "n:m")


@pytest.mark.parametrize("shape,block", [((32, 48), 16), ((37, 20), 8), ((64, 64), 32)])
def test_block_mask_keeps_whole_tiles_by_norm(shape, block):
    w = torch.randn(*shape)
    mask = block_mask(w, 0.5, block)
    tr, tc = -(-shape[0] // block), -(-shape[1] // block)
    padded = torch.zeros(tr * block, tc * block, dtype=torch.bool)
    padded[: shape[0], : shape[1]] = mask
    tiles = padded.reshape(tr, block, tc, block).permute(0, 2, 1, 3).reshape(tr, tc, -1)
    # Every tile is all kept or all dropped (within its real extent), and exactly half of them are kept.
    real = torch.zeros_like(padded)
    real[: shape[0], : shape[1]] = True
    real_tiles = real.reshape(tr, block, tc, block).permute(0, 2, 1, 3).reshape(tr, tc, -1)
    kept = (tiles == real_tiles).all(-1)
    dropped = (~tiles).all(-1)
    assert (kept | dropped).all()
    assert int(kept.sum()) == keep_count(tr * tc, 0.5)


def test_rank_component_mask_ranks_by_norm_product():
    u = torch.tensor([[1.0, 10.0, 0.1], [1.0, 10.0, 0.1]])
    v = torch.tensor([[1.0, 1.0], [0.01, 0.01], [100.0, 100.0]])
    # products of norms: 2, 0.2, 20 -> keep components 2 and 0
    assert rank_component_mask(u, v, 2).tolist() == [True, False, True]


def test_bad_sparsity_and_pattern():
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\]"):
        keep_count(10, 1.5)
    with pytest.raises(ValueError, match="unknown pruning pattern 'random'"):
        magnitude_mask(torch.randn(4, 4), 0.5, "random")
