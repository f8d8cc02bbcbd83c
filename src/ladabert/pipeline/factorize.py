"""Truncated-SVD factorization of weight matrices.

``W (out x in) ~= U @ V`` with ``U = U_svd[:, :k] * sqrt(S)`` and ``V = sqrt(S)[:, None] * Vh[:k]``: the
singular values are split evenly between the two factors so that both have the same scale, which keeps
gradient steps on either factor comparable during distillation.
"""

from __future__ import annotations

import torch


def break_even_rank(out_features: int, in_features: int) -> float:
    """The rank at which ``k * (out + in)`` factor parameters equal the dense ``out * in``."""
    return out_features * in_features / (out_features + in_features)


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-``rank`` factors ``(U, V)`` of ``weight`` from its truncated SVD (computed in float64).

    Args:
        weight: a 2-D tensor ``out x in``.
        rank: number of singular components to keep, ``1 <= rank <= min(out, in)``.

    Returns:
        ``U`` (out x rank) and ``V`` (rank x in) in ``weight``'s dtype, with ``U @ V`` the best rank-``rank``
        approximation of ``weight`` in Frobenius norm.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D, got shape {tuple(weight.shape)}")
    full = min(weight.shape)
    if not 1 <= rank <= full:
        raise ValueError(f"rank must be in [1, {full}] for a {tuple(weight.shape)} matrix, got {rank}")
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(weight.dtype), (root[:, None] * vh[:rank]).to(weight.dtype)


def refactor(u: torch.Tensor, v: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-SVD of the product ``u @ v`` truncated to ``rank``, without forming the product.

    With ``u = Qu Ru`` and ``v^T = Qv Rv`` (thin QR), ``u @ v = Qu (Ru Rv^T) Qv^T`` and only the small
    ``k x k`` core is decomposed, so re-truncating a 30522 x k embedding factor costs milliseconds.
    """
    k = u.shape[1]
    if v.shape[0] != k:
        raise ValueError(f"factor shapes do not chain: {tuple(u.shape)} @ {tuple(v.shape)}")
    if not 1 <= rank <= k:
        raise ValueError(f"rank must be in [1, {k}], got {rank}")
    qu, ru = torch.linalg.qr(u.detach().double())
    qv, rv = torch.linalg.qr(v.detach().double().T)
    a, s, bh = torch.linalg.svd(ru @ rv.T)
    root = s[:rank].sqrt()
    new_u = (qu @ a[:, :rank]) * root
    new_v = root[:, None] * (bh[:rank] @ qv.T)
    return new_u.to(u.dtype), new_v.to(v.dtype)


def relative_error(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> float:
    """``||W - U V||_F / ||W||_F``."""
    w = weight.double()
    return float(torch.linalg.norm(w - u.double() @ v.double()) / torch.linalg.norm(w))
