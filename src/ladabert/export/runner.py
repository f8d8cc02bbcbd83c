"""Run an exported bundle with ONNX Runtime (or OpenVINO) and the ``tokenizers`` library only: no torch.

    ladabert predict runs/main/onnx "a gripping, beautifully acted film"

Example::

    from ladabert.export.runner import OnnxClassifier
    clf = OnnxClassifier("runs/main/onnx")
    clf(["a gripping film", "a dull mess"])      # [{"label": "positive", "score": 0.97}, ...]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ladabert.errors import LadaBertError
from ladabert.export.runtime import backend_parts, openvino_runner, ort_runner
from ladabert.utils import check_length

RUNTIMES = ("onnxruntime", "openvino")


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object from ``path``, or one line saying what is wrong with the file."""
    if not path.is_file():
        raise LadaBertError(f"{path.parent} has no {path.name}; {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LadaBertError(f"{path} is not valid JSON ({str(exc)[:80]}); {fix}") from None
    if not isinstance(data, dict):
        raise LadaBertError(f"{path} holds a JSON {type(data).__name__}, not an object; {fix}")
    return data


def file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_digest(path: Path, expected: str | None, precision: str) -> None:
    """Refuse a model file whose content is not what export wrote under that name (bundles record it)."""
    if expected and file_sha256(path) != expected:
        raise LadaBertError(
            f"{path} does not match what was exported as the {precision} model (its checksum differs from "
            "ladabert.json's: the file is damaged or another file took its place); export the bundle again"
        )


def load_tokenizer(bundle: Path, max_length: int) -> Any:
    from tokenizers import Tokenizer

    path = bundle / "tokenizer.json"
    if not path.is_file():
        raise LadaBertError(f"{bundle} has no tokenizer.json; export the bundle again with ladabert export")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a plain Exception for unparsable files
        raise LadaBertError(
            f"{path} is not a readable tokenizer ({str(exc)[:120]}); export the bundle again with ladabert export"
        ) from None
    tok.enable_truncation(max_length)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    return tok


def encode(tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Token ids, attention mask and token types as int64 arrays, padded to the longest in the batch."""
    batch = list(zip(texts, pairs)) if pairs is not None else list(texts)
    encs = tokenizer.encode_batch(batch)
    return {
        "input_ids": np.asarray([e.ids for e in encs], dtype=np.int64),
        "attention_mask": np.asarray([e.attention_mask for e in encs], dtype=np.int64),
        "token_type_ids": np.asarray([e.type_ids for e in encs], dtype=np.int64),
    }


@dataclass
class BundleFiles:
    """What a bundle directory holds for one precision, checked: its ``ladabert.json``, the model file
    (its checksum matches the recorded one), the label names and the tokenizer."""

    bundle: Path
    meta: dict[str, Any]
    path: Path
    labels: dict[int, str]
    tokenizer: Any


def open_bundle(
    bundle: str | os.PathLike, precision: str = "fp32", max_length: int | None = None
) -> BundleFiles:
    """Check a bundle's files without loading a runtime.

    Raises:
        LadaBertError: a missing or damaged file, in one line naming the fix.
    """
    bundle = Path(bundle)
    meta = _read_json(bundle / "ladabert.json", "pass a directory written by ladabert export")
    files = meta.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise LadaBertError(f"{bundle / 'ladabert.json'} has no valid files table; export the bundle again")
    fname = files.get(precision, precision if precision.endswith(".onnx") else None)
    if fname is None:
        raise LadaBertError(
            f"{bundle} has no {precision} model (it has {', '.join(files) or 'none'}); "
            f"export with --precision {precision}"
        )
    if not (bundle / fname).is_file():
        raise LadaBertError(
            f"{bundle}'s {precision} model {fname} is missing; export the bundle again with ladabert export"
        )
    path = bundle / fname
    _check_digest(path, (meta.get("sha256") or {}).get(precision), precision)
    config = _read_json(bundle / "config.json", "export the bundle again with ladabert export")
    try:
        labels = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    except (TypeError, ValueError, AttributeError):
        raise LadaBertError(
            f"{bundle / 'config.json'} has an invalid id2label; export the bundle again"
        ) from None
    if max_length is not None:
        check_length(max_length, config.get("max_position_embeddings"), str(bundle))
    tokenizer = load_tokenizer(bundle, max_length or meta.get("max_length", 128))
    return BundleFiles(bundle, meta, path, labels, tokenizer)


class OnnxClassifier:
    """A sequence classifier from an exported bundle directory.

    Args:
        bundle: directory written by ``ladabert export``.
        precision: ``fp32`` (``model.onnx``) or ``int8`` (``model_quantized.onnx``), or a file name.
        runtime: ``onnxruntime`` or ``openvino``.
        threads: intra-op threads (None: the runtime's default).
        max_length: tokens per example (default: the bundle's export setting).
        openvino_hint: OpenVINO's inference precision, ``f32`` (matches ONNX Runtime), ``bf16`` (faster on
            CPUs with AMX or AVX512-BF16; OpenVINO's own default there) or ``int8`` (NNCF post-training
            quantization of the fp32 graph on ``calibration``).
        calibration: encoded feeds (:func:`encode`) that OpenVINO int8 calibrates on.
        backend: a backend name as the latency benchmark spells it (``ort-int8``, ``openvino-bf16``, ...),
            in place of ``precision``, ``runtime`` and ``openvino_hint``.
    """

    def __init__(
        self,
        bundle: str | os.PathLike,
        precision: str = "fp32",
        runtime: str = "onnxruntime",
        threads: int | None = None,
        max_length: int | None = None,
        openvino_hint: str = "f32",
        calibration: list[dict[str, np.ndarray]] | None = None,
        backend: str | None = None,
    ):
        if threads is not None and threads < 1:
            raise LadaBertError(f"threads must be >= 1 (or unset for the runtime's default), got {threads}")
        if backend is not None:
            precision, runtime, openvino_hint = backend_parts(backend)
        if runtime not in RUNTIMES:
            raise LadaBertError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        files = open_bundle(bundle, precision, max_length)
        self.bundle, self.meta, self.path = files.bundle, files.meta, files.path
        self.labels, self.tokenizer = files.labels, files.tokenizer
        if runtime == "onnxruntime":
            self._run = ort_runner(self.path, threads)
        else:
            if openvino_hint == "int8" and not calibration:
                raise LadaBertError("OpenVINO int8 calibrates on example inputs; pass calibration feeds")
            self._run = openvino_runner(self.path, threads, openvino_hint, calibration)

    def logits(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, batch_size: int = 64
    ) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            feeds = encode(
                self.tokenizer,
                texts[i : i + batch_size],
                None if pairs is None else pairs[i : i + batch_size],
            )
            out.append(self._run(feeds))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels) or 1), dtype=np.float32)

    def __call__(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, batch_size: int = 64
    ) -> list[dict[str, Any]]:
        """``[{"label": ..., "score": ...}]`` per text, the shape of transformers' text-classification
        pipeline: the most probable label and its probability, or ``LABEL_0`` and the raw score of a
        regression model."""
        logits = self.logits(texts, pairs, batch_size)
        if logits.shape[-1] == 1:
            return [{"label": self.labels.get(0, "LABEL_0"), "score": float(x[0])} for x in logits]
        z = np.exp(logits - logits.max(-1, keepdims=True))
        probs = z / z.sum(-1, keepdims=True)
        best = probs.argmax(-1)
        return [
            {"label": self.labels.get(int(i), f"LABEL_{int(i)}"), "score": float(p[i])}
            for i, p in zip(best, probs)
        ]

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Label and class probabilities for each text (or text pair)."""
        logits = self.logits(texts, pairs)
        if logits.shape[-1] == 1:
            return [{"score": float(x[0])} for x in logits]
        z = np.exp(logits - logits.max(-1, keepdims=True))
        probs = z / z.sum(-1, keepdims=True)
        return [
            {
                "label": self.labels.get(int(p.argmax()), str(int(p.argmax()))),
                "probabilities": {self.labels.get(i, str(i)): round(float(v), 6) for i, v in enumerate(p)},
            }
            for p in probs
        ]
