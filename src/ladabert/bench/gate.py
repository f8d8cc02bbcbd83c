"""The throughput gate: is a candidate model slower than its reference, decided with stated confidence.

    ladabert gate --reference runs/prod-onnx --candidate runs/new-onnx --max-slowdown 0.05
    ladabert gate --reference bert-base --candidate student-10x --min-speedup 2.5
    ladabert gate --reference runs/prod-onnx --save-baseline gate-baseline.json   # store the reference
    ladabert gate --baseline gate-baseline.json --candidate runs/new-onnx         # compare with it later

Python: ``ladabert.gate(GateConfig(reference=..., candidates=(...,)))``.

Every (candidate, backend, batch, sequence) is one *check* against the reference on the same backend and
shape. Both sides run in this process, interleaved round by round (the order reversed every other round),
each through ``sessions`` runtime sessions taken in turn, with the thread count fixed, so that the machine's speed and its slow spells hit both alike: the ratio
means the same on every CPU, and no stored number is needed. After ``min_rounds`` and then at every 50%
more rounds the gate computes each pending check's interval on ``median(candidate) / median(reference)``
(:mod:`ladabert.bench.stats`) and decides it: *regression* when the interval lies above the limit
(``1 + max_slowdown``, or ``1 / min_speedup``), *pass* when it lies below. Decided checks stop running;
checks still open when ``budget_s`` or ``max_rounds`` runs out are *inconclusive*, reported with their
interval and about how many rounds would decide them. Exit status: 0 pass, 1 regression, 2 usage error,
3 inconclusive.

A stored baseline (``--save-baseline``) keeps the reference's samples (``baseline_rounds`` rounds over
``baseline_s`` seconds at least) with this machine's fingerprint (CPU model, ISA flags, cores, threads,
runtime versions); it is compared only where the fingerprint matches, and refused in one line, with the
command that re-baselines, anywhere else. Against it the candidate's first look comes after as many
rounds as the baseline holds.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ladabert.bench import stats
from ladabert.bench.latency import bundle_config, calibration_feeds, check_seqs_fit, onnx_runner, random_feeds
from ladabert.config import GateConfig
from ladabert.errors import LadaBertError
from ladabert.export.runtime import nncf_int8, openvino_runner

BASELINE_KIND = "ladabert-gate-baseline"
EXIT_CODES = {"pass": 0, "regression": 1, "inconclusive": 3}
_ZOO = re.compile(r"^(bert-base|(student|narrow)-(\d+(?:\.\d+)?)x)$")
SPEC_HELP = (
    "a bundle directory (ladabert export), a directory with model.onnx and config.json, a model directory, "
    "a BERT config .json, or one of bert-base, student-<R>x, narrow-<R>x"
)


@dataclass
class Timer:
    """One model on one backend at one shape: its sessions, used in turn round by round, and its timed
    calls in milliseconds."""

    role: str
    model: str
    backend: str
    shape: tuple[int, int]
    runs: list[Callable[[dict[str, np.ndarray]], Any]]
    times: list[float] = field(default_factory=list)


@dataclass
class Check:
    candidate: Timer
    reference: Timer
    outcome: str | None = None
    interval: stats.Interval | None = None
    decided_at_s: float | None = None
    rounds_to_decide: int | None = None


def _torch_model_files(spec: str, workdir: Path, name: str, int8: bool) -> tuple[dict[str, Path], int]:
    """ONNX files of a model built by PyTorch (a model directory, a BERT config, or a zoo name); the int8
    file only when ``int8`` (quantizing BERT-base takes a while)."""
    try:
        import torch
        from transformers import BertConfig, BertForSequenceClassification
    except ImportError:
        raise LadaBertError(
            f"measuring {spec} exports it from PyTorch, which needs pip install 'ladabert[train]'; "
            "or name an exported bundle instead"
        ) from None
    from ladabert.bench.latency import NARROW_DEFAULT, bert_base_students, export_graphs

    _check_spec(spec)  # a path that exists, else a zoo name
    path, zoo = Path(spec), _ZOO.match(spec)
    torch.manual_seed(0)
    if path.is_dir():
        from ladabert.pipeline.student import load_classifier

        model = load_classifier(path).eval()
    elif path.is_file():
        try:
            config = BertConfig.from_json_file(str(path))
        except (OSError, ValueError) as exc:
            raise LadaBertError(f"{spec} is not a readable BERT config.json ({exc}); {SPEC_HELP}") from None
        model = BertForSequenceClassification(config).eval()
    elif zoo.group(1) == "bert-base":
        model = bert_base_students([])["bert-base"][1]
    else:
        narrow = NARROW_DEFAULT if zoo.group(2) == "narrow" else None
        models = bert_base_students([float(zoo.group(3))], narrow=narrow)
        if spec not in models:
            raise LadaBertError(f"{spec}: removing the heads and FFN neurons alone exceeds that ratio")
        model = models[spec][1]
    return export_graphs(model, workdir, name, int8=int8), model.config.vocab_size


def _check_spec(spec: str) -> None:
    """Refuse a model name that names nothing, before any model is built (BERT-base takes a while)."""
    if Path(spec).exists():
        return
    zoo = _ZOO.match(spec)
    if not zoo:
        raise LadaBertError(f"{spec} does not exist; name {SPEC_HELP}")
    if zoo.group(3) is not None and float(zoo.group(3)) <= 1:
        raise LadaBertError(f"{spec}: a student's ratio is above 1; name e.g. {zoo.group(2)}-10x")


def _config_file(spec: str) -> Path | None:
    """The config.json that describes the model ``spec`` names, when it is a path."""
    path = Path(spec)
    if path.is_dir():
        return path / "config.json"
    return path if path.is_file() else None


def model_files(spec: str, workdir: Path, name: str, int8: bool = True) -> tuple[dict[str, Path], int]:
    """``({"fp32": path, "int8": path?}, vocab size)`` of the model that ``spec`` names (``int8``: an int8
    file is wanted, made when the model is exported here)."""
    path = Path(spec)
    if path.is_dir() and (path / "ladabert.json").is_file():
        from ladabert.export.bundle import bundle_summary

        meta = bundle_summary(path)
        paths = {p: path / f for p, f in meta["files"].items() if p in ("fp32", "int8")}
    elif path.is_dir() and (path / "model.onnx").is_file():
        paths = {"fp32": path / "model.onnx"}
        if (path / "model_quantized.onnx").is_file():
            paths["int8"] = path / "model_quantized.onnx"
    else:
        return _torch_model_files(spec, workdir, name, int8)
    return paths, bundle_config(path)["vocab_size"]


def machine_fingerprint(threads: int) -> dict[str, Any]:
    """What makes latency ratios comparable: CPU model, ISA flags, cores, threads and runtime versions."""
    from importlib import metadata

    from ladabert.utils import cpu_info

    info = cpu_info()
    out = {"cpu": info["cpu"], "cores": info["cores"], "flags": info["flags"], "threads": threads}
    for lib in ("onnxruntime", "openvino"):
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def _shape_key(backend: str, shape: tuple[int, int]) -> str:
    return f"{backend} b{shape[0]} s{shape[1]}"


def load_baseline(cfg: GateConfig) -> dict[str, Any]:
    """The stored baseline of ``cfg.baseline``, refused in one line unless this machine matches it."""
    path = Path(cfg.baseline or "")
    if not path.is_file():
        raise LadaBertError(
            f"baseline {path} does not exist; write one with ladabert gate --reference MODEL --save-baseline {path}"
        )
    try:
        data = json.loads(path.read_text())
        if data.get("kind") != BASELINE_KIND:
            raise ValueError
    except (OSError, ValueError, AttributeError):
        raise LadaBertError(
            f"{path} is not a gate baseline; write one with ladabert gate --reference MODEL --save-baseline {path}"
        ) from None
    rebase = f"ladabert gate --reference {data.get('reference')} --save-baseline {path}"
    here = machine_fingerprint(cfg.threads)
    stored = data.get("fingerprint", {})
    diff = [f"{k} {stored.get(k)!r} there, {here[k]!r} here" for k in here if stored.get(k) != here[k]]
    if diff:
        raise LadaBertError(
            f"baseline {path} was measured on another machine or setup ({'; '.join(diff)}); it is not "
            f"compared here: re-baseline on this machine with `{rebase}`, or compare in one run with --reference"
        )
    missing = [
        _shape_key(b, (n, s))
        for b in cfg.backends
        for n in cfg.batches
        for s in cfg.seqs
        if _shape_key(b, (n, s)) not in data.get("samples", {})
    ]
    if missing:
        raise LadaBertError(
            f"baseline {path} has no samples for {', '.join(missing)}; re-baseline with `{rebase}` and the "
            "same --backends, --batches and --seqs"
        )
    return data


def _openvino_int8_sessions(fp32: Path, vocab: int, positions: int | None, cfg: GateConfig) -> list[Callable]:
    """OpenVINO int8 sessions that share one NNCF quantization: each compiles the same int8 IR with the
    bf16 hint for the rest, which is what ``openvino_runner(..., "int8")`` does after quantizing."""
    import openvino as ov

    ir, handle = nncf_int8(ov.Core(), fp32, calibration_feeds(vocab, positions))
    runs = [openvino_runner(ir, cfg.threads, "bf16", static=True) for _ in range(cfg.sessions)]
    for run in runs:
        run.tmp = handle  # type: ignore[attr-defined]  # the IR directory lives as long as its sessions
    return runs


def _build_timers(cfg: GateConfig, workdir: Path) -> tuple[list[Timer], list[Check], int]:
    """Timers of the reference (unless stored) and of every candidate, the checks pairing them, and the
    smallest vocabulary among the models (the input ids are drawn below it)."""
    shapes = [(n, s) for n in cfg.batches for s in cfg.seqs]
    roles = [("candidate", c) for c in cfg.candidates]
    stored = load_baseline(cfg) if cfg.baseline else None
    if stored is None:
        roles.insert(0, ("reference", cfg.reference or ""))
    for _, spec in roles:
        _check_spec(spec)
    # Every model's position embeddings, from its config.json, before any model is built or exported.
    positions = {spec: check_seqs_fit(cfg.seqs, _config_file(spec), spec) for _, spec in roles}
    built, vocabs, timers = {}, [], []
    for i, (role, spec) in enumerate(roles):
        if spec not in built:
            built[spec] = model_files(spec, workdir, f"model{i}", "ort-int8" in cfg.backends)
        paths, vocab = built[spec]
        vocabs.append(vocab)
        for b in cfg.backends:
            if b == "openvino-int8":
                runs = _openvino_int8_sessions(paths["fp32"], vocab, positions[spec], cfg)
            else:
                # Each role its own sessions, even for one file; several, because one session can run a
                # few percent slower or faster than another of the same file for as long as it lives.
                runs = [onnx_runner(paths, b, cfg.threads, []) for _ in range(cfg.sessions)]
            timers += [Timer(role, spec, b, shape, runs) for shape in shapes]
    refs: dict[tuple[str, tuple[int, int]], Timer] = {}
    if stored is None:
        refs = {(t.backend, t.shape): t for t in timers if t.role == "reference"}
    else:
        for b in cfg.backends:
            for shape in shapes:
                t = Timer("reference", stored["reference"], b, shape, [])
                t.times = [float(x) for x in stored["samples"][_shape_key(b, shape)]]
                refs[(b, shape)] = t
    checks = [Check(t, refs[(t.backend, t.shape)]) for t in timers if t.role == "candidate"]
    return timers, checks, min(vocabs)


def _look(checks: list[Check], cfg: GateConfig, z: float, elapsed: float, final: bool) -> None:
    for c in checks:
        if c.outcome is not None:
            continue
        c.interval = stats.ratio_interval(
            c.candidate.times, c.reference.times, z, paired=cfg.baseline is None
        )
        c.outcome = stats.decide(c.interval, cfg.limit)
        if c.outcome is not None:
            c.decided_at_s = elapsed
        elif final:
            c.outcome = "inconclusive"
            c.rounds_to_decide = stats.rounds_to_decide(c.interval, cfg.limit, z, len(c.candidate.times))


def _time_round(timers: list[Timer], feeds: dict[tuple[int, int], dict[str, np.ndarray]], n: int) -> None:
    """Round ``n``: every timer once, in reversed order every other round (no side is always first), each
    through its sessions in turn."""
    for t in timers if n % 2 == 0 else timers[::-1]:
        run = t.runs[n % len(t.runs)]
        t0 = time.perf_counter()
        run(feeds[t.shape])
        t.times.append((time.perf_counter() - t0) * 1e3)


def _run_rounds(
    timers: list[Timer],
    checks: list[Check],
    cfg: GateConfig,
    feeds: dict[tuple[int, int], dict[str, np.ndarray]],
    progress: bool,
) -> tuple[int, float]:
    """Interleaved rounds until every check is decided or the budget runs out. Returns the rounds and the
    seconds they took."""
    first = cfg.min_rounds
    if cfg.baseline:
        # Unpaired medians compare like with like: the candidate's samples span as many rounds as the
        # baseline's before the first look, so that one slow spell of the machine does not decide.
        first = max(first, max(len(c.reference.times) for c in checks))
    looks = stats.look_points(first, max(first, cfg.max_rounds))
    z = stats.z_value(cfg.confidence, len(looks))
    bar = _progress(progress, cfg.max_rounds)
    start, rounds = time.perf_counter(), 0
    while True:
        pending = {id(t) for c in checks if c.outcome is None for t in (c.candidate, c.reference)}
        _time_round([t for t in timers if id(t) in pending], feeds, rounds)
        rounds += 1
        elapsed = time.perf_counter() - start
        if bar is not None:
            bar.update()
            bar.set_postfix(open=sum(c.outcome is None for c in checks), s=f"{elapsed:.0f}", refresh=False)
        out_of_time = elapsed >= cfg.budget_s or rounds >= cfg.max_rounds
        if rounds in looks or out_of_time:
            _look(checks, cfg, z, elapsed, final=out_of_time)
            if all(c.outcome is not None for c in checks):
                break
    if bar is not None:
        bar.close()
    return rounds, time.perf_counter() - start


def _time_reference(
    timers: list[Timer], cfg: GateConfig, feeds: dict[tuple[int, int], dict[str, np.ndarray]], progress: bool
) -> tuple[int, float]:
    """Rounds of the reference alone, for a stored baseline: ``baseline_rounds`` and ``baseline_s``
    seconds at least, ``max_rounds`` at most."""
    bar = _progress(progress, cfg.max_rounds)
    start, n = time.perf_counter(), 0
    while n < cfg.max_rounds and (n < cfg.baseline_rounds or time.perf_counter() - start < cfg.baseline_s):
        _time_round(timers, feeds, n)
        n += 1
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return n, time.perf_counter() - start


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="gate rounds", unit="round", leave=False, mininterval=2.0)


def _check_record(c: Check, cfg: GateConfig) -> dict[str, Any]:
    iv = c.interval
    return {
        "candidate": c.candidate.model,
        "reference": c.reference.model,
        "backend": c.candidate.backend,
        "batch": c.candidate.shape[0],
        "seq": c.candidate.shape[1],
        "candidate_ms": float(np.median(c.candidate.times)),
        "reference_ms": float(np.median(c.reference.times)),
        "ratio": iv.ratio if iv else None,
        "low": iv.low if iv else None,
        "high": iv.high if iv else None,
        "limit": cfg.limit,
        "outcome": c.outcome,
        "rounds": len(c.candidate.times),
        "decided_at_s": c.decided_at_s,
        "rounds_to_decide": c.rounds_to_decide,
    }


def _write_baseline(cfg: GateConfig, timers: list[Timer], env: dict[str, Any]) -> None:
    from ladabert.utils import write_json_atomic

    samples = {_shape_key(t.backend, t.shape): t.times for t in timers if t.role == "reference"}
    write_json_atomic(
        cfg.save_baseline,
        {
            "kind": BASELINE_KIND,
            "reference": cfg.reference,
            "fingerprint": machine_fingerprint(cfg.threads),
            "samples": samples,
            "settings": cfg.to_dict(),
            **env,
        },
    )


def gate(config: GateConfig, progress: bool = True) -> dict[str, Any]:
    """Measure the candidates against the reference (or a stored baseline) and decide every check.

    Returns a record: ``outcome`` (``pass``, ``regression`` or ``inconclusive``), ``exit_code`` (0, 1, 3),
    ``checks`` (one per candidate, backend, batch and sequence: medians, ratio, interval, limit, outcome,
    rounds), ``rounds``, ``setup_s``, ``timing_s``, the settings, the machine fingerprint and environment.
    With ``save_baseline`` the reference's samples are written there too (``outcome`` is ``saved`` when
    there was no candidate).

    Raises:
        LadaBertError: a model that cannot be found or loaded, a backend it lacks, or a stored baseline
            from another machine (one line, with the fix).
    """
    from ladabert.utils import check_output_file, run_environment

    if config.save_baseline:
        inputs = [config.reference, config.baseline, *config.candidates]
        check_output_file(config.save_baseline, inputs, "--save-baseline")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ladabert-gate-") as tmp:
        timers, checks, vocab = _build_timers(config, Path(tmp))
        feeds = {
            (n, s): random_feeds(n, s, vocab, seed=config.seed) for n in config.batches for s in config.seqs
        }
        for t in timers:
            for run in t.runs:
                for _ in range(
                    max(config.warmup, 1)
                ):  # at least one untimed call: OpenVINO compiles its shape
                    run(feeds[t.shape])
        setup_s = time.perf_counter() - t0
        if checks:
            rounds, timing_s = _run_rounds(timers, checks, config, feeds, progress)
        else:
            rounds, timing_s = _time_reference(timers, config, feeds, progress)
    env = run_environment()
    if config.save_baseline:
        _write_baseline(config, timers, env)
    outcomes = {c.outcome for c in checks}
    outcome = next((o for o in ("regression", "inconclusive", "pass") if o in outcomes), "saved")
    return {
        "outcome": outcome,
        "exit_code": EXIT_CODES.get(outcome, 0),
        "checks": [_check_record(c, config) for c in checks],
        "rounds": rounds,
        "setup_s": setup_s,
        "timing_s": timing_s,
        "looks": stats.look_points(config.min_rounds, config.max_rounds),
        "settings": config.to_dict(),
        "fingerprint": machine_fingerprint(config.threads),
        **env,
    }
