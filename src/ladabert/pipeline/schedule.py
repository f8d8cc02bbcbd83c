"""The compression schedule: how the target ratio grows during distillation.

As in gradual magnitude pruning (Zhu & Gupta, 2017), the kept parameter count falls along a cubic from
the initial student's to the final one's over the first ``fraction`` of training, in ``updates`` steps,
so that early updates remove much while the network is still redundant and later ones little. After the
last update the student trains at the final ratio.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CompressionSchedule:
    """Ratio targets over training steps.

    Args:
        initial_ratio: compression ratio of the student at step 0.
        final_ratio: compression ratio reached at the last update.
        total_steps: optimizer steps of the whole run.
        fraction: share of ``total_steps`` over which the ratio grows.
        updates: number of recompression steps (the last one reaches ``final_ratio``).
        kind: ``cubic`` or ``linear`` interpolation of the kept parameter count.
    """

    initial_ratio: float
    final_ratio: float
    total_steps: int
    fraction: float = 0.5
    updates: int = 10
    kind: str = "cubic"

    def __post_init__(self) -> None:
        if self.initial_ratio < 1:
            raise ValueError(f"initial_ratio must be >= 1, got {self.initial_ratio}")
        if self.final_ratio < self.initial_ratio:
            raise ValueError(
                f"final_ratio ({self.final_ratio}) must be >= initial_ratio ({self.initial_ratio})"
            )
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.updates < 1:
            raise ValueError(f"updates must be >= 1, got {self.updates}")
        if self.kind not in ("cubic", "linear"):
            raise ValueError(f"kind must be 'cubic' or 'linear', got {self.kind!r}")

    @property
    def update_steps(self) -> list[int]:
        """Optimizer steps after which the student is recompressed (distinct, ascending, >= 1)."""
        span = max(1, round(self.fraction * self.total_steps))
        n = min(self.updates, span)
        return sorted({max(1, round(span * i / n)) for i in range(1, n + 1)})

    def _ratio_at_progress(self, p: float) -> float:
        p = min(max(p, 0.0), 1.0)
        remaining = (1 - p) ** 3 if self.kind == "cubic" else 1 - p
        keep = 1 / self.final_ratio + (1 / self.initial_ratio - 1 / self.final_ratio) * remaining
        return 1 / keep

    def ratio_at(self, step: int) -> float:
        """The ratio the student has after ``step`` optimizer steps (constant between updates)."""
        done = [s for s in self.update_steps if s <= step]
        if not done:
            return self.initial_ratio
        steps = self.update_steps
        return self._ratio_at_progress(len(done) / len(steps))

    def targets(self) -> list[tuple[int, float]]:
        """``(step, ratio)`` for every update."""
        return [(s, self.ratio_at(s)) for s in self.update_steps]
