"""The student model: a BERT classifier whose compressed matrices are factorized and/or masked.

A student directory is a standard Hugging Face model directory. ``config.json`` is a BERT config of
``model_type: ladabert`` (:class:`~ladabert.student_config.LadaBertConfig`) with a ``ladabert`` section
that records, per compressed matrix, its kind, rank and sparsity, so that
:class:`LadaBertForSequenceClassification` can rebuild the exact module shapes before loading
``model.safetensors`` (factors ``U``/``V`` and their boolean masks)::

    from ladabert.pipeline.student import LadaBertForSequenceClassification
    model = LadaBertForSequenceClassification.from_pretrained("runs/student-sst2-5x")

With ``ladabert`` imported, transformers' Auto classes and ``pipeline`` load it too (:mod:`ladabert.hf`);
:func:`densify` turns it into a stock ``BertForSequenceClassification`` for tools that need one.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import torch
from torch import nn
from transformers import BertForSequenceClassification

from ladabert import hf as _hf
from ladabert.errors import LadaBertError
from ladabert.kernels.modules import FusedIntermediate, prepare, triton_usable
from ladabert.pipeline.layers import (
    FACTORIZED_LAYERS,
    FactorizedEmbedding,
    FactorizedLinear,
    MaskedEmbedding,
    MaskedLinear,
)
from ladabert.student_config import LadaBertConfig


def _build_layer(name: str, spec: dict[str, Any], old: nn.Module) -> nn.Module:
    rows, cols = spec["shape"]
    emb = name.endswith("word_embeddings")
    pad = getattr(old, "padding_idx", None)
    if spec["kind"] == "factorized":
        if emb:
            return FactorizedEmbedding(rows, cols, spec["rank"], pad)
        return FactorizedLinear(cols, rows, spec["rank"], bias=old.bias is not None)
    if spec["kind"] == "dense":
        return (
            MaskedEmbedding(rows, cols, pad) if emb else MaskedLinear(cols, rows, bias=old.bias is not None)
        )
    raise LadaBertError(
        f"config.json: unknown layer kind {spec['kind']!r} for {name}; re-run ladabert compress"
    )


class LadaBertForSequenceClassification(BertForSequenceClassification):
    """``BertForSequenceClassification`` with the compressed layers named in ``config.ladabert['layers']``."""

    config_class = LadaBertConfig

    def __init__(self, config: Any):
        if not isinstance(config, LadaBertConfig):
            config = LadaBertConfig.from_bert(config)
        super().__init__(config)
        section = getattr(config, "ladabert", None) or {}
        for name, spec in (section.get("layers") or {}).items():
            self.set_submodule(name, _build_layer(name, spec, self.get_submodule(name)))

    def set_backend(self, backend: str, block: int | None = None) -> LadaBertForSequenceClassification:
        """Run compressed layers with ``torch`` or ``triton`` kernels (see :mod:`ladabert.kernels.modules`).

        ``block`` is the tile size of a ``block``-pattern student (read from the config when omitted).
        """
        section = getattr(self.config, "ladabert", None) or {}
        if block is None and section.get("pattern") == "block":
            block = section.get("block_size", 16)
        return set_backend(self, backend, block)


def set_backend(model: nn.Module, backend: str, block: int | None = None) -> nn.Module:
    """Switch every compressed layer of ``model`` to ``backend`` (``torch`` or ``triton``), in place."""
    if backend not in ("torch", "triton"):
        raise ValueError(f"backend must be 'torch' or 'triton', got {backend!r}")
    if backend == "triton" and not triton_usable():
        warnings.warn(
            "backend='triton' needs triton and CUDA (or TRITON_INTERPRET=1); using torch", stacklevel=2
        )
        backend = "torch"
    for mod in model.modules():
        if isinstance(mod, FactorizedLinear | MaskedLinear):
            mod.backend = backend
            if backend == "triton":
                prepare(mod, block)
    for name, mod in list(model.named_modules()):
        if name.endswith(".intermediate"):
            if backend == "triton" and not isinstance(mod, FusedIntermediate):
                model.set_submodule(name, FusedIntermediate(mod))
            elif backend == "torch" and isinstance(mod, FusedIntermediate):
                model.set_submodule(name, mod.inner)
    return model


def layer_specs(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The ``layers`` entry of the ``ladabert`` config section for every compressed layer of ``model``."""
    specs = {}
    for name, mod in model.named_modules():
        if isinstance(mod, FactorizedLinear):
            shape, kind = [mod.out_features, mod.in_features], "factorized"
        elif isinstance(mod, FactorizedEmbedding):
            shape, kind = [mod.num_embeddings, mod.embedding_dim], "factorized"
        elif isinstance(mod, MaskedLinear):
            shape, kind = [mod.out_features, mod.in_features], "dense"
        elif isinstance(mod, MaskedEmbedding):
            shape, kind = [mod.num_embeddings, mod.embedding_dim], "dense"
        else:
            continue
        size = shape[0] * shape[1] if kind == "dense" else mod.rank * (shape[0] + shape[1])
        nz = mod.nonzero_params()
        specs[name] = {
            "kind": kind,
            "shape": shape,
            "rank": getattr(mod, "rank", None),
            "nonzero": nz,
            "sparsity": round(1 - nz / size, 6),
        }
    return specs


@torch.no_grad()
def shrink_factors(model: nn.Module) -> nn.Module:
    """Drop rank components that masks zeroed entirely (rank truncation, rank pruning), in place."""
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, FACTORIZED_LAYERS):
            continue
        active = (mod.U_mask.any(0) & mod.V_mask.any(1)).nonzero().flatten()
        if len(active) == mod.rank:
            continue
        if len(active) == 0:
            active = torch.zeros(1, dtype=torch.long, device=mod.U.device)  # keep one (all-zero) component
        u, v = mod.U[:, active], mod.V[active]
        if isinstance(mod, FactorizedLinear):
            new = FactorizedLinear.from_factors(u, v, mod.bias)
        else:
            new = FactorizedEmbedding.from_factors(u, v, mod.padding_idx)
        new.U_mask.copy_(mod.U_mask[:, active])
        new.V_mask.copy_(mod.V_mask[active])
        new.backend = getattr(mod, "backend", "torch")
        new.apply_masks()
        model.set_submodule(name, new.to(mod.U.device))
    return model


@torch.no_grad()
def densify(student: nn.Module) -> BertForSequenceClassification:
    """A stock ``BertForSequenceClassification`` computing what ``student`` computes: factors multiplied
    back, masks applied, removed heads and FFN neurons kept out (``pruned_heads``, a narrower FFN).

    Raises:
        LadaBertError: the layers of the student differ in FFN width (a stock BERT has one width).
    """
    from ladabert.student_config import stock_bert_config

    widths = {m.intermediate.dense.out_features for m in student.bert.encoder.layer}
    if len(widths) != 1:
        raise LadaBertError(
            f"the student's layers have FFN widths {sorted(widths)}; a stock BERT has one, so it cannot be "
            "densified"
        )
    config = stock_bert_config(student.config, intermediate_size=widths.pop())
    dense = BertForSequenceClassification(config).eval()
    compressed = {
        name: mod
        for name, mod in student.named_modules()
        if isinstance(mod, (*FACTORIZED_LAYERS, MaskedLinear, MaskedEmbedding))
    }
    state = {k: v for k, v in student.state_dict().items() if k.rsplit(".", 1)[0] not in compressed}
    for name, mod in compressed.items():
        if isinstance(mod, FACTORIZED_LAYERS):  # the product in float64, rounded once
            u, v = (mod.U * mod.U_mask).double(), (mod.V * mod.V_mask).double()
            state[f"{name}.weight"] = (u @ v).to(mod.U.dtype)
        else:
            state[f"{name}.weight"] = mod.dense_weight()
        if getattr(mod, "bias", None) is not None:
            state[f"{name}.bias"] = mod.bias
    missing, unexpected = dense.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise LadaBertError(
            f"densify: weights do not line up (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return dense


def densify_dir(
    model_dir: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False, atol: float = 1e-5
) -> dict[str, Any]:
    """Write the student in ``model_dir`` as a stock ``BertForSequenceClassification`` directory at ``out``
    (with its tokenizer), after checking that both give the same logits to ``atol`` times the largest
    logit (at least 1).

    Raises:
        LadaBertError: not a student directory, or the dense model's logits differ by more than ``atol``.
    """

    from ladabert.pipeline.teacher import load_bert_config, load_tokenizer_from, resolve_model
    from ladabert.utils import atomic_output_dir, check_not_input, write_json_atomic

    path = resolve_model(str(model_dir))
    check_not_input(out, [path])
    if not getattr(load_bert_config(path), "ladabert", None):
        raise LadaBertError(
            f"{path} is not a LadaBERT student (no ladabert section); it is a stock model already"
        )
    student = LadaBertForSequenceClassification.from_pretrained(path).eval()
    dense = densify(student)
    gen = torch.Generator().manual_seed(0)
    length = min(64, student.config.max_position_embeddings)
    ids = torch.randint(0, student.config.vocab_size, (8, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[4:, length // 2 :] = 0  # padded rows too
    with torch.inference_mode():
        ref = student(input_ids=ids, attention_mask=mask).logits
        diff = float((dense(input_ids=ids, attention_mask=mask).logits - ref).abs().max())
    # fp32 sums in another order differ in the last bits: the bound scales with the logits' size.
    bound = atol * max(1.0, float(ref.abs().max()))
    if not diff <= bound:
        raise LadaBertError(
            f"densified model differs from the student by {diff:.3g} > {bound:.3g}; nothing was written"
        )
    with atomic_output_dir(out, overwrite=overwrite, inputs=[path]) as tmp:
        dense.save_pretrained(str(tmp))
        load_tokenizer_from(path).save_pretrained(str(tmp))
        info = {
            "source": str(path),
            "max_abs_diff": diff,
            "atol": atol,
            "bound": bound,
            "check": "8 random sequences of 64 tokens",
        }
        write_json_atomic(tmp / "densify.json", info)
    return info


def load_classifier(path: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """Load a teacher (any BERT classifier) or a LadaBERT student from a directory or hub id.

    Weights are read from safetensors where the directory has them; ``.bin`` weights only through
    transformers' loader, which reads them with ``torch.load(weights_only=True)`` (no pickled code runs).

    Raises:
        LadaBertError: the files are damaged or do not match ``config.json`` (one line, with the fix).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(path)
        cls = (
            LadaBertForSequenceClassification
            if getattr(config, "ladabert", None)
            else AutoModelForSequenceClassification
        )
        return cls.from_pretrained(path, **kwargs)
    except LadaBertError:
        raise
    except Exception as exc:  # safetensors, torch and transformers each raise their own types here
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), exc.__class__.__name__)
        raise LadaBertError(
            f"cannot load the model in {path} ({exc.__class__.__name__}: {first[:200]}); its files are damaged or "
            "do not match its config.json: write it again with ladabert finetune / compress"
        ) from None


# The Auto classes may have loaded while this module was loading; register the student with them now.
_hf.register_model(sys.modules[__name__])
