"""Short distillation runs that choose the compression defaults on the dev set.

    python -m research.sweep --teacher runs/teacher-sst2                 # every setting of GRID
    python -m research.sweep --teacher runs/teacher-sst2 --only 5x-emb0.25 5x-emb1   # some of them

Every setting is one ``ladabert compress`` run with ``--max-steps`` (default 1,200) into
``runs/sweep-<task>-<id>``; a finished run is read, not repeated, so the command resumes after a kill and
several invocations with disjoint ``--only`` lists can run side by side (give each
``OMP_NUM_THREADS=1`` on a 2-core machine). The JSON ``research/results/sweep_<task>.json`` is rebuilt
from every finished run directory each time, with each run's final value, best value and curve; rows whose
run directory is gone (a fresh clone) are kept as recorded.

One results file holds runs of one teacher: a teacher that scores differently from the one the file's rows
were distilled from is refused. Runs from another teacher go to another file, ``--results NAME``, whose run
directories are ``runs/<NAME without .json>-<id>``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from research._common import load_results, read_teacher_metrics, save_results


def _seeds(name: str, seeds: tuple[int, ...] = (42, 7, 11), **overrides: Any) -> dict[str, dict[str, Any]]:
    """One 3,000-step setting per seed: ids ``<name>-seed<s>``."""
    return {f"{name}-seed{s}": {**overrides, "max_steps": 3000, "seed": s} for s in seeds}


# id -> CompressConfig overrides (on top of the defaults and --max-steps).
GRID: dict[str, dict[str, Any]] = {
    "5x-emb1": {"ratio": 5.0, "embedding_scale": 1.0},
    "5x-emb0.25": {"ratio": 5.0, "embedding_scale": 0.25},
    "5x-emb2": {"ratio": 5.0, "embedding_scale": 2.0},
    "5x-lr1e-4": {"ratio": 5.0, "learning_rate": 1e-4},
    "5x-h0.75": {"ratio": 5.0, "hybrid": 0.75},
    "10x-emb1": {"ratio": 10.0, "embedding_scale": 1.0},
    "10x-emb0.25": {"ratio": 10.0, "embedding_scale": 0.25},
    # The default recipe with twice the steps (the schedule stretches with them): is 3,000 too few?
    "5x-6000steps": {"ratio": 5.0, "max_steps": 6000},
    "10x-6000steps": {"ratio": 10.0, "max_steps": 6000},
    # The trained 5x student's hidden states stay far from the teacher's (MSE about half the teacher's
    # variance at every layer): does the hidden-state term cost the task accuracy?
    "5x-hidden0": {"ratio": 5.0, "max_steps": 3000, "w_hidden": 0.0},
    "5x-hidden0.1": {"ratio": 5.0, "max_steps": 3000, "w_hidden": 0.1},
    # Even 2.5x ended 3.7 points under the teacher: does the student need inputs beyond the training set?
    "5x-aug0.3": {"ratio": 5.0, "max_steps": 3000, "augment": 0.3},
    "10x-aug0.3": {"ratio": 10.0, "max_steps": 3000, "augment": 0.3},
    # The same with the saved weights averaged over the last 40% (after the schedule, masks fixed).
    "5x-aug0.3-avg0.4": {"ratio": 5.0, "max_steps": 3000, "augment": 0.3, "average_last": 0.4},
    "10x-aug0.3-avg0.4": {"ratio": 10.0, "max_steps": 3000, "augment": 0.3, "average_last": 0.4},
    # More augmentation (0.3 helped at 5x and 10x): where does it stop helping?
    "5x-aug0.5": {"ratio": 5.0, "max_steps": 3000, "augment": 0.5},
    # SVD only beat the 0.75 hybrid at 10x in the accuracy table (84.63% against 83.49%, no augmentation):
    # the SVD share with augmentation.
    "5x-h1": {"ratio": 5.0, "max_steps": 3000, "hybrid": 1.0},
    "10x-h1": {"ratio": 10.0, "max_steps": 3000, "hybrid": 1.0},
    # The students fit the teacher on the training sentences (95-98% agreement) far better than on dev
    # (86-92%), and augmentation narrowed that gap: replace tokens by their nearest tokens in the teacher's
    # word-embedding space (good -> excellent, bad, great; movie -> film) instead of random batch tokens.
    "10x-nbr": {"ratio": 10.0, "max_steps": 3000, "augment_swap": "neighbors"},
    "5x-nbr": {"ratio": 5.0, "max_steps": 3000, "augment_swap": "neighbors"},
    # Data-aware truncation and pruning (input covariances, token frequencies on 2,048 training examples):
    # without training it lifts the 5x student from 64.8% to 82.4% and the 10x one from 50.9% to 76.6%.
    "5x-aware": {"ratio": 5.0, "max_steps": 3000, "data_aware": True},
    "10x-aware": {"ratio": 10.0, "max_steps": 3000, "data_aware": True},
    # Data-aware, the 0.5 share has the lowest KL to the teacher before training (hybrid_share_sst2.json).
    "10x-aware-h0.5": {"ratio": 10.0, "max_steps": 3000, "data_aware": True, "hybrid": 0.5},
    # The data-aware curves still climb at step 3,000 (5x) or swing by 1.5 points over its last 1,000 steps
    # (10x): a longer recovery after a schedule that still ends at step 1,500 (the training-cost comparison
    # counts LadaBERT's steps from the schedule's end), and the shorter schedule alone at 3,000 steps.
    "5x-aware-6000-s0.25": {"ratio": 5.0, "max_steps": 6000, "schedule_fraction": 0.25, "data_aware": True},
    "10x-aware-6000-s0.25": {"ratio": 10.0, "max_steps": 6000, "schedule_fraction": 0.25, "data_aware": True},
    "10x-aware-s0.25": {"ratio": 10.0, "max_steps": 3000, "schedule_fraction": 0.25, "data_aware": True},
    "5x-aware-s0.25": {"ratio": 5.0, "max_steps": 3000, "schedule_fraction": 0.25, "data_aware": True},
    "2.5x-aware-s0.25": {"ratio": 2.5, "max_steps": 3000, "schedule_fraction": 0.25, "data_aware": True},
    "20x-aware-s0.25": {"ratio": 20.0, "max_steps": 3000, "schedule_fraction": 0.25, "data_aware": True},
    # 6,000 steps gave nothing at 5x (88.30% either way): the two settings of the loss and optimizer that no
    # sweep has moved yet under today's defaults, at 5x: a higher learning rate (1e-4 was far worse than 3e-4
    # in the first sweep) and temperature 1 (the teacher's own probabilities).
    "5x-lr6e-4": {"ratio": 5.0, "max_steps": 3000, "learning_rate": 6e-4},
    "5x-t1": {"ratio": 5.0, "max_steps": 3000, "temperature": 1.0},
    # Temperature 1 lifted 5x from 88.30% to 88.99%: the same at the table's other ratios.
    "10x-t1": {"ratio": 10.0, "max_steps": 3000, "temperature": 1.0},
    "2.5x-t1": {"ratio": 2.5, "max_steps": 3000, "temperature": 1.0},
    "20x-t1": {"ratio": 20.0, "max_steps": 3000, "temperature": 1.0},
    # The 5x gain of temperature 1 (0.69 points, 6 dev sentences) is within what one run can move: both
    # temperatures again with another seed (the data order, augmentation and calibration draw change).
    "5x-t1-seed7": {"ratio": 5.0, "max_steps": 3000, "temperature": 1.0, "seed": 7},
    "5x-t2-seed7": {"ratio": 5.0, "max_steps": 3000, "temperature": 2.0, "seed": 7},
    "10x-t1-seed7": {"ratio": 10.0, "max_steps": 3000, "temperature": 1.0, "seed": 7},
    "10x-t2-seed7": {"ratio": 10.0, "max_steps": 3000, "temperature": 2.0, "seed": 7},
    # Seed 7 moved 5x by about a point: a third seed of both temperatures for the 5x means.
    "5x-t1-seed11": {"ratio": 5.0, "max_steps": 3000, "temperature": 1.0, "seed": 11},
    "5x-t2-seed11": {"ratio": 5.0, "max_steps": 3000, "temperature": 2.0, "seed": 11},
    # SST-2 trains on phrases (median 7 words) and is judged on whole sentences (median 19): draw training
    # examples by length ** 1.5 (weighted mean 19.5 words, the dev set's mean), three seeds against the
    # default recipe's three seeds from the same teacher (sweep_sst2_length.json).
    "5x-base-seed42": {"ratio": 5.0, "max_steps": 3000, "seed": 42},
    "5x-base-seed7": {"ratio": 5.0, "max_steps": 3000, "seed": 7},
    "5x-base-seed11": {"ratio": 5.0, "max_steps": 3000, "seed": 11},
    "5x-len1.5-seed42": {"ratio": 5.0, "max_steps": 3000, "length_weight": 1.5, "seed": 42},
    "5x-len1.5-seed7": {"ratio": 5.0, "max_steps": 3000, "length_weight": 1.5, "seed": 7},
    "5x-len1.5-seed11": {"ratio": 5.0, "max_steps": 3000, "length_weight": 1.5, "seed": 11},
    # The same pair at 10x: does the 5x gain carry to the higher ratio?
    "10x-base-seed42": {"ratio": 10.0, "max_steps": 3000, "seed": 42},
    "10x-len1.5-seed42": {"ratio": 10.0, "max_steps": 3000, "length_weight": 1.5, "seed": 42},
    # Length weighting left the 5x mean at 98.8% of the teacher (target 99%); temperature 1 was ahead of 2 by
    # 0.23 points over three seeds (sweep_sst2.json): both together at 5x, the same three seeds. And the 10x
    # pair with a second seed (seed 42: length weighting 1.1 points behind).
    **_seeds("5x-len1.5-t1", ratio=5.0, length_weight=1.5, temperature=1.0),
    **_seeds("10x-base", (7,), ratio=10.0),
    **_seeds("10x-len1.5", (7,), ratio=10.0, length_weight=1.5),
    # Attention-map distillation (KL from the teacher's attention distributions, MiniLM's signal; the 5x
    # student's hidden states stay far from the teacher's, its attention maps are closer) on top of length
    # weighting, against 5x-len1.5-seed42 / -seed7 / -seed11.
    **_seeds("5x-len1.5-att1", ratio=5.0, length_weight=1.5, w_attention=1.0),
    # The same at 10x, against 10x-len1.5-seed42 and 10x-base-seed42.
    **_seeds("10x-len1.5-att1", (42,), ratio=10.0, length_weight=1.5, w_attention=1.0),
    # Attention distillation turns the student's attention dropout off, and those runs were at their final
    # level by step 1,500: is part of that the dropout? Dropout 0 everywhere in the student, on top of length
    # weighting without the attention term. And a lower
    # learning rate: the data-aware student starts close to the teacher; 3e-4 was chosen at share 0.5 from
    # plain SVD (1,200 steps, 1e-4 far behind), 6e-4 went down.
    **_seeds("5x-len1.5-drop0", ratio=5.0, length_weight=1.5, dropout=0.0),
    **_seeds("5x-len1.5-lr1.5e-4", ratio=5.0, length_weight=1.5, learning_rate=1.5e-4),
    # Attention distillation on top of length weighting ended at 88.65 / 88.30 / 88.99% at 5x (mean 99.1% of
    # the teacher) and 87.84% at 10x (default recipe 86.81%): the recipe at the table's other two ratios.
    **_seeds("2.5x-len1.5-att1", (42,), ratio=2.5, length_weight=1.5, w_attention=1.0),
    **_seeds("20x-len1.5-att1", (42,), ratio=20.0, length_weight=1.5, w_attention=1.0),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="runs/teacher-sst2")
    p.add_argument("--task", default="sst2")
    p.add_argument("--only", nargs="+", default=None, help=f"setting ids: {' '.join(GRID)}")
    p.add_argument("--max-steps", type=int, default=1200)
    p.add_argument("--eval-steps", type=int, default=300)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--results", default=None, help="results file name (default sweep_<task>.json)")
    args = p.parse_args(argv)
    unknown = sorted(set(args.only or []) - set(GRID))
    if unknown:
        p.error(f"unknown setting id(s) {unknown}; choose from {', '.join(GRID)}")
    default_name = f"sweep_{args.task}.json"
    name = args.results or default_name
    if not (name.startswith("sweep_") and name.endswith(".json")) or "/" in name:
        p.error(f"--results must be a file name sweep_<something>.json, got {name!r}")
    prefix = f"sweep-{args.task}" if name == default_name else name[: -len(".json")]
    teacher = read_teacher_metrics(args.teacher, args.task, "sweep")
    if teacher is None:
        return 2
    teacher_value = teacher["value"]
    recorded = {r["id"]: r for r in (load_results(name) or {}).get("rows", [])}
    other = {r["teacher_value"] for r in recorded.values() if "teacher_value" in r}
    if other and not any(math.isclose(teacher_value, v, abs_tol=1e-9) for v in other):
        print(
            f"research.sweep: error: research/results/{name} holds runs distilled from a teacher scoring "
            f"{', '.join(f'{100 * v:.2f}%' for v in sorted(other))}, but {args.teacher} scores "
            f"{100 * teacher_value:.2f}%: write this teacher's runs to another file (--results "
            f"sweep_{args.task}_<name>.json) or pass the teacher the file was made with",
            file=sys.stderr,
        )
        return 2

    from ladabert.pipeline.compress import compress, compress_preset

    def run_dir(rid: str) -> Path:
        return Path(args.runs_dir) / f"{prefix}-{rid}"

    for rid in args.only or list(GRID):
        out = run_dir(rid)
        if (out / "metrics.json").is_file():
            continue
        settings = {
            "task": args.task,
            "max_steps": args.max_steps,
            "eval_steps": args.eval_steps,
            "save_steps": args.eval_steps,
            "max_length": args.max_length,
        }
        cfg = compress_preset("default", **{**settings, **GRID[rid]})
        compress(cfg, args.teacher, out, data_dir=args.data_dir)

    rows = []
    for rid, overrides in {
        **GRID,
        **{k: r["overrides"] for k, r in recorded.items() if k not in GRID},
    }.items():
        path = run_dir(rid) / "metrics.json"
        if not path.is_file():
            if rid in recorded:  # the run directory is gone (a fresh clone): keep what was recorded
                rows.append(recorded[rid])
            continue
        m = json.loads(path.read_text())
        values = [v for _, v in m["curve"]] or [m["value"]]
        rows.append(
            {
                "id": rid,
                "overrides": overrides,
                "ratio": m["ratio"],
                "value": m["value"],
                "best": max(values),
                "teacher_value": m["teacher_value"],
                "steps": m["steps"],
                "wall_s": m["wall_s"],
                "curve": m["curve"],
                "device": m.get("device"),
                "config": m.get("config"),
            }
        )
        print(
            f"{rid:>20}: final {m['value']:.4f}  best {max(values):.4f}  (teacher {m['teacher_value']:.4f}) "
            f"ratio {m['ratio']:.2f}, {m['steps']} steps, {m['wall_s']:.0f} s"
        )
    if rows:
        save_results(
            name,
            {"task": args.task, "teacher_dir": args.teacher, "teacher_value": teacher_value, "rows": rows},
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
