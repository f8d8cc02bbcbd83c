"""Where the studies keep their results: ``research/results/`` (the product benchmarks use ``benchmarks/results``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import _common

RESULTS = Path(__file__).resolve().parent / "results"


def load_results(name: str) -> dict[str, Any] | None:
    return _common.load_results(name, RESULTS)


def save_results(name: str, data: dict[str, Any]) -> Path:
    return _common.save_results(name, data, RESULTS)


read_teacher_metrics = _common.read_teacher_metrics
