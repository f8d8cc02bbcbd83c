"""Latency and throughput of BERT-base, LadaBERT students and exported bundles, measured side by side.

Every backend of every model is measured in one process, interleaved (A B C A B C ... after warm-up),
with the intra-op thread count fixed and recorded, so that ratios between rows are meaningful on a
shared, noisy machine. ``python -m benchmarks.latency`` and ``ladabert bench`` run it.

Backends: ``pytorch-fp32``, ``pytorch-bf16``, ``ort-fp32``, ``ort-int8`` (our export with its rewrites),
and, when the ``openvino`` extra is installed, ``openvino-f32``, ``openvino-bf16`` (the ONNX file read
directly, inference precision hint set) and ``openvino-int8`` (NNCF post-training quantization with
``ModelType.TRANSFORMER`` on random calibration sequences, then bf16 for the rest). OpenVINO models are
compiled for each measured (batch, sequence) shape by default (``openvino_static``), during warm-up.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ladabert.errors import LadaBertError

ALL_BACKENDS = (
    "pytorch-fp32",
    "pytorch-bf16",
    "ort-fp32",
    "ort-int8",
    "openvino-f32",
    "openvino-bf16",
    "openvino-int8",
)
BASE = "bert-base"
# Kept shares (heads, FFN neurons) of the narrow students that ``benchmarks.latency`` and ``ladabert bench``
# measure by default: 2 of 12 heads and 512 of 3,072 FFN neurons in BERT-base, the narrowest of the
# settings tried that the SST-2 accuracy table also holds (see the README's Latency section).
NARROW_DEFAULT = (0.167, 0.167)


@dataclass
class Runner:
    model: str
    ratio: float
    backend: str
    run: Callable[[dict[str, np.ndarray]], Any]
    notes: dict[str, Any] = field(default_factory=dict)


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def bert_base_students(
    ratios: list[float],
    pattern: str = "rank",
    hybrid: float = 0.5,
    narrow: tuple[float, float] | None = None,
) -> dict[str, tuple[float, Any]]:
    """BERT-base (``BertConfig()``, random weights) and students of it at ``ratios``, compressed with the real
    allocation (weights are random: latency does not depend on their values).

    ``narrow = (keep_heads, keep_ffn)`` adds a ``narrow-<R>x`` student per ratio that first loses heads and
    FFN neurons (:mod:`ladabert.pipeline.structured`, as ``ladabert compress --keep-heads/--keep-ffn``); ratios
    that removing them alone already exceeds (2.83x for the default shares) get no narrow student.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from ladabert.pipeline import hybrid as hyb
    from ladabert.pipeline.structured import prune_structure
    from ladabert.pipeline.student import shrink_factors

    torch.manual_seed(0)
    base = BertForSequenceClassification(BertConfig(num_labels=2)).eval()
    n = sum(p.numel() for p in base.parameters())
    out = {BASE: (1.0, base)}
    variants = [("student", None)] + ([("narrow", narrow)] if narrow else [])
    for prefix, keep in variants:
        dense = copy.deepcopy(base)
        if keep:
            prune_structure(dense, *keep)
        shapes = hyb.matrix_shapes(dense)
        n_dense = sum(p.numel() for p in dense.parameters())
        fixed = n_dense - sum(r * c for r, c in shapes.values())
        for r in ratios:
            if keep and n / n_dense >= r:
                continue
            plan = hyb.allocate(shapes, n, r, hybrid, pattern, fixed_params=fixed)
            student = shrink_factors(hyb.install(copy.deepcopy(dense), plan)).eval()
            out[f"{prefix}-{r:g}x"] = (n / hyb.count_parameters(student)["total"], student)
    return out


def export_graphs(model: Any, workdir: Path, name: str, disable: tuple[str, ...] = ()) -> dict[str, Path]:
    """fp32 and int8 ONNX files of ``model`` through ladabert's export and rewrites (no task validation:
    random-weight models have no task; logits are checked against PyTorch instead)."""
    import onnx
    import torch

    from ladabert.export import rewrites as rw
    from ladabert.export.onnx_export import export_onnx

    raw = workdir / f"{name}-raw.onnx"
    export_onnx(model, raw)
    g = onnx.load(str(raw))
    if "shrink" not in disable:
        g = rw.shrink_factors(g)
    if "merge" not in disable:
        g = rw.merge_factors(g)
    if "align" not in disable:
        g = rw.align_factors(g)
    if "fuse" not in disable:
        g = rw.fuse(g, *rw.attention_shape(model.config))
    paths = {"fp32": workdir / f"{name}.onnx", "int8": workdir / f"{name}-int8.onnx"}
    onnx.save(g, str(paths["fp32"]))
    onnx.save(rw.quantize_int8(g), str(paths["int8"]))
    raw.unlink()
    feeds = random_feeds(2, 16, model.config.vocab_size, seed=1)
    import onnxruntime as ort

    got = ort.InferenceSession(str(paths["fp32"]), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with torch.inference_mode():
        ref = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    diff = float(np.abs(got - ref).max())
    if diff > 1e-3:
        raise RuntimeError(f"{name}: ONNX fp32 differs from PyTorch by {diff:.3g}")
    return paths


def random_feeds(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    low = 1000 if vocab > 2000 else 1  # past BERT's special and unused tokens; small test vocabularies
    ids = rng.integers(low, min(vocab, 20000), (batch, seq), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def _ort_runner(path: Path, threads: int) -> Callable:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT workers spin after each run by default; interleaved with other sessions on 2 cores that
    # spinning steals the next runner's CPU, so it is turned off for every session alike.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return lambda feeds: sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]


def _openvino_runner(
    path: Path, threads: int, precision: str, calib: list[dict] | None = None, static: bool = True
) -> Callable:
    """An OpenVINO CPU runner of ``path``. ``static``: compile once per input shape (the model reshaped to
    that batch and sequence, the way a server that pads to a fixed length serves it); otherwise one
    compilation with dynamic batch and sequence axes.

    No ``ov.Model`` stays alive between calls: the model is read again for each compilation (NNCF's
    int8 model from an IR file written here), since NNCF failed to quantize one model while another
    read-but-uncompiled model was alive in the process ("Could not find a node Gather_... in NNCFGraph").
    """
    import openvino as ov

    core = ov.Core()
    source, tmp = Path(path), None
    if precision == "int8":
        import nncf

        model = core.read_model(str(path))
        names = [i.get_any_name() for i in model.inputs]
        data = nncf.Dataset(calib, lambda f: {k: v for k, v in f.items() if k in names})
        model = nncf.quantize(model, data, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calib))
        tmp = tempfile.TemporaryDirectory(prefix="ladabert-nncf-")  # removed with the runner
        source = Path(tmp.name) / "int8.xml"
        ov.save_model(model, str(source), compress_to_fp16=False)
        del model
    hint = {"f32": "f32", "bf16": "bf16", "int8": "bf16"}[precision]
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": hint,
    }
    requests: dict[tuple[int, ...], tuple[Any, set[str], Any]] = {}

    def run(feeds: dict[str, np.ndarray]) -> Any:
        key = tuple(feeds["input_ids"].shape) if static else ()
        if key not in requests:  # compiled during warm-up, never inside the timed rounds
            model = core.read_model(str(source))
            if static:
                model.reshape({i.get_any_name(): list(key) for i in model.inputs})
            compiled = core.compile_model(model, "CPU", config)
            names = {i.get_any_name() for i in compiled.inputs}
            requests[key] = (compiled.create_infer_request(), names, compiled.outputs[0])
        request, names, out = requests[key]
        return request.infer({k: v for k, v in feeds.items() if k in names})[out]

    run.tmp = tmp  # type: ignore[attr-defined]  # keeps the IR directory as long as the runner lives
    return run


def _torch_runner(model: Any, dtype: str, threads: int) -> Callable:
    import torch

    torch.set_num_threads(threads)
    m = model if dtype == "fp32" else copy.deepcopy(model).to(torch.bfloat16)

    def run(feeds: dict[str, np.ndarray]) -> Any:
        with torch.inference_mode():
            return m(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits

    return run


def model_runners(
    name: str,
    ratio: float,
    model: Any,
    workdir: Path,
    backends: list[str],
    threads: int,
    vocab: int,
    disable: tuple[str, ...] = (),
    openvino_static: bool = True,
) -> list[Runner]:
    """Every requested backend of one PyTorch model (exported once for ONNX-based backends)."""
    runners = []
    paths = (
        export_graphs(model, workdir, name, disable)
        if any(not b.startswith("pytorch") for b in backends)
        else {}
    )
    calib = [random_feeds(1, 128, vocab, seed=i) for i in range(32)]
    for b in backends:
        if b == "pytorch-fp32":
            runners.append(Runner(name, ratio, b, _torch_runner(model, "fp32", threads)))
        elif b == "pytorch-bf16":
            runners.append(Runner(name, ratio, b, _torch_runner(model, "bf16", threads)))
        elif b == "ort-fp32":
            runners.append(Runner(name, ratio, b, _ort_runner(paths["fp32"], threads)))
        elif b == "ort-int8":
            runners.append(Runner(name, ratio, b, _ort_runner(paths["int8"], threads)))
        elif b.startswith("openvino-"):
            runners.append(
                Runner(
                    name,
                    ratio,
                    b,
                    _openvino_runner(paths["fp32"], threads, b.split("-")[1], calib, openvino_static),
                )
            )
    return runners


def bundle_runners(
    bundle: Path, backends: list[str], threads: int, openvino_static: bool = True
) -> list[Runner]:
    """Backends of an exported bundle: its fp32 and int8 ONNX files on ONNX Runtime and OpenVINO."""
    import json

    meta = json.loads((bundle / "ladabert.json").read_text())
    name = f"{bundle.name}"
    ratio = float(meta.get("ratio") or 1.0)
    files = meta["files"]
    vocab = json.loads((bundle / "config.json").read_text())["vocab_size"]
    calib = [random_feeds(1, 128, vocab, seed=i) for i in range(32)]
    runners = []
    for b in backends:
        if b == "ort-fp32":
            runners.append(Runner(name, ratio, b, _ort_runner(bundle / files["fp32"], threads)))
        elif b == "ort-int8" and "int8" in files:
            runners.append(Runner(name, ratio, b, _ort_runner(bundle / files["int8"], threads)))
        elif b.startswith("openvino-"):
            runners.append(
                Runner(
                    name,
                    ratio,
                    b,
                    _openvino_runner(
                        bundle / files["fp32"], threads, b.split("-")[1], calib, openvino_static
                    ),
                )
            )
    return runners


def measure(
    runners: list[Runner],
    batches: list[int],
    seqs: list[int],
    rounds: int,
    warmup: int,
    vocab: int,
    progress: bool = True,
    min_seconds: float = 0.0,
) -> list[dict[str, Any]]:
    """Interleaved timing: per (batch, seq), ``warmup`` calls of each runner, then ``rounds`` rounds that call
    every runner once in turn (continuing until ``min_seconds`` have passed). Median and p90 per runner."""
    from tqdm import tqdm

    rows = []
    combos = [(b, s) for b in batches for s in seqs]
    bar = tqdm(total=len(combos) * len(runners) * (rounds + warmup), disable=not progress, desc="latency")
    for batch, seq in combos:
        feeds = random_feeds(batch, seq, vocab)
        times: dict[int, list[float]] = {i: [] for i in range(len(runners))}
        for r in runners:
            for _ in range(max(warmup, 1)):  # at least one untimed call: it compiles static shapes
                r.run(feeds)
                bar.update()
        start, done = time.perf_counter(), 0
        while done < rounds or time.perf_counter() - start < min_seconds:
            for i, r in enumerate(runners):
                t0 = time.perf_counter()
                r.run(feeds)
                times[i].append((time.perf_counter() - t0) * 1e3)
                if done < rounds:
                    bar.update()
            done += 1
        for i, r in enumerate(runners):
            ts = sorted(times[i])
            med = statistics.median(ts)
            rows.append(
                {
                    "model": r.model,
                    "ratio": r.ratio,
                    "backend": r.backend,
                    "batch": batch,
                    "seq": seq,
                    "median_ms": med,
                    "p90_ms": ts[min(len(ts) - 1, int(0.9 * len(ts)))],
                    "p20_ms": ts[int(0.2 * (len(ts) - 1))],
                    "samples": len(ts),
                    "throughput_seq_per_s": batch / med * 1e3,
                }
            )
    bar.close()
    add_speedups(rows)
    return rows


def add_speedups(rows: list[dict[str, Any]], base: str = BASE) -> None:
    """Ratios of every row to BERT-base's ORT fp32, ORT int8 and fastest backend at the same batch and seq."""
    for row in rows:
        ref = [
            r for r in rows if r["model"] == base and r["batch"] == row["batch"] and r["seq"] == row["seq"]
        ]
        by = {r["backend"]: r["median_ms"] for r in ref}
        fastest = min(ref, key=lambda r: r["median_ms"]) if ref else None
        row["speedup_vs_ort_fp32"] = by["ort-fp32"] / row["median_ms"] if "ort-fp32" in by else None
        row["speedup_vs_ort_int8"] = by["ort-int8"] / row["median_ms"] if "ort-int8" in by else None
        row["speedup_vs_fastest"] = fastest["median_ms"] / row["median_ms"] if fastest else None
        row["fastest_reference"] = fastest["backend"] if fastest else None


def best_backends(rows: list[dict[str, Any]], reference: str | None = None) -> list[dict[str, Any]]:
    """Each model's fastest backend at every batch and sequence, against BERT-base's fastest and, when
    ``reference`` names a measured model (e.g. the teacher bundle), against that model's fastest: the
    comparison "each side on its fastest backend, same run"."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["model"], r["batch"], r["seq"])
        if key not in best or r["median_ms"] < best[key]["median_ms"]:
            best[key] = r
    out = []
    for (model, batch, seq), r in best.items():
        base = best.get((BASE, batch, seq))
        ref = best.get((reference, batch, seq)) if reference else None
        out.append(
            {
                "model": model,
                "ratio": r["ratio"],
                "batch": batch,
                "seq": seq,
                "backend": r["backend"],
                "median_ms": r["median_ms"],
                "speedup_vs_bert_base_fastest": base["median_ms"] / r["median_ms"] if base else None,
                "reference": reference if ref else None,
                "speedup_vs_reference_fastest": ref["median_ms"] / r["median_ms"] if ref else None,
            }
        )
    return sorted(out, key=lambda r: (r["seq"], r["batch"], r["model"] != BASE, -r["median_ms"]))


def teacher_bundle(bundles: list[Path]) -> str | None:
    """The name of the first bundle exported from a teacher (``kind`` in its ladabert.json), if any."""
    import json

    for b in bundles:
        meta = Path(b) / "ladabert.json"
        if meta.is_file() and json.loads(meta.read_text()).get("kind") == "teacher":
            return Path(b).name
    return None


def check_benchmark_inputs(
    ratios: list[float],
    backends: list[str],
    batches: list[int],
    seqs: list[int],
    threads: int,
    rounds: int,
    bundles: list[Path] | None = None,
) -> None:
    """Fail before any model is built (minutes of work) on a setting that cannot run."""
    from ladabert.export.bundle import bundle_summary

    unknown = [b for b in backends if b not in ALL_BACKENDS]
    if unknown:
        raise LadaBertError(f"unknown backend(s) {unknown}; choose from: {' '.join(ALL_BACKENDS)}")
    bad = [r for r in ratios if not r > 1.0]
    if bad:
        raise LadaBertError(
            f"compression ratios must be > 1 (BERT-base itself is always measured), got {bad}"
        )
    for name, values in (("batch", batches), ("sequence", seqs)):
        if not values or min(values) < 1:
            raise LadaBertError(f"{name} sizes must be >= 1, got {values}")
    if max(seqs) > 512:
        raise LadaBertError(f"sequence lengths must be <= 512 (BERT's positions), got {max(seqs)}")
    if threads < 1 or rounds < 1:
        raise LadaBertError(f"--threads and --rounds must be >= 1, got {threads} and {rounds}")
    for b in bundles or []:
        bundle_summary(b)  # a clear error for a directory that ``ladabert export`` did not write


def run_benchmark(
    ratios: list[float],
    backends: list[str],
    batches: list[int],
    seqs: list[int],
    threads: int,
    rounds: int,
    warmup: int,
    bundles: list[Path] | None = None,
    pattern: str = "rank",
    hybrid: float = 0.5,
    min_seconds: float = 0.0,
    progress: bool = True,
    disable: tuple[str, ...] = (),
    narrow: tuple[float, float] | None = None,
    openvino_static: bool = True,
) -> dict[str, Any]:
    """Build every model and backend, then measure them interleaved. Returns rows and settings.

    ``openvino_static``: OpenVINO runners compile the model for each measured (batch, sequence) shape;
    ``False`` compiles it once with dynamic axes (slower: 5.43 against 4.72 ms for the narrow 10x student
    and 18.39 against 16.68 ms for BERT-base with NNCF int8, batch 1, sequence 128, in one run)."""
    import torch

    check_benchmark_inputs(ratios, backends, batches, seqs, threads, rounds, bundles)
    if narrow is not None and (len(narrow) != 2 or not all(0 < k <= 1 for k in narrow)):
        raise LadaBertError(f"narrow takes two kept shares in (0, 1] (heads, FFN neurons), got {narrow}")
    torch.set_num_threads(threads)
    if not openvino_available():
        backends = [b for b in backends if not b.startswith("openvino")]
    models = bert_base_students(ratios, pattern, hybrid, narrow)
    vocab = models[BASE][1].config.vocab_size
    runners: list[Runner] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (ratio, model) in models.items():
            # BERT-base always gets every rewrite: ``disable`` simulates a regression of the students only.
            off = () if name == BASE else disable
            runners += model_runners(
                name, ratio, model, Path(tmp), backends, threads, vocab, off, openvino_static
            )
        for b in bundles or []:
            runners += bundle_runners(Path(b), backends, threads, openvino_static)
        rows = measure(runners, batches, seqs, rounds, warmup, vocab, progress, min_seconds)
    reference = teacher_bundle(list(bundles or []))
    return {
        "rows": rows,
        "best": best_backends(rows, reference),
        "settings": {
            "threads": threads,
            "rounds": rounds,
            "warmup": warmup,
            "batches": batches,
            "seqs": seqs,
            "backends": backends,
            "student_pattern": pattern,
            "student_hybrid": hybrid,
            "narrow_keep_heads_ffn": list(narrow) if narrow else None,
            "ratios": ratios,
            "disabled_rewrites": list(disable),
            "openvino_shapes": "static" if openvino_static else "dynamic",
            "bundles": [str(b) for b in bundles or []],
        },
    }
