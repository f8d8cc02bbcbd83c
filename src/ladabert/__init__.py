"""LadaBERT: lightweight adaptation of BERT through hybrid model compression.

The user's verbs and types (imports are lazy, so ``import ladabert`` is cheap)::

    import ladabert as L

    L.finetune(L.FinetuneConfig(task="sst2"), "runs/teacher")                # a teacher directory
    L.compress(L.CompressConfig(ratio=5), "runs/teacher", "runs/student")    # a student directory
    L.export("runs/student", "runs/student-onnx")                             # a validated ONNX bundle
    L.OnnxClassifier("runs/student-onnx").predict(["a gripping film"])        # serving, no torch
    L.evaluate_bundle("runs/student-onnx", "openvino-bf16")                   # dev metric as served
    L.benchmark(L.BenchConfig.preset("quick"))                                # latency vs BERT-base
    L.gate(L.GateConfig(reference="runs/prod-onnx", candidates=("runs/student-onnx",)))  # CI: slower?

In memory: ``L.compress_model(teacher, tokenizer, train, dev, config)`` returns the student module, and
``L.build_student(teacher, config)`` builds the student's shapes without training.
``L.search_shape(L.CompressConfig(latency_budget=3.0), "runs/teacher")`` returns the shape (and search
record) a latency budget gets, without training.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.3.0"

_LAZY = {
    # verbs
    "finetune": "ladabert.pipeline.teacher",
    "evaluate": "ladabert.pipeline.teacher",
    "evaluate_bundle": "ladabert.export.served",
    "compress": "ladabert.pipeline.compress",
    "compress_model": "ladabert.pipeline.compress",
    "search_shape": "ladabert.pipeline.compress",
    "build_student": "ladabert.pipeline.build",
    "export": "ladabert.export",  # the callable package (see its docstring)
    "benchmark": "ladabert.bench.latency",
    "gate": "ladabert.bench.gate",
    "load_glue": "ladabert.pipeline.data",
    "get_task": "ladabert.pipeline.data",
    "load_classifier": "ladabert.pipeline.student",
    "densify": "ladabert.pipeline.student",
    "LadaBertConfig": "ladabert.student_config",
    # types
    "FinetuneConfig": "ladabert.config",
    "CompressConfig": "ladabert.config",
    "ExportConfig": "ladabert.config",
    "BenchConfig": "ladabert.config",
    "GateConfig": "ladabert.config",
    "LadaBertForSequenceClassification": "ladabert.pipeline.student",
    "OnnxClassifier": "ladabert.export.runner",
    "LadaBertError": "ladabert.errors",
    "ExportValidationError": "ladabert.export.bundle",
}

__all__ = sorted(_LAZY)

# Students load through transformers' Auto classes and pipeline() once ladabert is imported (registered
# when transformers loads them, so that this import stays quick and needs no torch).
from ladabert import hf as _hf  # noqa: E402

_hf.install()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        if name == "export":
            return importlib.import_module("ladabert.export")
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ladabert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
