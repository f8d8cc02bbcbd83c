"""Hybrid compression of a BERT classifier: per-matrix rank and sparsity, and the engine that applies them.

Parameter accounting follows the paper: the compression ratio is the teacher's parameter count over the
student's *non-zero* parameter count, embeddings included. The matrices that are compressed are the
word-embedding table and every encoder Linear (Q, K, V, attention output, FFN in, FFN out); everything
else (position and token-type embeddings, LayerNorms, biases, pooler, classifier) is kept and counted.

Allocation: with ``f`` the kept share of every compressed matrix needed to reach ratio ``R``, the
``hybrid`` knob ``h`` splits the reduction multiplicatively, ``f = f_svd * f_prune`` with
``f_svd = f ** h``. ``f_svd`` sets the rank ``k`` (``k * (rows + cols) = f_svd * rows * cols``); pruning of
the factors removes the rest. ``h = 1`` is SVD only; ``h = 0`` keeps every matrix dense and prunes only.

``embedding_scale`` ``s`` shifts the budget between the word-embedding table and the encoder: the table
keeps ``f_emb = s * f_enc`` of its weights while every encoder matrix keeps ``f_enc`` (``s = 1``: one
share for all, the paper's uniform allocation). In small BERTs the table is half the model, so ``s``
moves a large budget; on SST-2 with all-MiniLM-L6-v2 neither ``s = 0.25`` nor ``s = 2`` beat ``s = 1``
(``benchmarks/results/sweep_sst2.json``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ladabert.errors import LadaBertError
from ladabert.pipeline.factorize import break_even_rank, refactor, svd_factors
from ladabert.pipeline.layers import (
    COMPRESSED_LAYERS,
    FactorizedEmbedding,
    FactorizedLinear,
    MaskedEmbedding,
    MaskedLinear,
)
from ladabert.pipeline.prune import PATTERNS, keep_count, magnitude_mask, nm_mask, rank_component_mask

NM = (2, 4)


def compressible_names(model: nn.Module) -> list[str]:
    """Word embeddings and every encoder Linear of a BERT model, in module order."""
    names = []
    for name, mod in model.named_modules():
        if name.endswith("embeddings.word_embeddings"):
            names.append(name)
        elif ".encoder.layer." in f".{name}" and isinstance(mod, nn.Linear | FactorizedLinear):
            names.append(name)
    if not names:
        raise LadaBertError("found no BERT encoder Linear layers to compress; pass a BERT-family model")
    return names


def matrix_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``(rows, cols)`` of each compressible matrix: (out, in) for Linear, (vocab, dim) for embeddings."""
    out = {}
    for name in compressible_names(model):
        mod = model.get_submodule(name)
        if isinstance(mod, nn.Embedding):
            out[name] = (mod.num_embeddings, mod.embedding_dim)
        elif isinstance(mod, nn.Linear):
            out[name] = (mod.out_features, mod.in_features)
        else:
            raise LadaBertError(f"{name} is already compressed; compress from the dense teacher")
    return out


@dataclass
class MatrixPlan:
    """Rank and sparsity of one matrix. ``rank`` is None for a dense (pruned-only) matrix."""

    rows: int
    cols: int
    rank: int | None
    sparsity: float
    nonzero: int  # exact count of kept weights this plan gives
    keep_rank: int | None = None  # ``rank`` pattern: components kept out of ``rank``

    @property
    def kind(self) -> str:
        return "dense" if self.rank is None else "factorized"


@dataclass
class CompressionPlan:
    ratio_target: float
    pattern: str
    hybrid: float
    block_size: int
    teacher_params: int
    fixed_params: int
    matrices: dict[str, MatrixPlan]
    embedding_scale: float = 1.0

    @property
    def nonzero_params(self) -> int:
        return self.fixed_params + sum(m.nonzero for m in self.matrices.values())

    @property
    def ratio(self) -> float:
        return self.teacher_params / self.nonzero_params

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name, m in self.matrices.items():
            d["matrices"][name]["kind"] = m.kind
        d["ratio"] = self.ratio
        return d


def _round_to(x: float, multiple: int) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


def _plan_matrix(rows: int, cols: int, f: float, hybrid: float, pattern: str, block: int) -> MatrixPlan:
    full = rows * cols
    budget = f * full  # weights this matrix may keep
    if hybrid == 0:  # dense, pruned only
        if pattern == "n:m":
            if f < 1 - NM[0] / NM[1] - 1e-9:
                raise LadaBertError(
                    "prune-only with the 2:4 pattern reaches at most 2x on compressed matrices; lower --ratio "
                    "or use --method hybrid"
                )
            return MatrixPlan(rows, cols, None, 0.5, full // 2)
        s = 1 - f
        if pattern == "block":
            tiles = -(-rows // block) * -(-cols // block)
            s = 1 - keep_count(tiles, s) / tiles
        return MatrixPlan(rows, cols, None, s, keep_count(full, s) if pattern != "block" else -1)
    k_svd = (f**hybrid) * break_even_rank(rows, cols)
    cap = min(rows, cols)
    if hybrid == 1:
        k = min(cap, max(1, round(budget / (rows + cols))))
        return MatrixPlan(rows, cols, k, 0.0, k * (rows + cols))
    if pattern == "rank":
        k = min(cap, max(1, math.ceil(k_svd)))
        keep = min(k, max(1, round(budget / (rows + cols))))
        return MatrixPlan(rows, cols, k, 1 - keep / k, keep * (rows + cols), keep_rank=keep)
    if pattern == "n:m":
        k = min(cap - cap % NM[1], _round_to(budget * NM[1] / NM[0] / (rows + cols), NM[1]))
        return MatrixPlan(rows, cols, k, 1 - NM[0] / NM[1], k * (rows + cols) * NM[0] // NM[1])
    if pattern == "block":
        k = min(cap - cap % block or cap, _round_to(k_svd, block))
    else:
        k = min(cap, max(1, math.ceil(k_svd)))
    s = min(1.0, max(0.0, 1 - budget / (k * (rows + cols))))
    if pattern == "block":
        return MatrixPlan(rows, cols, k, s, -1)  # counted from the masks once they exist
    return MatrixPlan(rows, cols, k, s, keep_count(rows * k, s) + keep_count(k * cols, s))


def allocate(
    shapes: dict[str, tuple[int, int]],
    teacher_params: int,
    ratio: float,
    hybrid: float = 0.75,
    pattern: str = "unstructured",
    block_size: int = 16,
    embedding_scale: float = 1.0,
    fixed_params: int | None = None,
) -> CompressionPlan:
    """Ranks and sparsities that bring a model with ``teacher_params`` parameters to ``ratio``.

    ``shapes`` are the teacher's matrices unless heads or FFN neurons were removed first
    (:mod:`ladabert.pipeline.structured`); then they are the smaller model's, and ``fixed_params`` is that
    model's count of parameters outside them (default: ``teacher_params`` minus the matrices).

    Raises:
        LadaBertError: when the ratio cannot be reached because the kept (uncompressed) parameters alone
            exceed the budget.
    """
    if pattern not in PATTERNS:
        raise LadaBertError(f"unknown pruning pattern {pattern!r}; choose one of {', '.join(PATTERNS)}")
    if not 0 <= hybrid <= 1:
        raise LadaBertError(f"hybrid share must be in [0, 1], got {hybrid}")
    if ratio < 1:
        raise LadaBertError(f"compression ratio must be >= 1, got {ratio}")
    if embedding_scale <= 0:
        raise LadaBertError(f"embedding scale must be > 0, got {embedding_scale}")
    if pattern == "rank" and hybrid == 0:
        raise LadaBertError(
            "the rank pattern prunes whole rank components, so it needs factorized layers; "
            "use --method hybrid or svd, or another --pattern with --method prune"
        )
    compressible = sum(r * c for r, c in shapes.values())
    fixed = teacher_params - compressible if fixed_params is None else fixed_params
    f = (teacher_params / ratio - fixed) / compressible
    if f > 1 + 1e-9:
        raise LadaBertError(
            f"ratio {ratio:g} is below what removing layers, heads and FFN neurons already gives "
            f"({teacher_params / (fixed + compressible):.2f}x); raise --ratio or --keep-layers / --keep-heads / --keep-ffn"
        )
    if f <= 0:
        raise LadaBertError(
            f"ratio {ratio:g} is out of reach: the {fixed:,} parameters that are not compressed already "
            f"allow at most {teacher_params / fixed:.1f}x; choose a smaller --ratio"
        )
    f_enc, f_emb = _split_budget(shapes, f * compressible, embedding_scale)
    matrices = {
        n: _plan_matrix(r, c, f_emb if _is_embedding(n) else f_enc, hybrid, pattern, block_size)
        for n, (r, c) in shapes.items()
    }
    return CompressionPlan(
        ratio, pattern, hybrid, block_size, teacher_params, fixed, matrices, embedding_scale
    )


def _is_embedding(name: str) -> bool:
    return name.endswith("word_embeddings")


def _split_budget(shapes: dict[str, tuple[int, int]], budget: float, scale: float) -> tuple[float, float]:
    """Kept shares ``(f_enc, f_emb)`` with ``f_emb = scale * f_enc`` that spend ``budget`` weights,
    each capped at 1 (a capped side hands its surplus to the other)."""
    c_emb = sum(r * c for n, (r, c) in shapes.items() if _is_embedding(n))
    c_enc = sum(r * c for n, (r, c) in shapes.items() if not _is_embedding(n))
    f_enc = budget / (c_enc + scale * c_emb)
    f_emb = scale * f_enc
    if f_enc > 1:
        f_enc, f_emb = 1.0, (budget - c_enc) / c_emb
    elif f_emb > 1:
        f_enc, f_emb = (budget - c_emb) / c_enc, 1.0
    return min(f_enc, 1.0), min(f_emb, 1.0)


# ---------------------------------------------------------------------------------------------------------
# The engine: install compressed layers, re-truncate and re-prune them, enforce masks, count parameters.


def _root_diag(stat: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Root mean square of each input of a layer: ``sqrt(diag(C))`` (``stat`` itself when 1-D)."""
    d = stat if stat.dim() == 1 else stat.diagonal()
    return d.to(device=device, dtype=torch.float32).clamp_min(0).sqrt()


_PASSES = 8  # data-aware masks: rounds of handing a dead component's budget to live ones


def _compute_masks(
    layer: nn.Module, plan: MatrixPlan, pattern: str, block: int, stat: torch.Tensor | None = None
) -> None:
    """Recompute ``layer``'s masks for ``plan`` (ranks already truncated).

    Without ``stat`` a weight's score is its magnitude (the paper). With ``stat`` (the layer's input
    covariance, or token frequencies for the word-embedding table) it is the magnitude times the root mean
    square of the input it multiplies, ``|W_ij| * ||x_j||`` (Wanda, Sun et al. 2023): a weight on an input
    that is never active scores zero. The second factor of a pair sees the first factor's (masked) output,
    whose mean square follows from ``stat``. A component whose column of U or row of V is pruned entirely
    is dead: its partner's entries are then scored zero and the masks recomputed, so that the budget goes to
    live components instead of weights that do nothing (and that saving would drop).
    """
    if isinstance(layer, MaskedLinear | MaskedEmbedding):
        w = (layer.weight * layer.weight_mask).detach().abs().float()
        if stat is not None:
            rms = _root_diag(stat, w.device)
            w = w * (rms[:, None] if isinstance(layer, MaskedEmbedding) else rms[None, :])
        if pattern == "n:m" and plan.sparsity > 0:
            layer.weight_mask.copy_(nm_mask(w, *NM))
        else:
            layer.weight_mask.copy_(magnitude_mask(w, plan.sparsity, pattern, block))
        return
    k = plan.rank
    u, v = layer.U[:, :k].detach().abs().float(), layer.V[:k].detach().abs().float()
    emb = isinstance(layer, FactorizedEmbedding)
    layer.U_mask.zero_()
    layer.V_mask.zero_()

    def mask(scores: torch.Tensor) -> torch.Tensor:
        return (
            nm_mask(scores, *NM)
            if pattern == "n:m"
            else magnitude_mask(scores, plan.sparsity, pattern, block)
        )

    if plan.sparsity == 0:
        layer.U_mask[:, :k] = True
        layer.V_mask[:k] = True
        return
    if stat is None:  # the paper: magnitude
        if pattern == "rank":
            comp = rank_component_mask(u, v, plan.keep_rank or k)
            layer.U_mask[:, :k] = comp[None, :]
            layer.V_mask[:k] = comp[:, None]
        else:
            layer.U_mask[:, :k] = mask(u)
            layer.V_mask[:k] = mask(v)
        return
    # Data-aware, in the orientation of a Linear (``W^T`` for the embedding table, which acts on one-hot
    # tokens): ``first`` (k x in) sees the input x, ``second`` (out x k) sees z = first @ x. ``flip`` maps
    # between that orientation and the layer's own, in which the pattern's masks are defined.
    st = stat.to(u.device, torch.float32)
    flip = (lambda t: t.T) if emb else (lambda t: t)
    first_raw = flip(layer.U[:, :k] if emb else layer.V[:k]).detach().float()
    first_mask = flip(layer.U_mask[:, :k] if emb else layer.V_mask[:k])  # views into the masks
    second_mask = flip(layer.V_mask[:k] if emb else layer.U_mask[:, :k])
    second = flip(v if emb else u)
    if pattern == "rank":  # a component's score: the norm of its output over the data
        comp = rank_component_mask(second, _component_rms(first_raw, st)[:, None], plan.keep_rank or k)
        first_mask[:] = comp[:, None]
        second_mask[:] = comp[None, :]
        return
    score_first = first_raw.abs() * _root_diag(st, u.device)[None, :]
    alive = torch.ones(k, dtype=torch.bool, device=u.device)
    for _ in range(_PASSES):  # later passes hand the budget of dead components to live ones
        first_mask[:] = flip(mask(flip(score_first * alive[:, None])))
        z = _component_rms(first_raw * first_mask, st) * alive
        second_mask[:] = flip(mask(flip(second * z[None, :])))
        now = alive & first_mask.any(1) & second_mask.any(0)
        if torch.equal(now, alive):
            break
        alive = now


def _component_rms(first: torch.Tensor, stat: torch.Tensor) -> torch.Tensor:
    """Root mean square of each output of ``first`` (k x in) over inputs of covariance ``stat``:
    ``sqrt(diag(first C first^T))``, with ``C`` diagonal when ``stat`` is 1-D."""
    if stat.dim() == 1:
        return (first.pow(2) * stat.clamp_min(0)[None, :]).sum(1).sqrt()
    return ((first @ stat) * first).sum(1).clamp_min(0).sqrt()


def _factors(
    weight: torch.Tensor, rank: int, emb: bool, stat: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of a dense matrix; an embedding table is factorized as ``W^T`` acting on one-hot tokens."""
    if stat is None or not emb:
        return svd_factors(weight, rank, stat)
    a, b = svd_factors(weight.T, rank, stat)
    return b.T.contiguous(), a.T.contiguous()


def _refactor(
    u: torch.Tensor, v: torch.Tensor, rank: int, emb: bool, stat: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if stat is None or not emb:
        return refactor(u, v, rank, stat)
    a, b = refactor(v.T, u.T, rank, stat)
    return b.T.contiguous(), a.T.contiguous()


@torch.no_grad()
def install(
    model: nn.Module, plan: CompressionPlan, stats: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """Replace every compressible matrix of the dense ``model`` by its compressed layer, in place.

    Factorized layers start from the truncated SVD of the dense weight at ``plan``'s rank; masks are
    computed by magnitude. With ``stats`` (:func:`activation_stats`) both are data-aware: the SVD keeps what
    matters for the layer's outputs on the calibration data and pruning scores weigh each weight by its
    input (see :mod:`ladabert.pipeline.factorize` and :func:`_compute_masks`). Returns ``model``.
    """
    stats = stats or {}
    for name, mp in plan.matrices.items():
        old = model.get_submodule(name)
        emb = isinstance(old, nn.Embedding)
        if mp.rank is None:
            new = MaskedEmbedding.from_embedding(old) if emb else MaskedLinear.from_linear(old)
        else:
            u, v = _factors(old.weight, mp.rank, emb, stats.get(name))
            new = (
                FactorizedEmbedding.from_factors(u, v, old.padding_idx)
                if emb
                else FactorizedLinear.from_factors(u, v, old.bias)
            )
        new.to(old.weight.device)
        _compute_masks(new, mp, plan.pattern, plan.block_size, stats.get(name))
        new.apply_masks()
        model.set_submodule(name, new)
    return model


@torch.no_grad()
def recompress(
    model: nn.Module, plan: CompressionPlan, stats: dict[str, torch.Tensor] | None = None
) -> list[nn.Parameter]:
    """Truncate ranks further (re-SVD of the masked ``U @ V``) and recompute masks by magnitude (data-aware
    with ``stats``, as in :func:`install`).

    Returns the parameters whose basis changed, so that the caller can reset their optimizer state.
    """
    stats = stats or {}
    changed = []
    for name, mp in plan.matrices.items():
        layer = model.get_submodule(name)
        stat = stats.get(name)
        if mp.rank is not None:
            if mp.rank > layer.rank:
                raise ValueError(f"{name}: cannot grow rank {layer.rank} to {mp.rank}")
            emb = isinstance(layer, FactorizedEmbedding)
            u, v = _refactor(layer.U * layer.U_mask, layer.V * layer.V_mask, mp.rank, emb, stat)
            layer.U.zero_()
            layer.V.zero_()
            layer.U[:, : mp.rank] = u
            layer.V[: mp.rank] = v
            changed += [layer.U, layer.V]
        _compute_masks(layer, mp, plan.pattern, plan.block_size, stat)
        layer.apply_masks()
    return changed


@torch.no_grad()
def apply_masks(model: nn.Module) -> None:
    """Zero every pruned weight (called after each optimizer step)."""
    for mod in model.modules():
        if isinstance(mod, COMPRESSED_LAYERS):
            mod.apply_masks()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Exact parameter counts: ``total`` (non-zero, by masks, for compressed layers; every other parameter
    counted in full), ``compressed`` (the compressible matrices), ``encoder_linear`` and ``embedding``."""
    masked_ids: set[int] = set()
    counts = {"compressed": 0, "encoder_linear": 0, "embedding": 0}
    for name, mod in model.named_modules():
        if isinstance(mod, COMPRESSED_LAYERS):
            nz = mod.nonzero_params()
            weights = [mod.U, mod.V] if hasattr(mod, "U") else [mod.weight]
            masked_ids.update(id(p) for p in weights)
        elif name.endswith("embeddings.word_embeddings") or (
            ".encoder.layer." in f".{name}" and isinstance(mod, nn.Linear)
        ):
            nz = mod.weight.numel()
        else:
            continue
        counts["compressed"] += nz
        counts["embedding" if "word_embeddings" in name else "encoder_linear"] += nz
    other = sum(p.numel() for p in model.parameters() if id(p) not in masked_ids)
    dense_compressible = sum(
        m.weight.numel()
        for n, m in model.named_modules()
        if not isinstance(m, COMPRESSED_LAYERS)
        and (
            n.endswith("embeddings.word_embeddings")
            or (".encoder.layer." in f".{n}" and isinstance(m, nn.Linear))
        )
    )
    counts["fixed"] = other - dense_compressible
    counts["total"] = counts["fixed"] + counts["compressed"]
    return counts


def plan_with_actual_counts(model: nn.Module, plan: CompressionPlan) -> CompressionPlan:
    """``plan`` with each matrix's ``nonzero`` and ``sparsity`` read back from the installed masks."""
    for name, mp in plan.matrices.items():
        layer = model.get_submodule(name)
        mp.nonzero = layer.nonzero_params()
        size = mp.rows * mp.cols if mp.rank is None else mp.rank * (mp.rows + mp.cols)
        mp.sparsity = 1 - mp.nonzero / size
    return plan
