"""Layer-level launchers of the Triton ops: what a compressed layer calls when its backend is ``triton``.

This is the op layer: it knows layers only by their tensors (``U``/``V`` factors with masks, or a masked
``weight``) and imports nothing from the pipeline package, whose layers call it.
``LadaBertForSequenceClassification.set_backend("triton")`` calls :func:`prepare` on every compressed
layer (block maps and BSR weights are built once, here, not per call) and wraps each FFN-in layer with
:class:`FusedIntermediate` so that GELU runs in the kernel's epilogue. Without CUDA (and without
``TRITON_INTERPRET=1``, the CPU interpreter used by the tests) the layers fall back to the torch
references.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ladabert.kernels import block_sparse_linear as bsl
from ladabert.kernels import lowrank_linear as lrl


def triton_usable(device: torch.device | None = None) -> bool:
    """Triton kernels can run: triton is installed and there is CUDA (or the CPU interpreter is on)."""
    if lrl.triton is None:
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    return torch.cuda.is_available() and (device is None or device.type == "cuda")


def _factors(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    return layer.V * layer.V_mask, layer.U * layer.U_mask


def prepare(layer: nn.Module, block: int | None = None) -> None:
    """Build the kernel metadata of ``layer`` once: block maps of factors, BSR of a block-pruned weight,
    semi-structured 2:4 weights where the GPU supports them."""
    state: dict[str, Any] = {"block": block}
    with torch.no_grad():
        if hasattr(layer, "U"):
            if block:
                v, u = _factors(layer)
                state["vmap"], state["umap"] = lrl.block_map(v, block), lrl.block_map(u, block)
        elif hasattr(layer, "weight_mask"):
            w = layer.weight * layer.weight_mask
            if block and w.shape[0] % block == 0 and w.shape[1] % block == 0:
                state["bsr"] = bsl.to_bsr(w, block)
            elif _semi_structured_ok(w):
                state["semi"] = torch.sparse.to_sparse_semi_structured(w)
    layer._kernel = state


def _semi_structured_ok(w: torch.Tensor) -> bool:
    """2:4 sparse tensor cores: CUDA sm80+, fp16/bf16, and a weight that really is 2:4 along its rows."""
    if not (w.is_cuda and w.dtype in (torch.float16, torch.bfloat16)):
        return False
    if torch.cuda.get_device_capability(w.device) < (8, 0) or w.shape[1] % 4:
        return False
    return bool(((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


def factorized_forward(layer: nn.Module, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
    """Forward of a ``FactorizedLinear`` with the fused kernel (torch reference where it cannot run)."""
    state = getattr(layer, "_kernel", None) or {}
    if triton_usable(x.device) and layer.rank <= lrl.MAX_RANK and x.dtype == layer.U.dtype:
        return lrl.fused_lowrank_linear(
            x,
            layer.V,
            layer.U,
            layer.bias,
            gelu=gelu,
            vmap=state.get("vmap"),
            umap=state.get("umap"),
            block=state.get("block") or 16,
        )
    return lrl.torch_lowrank_linear(x, layer.V, layer.U, layer.bias, gelu)


def masked_forward(layer: nn.Module, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
    """Forward of a pruned dense ``MaskedLinear``: BSR kernel, 2:4 sparse GEMM, or dense ``F.linear``."""
    state = getattr(layer, "_kernel", None) or {}
    if "bsr" in state and triton_usable(x.device) and x.dtype == layer.weight.dtype:
        return bsl.block_sparse_linear(x, state["bsr"], layer.bias, gelu)
    weight = state.get("semi", layer.weight)
    y = F.linear(x, weight, layer.bias)
    return F.gelu(y) if gelu else y


class FusedIntermediate(nn.Module):
    """``BertIntermediate`` whose GELU runs in the kernel epilogue of its (compressed) dense layer."""

    def __init__(self, intermediate: nn.Module):
        super().__init__()
        self.inner = intermediate
        self.dense = intermediate.dense
        act = getattr(intermediate, "intermediate_act_fn", None)
        self.fuse_gelu = type(act).__name__ == "GELUActivation" and getattr(act, "act", None) is not None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.fuse_gelu and getattr(self.dense, "backend", "torch") == "triton":
            if hasattr(self.dense, "U"):
                return factorized_forward(self.dense, hidden_states, gelu=True)
            if hasattr(self.dense, "weight_mask"):
                return masked_forward(self.dense, hidden_states, gelu=True)
        return self.inner(hidden_states)
