"""Latency and throughput of BERT-base, LadaBERT students and exported bundles, measured side by side.

Every backend of every model is measured in one process, interleaved (A B C A B C ... after warm-up),
with the intra-op thread count fixed and recorded, so that ratios between rows are meaningful on a
shared, noisy machine. ``ladabert bench`` and ``python -m benchmarks.latency`` run it; the Python form is
``ladabert.benchmark(BenchConfig(...))``.

Backends: ``pytorch-fp32``, ``pytorch-bf16``, ``ort-fp32``, ``ort-int8`` (our export with its rewrites),
and, when the ``openvino`` extra is installed, ``openvino-f32``, ``openvino-bf16`` (the ONNX file read
directly, inference precision hint set) and ``openvino-int8`` (NNCF post-training quantization with
``ModelType.TRANSFORMER`` on random calibration sequences, then bf16 for the rest). OpenVINO models are
compiled for each measured (batch, sequence) shape by default (``openvino_static``), during warm-up.
"""

from __future__ import annotations

import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ladabert.config import (  # noqa: F401  (ALL_BACKENDS re-exported)
    ALL_BACKENDS,
    BenchConfig,
    CompressConfig,
    reference_backend,
)
from ladabert.errors import LadaBertError
from ladabert.export.runtime import backend_parts, openvino_available, openvino_runner, ort_runner

BASE = "bert-base"
NARROW_DEFAULT = (BenchConfig.narrow_keep_heads, BenchConfig.narrow_keep_ffn)


@dataclass
class Runner:
    model: str
    ratio: float
    backend: str
    run: Callable[[dict[str, np.ndarray]], Any]
    notes: dict[str, Any] = field(default_factory=dict)


def bert_base_students(
    ratios: list[float],
    pattern: str = "rank",
    hybrid: float = 0.5,
    narrow: tuple[float, float] | None = None,
) -> dict[str, tuple[float, Any]]:
    """BERT-base (``BertConfig()``, random weights) and students of it at ``ratios``, built by
    :func:`ladabert.build_student` (weights are random: latency does not depend on their values).

    ``narrow = (keep_heads, keep_ffn)`` adds a ``narrow-<R>x`` student per ratio that first loses heads and
    FFN neurons (as ``ladabert compress --keep-heads/--keep-ffn``); ratios that removing them alone already
    exceeds get no narrow student.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from ladabert.pipeline import hybrid as hyb
    from ladabert.pipeline.build import build_student

    torch.manual_seed(0)
    base = BertForSequenceClassification(BertConfig(num_labels=2)).eval()
    out = {BASE: (1.0, base)}
    variants = [("student", (1.0, 1.0))] + ([("narrow", narrow)] if narrow else [])
    n = hyb.count_parameters(base)["total"]
    for prefix, (heads, ffn) in variants:
        for r in ratios:
            cfg = CompressConfig(
                ratio=r, pattern=pattern, hybrid=hybrid, keep_heads=heads, keep_ffn=ffn, data_aware=False
            )
            try:
                student = build_student(base, cfg)
            except LadaBertError:  # heads and FFN neurons removed alone exceed this ratio
                continue
            out[f"{prefix}-{r:g}x"] = (n / hyb.count_parameters(student)["total"], student)
    return out


def export_graphs(
    model: Any, workdir: Path, name: str, disable: tuple[str, ...] = (), int8: bool = True
) -> dict[str, Path]:
    """fp32 (and, with ``int8``, int8) ONNX files of ``model`` through ladabert's export and rewrites (no
    task validation: random-weight models have no task; logits are checked against PyTorch instead)."""
    import onnx
    import torch

    from ladabert.export import rewrites as rw
    from ladabert.export.onnx_export import export_onnx

    raw = workdir / f"{name}-raw.onnx"
    export_onnx(model, raw)
    names = [r for r in rw.REWRITES if r not in disable]
    g = rw.apply_rewrites(onnx.load(str(raw)), names, rw.RewriteSettings.for_model(model.config))
    paths = {"fp32": workdir / f"{name}.onnx"}
    onnx.save(g, str(paths["fp32"]))
    if int8:
        paths["int8"] = workdir / f"{name}-int8.onnx"
        onnx.save(rw.quantize_int8(g), str(paths["int8"]))
    raw.unlink()
    feeds = random_feeds(2, 16, model.config.vocab_size, seed=1)
    got = ort_runner(paths["fp32"])(feeds)
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


def check_seqs_fit(seqs: Any, config_file: Path | None, name: str) -> int | None:
    """A model's position embeddings, read from its ``config.json`` (None: not known); refuses sequence
    lengths beyond them before anything is exported or timed (no graph runs past its positions)."""
    from ladabert.utils import check_length

    try:
        positions = int(json.loads(Path(config_file).read_text())["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    check_length(max(seqs, default=0), positions, name, "--seqs")
    return positions


def calibration_feeds(vocab: int, positions: int | None = None) -> list[dict[str, np.ndarray]]:
    """The 32 random sequences NNCF calibrates OpenVINO int8 on (values do not change latency), 128 tokens
    long or as many as the model's ``positions`` embeddings take."""
    return [random_feeds(1, min(128, positions or 128), vocab, seed=i) for i in range(32)]


def onnx_runner(
    paths: dict[str, Path],
    backend: str,
    threads: int,
    calib: list[dict[str, np.ndarray]],
    openvino_static: bool = True,
) -> Callable:
    """One ONNX-based backend of a model whose ``fp32`` (and ``int8``) ONNX files are ``paths``: ORT reads
    the file of its precision, OpenVINO reads the fp32 file and applies its own precision."""
    precision, runtime, hint = backend_parts(backend)
    if precision not in paths:
        raise LadaBertError(f"{paths['fp32'].parent} has no {precision} ONNX file; leave out {backend}")
    if runtime == "onnxruntime":
        return ort_runner(paths[precision], threads, spinning=False)
    return openvino_runner(paths[precision], threads, hint, calib, openvino_static)


def median_ms(
    run: Any, feeds: dict[str, np.ndarray], runs: int = 30, warmup: int = 3, min_s: float = 0.5
) -> float:
    """Median wall time of ``run(feeds)`` in milliseconds over at least ``runs`` calls and ``min_s`` seconds."""
    for _ in range(warmup):
        run(feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# The budget protocol: what a latency budget is checked against, in the search's last word on its chosen
# shape, after export and in the frontier benchmark alike. Five blocks of a second each: a slow stretch of a
# shared machine (seconds long) moves a block or two, not the median of five.
BUDGET_BLOCKS = 5
BUDGET_BLOCK_S = 1.0


def block_medians(
    runs: dict[str, Callable],
    feeds: dict[str, np.ndarray],
    blocks: int | None = None,
    block_s: float | None = None,
    warmup: int = 3,
) -> dict[str, dict[str, Any]]:
    """Each runner timed alone, as production runs it, in ``blocks`` blocks (default :data:`BUDGET_BLOCKS`)
    of at least ``block_s`` seconds (default :data:`BUDGET_BLOCK_S`) and 10 calls. The runners take turns block by block, so one slow stretch falls on few blocks of each;
    each block opens with ``warmup`` untimed calls, since the runner before evicted this one's weights from
    the caches. Returns per runner ``ms`` (the median of its block medians) and ``blocks`` (those medians)."""
    blocks = BUDGET_BLOCKS if blocks is None else blocks
    block_s = BUDGET_BLOCK_S if block_s is None else block_s
    out: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(blocks):
        for name, run in runs.items():
            for _ in range(warmup):
                run(feeds)
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < 10 or time.perf_counter() - start < block_s:
                t0 = time.perf_counter()
                run(feeds)
                times.append((time.perf_counter() - t0) * 1e3)
            out[name].append(statistics.median(times))
    return {
        name: {"ms": statistics.median(ms), "blocks": [round(m, 3) for m in ms]} for name, ms in out.items()
    }


def block_speedup(blocks: list[float], reference_blocks: list[float]) -> float:
    """How many times faster than the reference a runner timed in turn with it is: the median of the
    block-by-block ratios (adjacent blocks share the machine's speed, which drifts on a shared host)."""
    return statistics.median(r / b for r, b in zip(reference_blocks, blocks, strict=True))


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
    calib = calibration_feeds(vocab, getattr(model.config, "max_position_embeddings", None))
    for b in backends:
        if b == "pytorch-fp32":
            runners.append(Runner(name, ratio, b, _torch_runner(model, "fp32", threads)))
        elif b == "pytorch-bf16":
            runners.append(Runner(name, ratio, b, _torch_runner(model, "bf16", threads)))
        else:
            runners.append(Runner(name, ratio, b, onnx_runner(paths, b, threads, calib, openvino_static)))
    return runners


def bundle_config(bundle: Path) -> dict[str, Any]:
    """The config.json beside a bundle's (or any directory's) ONNX files: its vocabulary and positions
    size the random inputs."""
    try:
        config = json.loads((bundle / "config.json").read_text())
        config["vocab_size"] = int(config["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LadaBertError(
            f"{bundle} needs a config.json with vocab_size beside its ONNX file, the input ids are drawn below "
            f"it ({type(exc).__name__}: {exc}); export the model again"
        ) from exc
    return config


def bundle_runners(
    bundle: Path, backends: list[str], threads: int, openvino_static: bool = True
) -> list[Runner]:
    """Backends of an exported bundle: its fp32 and int8 ONNX files on ONNX Runtime and OpenVINO."""
    meta = json.loads((bundle / "ladabert.json").read_text())
    name = f"{bundle.name}"
    ratio = float(meta.get("ratio") or 1.0)
    files = meta["files"]
    config = bundle_config(bundle)
    paths = {p: bundle / f for p, f in files.items() if p in ("fp32", "int8")}
    calib = calibration_feeds(config["vocab_size"], config.get("max_position_embeddings"))
    return [
        Runner(name, ratio, b, onnx_runner(paths, b, threads, calib, openvino_static))
        for b in backends
        if not b.startswith("pytorch") and (b != "ort-int8" or "int8" in paths)
    ]


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


def budget_checks(rows: list[dict[str, Any]], bundles: list[Path]) -> list[dict[str, Any]]:
    """For each bundle of a student compressed to a latency budget: the budget, what the export measured,
    and this run's median on the budget's backend and shape (None when this run did not measure it).

    A student compressed to a speedup over its teacher is judged by that ratio against the teacher's
    bundle timed in the same run on the budget's reference backend (``teacher_backend``, ``teacher_ms``,
    ``speedup_measured``; None without a teacher bundle)."""
    import json

    def median(model: str | None, budget: dict[str, Any]) -> float | None:
        shape = (budget["backend"], budget["batch"], budget["seq"])
        row = next(
            (r for r in rows if r["model"] == model and (r["backend"], r["batch"], r["seq"]) == shape), None
        )
        return row["median_ms"] if row else None

    teacher = teacher_bundle(bundles)
    out = []
    for b in bundles:
        meta = json.loads((Path(b) / "ladabert.json").read_text())
        budget = meta.get("latency_budget")
        if not budget:
            continue
        ms = median(Path(b).name, budget)
        check = {
            "bundle": Path(b).name,
            **{k: budget[k] for k in ("budget_ms", "backend", "batch", "seq")},
            "export_ms": budget.get("bundle_ms"),
            "median_ms": ms,
            "within_budget": None if ms is None else ms <= budget["budget_ms"],
        }
        if budget.get("speedup") is not None:
            reference = reference_backend(budget)
            teacher_ms = median(teacher, {**budget, "backend": reference})
            measured = teacher_ms / ms if teacher_ms is not None and ms is not None else None
            check.update(
                speedup=budget["speedup"],
                teacher=teacher,
                teacher_backend=reference,
                teacher_ms=teacher_ms,
                speedup_measured=measured,
                within_budget=None if measured is None else measured >= budget["speedup"],
            )
        out.append(check)
    return out


def teacher_bundle(bundles: list[Path]) -> str | None:
    """The name of the first bundle exported from a teacher (``kind`` in its ladabert.json), if any."""
    import json

    for b in bundles:
        meta = Path(b) / "ladabert.json"
        if meta.is_file() and json.loads(meta.read_text()).get("kind") == "teacher":
            return Path(b).name
    return None


def benchmark(config: BenchConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Build every model and backend of ``config``, then measure them interleaved.

    Returns ``{"rows": [...], "best": [...], "settings": {...}}``: one row per model, backend, batch and
    sequence (median, p20, p90, throughput, ratios to BERT-base in the same run), each model's fastest
    backend, and the settings (``config`` in full, plus what ran).
    """
    import torch

    from ladabert.export.bundle import bundle_summary

    cfg = config or BenchConfig()
    for b in cfg.bundles:
        bundle_summary(b)  # a clear error, before minutes of work, for a directory export did not write
        check_seqs_fit(cfg.seqs, Path(b) / "config.json", str(b))
    torch.set_num_threads(cfg.threads)
    backends = [b for b in cfg.backends if openvino_available() or not b.startswith("openvino")]
    models = bert_base_students(list(cfg.ratios), cfg.pattern, cfg.hybrid, cfg.narrow_keep)
    # Every model reads the same input ids, drawn below the smallest vocabulary among them.
    vocab = min(
        [models[BASE][1].config.vocab_size] + [bundle_config(Path(b))["vocab_size"] for b in cfg.bundles]
    )
    runners: list[Runner] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (ratio, model) in models.items():
            # BERT-base always gets every rewrite: ``disable`` simulates a regression of the students only.
            off = () if name == BASE else tuple(cfg.disable)
            runners += model_runners(
                name, ratio, model, Path(tmp), backends, cfg.threads, vocab, off, cfg.openvino_static
            )
        for b in cfg.bundles:
            runners += bundle_runners(Path(b), backends, cfg.threads, cfg.openvino_static)
        rows = measure(
            runners,
            list(cfg.batches),
            list(cfg.seqs),
            cfg.rounds,
            cfg.warmup,
            vocab,
            progress,
            cfg.min_seconds,
        )
    return {
        "rows": rows,
        "best": best_backends(rows, teacher_bundle([Path(b) for b in cfg.bundles])),
        "budgets": budget_checks(rows, [Path(b) for b in cfg.bundles]),
        "settings": {
            **cfg.to_dict(),
            "backends_run": backends,
            "student_pattern": cfg.pattern,
            "narrow_keep_heads_ffn": list(cfg.narrow_keep) if cfg.narrow_keep else None,
            "openvino_shapes": "static" if cfg.openvino_static else "dynamic",
        },
    }
