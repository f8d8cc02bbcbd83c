"""``ladabert export``: a student (or any dense BERT teacher) becomes a validated ONNX bundle.

    ladabert export runs/student-sst2-10x --out runs/student-sst2-10x-onnx

Steps: export (fused attention for factorized students) -> shrink -> merge -> align -> fuse -> validate fp32
against PyTorch logit by logit -> int8 dynamic quantization judged by the task metric on the dev set
(fp16 for the CUDA provider on request). Everything is written into a temporary directory that is
renamed to ``--out`` only when every requested precision passed validation.

The bundle holds ``model.onnx`` (fp32), ``model_quantized.onnx`` (int8, named as optimum's quantizer
names it), ``openvino_model.xml``/``.bin`` (the fp32 graph in OpenVINO's format, where OpenVINO is
installed), tokenizer files whose ``model_max_length`` is the validated length, a stock BERT
``config.json`` with the label names, a ``README.md`` model card and ``ladabert.json`` (ratio, ranks,
opset, rewrites, node counts per stage, validation numbers, latency at export, versions). It loads as it
is with ``optimum.onnxruntime.ORTModelForSequenceClassification.from_pretrained(DIR)``,
``optimum.intel.OVModelForSequenceClassification.from_pretrained(DIR)`` and ``ladabert predict DIR "text"``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ladabert.config import PRECISIONS, ExportConfig, reference_backend  # noqa: F401  (ExportConfig re-exported)
from ladabert.errors import LadaBertError
from ladabert.utils import atomic_output_dir, run_environment, write_json_atomic

FILES = {"fp32": "model.onnx", "int8": "model_quantized.onnx", "fp16": "model_fp16.onnx"}
OPENVINO_FILE = "openvino_model.xml"  # what optimum-intel's OVModel classes look for in a directory
# Dynamic int8 settings tried in order until one keeps the task metric; signed per-channel weights are
# accurate on VNNI CPUs, 7-bit (reduce_range) and unsigned weights avoid u8*s8 saturation elsewhere.
INT8_CANDIDATES = (
    {"per_channel": True, "reduce_range": False, "weight_type": "QInt8"},
    {"per_channel": True, "reduce_range": True, "weight_type": "QInt8"},
    {"per_channel": False, "reduce_range": False, "weight_type": "QUInt8"},
)


class ExportValidationError(LadaBertError):
    """The exported model does not reproduce the PyTorch model within tolerance; nothing was written."""


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
    from ladabert.export.runtime import ort_session

    sess = ort_session(model_proto.SerializeToString(), provider=provider)
    return np.concatenate([sess.run(None, feeds)[0] for feeds in batches])


def text_batches(
    tokenizer: Any, texts: list[tuple[str, ...]], batch_size: int = 64
) -> list[dict[str, np.ndarray]]:
    """Examples (a text, or a text pair) encoded by a ``tokenizers`` tokenizer in batches of ``batch_size``."""
    from ladabert.export.runner import encode

    out = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i : i + batch_size]
        firsts = [t[0] for t in chunk]
        seconds = [t[1] for t in chunk] if len(chunk[0]) > 1 else None
        out.append(encode(tokenizer, firsts, seconds))
    return out


def _load_source(
    model_dir: str | os.PathLike, cfg: ExportConfig, data_dir: str | os.PathLike | None
) -> tuple[str, Any, Any, Any]:
    """Resolve and check the model to export; returns (path, its config, its task, the validation split)."""
    from ladabert.pipeline.teacher import load_bert_config, resolve_model, validation_data

    path = resolve_model(str(model_dir))
    mcfg = load_bert_config(path)
    task, dev = validation_data(
        mcfg,
        path,
        cfg.task,
        cfg.validation_file,
        cfg.text_columns,
        cfg.label_column,
        data_dir,
        cfg.max_eval_samples,
    )
    return path, mcfg, task, dev


def _latency(tmp: Path, files: dict[str, str], max_length: int, threads: int = 2) -> list[dict[str, Any]]:
    """Median ONNX Runtime latency of each exported CPU file at batch 1 and the validated length."""
    from ladabert.bench.latency import median_ms
    from ladabert.export.runtime import ort_runner

    feeds = {
        "input_ids": np.ones((1, max_length), dtype=np.int64),  # latency does not depend on the ids
        "attention_mask": np.ones((1, max_length), dtype=np.int64),
        "token_type_ids": np.zeros((1, max_length), dtype=np.int64),
    }
    rows = []
    for precision in ("fp32", "int8"):
        if precision not in files:
            continue
        run = ort_runner(tmp / files[precision], threads)
        ms = median_ms(run, feeds, runs=15, warmup=3, min_s=0.0)
        rows.append(
            {
                "runtime": "onnxruntime",
                "precision": precision,
                "batch": 1,
                "seq": max_length,
                "threads": threads,
                "median_ms": round(ms, 3),
            }
        )
    return rows


def _check_budget_precisions(budget: dict[str, Any] | None, cfg: ExportConfig, path: Path) -> None:
    """Refuse, before anything is written, precisions that leave out the file the student's latency
    budget is served from (ort-int8 runs the int8 file): the budget could not be checked."""
    from ladabert.export.runtime import backend_parts

    if not budget:
        return
    precision = backend_parts(budget["backend"])[0]
    if precision not in cfg.precisions:
        raise LadaBertError(
            f"{path}'s latency budget is served on {budget['backend']}, which runs the {precision} ONNX file; "
            f"pass --precisions {' '.join(sorted({*cfg.precisions, precision}, key=PRECISIONS.index))}"
        )


def _budget_check(
    tmp: Path, files: dict[str, str], budget: dict[str, Any] | None, vocab: int, positions: int
) -> dict[str, Any] | None:
    """The bundle timed on the backend and shape of the student's latency budget (None: no budget).

    A bundle above its budget is written all the same (the training is not lost) with a warning, and
    ``within_budget`` false in ``ladabert.json``."""
    if not budget:
        return None
    import sys

    from ladabert.bench.latency import block_medians, calibration_feeds, onnx_runner, random_feeds
    from ladabert.export.runtime import openvino_available

    backend, reference = budget["backend"], reference_backend(budget)
    record = {k: budget[k] for k in ("budget_ms", "backend", "batch", "seq", "threads")}
    if any(b.startswith("openvino") for b in (backend, reference)) and not openvino_available():
        return {**record, "bundle_ms": None, "within_budget": None, "note": "openvino not installed"}
    paths = {p: tmp / f for p, f in files.items() if p in ("fp32", "int8")}
    runs = {"bundle": onnx_runner(paths, backend, budget["threads"], calibration_feeds(vocab, positions))}
    feeds = random_feeds(budget["batch"], budget["seq"], vocab)
    where = f"on {backend} at batch {budget['batch']} x seq {budget['seq']}"
    if budget.get("speedup") is None:
        timed = block_medians(runs, feeds)["bundle"]
        ms = timed["ms"]
        record.update(
            bundle_ms=round(ms, 3), blocks_ms=timed["blocks"], within_budget=ms <= budget["budget_ms"]
        )
        miss = f"measures {ms:.2f} ms {where}, above its {budget['budget_ms']:g} ms budget"
    else:
        timed, speedup = _speedup_check(runs, feeds, budget)
        record.update(
            speedup=budget["speedup"],
            bundle_ms=round(timed["bundle"]["ms"], 3),
            blocks_ms=timed["bundle"]["blocks"],
            reference_backend=reference,
            reference_ms=round(timed["reference"]["ms"], 3),
            reference_blocks_ms=timed["reference"]["blocks"],
            bundle_speedup=round(speedup, 3),
            within_budget=speedup >= budget["speedup"],
        )
        against = "" if reference == backend else f" on {reference}"
        miss = (
            f"{where} is {speedup:.2f}x the teacher's shape{against}, below its {budget['speedup']:g}x target"
        )
    if not record["within_budget"]:
        print(
            f"warning: the bundle {miss} (machine busy, or another CPU than the search ran on); check with "
            "ladabert bench",
            file=sys.stderr,
        )
    return record


def _speedup_check(
    runs: dict[str, Any], feeds: dict[str, Any], budget: dict[str, Any]
) -> tuple[dict[str, Any], float]:
    """The bundle and a random-weight model of the teacher's shape (on the budget's reference backend)
    timed by the budget protocol, turn by turn, so that both readings see the same machine speed: the
    block medians and the speedup (the median of the block-by-block ratios)."""
    import tempfile

    from ladabert.bench.latency import block_medians, block_speedup
    from ladabert.pipeline.budget import graph_runner, reference_model

    with tempfile.TemporaryDirectory(prefix="ladabert-reference-") as ref_dir:
        ref = reference_model(budget["reference"])
        runs = {
            **runs,
            "reference": graph_runner(
                ref, "reference", reference_backend(budget), budget["threads"], Path(ref_dir)
            )[0],
        }
        timed = block_medians(runs, feeds)
    return timed, block_speedup(timed["bundle"]["blocks"], timed["reference"]["blocks"])


def _openvino_ir(tmp: Path) -> str | None:
    """Convert ``model.onnx`` to OpenVINO IR beside it (fp32 weights), where OpenVINO is installed."""
    from ladabert.export.runtime import openvino_available

    if not openvino_available():
        return None
    import openvino as ov

    ov.save_model(
        ov.convert_model(str(tmp / FILES["fp32"])), str(tmp / OPENVINO_FILE), compress_to_fp16=False
    )
    return OPENVINO_FILE


class _Validator:
    """The model in PyTorch and the dev inputs every exported precision is judged on."""

    def __init__(self, model: Any, task: Any, dev: Any, tokenizer: Any, cfg: ExportConfig):
        self.task, self.labels, self.cfg = task, dev.labels, cfg
        self.batches = text_batches(tokenizer, dev.texts)
        self.check_batches = text_batches(tokenizer, dev.texts[: cfg.validate_samples])
        self.torch_dev = _torch_logits(model, self.batches)
        # The logit checks read the first ``validate_samples`` examples of the dev pass (padding is masked,
        # so how the examples are batched does not change their logits).
        self.ref = self.torch_dev[: cfg.validate_samples]
        self.pytorch_value = self.score(self.torch_dev)

    def score(self, logits: np.ndarray) -> float:
        return self.task.compute_metrics(logits, self.labels)[self.task.metric]

    def fp32(self, graph: Any) -> dict[str, Any]:
        import onnx

        try:
            onnx.checker.check_model(graph)
        except onnx.checker.ValidationError as exc:
            raise ExportValidationError(
                f"onnx.checker rejected the fp32 graph ({str(exc).splitlines()[0]}); nothing was written"
            ) from None
        fp32_dev = _ort_logits(graph, self.batches)
        diff = float(np.abs(fp32_dev[: len(self.ref)] - self.ref).max())
        if not diff <= self.cfg.fp32_atol:
            raise ExportValidationError(
                f"fp32 validation failed: max |ONNX Runtime - PyTorch| logit difference {diff:.3g} > tolerance "
                f"{self.cfg.fp32_atol:g} on {len(self.ref)} {self.task.name} dev examples; nothing was written"
            )
        return {
            "max_abs_diff": diff,
            "atol": self.cfg.fp32_atol,
            "value": self.score(fp32_dev),
            "dev_max_abs_diff": float(np.abs(fp32_dev - self.torch_dev).max()),
        }

    def int8(self, graph: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """The first of :data:`INT8_CANDIDATES` that keeps the metric within ``int8_max_drop``."""
        from ladabert.export import rewrites as rw

        tried = []
        for cand in INT8_CANDIDATES:
            q = rw.quantize_int8(graph, **cand)
            value = self.score(_ort_logits(q, self.batches))
            tried.append({**cand, "value": value})
            if self.pytorch_value - value <= self.cfg.int8_max_drop:
                return q, cand, {"value": value, "max_drop": self.cfg.int8_max_drop, "tried": tried}
        raise ExportValidationError(
            f"int8 validation failed: every quantization setting lost more than {self.cfg.int8_max_drop:g} "
            f"{self.task.metric} against PyTorch's {self.pytorch_value:.4f} ({tried}); nothing was written"
        )

    def fp16(self, graph: Any) -> tuple[Any, dict[str, Any]]:
        import onnxruntime as ort

        from ladabert.export import rewrites as rw

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ExportValidationError(
                "fp16 validation needs ONNX Runtime's CUDAExecutionProvider (onnxruntime-gpu on a CUDA "
                "machine); export without --precision fp16 here; nothing was written"
            )
        h = rw.convert_fp16(graph)
        d16 = float(np.abs(_ort_logits(h, self.check_batches, "CUDAExecutionProvider") - self.ref).max())
        if not d16 <= self.cfg.fp16_atol:
            raise ExportValidationError(
                f"fp16 validation failed: max logit difference {d16:.3g} > {self.cfg.fp16_atol:g}; nothing was written"
            )
        return h, {"max_abs_diff": d16, "atol": self.cfg.fp16_atol}


def _rewritten_graph(model: Any, mcfg: Any, cfg: ExportConfig, tmp: Path) -> tuple[Any, dict, dict]:
    """Export to ONNX and apply the configured rewrites; returns (graph, export info, node counts per stage)."""
    import onnx

    from ladabert.export import rewrites as rw
    from ladabert.export.onnx_export import export_onnx

    info = export_onnx(model, tmp / "raw.onnx", opset=cfg.opset)
    graph = onnx.load(str(tmp / "raw.onnx"))
    (tmp / "raw.onnx").unlink()
    stages = {"export": rw.make_node_summary(graph)}
    settings = rw.RewriteSettings.for_model(
        mcfg, merge=cfg.merge, align=cfg.align, fuse=cfg.fuse, skip_layer_norm=cfg.skip_layer_norm
    )
    graph = rw.apply_rewrites(
        graph, cfg.rewrites, settings, lambda name, g: stages.__setitem__(name, rw.make_node_summary(g))
    )
    if not cfg.fuse:
        stages.pop("fuse", None)
    return graph, info, stages


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
        config: see :class:`~ladabert.config.ExportConfig`.
        data_dir: GLUE data location for the validation inputs.
        overwrite: replace an existing ``out``.
        rewrite_hook: optional ``ModelProto -> ModelProto`` applied after the rewrites (for testing
            that validation refuses a broken graph).

    Raises:
        ExportValidationError: a validation check failed; the message says which and by how much.
    """
    import onnx

    from ladabert.export import rewrites as rw
    from ladabert.export.runner import file_sha256, load_tokenizer
    from ladabert.pipeline.student import load_classifier
    from ladabert.pipeline.teacher import check_max_length, load_tokenizer_from, trained_length
    from ladabert.student_config import stock_bert_config

    cfg = config or ExportConfig()
    path, mcfg, task, dev = _load_source(model_dir, cfg, data_dir)
    max_length = cfg.max_length or trained_length(path, mcfg)
    check_max_length(max_length, mcfg, path)
    section = getattr(mcfg, "ladabert", None) or {}
    _check_budget_precisions(section.get("latency_budget"), cfg, path)
    model = load_classifier(path).eval().float()
    t_start = time.perf_counter()
    final = Path(out).expanduser().absolute()
    inputs = [
        path,
        cfg.validation_file,
        data_dir,
        (getattr(mcfg, "ladabert_data", None) or {}).get("validation_file"),
    ]
    with atomic_output_dir(out, overwrite=overwrite, inputs=inputs) as tmp:
        tokenizer = load_tokenizer_from(path)
        tokenizer.model_max_length = max_length  # what the bundle is validated at and predict truncates to
        tokenizer.save_pretrained(str(tmp))
        # A stock BERT config: the graph is what runs, and optimum / OpenVINO read the config without ladabert.
        bundle_config = stock_bert_config(model.config)
        bundle_config.ladabert_data = getattr(mcfg, "ladabert_data", None)
        bundle_config.save_pretrained(str(tmp))
        check = _Validator(model, task, dev, load_tokenizer(tmp, max_length), cfg)
        graph, info, stages = _rewritten_graph(model, mcfg, cfg, tmp)
        if rewrite_hook is not None:
            graph = rewrite_hook(graph)
        validation: dict[str, Any] = {
            "examples": len(dev),
            "logit_examples": len(check.ref),
            "pytorch_value": check.pytorch_value,
            "fp32": check.fp32(graph),
        }
        onnx.save(graph, str(tmp / FILES["fp32"]))
        files, int8_settings = {"fp32": FILES["fp32"]}, None
        if "int8" in cfg.precisions:
            q, int8_settings, validation["int8"] = check.int8(graph)
            stages["quantize_int8"] = rw.make_node_summary(q)
            onnx.save(q, str(tmp / FILES["int8"]))
            files["int8"] = FILES["int8"]
        if "fp16" in cfg.precisions:
            h, validation["fp16"] = check.fp16(graph)
            onnx.save(h, str(tmp / FILES["fp16"]))
            files["fp16"] = FILES["fp16"]
        openvino_file = _openvino_ir(tmp)
        latency = _latency(tmp, files, max_length)
        budget = _budget_check(
            tmp, files, section.get("latency_budget"), mcfg.vocab_size, mcfg.max_position_embeddings
        )
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
            "max_length": max_length,
            "fused_attention_at_export": info["fused_attention"],
            "rewrites": [r for r in cfg.rewrites if r != "fuse" or cfg.fuse],
            "stages": stages,
            "fused_attention_nodes": rw.fused_attention_count(graph),
            "validation": validation,
            "int8_settings": int8_settings,
            "files": files,
            "openvino_ir": openvino_file,
            "labels": list(task.names),
            "data": getattr(mcfg, "ladabert_data", None),
            "latency_at_export": latency,
            "latency_budget": budget,
            "export_config": cfg.to_dict(),
            "wall_s": round(time.perf_counter() - t_start, 1),
            **run_environment(),
        }
        # By precision, so that a files table pointing a precision at another file is caught.
        meta["sha256"] = {precision: file_sha256(tmp / f) for precision, f in files.items()}
        write_json_atomic(tmp / "ladabert.json", meta)
        _write_card(tmp, final, meta, mcfg, path)
    return meta


def _write_card(tmp: Path, final: Path, meta: dict[str, Any], mcfg: Any, source: str) -> None:
    from ladabert.card import write_card
    from ladabert.pipeline.teacher import base_model_of

    section = getattr(mcfg, "ladabert", None) or {}
    base = base_model_of(section["teacher"]) if section.get("teacher") else base_model_of(source)
    v = meta["validation"]
    write_card(
        tmp,
        final,
        "bundle",
        {
            "task": meta["task"],
            "metric": meta["metric"],
            "value": v["fp32"]["value"],
            "metrics": {f"{meta['metric']} (onnx fp32)": v["fp32"]["value"]}
            | ({f"{meta['metric']} (onnx int8)": v["int8"]["value"]} if "int8" in v else {}),
            "labels": meta["labels"],
            "base_model": base,
            "ratio": meta["ratio"],
            "nonzero_params": section.get("nonzero_params"),
            "teacher_params": section.get("teacher_params"),
            "data": getattr(mcfg, "ladabert_data", None),
            "max_length": meta["max_length"],
            "files": meta["files"],
            "latency": meta["latency_at_export"],
            "machine": meta.get("machine"),
        },
    )


def bundle_summary(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path) / "ladabert.json"
    if not p.is_file():
        raise LadaBertError(f"{path} has no ladabert.json; pass a directory written by ladabert export")
    return json.loads(p.read_text())
