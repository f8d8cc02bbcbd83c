"""``LadaBertConfig``: the config class of a student directory (``model_type: ladabert``).

It is a ``BertConfig`` plus the ``ladabert`` section (per compressed matrix: kind, shape, rank, sparsity)
that :class:`~ladabert.pipeline.student.LadaBertForSequenceClassification` reads to rebuild the compressed
layers before loading the weights. It imports transformers' configuration code only, no torch.
"""

from __future__ import annotations

from typing import Any

from transformers.models.bert.configuration_bert import BertConfig

MODEL_TYPE = "ladabert"


class LadaBertConfig(BertConfig):
    """A BERT config whose ``ladabert`` section describes the student's compressed layers."""

    model_type = MODEL_TYPE

    @classmethod
    def from_bert(cls, config: Any) -> LadaBertConfig:
        """The same settings (and extra attributes such as ``ladabert``) under the student's model type."""
        d = config.to_dict()
        d.pop("model_type", None)
        d.pop("transformers_version", None)
        out = cls(**d)
        # ``to_dict`` leaves out the attention implementation; a student built for attention distillation
        # keeps the eager one it was asked for (SDPA modules warn and fall back when asked for the maps).
        out._attn_implementation = getattr(config, "_attn_implementation", None)
        return out


# Attributes that belong to the student's own format, not to a stock BERT config.
_STUDENT_KEYS = ("model_type", "transformers_version", "ladabert", "architectures", "auto_map")


def stock_bert_config(config: Any, **changes: Any) -> BertConfig:
    """A plain ``BertConfig`` (``model_type: bert``) with ``config``'s settings and labels, without the
    ``ladabert`` section: what a densified student or an ONNX bundle describes itself with, so that stock
    transformers, optimum and OpenVINO read it."""
    d = {k: v for k, v in config.to_dict().items() if k not in _STUDENT_KEYS}
    d.update(changes)
    return BertConfig(**d, architectures=["BertForSequenceClassification"])
