"""Magnitude pruning masks with exact sparsity, in four patterns.

- ``unstructured``: the smallest-magnitude weights anywhere in the matrix (the paper's choice).
- ``n:m``: in every group of ``m`` consecutive weights along the input dimension keep the ``n`` largest
  (2:4 gives 50% sparsity that sparse tensor cores accelerate).
- ``block``: ``b x b`` tiles ranked by their L2 norm; whole tiles are kept or dropped (for the
  block-sparse GPU kernels).
- ``rank``: whole rank components of a factor pair (a column of U with the matching row of V), ranked
  by ``||U[:, i]|| * ||V[i, :]||``; dropping them shrinks k and so speeds up dense CPU inference.

Each function returns a boolean mask (True = keep) whose number of kept entries is exact.
"""

from __future__ import annotations

import math

import torch

PATTERNS = ("unstructured", "n:m", "block", "rank")


def keep_count(numel: int, sparsity: float) -> int:
    """How many of ``numel`` weights survive at ``sparsity`` (rounded to the nearest integer)."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return int(round(numel * (1.0 - sparsity)))


def _top_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Mask of exactly ``keep`` largest scores (ties broken by position, deterministically)."""
    flat = scores.reshape(-1)
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if keep > 0:
        idx = torch.argsort(flat, descending=True, stable=True)[:keep]
        mask[idx] = True
    return mask.view_as(scores)


def unstructured_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    return _top_mask(weight.detach().abs().float(), keep_count(weight.numel(), sparsity))


def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the ``n`` largest of every ``m`` consecutive weights along the last dimension."""
    rows, cols = weight.shape
    if cols % m:
        raise ValueError(f"n:m pruning needs the input dimension ({cols}) to be a multiple of m={m}")
    groups = weight.detach().abs().float().reshape(rows, cols // m, m)
    idx = torch.argsort(groups, dim=-1, descending=True, stable=True)[..., :n]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.reshape(rows, cols)


def block_mask(weight: torch.Tensor, sparsity: float, block: int) -> torch.Tensor:
    """Keep whole ``block x block`` tiles with the largest L2 norms; sparsity is counted in tiles.

    Ragged edges (a dimension that is not a multiple of ``block``) form partial tiles at the end.
    """
    rows, cols = weight.shape
    tr, tc = -(-rows // block), -(-cols // block)
    padded = torch.zeros(tr * block, tc * block, dtype=torch.float32, device=weight.device)
    padded[:rows, :cols] = weight.detach().float()
    norms = padded.reshape(tr, block, tc, block).pow(2).sum(dim=(1, 3))
    tile_mask = _top_mask(norms, keep_count(norms.numel(), sparsity))
    return tile_mask.repeat_interleave(block, 0).repeat_interleave(block, 1)[:rows, :cols].contiguous()


def rank_component_mask(u: torch.Tensor, v: torch.Tensor, keep: int) -> torch.Tensor:
    """Mask over the k components of ``u @ v`` keeping the ``keep`` with the largest norm products."""
    scores = u.detach().float().norm(dim=0) * v.detach().float().norm(dim=1)
    return _top_mask(scores, keep)


def magnitude_mask(
    weight: torch.Tensor,
    sparsity: float,
    pattern: str = "unstructured",
    block: int = 16,
    n: int = 2,
    m: int = 4,
) -> torch.Tensor:
    """Dispatch to the mask of ``pattern`` (``rank`` is handled on factor pairs, not single matrices)."""
    if sparsity == 0:
        return torch.ones_like(weight, dtype=torch.bool)
    if pattern == "unstructured":
        return unstructured_mask(weight, sparsity)
    if pattern == "n:m":
        if not math.isclose(sparsity, 1 - n / m):
            raise ValueError(f"{n}:{m} pruning gives sparsity {1 - n / m:g}, not {sparsity:g}")
        return nm_mask(weight, n, m)
    if pattern == "block":
        return block_mask(weight, sparsity, block)
    raise ValueError(f"unknown pruning pattern {pattern!r}; choose one of {PATTERNS}")
