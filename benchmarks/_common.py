"""Helpers shared by the benchmark scripts: where results go and what every result records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ladabert.utils import run_environment, write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results"


def load_results(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def save_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` plus machine, versions and git sha to ``benchmarks/results/<name>`` atomically."""
    env = run_environment()
    payload = {**data, **{k: v for k, v in env.items() if k not in data}}
    return write_json_atomic(RESULTS / name, payload)
