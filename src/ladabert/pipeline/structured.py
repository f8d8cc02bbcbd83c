"""Structured pruning: whole layers, attention heads and FFN neurons, removed before the hybrid compression.

LadaBERT's hybrid compression (truncated SVD, then weight pruning) keeps the teacher's shape: every layer
still runs all its attention heads over the full sequence and an FFN as wide as the teacher's. On CPU those
parts dominate a factorized student's latency (the attention of a 10x BERT-base-shaped student costs what
BERT-base's does), so ``CompressConfig.keep_heads`` / ``keep_ffn`` remove whole heads and neurons first,
with the least important ones going, and the hybrid allocation then spends the rest of the budget on the
smaller matrices. Both default to 1 (the paper's recipe: nothing removed).

Importance of a unit is the expected squared norm of its contribution to the layer's output:

* head ``h`` of a layer: ``sum_{d in h} E[c_d^2] * ||W_o[:, d]||^2``, with ``c`` the attention context
  (the input of ``attention.output.dense``);
* FFN neuron ``j``: ``E[a_j^2] * ||W_out[:, j]||^2``, with ``a`` the activation after GELU (the input of
  ``output.dense``).

With calibration statistics (data-aware compression, the default) ``E[x^2]`` is read from them; without,
it is estimated from the weights alone as the squared norm of the row that produces the unit
(``||W_v[d, :]||^2``, ``||W_in[j, :]||^2``), i.e. for inputs of unit variance.

Dropped layers leave the encoder's layer list (``config.num_hidden_layers`` shrinks, so ``from_pretrained``
rebuilds the shorter encoder); which layers stay is chosen by :func:`ladabert.pipeline.budget.layer_order`
when data is at hand, evenly spaced otherwise (:func:`default_layers`).

Removed heads go through Hugging Face's own ``prune_heads`` (recorded in ``config.pruned_heads``, so
``from_pretrained`` rebuilds the shapes); the FFN widths are recorded in the ``ladabert`` layer specs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ladabert.errors import LadaBertError

FFN_MULTIPLE = 16  # kept FFN widths are multiples of this (GEMM-friendly), when the FFN is at least that wide


def kept_count(total: int, share: float, multiple: int = 1) -> int:
    """Units kept out of ``total`` for a kept ``share`` (at least one; a multiple of ``multiple`` when
    ``total`` allows it)."""
    if not 0 < share <= 1:
        raise LadaBertError(f"kept share must be in (0, 1], got {share}")
    n = max(1, round(share * total))
    if multiple > 1 and total >= multiple:
        n = min(total, max(multiple, round(n / multiple) * multiple))
    return n


def _layers(model: nn.Module) -> Any:
    base = getattr(model, model.base_model_prefix, model)
    try:
        return base.encoder.layer
    except AttributeError as e:
        raise LadaBertError("structured pruning needs a BERT-family model (encoder.layer)") from e


def default_layers(total: int, n: int) -> list[int]:
    """``n`` of ``total`` layer indices, evenly spaced and ending with the last layer."""
    if not 1 <= n <= total:
        raise LadaBertError(f"layers kept must be in [1, {total}], got {n}")
    return sorted({round((i + 1) * total / n) - 1 for i in range(n)})


def drop_layers(model: nn.Module, keep: list[int], stats: dict[str, torch.Tensor] | None = None) -> None:
    """Keep only the encoder layers ``keep`` (teacher indices, ascending) of ``model``, in place.

    ``config.num_hidden_layers`` and ``config.pruned_heads`` follow, and ``stats`` keys are renamed to the
    new layer numbers (those of dropped layers removed), so that later steps address the kept layers."""
    layers = _layers(model)
    keep = sorted(keep)
    if not keep or len(set(keep)) != len(keep) or keep[0] < 0 or keep[-1] >= len(layers):
        raise LadaBertError(f"layers to keep must be distinct indices in [0, {len(layers) - 1}], got {keep}")
    if len(keep) == len(layers):
        return
    base = getattr(model, model.base_model_prefix, model)
    base.encoder.layer = nn.ModuleList([layers[i] for i in keep])
    for new, layer in enumerate(base.encoder.layer):
        for mod in layer.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = new
    model.config.num_hidden_layers = len(keep)
    pruned = {int(k): v for k, v in (model.config.pruned_heads or {}).items()}
    model.config.pruned_heads = {new: pruned[old] for new, old in enumerate(keep) if old in pruned}
    if stats:
        prefix = f"{model.base_model_prefix}.encoder.layer."
        renamed = {}
        for name, value in stats.items():
            if not name.startswith(prefix):
                renamed[name] = value
                continue
            old, rest = name[len(prefix) :].split(".", 1)
            if int(old) in keep:
                renamed[f"{prefix}{keep.index(int(old))}.{rest}"] = value
        stats.clear()
        stats.update(renamed)


def _sq_input(stats: dict[str, torch.Tensor] | None, name: str) -> torch.Tensor | None:
    if not stats or name not in stats:
        return None
    s = stats[name]
    return (s.diagonal() if s.dim() == 2 else s).float().clamp_min(0)


def head_scores(model: nn.Module, stats: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Importance of every attention head, per layer (see the module docstring)."""
    prefix = model.base_model_prefix
    out = []
    for i, layer in enumerate(_layers(model)):
        att = layer.attention
        hd = att.self.attention_head_size
        w_o = att.output.dense.weight.detach().float()
        ex2 = _sq_input(stats, f"{prefix}.encoder.layer.{i}.attention.output.dense")
        if ex2 is None:
            ex2 = att.self.value.weight.detach().float().pow(2).sum(1)
        per_dim = ex2 * w_o.pow(2).sum(0)
        out.append(per_dim.view(-1, hd).sum(1))
    return out


def neuron_scores(model: nn.Module, stats: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Importance of every FFN neuron, per layer (see the module docstring)."""
    prefix = model.base_model_prefix
    out = []
    for i, layer in enumerate(_layers(model)):
        w_out = layer.output.dense.weight.detach().float()
        ex2 = _sq_input(stats, f"{prefix}.encoder.layer.{i}.output.dense")
        if ex2 is None:
            ex2 = layer.intermediate.dense.weight.detach().float().pow(2).sum(1)
        out.append(ex2 * w_out.pow(2).sum(0))
    return out


def _slice_linear(
    lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None
) -> nn.Linear:
    w = lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if rows is not None:
        w = w[rows]
        b = b[rows] if b is not None else None
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def _slice_stat(stat: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return stat[keep][:, keep].contiguous() if stat.dim() == 2 else stat[keep].contiguous()


@torch.no_grad()
def prune_structure(
    model: nn.Module,
    keep_heads: float = 1.0,
    keep_ffn: float = 1.0,
    stats: dict[str, torch.Tensor] | None = None,
    keep_layers: list[int] | None = None,
) -> dict[str, Any]:
    """Keep the layers ``keep_layers`` (default: all), then remove the least important heads and FFN
    neurons of every kept layer of the dense ``model``, in place.

    ``stats`` (calibration statistics keyed by module name) are used for the scores and are sliced in place
    to the kept units, so that the hybrid compression that follows stays data-aware. Returns a summary:
    heads and FFN width kept per layer.
    """
    summary: dict[str, Any] = {}
    if keep_layers is not None:
        drop_layers(model, keep_layers, stats)
        summary["layers"] = sorted(keep_layers)
    if keep_heads == 1 and keep_ffn == 1:
        return summary
    layers = _layers(model)
    prefix = model.base_model_prefix
    for layer in layers:
        if not isinstance(layer.intermediate.dense, nn.Linear) or not isinstance(
            layer.attention.output.dense, nn.Linear
        ):
            raise LadaBertError("structured pruning runs on the dense teacher, before hybrid compression")
    summary.update({"heads": [], "ffn": []})
    if keep_heads < 1:
        to_prune = {}
        for i, (layer, s) in enumerate(zip(layers, head_scores(model, stats))):
            n = kept_count(len(s), keep_heads)
            kept = torch.topk(s, n).indices.sort().values
            hd = layer.attention.self.attention_head_size
            # ``prune_heads`` counts heads as the config does (removed ones included); this layer may have
            # lost some already, so map back to the original numbering.
            gone = set(layer.attention.pruned_heads)
            original = [h for h in range(len(s) + len(gone)) if h not in gone]
            to_prune[i] = [original[h] for h in range(len(s)) if h not in set(kept.tolist())]
            name = f"{prefix}.encoder.layer.{i}.attention.output.dense"
            if stats and name in stats:
                dims = (kept[:, None] * hd + torch.arange(hd)[None, :]).reshape(-1)
                stats[name] = _slice_stat(stats[name], dims)
        model.prune_heads(to_prune)
        summary["heads"] = [layer.attention.self.num_attention_heads for layer in layers]
    if keep_ffn < 1:
        for i, (layer, s) in enumerate(zip(layers, neuron_scores(model, stats))):
            n = kept_count(len(s), keep_ffn, FFN_MULTIPLE)
            kept = torch.topk(s, n).indices.sort().values
            layer.intermediate.dense = _slice_linear(layer.intermediate.dense, rows=kept)
            layer.output.dense = _slice_linear(layer.output.dense, cols=kept)
            name = f"{prefix}.encoder.layer.{i}.output.dense"
            if stats and name in stats:
                stats[name] = _slice_stat(stats[name], kept)
        summary["ffn"] = [layer.intermediate.dense.out_features for layer in layers]
    return summary
