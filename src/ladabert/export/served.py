"""The task metric of an exported bundle as one backend serves it.

Export validates the fp32 graph against PyTorch and the int8 graph on the dev set, both on ONNX Runtime;
a model served on OpenVINO runs other kernels (bf16 inference, NNCF int8). This scores the dev set on the
backend named, the same graph and settings the latency benchmark times:

    ladabert eval runs/student-onnx --backend openvino-bf16

OpenVINO int8 calibrates on the first :data:`CALIBRATION_EXAMPLES` examples of the model's training data
(its recorded training file, else its GLUE task's train split), never on the examples it is scored on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ladabert.errors import LadaBertError

CALIBRATION_EXAMPLES = 128


def _calibration_texts(config: Any, bundle: Path, task: Any, data_dir: Any) -> list[tuple[str, ...]]:
    from ladabert.pipeline.data import TASKS, load_glue
    from ladabert.pipeline.files import DataFiles, load_files, model_label_names

    recorded = getattr(config, "ladabert_data", None) or {}
    if recorded.get("train_file"):
        files = DataFiles(
            recorded["train_file"],
            None,
            tuple(recorded.get("text_columns") or ()),
            recorded.get("label_column"),
        )
        _, train, _ = load_files(files, model_label_names(config), ("train",), task.name)
        return train.texts[:CALIBRATION_EXAMPLES]
    if task.name in TASKS:
        return load_glue(task, "train", data_dir, CALIBRATION_EXAMPLES).texts
    raise LadaBertError(
        f"OpenVINO int8 calibrates on training examples, and {bundle} records no training file and "
        f"{task.name!r} is not a GLUE task; evaluate another --backend"
    )


def evaluate_bundle(
    bundle: str | os.PathLike,
    backend: str = "ort-fp32",
    task: str | None = None,
    data_dir: str | os.PathLike | None = None,
    max_length: int | None = None,
    max_samples: int | None = None,
    validation_file: str | None = None,
    text_columns: tuple[str, ...] = (),
    label_column: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Score an exported bundle on a GLUE task's dev set or a validation file (default: the data the
    model records, else its GLUE task) on ``backend`` (one of ``ladabert.config.GATE_BACKENDS``).

    Returns what ``ladabert eval`` prints for a model (task, metric, value, metrics, eval_examples) and
    the ``backend``.

    Raises:
        LadaBertError: an unknown backend, a bundle without that backend's file, a runtime that is not
            installed, or data that cannot be found; the message names the fix.
    """
    from transformers import AutoConfig

    from ladabert.export.bundle import text_batches
    from ladabert.export.runner import OnnxClassifier, open_bundle
    from ladabert.export.runtime import backend_parts
    from ladabert.pipeline.teacher import validation_data

    precision, _, hint = backend_parts(backend)
    # The bundle's files are checked before any data is read.
    files = open_bundle(bundle, precision, max_length)
    config = AutoConfig.from_pretrained(str(bundle))
    t, dev = validation_data(
        config, str(bundle), task, validation_file, text_columns, label_column, data_dir, max_samples
    )
    calibration = None
    if hint == "int8":
        texts = _calibration_texts(config, Path(bundle), t, data_dir)
        calibration = text_batches(files.tokenizer, texts, 8)
    clf = OnnxClassifier(
        bundle, threads=threads, max_length=max_length, calibration=calibration, backend=backend
    )
    firsts = [x[0] for x in dev.texts]
    pairs = [x[1] for x in dev.texts] if dev.texts and len(dev.texts[0]) > 1 else None
    logits = clf.logits(firsts, pairs)
    scores = t.compute_metrics(logits, dev.labels)
    return {
        "task": t.name,
        "metric": t.metric,
        "value": scores[t.metric],
        "metrics": scores,
        "eval_examples": len(dev.texts),
        "backend": backend,
    }
