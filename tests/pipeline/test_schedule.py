from __future__ import annotations

import pytest

from ladabert.pipeline.schedule import CompressionSchedule


@pytest.mark.parametrize("kind", ["cubic", "linear"])
@pytest.mark.parametrize(
    "r0,r,total,updates", [(2, 10, 3000, 10), (1, 5, 100, 7), (3, 3, 50, 4), (2, 20, 7, 10)]
)
def test_schedule_is_monotone_and_hits_the_final_ratio(kind, r0, r, total, updates):
    s = CompressionSchedule(r0, r, total, fraction=0.5, updates=updates, kind=kind)
    ratios = [s.ratio_at(step) for step in range(total + 1)]
    assert ratios[0] == r0
    assert all(a <= b + 1e-12 for a, b in zip(ratios, ratios[1:]))
    assert ratios[-1] == pytest.approx(r)
    assert s.ratio_at(s.update_steps[-1]) == pytest.approx(r)  # reached at the last update ...
    assert s.update_steps[-1] <= max(1, round(0.5 * total))  # ... within the first half of training
    assert len(s.update_steps) == len(set(s.update_steps)) <= updates


def test_cubic_removes_more_early_than_linear():
    cubic = CompressionSchedule(2, 10, 1000, updates=10, kind="cubic")
    linear = CompressionSchedule(2, 10, 1000, updates=10, kind="linear")
    first = cubic.update_steps[0]
    assert cubic.ratio_at(first) > linear.ratio_at(first)


def test_invalid_schedules():
    with pytest.raises(ValueError, match="final_ratio"):
        CompressionSchedule(5, 2, 100)
    with pytest.raises(ValueError, match="fraction"):
        CompressionSchedule(1, 2, 100, fraction=0)
    with pytest.raises(ValueError, match="kind"):
        CompressionSchedule(1, 2, 100, kind="exp")
