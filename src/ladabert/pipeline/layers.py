"""Compressed layers: factorized (U @ V) and masked dense, for Linear and Embedding.

Every layer carries boolean pruning masks as persistent buffers (saved in ``model.safetensors``) and
exposes the same small interface, used by the compression engine and the parameter counter:
``apply_masks()``, ``nonzero_params()`` and ``dense_weight()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ladabert.kernels.modules import factorized_forward, masked_forward


class _FactorMasks:
    """Masks of a factor pair ``U`` (rows x k), ``V`` (k x cols): ``W ~= (U * U_mask) @ (V * V_mask)``."""

    U: nn.Parameter
    V: nn.Parameter
    U_mask: torch.Tensor
    V_mask: torch.Tensor

    def _init_factors(self, rows: int, cols: int, rank: int) -> None:
        self.rank = rank
        self.U = nn.Parameter(torch.zeros(rows, rank))
        self.V = nn.Parameter(torch.zeros(rank, cols))
        self.register_buffer("U_mask", torch.ones(rows, rank, dtype=torch.bool))
        self.register_buffer("V_mask", torch.ones(rank, cols, dtype=torch.bool))

    def _copy_factors(self, u: torch.Tensor, v: torch.Tensor) -> None:
        with torch.no_grad():
            self.U.copy_(u)
            self.V.copy_(v)

    @torch.no_grad()
    def apply_masks(self) -> None:
        self.U.mul_(self.U_mask)
        self.V.mul_(self.V_mask)

    def nonzero_params(self) -> int:
        return int(self.U_mask.sum()) + int(self.V_mask.sum())

    def dense_weight(self) -> torch.Tensor:
        return (self.U * self.U_mask) @ (self.V * self.V_mask)


class _WeightMask:
    """Mask of a dense ``weight``."""

    weight: nn.Parameter
    weight_mask: torch.Tensor

    @torch.no_grad()
    def apply_masks(self) -> None:
        self.weight.mul_(self.weight_mask)

    def nonzero_params(self) -> int:
        return int(self.weight_mask.sum())

    def dense_weight(self) -> torch.Tensor:
        return self.weight * self.weight_mask


class FactorizedLinear(_FactorMasks, nn.Module):
    """``y = (x @ V^T) @ U^T + b`` with ``U`` (out x k) and ``V`` (k x in), each with a pruning mask.

    ``backend`` selects the implementation of the forward pass: ``"torch"`` (two GEMMs, runs anywhere)
    or the Triton kernel of :mod:`ladabert.kernels.modules` where CUDA is available.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_factors(out_features, in_features, rank)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.backend = "torch"

    @classmethod
    def from_factors(cls, u: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> FactorizedLinear:
        layer = cls(v.shape[1], u.shape[0], u.shape[1], bias is not None).to(u.dtype)
        layer._copy_factors(u, v)
        if bias is not None:
            with torch.no_grad():
                layer.bias.copy_(bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "triton":
            return factorized_forward(self, x)
        return F.linear(F.linear(x, self.V), self.U, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class MaskedLinear(_WeightMask, nn.Linear):
    """A dense ``nn.Linear`` whose weight carries a pruning mask."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("weight_mask", torch.ones(out_features, in_features, dtype=torch.bool))
        self.backend = "torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "triton":
            return masked_forward(self, x)
        return F.linear(x, self.weight, self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> MaskedLinear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None).to(linear.weight.dtype)
        layer.load_state_dict(linear.state_dict(), strict=False)
        return layer


class FactorizedEmbedding(_FactorMasks, nn.Module):
    """Word embeddings as a ``vocab x k`` lookup followed by a ``k x dim`` projection."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx
        self._init_factors(num_embeddings, embedding_dim, rank)

    @classmethod
    def from_factors(cls, u: torch.Tensor, v: torch.Tensor, padding_idx: int | None) -> FactorizedEmbedding:
        layer = cls(u.shape[0], v.shape[1], u.shape[1], padding_idx).to(u.dtype)
        layer._copy_factors(u, v)
        return layer

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.linear(F.embedding(input_ids, self.U, self.padding_idx), self.V.t())

    @property
    def weight(self) -> torch.Tensor:
        # Read-only view of the product, for code that inspects ``word_embeddings.weight``.
        return self.dense_weight()

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}"


class MaskedEmbedding(_WeightMask, nn.Embedding):
    """A dense ``nn.Embedding`` whose table carries a pruning mask."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.register_buffer("weight_mask", torch.ones(num_embeddings, embedding_dim, dtype=torch.bool))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding) -> MaskedEmbedding:
        layer = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx).to(emb.weight.dtype)
        layer.load_state_dict(emb.state_dict(), strict=False)
        return layer


COMPRESSED_LAYERS = (FactorizedLinear, MaskedLinear, FactorizedEmbedding, MaskedEmbedding)
FACTORIZED_LAYERS = (FactorizedLinear, FactorizedEmbedding)
