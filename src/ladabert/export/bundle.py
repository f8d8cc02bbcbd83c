"""``ladabert export``: a student (or any dense BERT teacher) becomes a validated ONNX bundle.

    ladabert export runs/student-sst2-10x --out runs/student-sst2-10x-onnx

Steps: export (fused attention for factorized students) -> shrink -> merge -> align -> fuse -> validate fp32
against PyTorch logit by logit -> int8 dynamic quantization judged by the task metric on the dev set
(fp16 for the CUDA provider on request). Everything is written into a temporary directory that is
renamed to ``--out`` only when every requested precision passed validation.

The bundle holds ``model.onnx`` (fp32), ``model_int8.onnx``, tokenizer files, ``config.json`` and
``ladabert.json`` (ratio, ranks, opset, rewrites, node counts per stage, validation numbers, versions).
It loads with ``optimum.onnxruntime.ORTModelForSequenceClassification.from_pretrained(DIR)`` and with
``ladabert predict DIR "text"``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ladabert.errors import LadaBertError
from ladabert.utils import atomic_output_dir, run_environment, write_json_atomic

PRECISIONS = ("fp32", "int8", "fp16")
FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx", "fp16": "model_fp16.onnx"}
# Dynamic int8 settings tried in order until one keeps the task metric; signed per-channel weights are
# accurate on VNNI CPUs, 7-bit (reduce_range) and unsigned weights avoid u8*s8 saturation elsewhere.
INT8_CANDIDATES = (
    {"per_channel": True, "reduce_range": False, "weight_type": "QInt8"},
    {"per_channel": True, "reduce_range": True, "weight_type": "QInt8"},
    {"per_channel": False, "reduce_range": False, "weight_type": "QUInt8"},
)


class ExportValidationError(LadaBertError):
    """The exported model does not reproduce the PyTorch model within tolerance; nothing was written."""


@dataclass
class ExportConfig:
    """Settings of ``ladabert export``."""

    precisions: tuple[str, ...] = ("fp32", "int8")
    merge: str = "break-even"  # break-even | all | none
    align: int = 32  # pad factor ranks to a multiple of this (1: off); see rewrites.align_factors
    fuse: bool = True
    skip_layer_norm: bool | None = None  # None: dense models only (see rewrites.fuse)
    opset: int = 17
    max_length: int = 128
    task: str | None = None  # None: the model's fine-tuning task
    validate_samples: int = 256  # dev examples compared logit by logit in fp32
    max_eval_samples: int | None = None  # dev examples for the metric checks (None: all)
    fp32_atol: float = 1e-3
    int8_max_drop: float = 0.01  # largest allowed drop of the task metric (0.01 = 1 point of accuracy)
    fp16_atol: float = 0.05
    rewrites: list[str] = field(default_factory=lambda: ["shrink", "merge", "align", "fuse"])

    def __post_init__(self) -> None:
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or "fp32" not in self.precisions:
            raise ValueError(
                f"precisions must include fp32 and come from {PRECISIONS}, got {list(self.precisions)}"
            )
        if self.merge not in ("break-even", "all", "none"):
            raise ValueError(f"merge must be 'break-even', 'all' or 'none', got {self.merge!r}")
        if self.align < 1:
            raise ValueError(f"align must be >= 1 (1 turns it off), got {self.align}")
        for name in ("fp32_atol", "int8_max_drop", "fp16_atol"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.validate_samples < 1:
            raise ValueError(f"validate_samples must be >= 1, got {self.validate_samples}")


def _torch_logits(model: Any, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for feeds in batches:
            out.append(model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.float().numpy())
    return np.concatenate(out)


def _ort_logits(
    model_proto: Any, batches: list[dict[str, np.ndarray]], provider: str = "CPUExecutionProvider"
):
    import onnxruntime as ort

    sess = ort.InferenceSession(model_proto.SerializeToString(), providers=[provider])
    return np.concatenate([sess.run(None, feeds)[0] for feeds in batches])


def _batches(
    tokenizer: Any, texts: list[tuple[str, ...]], batch_size: int = 64
) -> list[dict[str, np.ndarray]]:
    from ladabert.export.runner import encode

    out = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i : i + batch_size]
        firsts = [t[0] for t in chunk]
        seconds = [t[1] for t in chunk] if len(chunk[0]) > 1 else None
        out.append(encode(tokenizer, firsts, seconds))
    return out


def export_bundle(
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    config: ExportConfig | None = None,
    data_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    rewrite_hook: Any = None,
) -> dict[str, Any]:
    """Export, rewrite, validate and write a bundle; returns the content of ``ladabert.json``.

    Args:
        model_dir: a student directory (``ladabert compress``) or a fine-tuned teacher.
        out: bundle directory (atomic: it appears only when validation passed).
        config: see :class:`ExportConfig`.
        data_dir: GLUE data location for the validation inputs.
        overwrite: replace an existing ``out``.
        rewrite_hook: optional ``ModelProto -> ModelProto`` applied after the rewrites (for testing
            that validation refuses a broken graph).

    Raises:
        ExportValidationError: a validation check failed; the message says which and by how much.
    """
    import onnx
    from transformers import AutoTokenizer

    from ladabert.export import rewrites as rw
    from ladabert.export.onnx_export import export_onnx
    from ladabert.export.runner import load_tokenizer
    from ladabert.pipeline.data import get_task, load_glue
    from ladabert.pipeline.student import load_classifier
    from ladabert.pipeline.teacher import load_bert_config, resolve_model

    cfg = config or ExportConfig()
    path = resolve_model(str(model_dir))
    mcfg = load_bert_config(path)
    task_name = cfg.task or getattr(mcfg, "finetuning_task", None)
    if not task_name:
        raise LadaBertError(
            f"{path} does not record its task; pass --task (the GLUE task used for validation)"
        )
    task = get_task(task_name)
    if mcfg.num_labels != task.num_labels:
        raise LadaBertError(
            f"{path} has {mcfg.num_labels} labels but {task.name} has {task.num_labels}; pass --task"
        )
    model = load_classifier(path).eval().float()
    hf_tok = AutoTokenizer.from_pretrained(path)
    dev = load_glue(task, "dev", data_dir, cfg.max_eval_samples)
    t_start = time.perf_counter()

    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        hf_tok.save_pretrained(str(tmp))
        model.config.save_pretrained(str(tmp))
        tokenizer = load_tokenizer(tmp, cfg.max_length)
        batches = _batches(tokenizer, dev.texts)
        check_batches = _batches(tokenizer, dev.texts[: cfg.validate_samples])

        info = export_onnx(model, tmp / "raw.onnx", opset=cfg.opset)
        graph = onnx.load(str(tmp / "raw.onnx"))
        (tmp / "raw.onnx").unlink()
        stages = {"export": rw.make_node_summary(graph)}
        for name in cfg.rewrites:
            if name == "shrink":
                graph = rw.shrink_factors(graph)
            elif name == "merge":
                graph = rw.merge_factors(graph, cfg.merge)
            elif name == "align":
                graph = rw.align_factors(graph, cfg.align)
            elif name == "fuse":
                if not cfg.fuse:
                    continue
                graph = rw.fuse(graph, *rw.attention_shape(mcfg), cfg.skip_layer_norm)
            else:
                raise LadaBertError(f"unknown rewrite {name!r}; choose from shrink, merge, align, fuse")
            stages[name] = rw.make_node_summary(graph)
        if rewrite_hook is not None:
            graph = rewrite_hook(graph)

        # fp32: structure, then logits against PyTorch on real inputs, then the task metric.
        try:
            onnx.checker.check_model(graph)
        except onnx.checker.ValidationError as exc:
            raise ExportValidationError(
                f"onnx.checker rejected the fp32 graph ({str(exc).splitlines()[0]}); nothing was written"
            ) from None
        ref = _torch_logits(model, check_batches)
        got = _ort_logits(graph, check_batches)
        diff = float(np.abs(got - ref).max())
        if not diff <= cfg.fp32_atol:
            raise ExportValidationError(
                f"fp32 validation failed: max |ONNX Runtime - PyTorch| logit difference {diff:.3g} > tolerance "
                f"{cfg.fp32_atol:g} on {len(ref)} {task.name} dev examples; nothing was written"
            )
        torch_dev = _torch_logits(model, batches)
        pytorch_value = task.compute_metrics(torch_dev, dev.labels)[task.metric]
        fp32_dev = _ort_logits(graph, batches)
        fp32_value = task.compute_metrics(fp32_dev, dev.labels)[task.metric]
        validation: dict[str, Any] = {
            "examples": len(dev),
            "logit_examples": len(ref),
            "pytorch_value": pytorch_value,
            "fp32": {
                "max_abs_diff": diff,
                "atol": cfg.fp32_atol,
                "value": fp32_value,
                "dev_max_abs_diff": float(np.abs(fp32_dev - torch_dev).max()),
            },
        }
        onnx.save(graph, str(tmp / FILES["fp32"]))
        files = {"fp32": FILES["fp32"]}
        int8_settings = None

        if "int8" in cfg.precisions:
            tried = []
            for cand in INT8_CANDIDATES:
                q = rw.quantize_int8(graph, **cand)
                value = task.compute_metrics(_ort_logits(q, batches), dev.labels)[task.metric]
                tried.append({**cand, "value": value})
                if pytorch_value - value <= cfg.int8_max_drop:
                    int8_settings = cand
                    break
            if int8_settings is None:
                raise ExportValidationError(
                    f"int8 validation failed: every quantization setting lost more than {cfg.int8_max_drop:g} "
                    f"{task.metric} against PyTorch's {pytorch_value:.4f} ({tried}); nothing was written"
                )
            stages["quantize_int8"] = rw.make_node_summary(q)
            validation["int8"] = {"value": value, "max_drop": cfg.int8_max_drop, "tried": tried}
            onnx.save(q, str(tmp / FILES["int8"]))
            files["int8"] = FILES["int8"]

        if "fp16" in cfg.precisions:
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ExportValidationError(
                    "fp16 validation needs ONNX Runtime's CUDAExecutionProvider (onnxruntime-gpu on a CUDA "
                    "machine); export without --precision fp16 here; nothing was written"
                )
            h = rw.convert_fp16(graph)
            d16 = float(np.abs(_ort_logits(h, check_batches, "CUDAExecutionProvider") - ref).max())
            if not d16 <= cfg.fp16_atol:
                raise ExportValidationError(
                    f"fp16 validation failed: max logit difference {d16:.3g} > "
                    f"{cfg.fp16_atol:g}; nothing was written"
                )
            validation["fp16"] = {"max_abs_diff": d16, "atol": cfg.fp16_atol}
            onnx.save(h, str(tmp / FILES["fp16"]))
            files["fp16"] = FILES["fp16"]

        section = getattr(mcfg, "ladabert", None) or {}
        meta = {
            "format": 1,
            "source": str(path),
            "task": task.name,
            "metric": task.metric,
            "kind": "student" if section else "teacher",
            "method": section.get("method"),
            "ratio": section.get("ratio", 1.0),
            "ranks": {n: s.get("rank") for n, s in (section.get("layers") or {}).items()},
            "num_layers": mcfg.num_hidden_layers,
            "opset": info["opset"],
            "max_length": cfg.max_length,
            "fused_attention_at_export": info["fused_attention"],
            "rewrites": [r for r in cfg.rewrites if r != "fuse" or cfg.fuse],
            "stages": stages,
            "fused_attention_nodes": rw.fused_attention_count(graph),
            "validation": validation,
            "int8_settings": int8_settings,
            "files": files,
            "export_config": dataclasses.asdict(cfg),
            "wall_s": round(time.perf_counter() - t_start, 1),
            **run_environment(),
        }
        write_json_atomic(tmp / "ladabert.json", meta)
    return meta


def bundle_summary(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path) / "ladabert.json"
    if not p.is_file():
        raise LadaBertError(f"{path} has no ladabert.json; pass a directory written by ladabert export")
    return json.loads(p.read_text())
