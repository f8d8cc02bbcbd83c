"""ONNX export of BERT classifiers (teachers and LadaBERT students) with dynamic batch and sequence axes.

Students whose Q/K/V projections are factorized are exported with attention already fused: the three
first factors run as one concatenated MatMul, the second factors follow, and the attention itself is one
``com.microsoft::MultiHeadAttention`` node per layer with the Q/K/V biases and the key padding mask as
its inputs. ONNX Runtime's own ``FusionAttention`` cannot find attention in a factorized graph (it needs
the Q/K/V MatMuls to read the LayerNorm output directly), so the fused node is emitted at export time,
the way optimum-onnx patches models before ``torch.onnx.export``. Dense teachers are exported plainly and
fused by ONNX Runtime's transformer optimizer (see :mod:`ladabert.export.rewrites`).

The legacy TorchScript exporter is used (``dynamo=False``): with the dynamo exporter of torch 2.13 the
transformer optimizer finds no attention even in dense BERT-base.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ladabert.pipeline.layers import FactorizedLinear

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17


class _MultiHeadAttention(torch.autograd.Function):
    """Scaled dot-product attention over (B, S, H) projections, exported as MultiHeadAttention."""

    @staticmethod
    def forward(ctx, q, k, v, bias, key_padding_mask, num_heads: int):  # noqa: ANN001
        b, s, h = q.shape
        hd = h // num_heads

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, s, num_heads, hd).transpose(1, 2)

        qb, kb, vb = bias.split(h)
        mask = key_padding_mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(heads(q + qb), heads(k + kb), heads(v + vb), attn_mask=mask)
        return out.transpose(1, 2).reshape(b, s, h)

    @staticmethod
    def symbolic(g, q, k, v, bias, key_padding_mask, num_heads: int):  # noqa: ANN001
        out = g.op(
            "com.microsoft::MultiHeadAttention", q, k, v, bias, key_padding_mask, num_heads_i=num_heads
        )
        out.setType(q.type())  # same shape and dtype as the query projection
        return out


def _weight_and_bias(layer: nn.Module) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Factors ``[V, U]`` (or ``[W]``) of a projection, with its bias (zeros when it has none)."""
    if isinstance(layer, FactorizedLinear):
        factors = [layer.V * layer.V_mask, layer.U * layer.U_mask]
        out = layer.out_features
    else:
        w = layer.weight * layer.weight_mask if hasattr(layer, "weight_mask") else layer.weight
        factors, out = [w], layer.out_features
    bias = layer.bias if layer.bias is not None else torch.zeros(out)
    return factors, bias


class _MaskHolder:
    mask: torch.Tensor | None = None


class _FusedSelfAttention(nn.Module):
    """Stands in for ``BertSelfAttention`` during export: projections, then one fused attention node."""

    def __init__(self, orig: nn.Module, holder: _MaskHolder):
        super().__init__()
        self.num_heads = orig.num_attention_heads
        self.holder = holder
        (q, bq), (k, bk), (v, bv) = (_weight_and_bias(getattr(orig, n)) for n in ("query", "key", "value"))
        self.bq, self.bk, self.bv = bq, bk, bv
        # Buffers, not plain attributes, so that the exporter writes them as initializers that the
        # graph rewrites can see (plain tensors would be traced as Constant nodes).
        if all(len(f) == 2 for f in (q, k, v)):
            # One MatMul for the three first factors, then the second factors per projection.
            self.register_buffer("first", torch.cat([q[0], k[0], v[0]], dim=0).detach())
            self.splits = [q[0].shape[0], k[0].shape[0], v[0].shape[0]]
            for name, f in zip("qkv", (q, k, v)):
                self.register_buffer(f"second_{name}", f[1].detach())
        else:
            self.first, self.splits = None, None
            for name, f in zip("qkv", (q, k, v)):
                for i, t in enumerate(f):
                    self.register_buffer(f"w_{name}{i}", t.detach())
            self.depth = [len(f) for f in (q, k, v)]
        for name, b in zip("qkv", (self.bq, self.bk, self.bv)):
            delattr(self, f"b{name}")
            self.register_buffer(f"b{name}", b.detach())

    def _project(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.first is not None:
            low = F.linear(x, self.first).split(self.splits, dim=-1)
            return [F.linear(part, getattr(self, f"second_{n}")) for part, n in zip(low, "qkv")]
        outs = []
        for name, depth in zip("qkv", self.depth):
            y = x
            for i in range(depth):
                y = F.linear(y, getattr(self, f"w_{name}{i}"))
            outs.append(y)
        return outs

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        q, k, v = self._project(hidden_states)
        bias = torch.cat([self.bq, self.bk, self.bv])
        mask = self.holder.mask.to(torch.int32)
        return _MultiHeadAttention.apply(q, k, v, bias, mask, self.num_heads), None


class _ExportWrapper(nn.Module):
    """Positional (input_ids, attention_mask, token_type_ids) -> logits, recording the mask for attention."""

    def __init__(self, model: nn.Module, holder: _MaskHolder):
        super().__init__()
        self.model, self.holder = model, holder

    def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001
        self.holder.mask = attention_mask
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).logits


def has_factorized_attention(model: nn.Module) -> bool:
    return any(
        isinstance(m, FactorizedLinear)
        for n, m in model.named_modules()
        if n.endswith(("query", "key", "value"))
    )


@contextlib.contextmanager
def export_patches(model: nn.Module, fused_attention: bool) -> Iterator[nn.Module]:
    """Swap Triton-backed layers to torch and, for ``fused_attention``, self-attention to the fused form.

    Everything is restored on exit. Yields the module to trace.
    """
    holder = _MaskHolder()
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    backends = [(m, m.backend) for m in model.modules() if hasattr(m, "backend")]
    try:
        for m, _ in backends:
            m.backend = "torch"
        if fused_attention:
            for name, mod in model.named_modules():
                if name.endswith("attention") and hasattr(mod, "self"):
                    swapped.append((mod, "self", mod.self))
            for parent, attr, orig in swapped:
                setattr(parent, attr, _FusedSelfAttention(orig, holder))
        # The wrapper must share the model's mode: the exporter restores the wrapper's mode recursively.
        yield _ExportWrapper(model, holder).train(model.training)
    finally:
        for parent, attr, orig in swapped:
            setattr(parent, attr, orig)
        for m, b in backends:
            m.backend = b


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    fused_attention: bool | None = None,
    opset: int = OPSET,
    sample_length: int = 16,
) -> dict[str, Any]:
    """Export ``model`` (a BERT sequence classifier) to ONNX at ``path``.

    Args:
        model: teacher or student; exported in eval mode and float32.
        path: the ``.onnx`` file to write.
        fused_attention: emit MultiHeadAttention nodes (default: when Q/K/V are factorized).
        opset: ONNX opset of the default domain.
        sample_length: sequence length of the tracing example (axes stay dynamic).

    Returns:
        ``{"fused_attention": bool, "opset": int}``.
    """
    model = model.eval().float()
    if fused_attention is None:
        fused_attention = has_factorized_attention(model)
    vocab = model.config.vocab_size
    ids = torch.randint(1, vocab, (2, sample_length))
    mask = torch.ones_like(ids)
    mask[1, sample_length // 2 :] = 0
    example = (ids, mask, torch.zeros_like(ids))
    axes = {n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES} | {"logits": {0: "batch"}}
    with export_patches(model, fused_attention) as wrapped, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            example,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
            custom_opsets={"com.microsoft": 1} if fused_attention else None,
        )
    return {"fused_attention": fused_attention, "opset": opset}
