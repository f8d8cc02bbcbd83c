"""Calibration statistics for data-aware compression (``CompressConfig.data_aware``).

For every encoder Linear that is compressed: the covariance ``C = E[x x^T]`` of its input over the real
(non-padding) tokens of a few thousand training examples, read with forward hooks on the teacher. For the
word-embedding table: how often each token occurs in the training data. :func:`ladabert.pipeline.hybrid.install`
and ``recompress`` use them to truncate and prune for the layer's outputs on that data instead of for the
weights alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ladabert.errors import LadaBertError


@torch.no_grad()
def activation_stats(
    model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Input covariance (float32, ``in x in``) of each Linear in ``names`` over the unpadded tokens of
    ``batches`` (dicts of model inputs with an ``attention_mask``). Names that are not Linear layers are
    skipped (the embedding table gets :func:`token_frequency` instead). Layers that read the same input
    (query, key, value) share one tensor.
    """
    sums: dict[str, torch.Tensor] = {}
    count = {"tokens": 0}
    state: dict[str, torch.Tensor] = {}
    # id of an input tensor -> (the first layer that read it, the tensor): the reference keeps the tensor
    # alive for the whole forward, so that its id is not reused by another tensor
    seen: dict[int, tuple[str, torch.Tensor]] = {}
    alias: dict[str, str] = {}
    hooks = []

    def hook(name: str):  # noqa: ANN202
        def fn(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:  # noqa: ARG001
            x = args[0]
            first = seen.setdefault(id(x), (name, x))[0]
            if first != name:
                alias[name] = first
                return
            rows = x[state["mask"]].double()
            sums[name] = sums.get(name, 0) + rows.T @ rows

        return fn

    was_training = model.training
    model.eval()
    try:
        for name in names:
            mod = model.get_submodule(name)
            if isinstance(mod, nn.Linear):
                hooks.append(mod.register_forward_hook(hook(name)))
        if not hooks:
            raise LadaBertError("found no Linear layers to calibrate among the names given")
        device = next(model.parameters()).device
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            if "attention_mask" not in batch:
                raise LadaBertError("calibration batches need an attention_mask")
            state["mask"] = batch["attention_mask"].bool()
            count["tokens"] += int(state["mask"].sum())
            seen.clear()
            model(**batch)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if not count["tokens"]:
        raise LadaBertError("calibration saw no tokens; pass a non-empty training set")
    out = {n: (s / count["tokens"]).float().cpu() for n, s in sums.items()}
    for name, first in alias.items():
        out[name] = out[first]
    return out


def token_frequency(
    input_ids: Iterable[Sequence[int]], vocab_size: int, always: Sequence[int] = ()
) -> torch.Tensor:
    """Share of each token id among all tokens of ``input_ids`` (a list of token-id lists), float32.

    Every id in ``always`` (special tokens such as [MASK], which training may insert though the data never
    holds them) counts as often as the most frequent token.
    """
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for ids in input_ids:
        t = torch.as_tensor(list(ids), dtype=torch.long)
        if t.numel() and (int(t.max()) >= vocab_size or int(t.min()) < 0):
            raise LadaBertError(f"token id out of range for a vocabulary of {vocab_size}")
        counts += torch.bincount(t, minlength=vocab_size).double()
    if counts.sum() == 0:
        raise LadaBertError("token frequency over an empty training set")
    if len(always):
        idx = torch.as_tensor(list(always), dtype=torch.long)
        counts[idx] = torch.maximum(counts[idx], counts.max())
    return (counts / counts.sum()).float()
