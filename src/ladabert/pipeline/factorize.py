"""Truncated-SVD factorization of weight matrices.

``W (out x in) ~= U @ V`` with ``U = U_svd[:, :k] * sqrt(S)`` and ``V = sqrt(S)[:, None] * Vh[:k]``: the
singular values are split evenly between the two factors so that both have the same scale, which keeps
gradient steps on either factor comparable during distillation.

Data-aware variant (``cov`` given): the rank-k approximation that loses least on the layer's *outputs* for
the inputs it actually sees, ``min ||(W - U V) X||`` over calibration inputs ``X`` with covariance
``C = E[x x^T]``. With ``C = L L^T``, it keeps the top-k left singular vectors ``P_k`` of ``W L`` and is
``U V = P_k P_k^T W`` (the whitening of SVD-LLM, Wang et al. 2024; FWSVD, Hsu et al. 2022, weights by Fisher
information instead). ``cov`` may be 1-D, a diagonal covariance: for a word-embedding table read as
``W^T`` acting on one-hot tokens it is the token frequency, so frequent tokens are reproduced best.
"""

from __future__ import annotations

import torch


def break_even_rank(out_features: int, in_features: int) -> float:
    """The rank at which ``k * (out + in)`` factor parameters equal the dense ``out * in``."""
    return out_features * in_features / (out_features + in_features)


def whitening(cov: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``L`` with ``L L^T = cov + eps * mean(diag) * I`` (float64): lower-triangular for a full covariance,
    the 1-D square root for a diagonal one (``cov`` 1-D)."""
    c = cov.detach().double()
    if c.dim() == 1:
        if (c < 0).any():
            raise ValueError("a diagonal covariance must be non-negative")
        return (c + eps * c.mean().clamp_min(1e-30)).sqrt()
    if c.dim() != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"covariance must be square, got shape {tuple(c.shape)}")
    jitter = eps * c.diagonal().mean().clamp_min(1e-30)
    eye = torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    for _ in range(6):  # raise the jitter until the Cholesky factorization succeeds
        lower, info = torch.linalg.cholesky_ex(c + jitter * eye)
        if int(info) == 0:
            return lower
        jitter *= 100
    raise ValueError("covariance is not positive semi-definite")


def _times_l(m: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    return m * lower if lower.dim() == 1 else m @ lower


def _balance(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale each component so that ``||U[:, i]|| == ||V[i]||`` (the product is unchanged)."""
    a = (v.norm(dim=1) / u.norm(dim=0).clamp_min(1e-30)).clamp_min(1e-30).sqrt()
    return u * a, v / a[:, None]


def svd_factors(
    weight: torch.Tensor, rank: int, cov: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-``rank`` factors ``(U, V)`` of ``weight`` from its truncated SVD (computed in float64).

    Args:
        weight: a 2-D tensor ``out x in``.
        rank: number of singular components to keep, ``1 <= rank <= min(out, in)``.
        cov: optional input covariance (``in x in``, or 1-D for a diagonal one); see the module docstring.

    Returns:
        ``U`` (out x rank) and ``V`` (rank x in) in ``weight``'s dtype, with ``U @ V`` the best rank-``rank``
        approximation of ``weight`` in Frobenius norm (in the ``cov``-weighted norm when ``cov`` is given).
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D, got shape {tuple(weight.shape)}")
    full = min(weight.shape)
    if not 1 <= rank <= full:
        raise ValueError(f"rank must be in [1, {full}] for a {tuple(weight.shape)} matrix, got {rank}")
    if cov is not None:
        if cov.shape[0] != weight.shape[1]:
            raise ValueError(f"covariance of size {cov.shape[0]} does not match {weight.shape[1]} inputs")
        w = weight.detach().double()
        u = torch.linalg.svd(_times_l(w, whitening(cov.to(w.device))), full_matrices=False)[0][:, :rank]
        new_u, new_v = _balance(u, u.T @ w)
        return new_u.to(weight.dtype), new_v.to(weight.dtype)
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(weight.dtype), (root[:, None] * vh[:rank]).to(weight.dtype)


def refactor(
    u: torch.Tensor, v: torch.Tensor, rank: int, cov: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-SVD of the product ``u @ v`` truncated to ``rank``, without forming the product.

    With ``u = Qu Ru`` and ``v^T = Qv Rv`` (thin QR), ``u @ v = Qu (Ru Rv^T) Qv^T`` and only the small
    ``k x k`` core is decomposed, so re-truncating a 30522 x k embedding factor costs milliseconds. With
    ``cov`` the truncation is the data-aware one of :func:`svd_factors` (``v L`` takes ``v``'s place).
    """
    k = u.shape[1]
    if v.shape[0] != k:
        raise ValueError(f"factor shapes do not chain: {tuple(u.shape)} @ {tuple(v.shape)}")
    if not 1 <= rank <= k:
        raise ValueError(f"rank must be in [1, {k}], got {rank}")
    ud, vd = u.detach().double(), v.detach().double()
    vl = vd if cov is None else _times_l(vd, whitening(cov.to(vd.device)))
    qu, ru = torch.linalg.qr(ud)
    qv, rv = torch.linalg.qr(vl.T)
    a, s, bh = torch.linalg.svd(ru @ rv.T)
    if cov is not None:
        left = qu @ a[:, :rank]
        new_u, new_v = _balance(left, (left.T @ ud) @ vd)
        return new_u.to(u.dtype), new_v.to(v.dtype)
    root = s[:rank].sqrt()
    new_u = (qu @ a[:, :rank]) * root
    new_v = root[:, None] * (bh[:rank] @ qv.T)
    return new_u.to(u.dtype), new_v.to(v.dtype)


def relative_error(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> float:
    """``||W - U V||_F / ||W||_F``."""
    w = weight.double()
    return float(torch.linalg.norm(w - u.double() @ v.double()) / torch.linalg.norm(w))
