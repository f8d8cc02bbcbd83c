"""Helpers shared by the benchmark scripts: where results go and what every result records."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ladabert.utils import run_environment, write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results"


def load_results(name: str, results: Path | None = None) -> dict[str, Any] | None:
    path = (results or RESULTS) / name
    return json.loads(path.read_text()) if path.is_file() else None


def read_teacher_metrics(teacher: str, task: str, tool: str) -> dict[str, Any] | None:
    """The teacher directory's ``metrics.json``, or None after a one-line error on stderr naming the fix."""
    path = Path(teacher) / "metrics.json"
    if path.is_file():
        return json.loads(path.read_text())
    print(
        f"benchmarks.{tool}: error: {path} not found; train the teacher first "
        f"(ladabert finetune --task {task} --out {teacher}) or pass --teacher",
        file=sys.stderr,
    )
    return None


def cpu_name(machine: dict[str, Any]) -> str:
    """The CPU of a result with the instruction sets that change its speed ratios: the same model name
    covers CPUs with and without AVX-512 or AMX."""
    flags = set(machine.get("flags") or ())
    kind = (
        "AMX"
        if "amx_tile" in flags
        else "AVX-512, no AMX"
        if "avx512f" in flags
        else "AVX2, no AVX-512"
        if "avx2" in flags
        else None
    )
    cpu = machine.get("cpu", "?")
    return f"{cpu} ({kind})" if kind else cpu


def block_range(blocks_ms: list[float]) -> str:
    """The spread of the budget protocol's block medians, as the tables print it: ``lo-hi`` in ms."""
    return f"{min(blocks_ms):.2f}-{max(blocks_ms):.2f}"


def publish(name: str, data: dict[str, Any], render: Any) -> Path:
    """:func:`save_results`, then ``render(path)`` (the .md and plots beside the JSON); returns the path."""
    path = save_results(name, data)
    render(path)
    return path


def save_results(name: str, data: dict[str, Any], results: Path | None = None) -> Path:
    """Write ``data`` plus machine, versions and git sha to ``<results>/<name>`` atomically."""
    env = run_environment()
    payload = {**data, **{k: v for k, v in env.items() if k not in data}}
    return write_json_atomic((results or RESULTS) / name, payload)


# CompressConfig fields that say *what* a run compresses or how it logs, not the training recipe: a run that
# differs from today's defaults only in these still follows the default recipe.
NOT_RECIPE = {
    "task",
    "train_file",
    "validation_file",
    "text_columns",
    "label_column",
    "ratio",
    "method",
    "pattern",
    "block_size",
    "max_train_samples",
    "max_eval_samples",
    "eval_steps",
    "eval_batch_size",
    "save_steps",
    "logging_steps",
    "mixed_precision",
    "keep_layers",
    "latency_budget",
    "latency_backend",
    "latency_batch",
    "latency_seq",
    "latency_margin",
    "latency_threads",
    "search_timings",
}
# Settings a method does not use (svd and prune take all of the reduction from one side; distill-only trains a
# dense narrow student without a compression schedule).
_SCHEDULE = {
    "hybrid",
    "embedding_scale",
    "initial_ratio",
    "schedule",
    "schedule_fraction",
    "schedule_updates",
}
UNUSED_BY_METHOD = {
    "svd": {"hybrid"},
    "prune": {"hybrid"},
    "distill-only": _SCHEDULE | {"data_aware", "calibration_samples"},
}
# Settings added after some runs were recorded: what a run without the field did.
BEFORE_THE_SETTING = {
    "augment": 0.0,
    "average_last": 0.0,
    "augment_swap": "batch",
    "length_weight": 0.0,
    "dropout": None,
    "data_aware": False,
    "calibration_samples": 2048,
}


def recipe_changes(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The training settings in which a run's recorded ``config`` differs from today's ``compress`` defaults,
    as ``{field: {"run": value, "default": value}}`` (empty: the run is a run of the default recipe).

    Defaults change as experiments choose them; a result read back from an older run directory must say
    that it was trained differently instead of passing for a run of the current recipe."""
    from dataclasses import asdict

    from ladabert.pipeline.compress import CompressConfig

    out = {}
    unused = NOT_RECIPE | UNUSED_BY_METHOD.get(config.get("method", "hybrid"), set())
    # Defaults that depend on the run (w_attention is 0 where heads were removed) come from a config like its own.
    defaults = asdict(CompressConfig(keep_heads=config.get("keep_heads", 1.0)))
    for field, default in defaults.items():
        if field in unused or (
            (field == "average_every" and not config.get("average_last"))
            or (field == "augment_swap" and not config.get("augment"))
            or (field == "calibration_samples" and not config.get("data_aware"))
        ):
            continue
        value = config.get(field, BEFORE_THE_SETTING.get(field, default))
        if value != default:
            out[field] = {"run": value, "default": default}
    return out


def describe_changes(changes: dict[str, dict[str, Any]]) -> str:
    """``augment 0 (now 0.3), max_steps 24000 (now 3000)``, or ``default`` when there are none."""

    def fmt(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    return (
        ", ".join(f"{k} {fmt(v['run'])} (now {fmt(v['default'])})" for k, v in changes.items()) or "default"
    )
