"""The ONNX Runtime session factory and the OpenVINO runner that predict and the latency benchmark share.

Both take an ONNX file (or, for ONNX Runtime, its bytes) and need neither torch nor transformers.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ladabert.errors import LadaBertError

OPENVINO_PRECISIONS = ("f32", "bf16", "int8")


def backend_parts(backend: str) -> tuple[str, str, str]:
    """``(bundle precision, runtime, OpenVINO precision)`` of a backend name of
    ``ladabert.config.GATE_BACKENDS``: ONNX Runtime reads the file of its precision, OpenVINO reads the fp32
    file and applies its own precision."""
    runtime, _, precision = backend.partition("-")
    if runtime == "ort" and precision in ("fp32", "int8"):
        return precision, "onnxruntime", "f32"
    if runtime == "openvino" and precision in OPENVINO_PRECISIONS:
        return "fp32", "openvino", precision
    raise LadaBertError(
        f"unknown backend {backend!r}; choose one of ort-fp32, ort-int8, "
        + ", ".join(f"openvino-{p}" for p in OPENVINO_PRECISIONS)
    )


def ort_session(
    model: str | os.PathLike | bytes,
    threads: int | None = None,
    spinning: bool = True,
    provider: str = "CPUExecutionProvider",
) -> Any:
    """An ONNX Runtime session with every graph optimization on.

    ``threads`` fixes the intra-op thread count (None: the runtime's default). ``spinning=False`` stops idle
    workers from spinning after each run: interleaved with other runners on few cores, that spinning steals
    the next runner's CPU, so the latency benchmark turns it off for every runner alike.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, so, providers=[provider])
    except Exception as exc:  # onnxruntime raises its own types for unreadable or invalid graphs
        where = "the exported graph" if isinstance(model, bytes) else str(model)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise LadaBertError(
            f"ONNX Runtime cannot load {where} ({first}); the file is damaged or not an ONNX model: export it "
            "again with ladabert export"
        ) from None


def ort_runner(
    model: str | os.PathLike | bytes, threads: int | None = None, spinning: bool = True
) -> Callable:
    """``feeds -> first output`` of an ONNX Runtime session; feeds the graph lacks are dropped."""
    sess = ort_session(model, threads, spinning)
    names = {i.name for i in sess.get_inputs()}
    return lambda feeds: sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def nncf_int8(core: Any, path: Path, calib: list[dict[str, np.ndarray]]) -> tuple[Path, Any]:
    """NNCF post-training int8 (transformer preset) of ``path``, written as IR to a temporary directory
    that lives as long as the returned handle."""
    import nncf
    import openvino as ov

    model = core.read_model(str(path))
    names = [i.get_any_name() for i in model.inputs]
    data = nncf.Dataset(calib, lambda f: {k: v for k, v in f.items() if k in names})
    model = nncf.quantize(model, data, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calib))
    tmp = tempfile.TemporaryDirectory(prefix="ladabert-nncf-")
    source = Path(tmp.name) / "int8.xml"
    ov.save_model(model, str(source), compress_to_fp16=False)
    return source, tmp


def openvino_runner(
    path: str | os.PathLike,
    threads: int | None = None,
    precision: str = "f32",
    calib: list[dict[str, np.ndarray]] | None = None,
    static: bool = False,
) -> Callable:
    """An OpenVINO CPU runner of an ONNX file: ``feeds -> first output``.

    ``precision``: ``f32`` (matches ONNX Runtime), ``bf16`` (inference precision hint), or ``int8`` (NNCF
    post-training quantization on ``calib`` feeds, bf16 for the rest). ``static``: compile once per input
    shape (the model reshaped to that batch and sequence, the way a server that pads to a fixed length serves
    it); otherwise one compilation with dynamic axes.

    No ``ov.Model`` stays alive between calls: the model is read again for each compilation, since NNCF
    fails to quantize one model while another read-but-uncompiled model is alive in the process.
    """
    try:
        import openvino as ov
    except ImportError:
        raise LadaBertError(
            "the openvino runtime is not installed; pip install 'ladabert[openvino]'"
        ) from None
    if precision not in OPENVINO_PRECISIONS:
        raise LadaBertError(
            f"unknown OpenVINO precision {precision!r}; choose one of {', '.join(OPENVINO_PRECISIONS)}"
        )
    if precision == "int8" and not calib:
        raise ValueError("OpenVINO int8 needs calibration feeds")
    core = ov.Core()
    source, tmp = Path(path), None
    if precision == "int8":
        source, tmp = nncf_int8(core, source, calib)
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32" if precision == "f32" else "bf16",
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    requests: dict[tuple[int, ...], tuple[Any, list[str]]] = {}

    def run(feeds: dict[str, np.ndarray]) -> Any:
        key = tuple(feeds["input_ids"].shape) if static else ()
        if key not in requests:  # the latency benchmark compiles during warm-up, never in timed rounds
            model = core.read_model(str(source))
            if static:
                model.reshape({i.get_any_name(): list(key) for i in model.inputs})
            compiled = core.compile_model(model, "CPU", config)
            requests[key] = (compiled.create_infer_request(), [i.get_any_name() for i in compiled.inputs])
        request, names = requests[key]
        # The feeds go into the request's own input tensors, by position: infer(dict) builds a tensor
        # and looks up a name per input on every call, a fixed cost that weighs most on small models.
        for i, name in enumerate(names):
            if static:
                request.get_input_tensor(i).data[...] = feeds[name]
            else:
                request.set_input_tensor(i, ov.Tensor(np.ascontiguousarray(feeds[name])))
        request.infer()
        return request.get_output_tensor(0).data.copy()

    run.tmp = tmp  # type: ignore[attr-defined]  # keeps the IR directory as long as the runner lives
    return run
