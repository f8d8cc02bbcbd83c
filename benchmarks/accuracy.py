"""The accuracy and training-cost table: LadaBERT against its ablations, on real data.

    python -m benchmarks.accuracy --task sst2                   # every row; resumable
    python -m benchmarks.accuracy --task sst2 --only hybrid-unstructured-10x distill-only-none-10x
    python -m benchmarks.accuracy --task sst2 --render          # table and plots from the JSON only

One run per row; a row already in ``benchmarks/results/accuracy_<task>.json`` is skipped, and a killed
row resumes from its checkpoints (students live in ``runs/student-<task>-<method>-<pattern>-<R>x``), so
the command can be re-run until the table is complete. Writes the JSON, a markdown
table (``accuracy_<task>.md``) and two plots (``accuracy_vs_ratio_<task>.png``,
``accuracy_vs_steps_<task>.png``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    RESULTS,
    describe_changes,
    load_results,
    read_teacher_metrics,
    recipe_changes,
    save_results,
)

# (method, pattern, ratio, train fraction[, steps[, recipe overrides]]): the paper's table plus the
# training-cost rows. Rows without a step count train for the preset's 3,000 steps; the long distill-only row
# measures how many steps the dense narrow student needs (if it ever gets there) to reach what LadaBERT
# reaches in 3,000. A row with recipe overrides keeps a run of another recipe in the table (its id and
# directory end in the overrides, e.g. ``-augment0``): the training-cost comparison pairs runs of one recipe.
DISTILL_ONLY_LONG = 24000  # the recipes before attention distillation
# Today's recipe: 10x the 1,500 steps LadaBERT 10x needs (its eager attention makes 24,000 too slow here).
DISTILL_ONLY_LONG_ATT = 15000
DISTILL_ONLY_LONG_10PCT = 15000  # 10x the steps LadaBERT needs on 10% of the data (1,500, its schedule's end)
NO_AUGMENT = {"augment": 0.0}
PLAIN = {"data_aware": False}
HALF_SCHEDULE = {"schedule_fraction": 0.5}
# The recipe without length weighting and attention distillation (the rows it is compared with).
NO_ATTENTION = {"length_weight": 0.0, "w_attention": 0.0}
# Narrow students (latency-oriented, not the paper's recipe): heads and FFN neurons removed before the hybrid
# compression, rank pattern (whole rank components) so that the CPU export gets smaller dense matrices.
NARROW_QUARTER = {"keep_heads": 0.25, "keep_ffn": 0.25}
NARROW_SIXTH = {"keep_heads": 0.167, "keep_ffn": 0.167}
NARROW_TWELFTH = {"keep_heads": 0.083, "keep_ffn": 0.083}
ROWS: list[tuple[Any, ...]] = [
    # The paper's table, today's default recipe.
    ("hybrid", "unstructured", 2.5, 1.0),
    ("hybrid", "unstructured", 5.0, 1.0),
    ("hybrid", "unstructured", 10.0, 1.0),
    ("hybrid", "unstructured", 20.0, 1.0),
    ("hybrid", "block", 5.0, 1.0),
    ("hybrid", "block", 10.0, 1.0),
    ("hybrid", "n:m", 5.0, 1.0),
    ("hybrid", "n:m", 10.0, 1.0),
    ("svd", "unstructured", 10.0, 1.0),
    ("prune", "unstructured", 10.0, 1.0),
    ("distill-only", "none", 10.0, 1.0),
    ("distill-only", "none", 10.0, 1.0, DISTILL_ONLY_LONG_ATT),  # training cost with today's recipe
    # The unstructured rows and the distill-only baseline before length weighting and attention distillation.
    ("hybrid", "unstructured", 2.5, 1.0, None, NO_ATTENTION),
    ("hybrid", "unstructured", 5.0, 1.0, None, NO_ATTENTION),
    ("hybrid", "unstructured", 10.0, 1.0, None, NO_ATTENTION),
    ("hybrid", "unstructured", 20.0, 1.0, None, NO_ATTENTION),
    ("distill-only", "none", 10.0, 1.0, None, NO_ATTENTION),
    ("distill-only", "none", 10.0, 1.0, DISTILL_ONLY_LONG, NO_ATTENTION),
    # Training cost: LadaBERT and distill-only at 10x on the full data and on 10% of it, both without token
    # augmentation (the recipe before augmentation became the default; one recipe on both sides).
    ("hybrid", "unstructured", 10.0, 1.0, None, NO_AUGMENT),
    ("distill-only", "none", 10.0, 1.0, None, NO_AUGMENT),
    ("distill-only", "none", 10.0, 1.0, DISTILL_ONLY_LONG, NO_AUGMENT),
    ("hybrid", "unstructured", 10.0, 0.1, None, NO_AUGMENT),
    ("distill-only", "none", 10.0, 0.1, None, NO_AUGMENT),
    ("distill-only", "none", 10.0, 0.1, DISTILL_ONLY_LONG_10PCT, NO_AUGMENT),
    # Narrow 5x students for the CPU latency target (the 5x SST-2 student >= 2x faster than its teacher).
    ("hybrid", "rank", 5.0, 1.0, None, NARROW_QUARTER),
    ("hybrid", "rank", 5.0, 1.0, None, NARROW_SIXTH),
    ("hybrid", "rank", 10.0, 1.0, None, NARROW_SIXTH),
    # One head and a twelfth of the FFN: what the BERT-base-shaped 10x student needs for 4x at batch 1.
    ("hybrid", "rank", 10.0, 1.0, None, NARROW_TWELFTH),
    # The unstructured rows before the schedule was shortened to the first quarter of training (data-aware).
    ("hybrid", "unstructured", 2.5, 1.0, None, HALF_SCHEDULE),
    ("hybrid", "unstructured", 5.0, 1.0, None, HALF_SCHEDULE),
    ("hybrid", "unstructured", 10.0, 1.0, None, HALF_SCHEDULE),
    ("hybrid", "unstructured", 20.0, 1.0, None, HALF_SCHEDULE),
    # The unstructured rows and ablations before data-aware compression became the default (the paper's plain SVD and
    # magnitude pruning, with augmentation).
    ("hybrid", "unstructured", 2.5, 1.0, None, PLAIN),
    ("hybrid", "unstructured", 5.0, 1.0, None, PLAIN),
    ("hybrid", "unstructured", 10.0, 1.0, None, PLAIN),
    ("hybrid", "unstructured", 20.0, 1.0, None, PLAIN),
    ("svd", "unstructured", 10.0, 1.0, None, PLAIN),
    ("prune", "unstructured", 10.0, 1.0, None, PLAIN),
    # The same rows before augmentation became the default (what token augmentation changes at each setting).
    ("hybrid", "unstructured", 2.5, 1.0, None, NO_AUGMENT),
    ("hybrid", "unstructured", 20.0, 1.0, None, {"hybrid": 0.5, **NO_AUGMENT}),
    ("svd", "unstructured", 10.0, 1.0, None, NO_AUGMENT),
    ("prune", "unstructured", 10.0, 1.0, None, NO_AUGMENT),
]


def row_changes(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """How the row's recorded config differs from the current defaults (computed when rendering; the row
    itself keeps its full config, so it never changes meaning)."""
    return recipe_changes(row["config"]) if "config" in row else row.get("recipe_changes") or {}


def row_id(
    method: str,
    pattern: str,
    ratio: float,
    fraction: float,
    steps: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    pat = "none" if method == "distill-only" else pattern.replace(":", "")
    rid = f"{method}-{pat}-{ratio:g}x" + ("" if fraction == 1.0 else f"-{int(fraction * 100)}pct")
    rid += f"-{steps}steps" if steps else ""
    return rid + "".join(f"-{k}{v:g}" for k, v in (overrides or {}).items())


def steps_to_reach(curve: list[list[float]], target: float, from_step: int = 0) -> int | None:
    """First evaluated step at or after ``from_step`` whose value is >= ``target`` (None: never within the run)."""
    return next((int(s) for s, v in curve if s >= from_step and v >= target), None)


def schedule_end(row: dict[str, Any]) -> int:
    """The step from which a LadaBERT student is at its final ratio (0 for runs without a schedule).

    Counting only evaluations from there on keeps the comparison honest: earlier evaluations measure a
    larger student than the one in the table."""
    return int(row["schedule"][-1][0]) if row.get("schedule") else 0


def run_row(
    args: argparse.Namespace,
    method: str,
    pattern: str,
    ratio: float,
    fraction: float,
    steps: int | None = None,
    recipe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from ladabert.pipeline.compress import compress, compress_preset
    from ladabert.pipeline.data import load_glue

    rid = row_id(method, pattern, ratio, fraction, steps, recipe)
    out = Path(args.runs_dir) / f"student-{args.task}-{rid}"
    if not (out / "metrics.json").is_file():
        overrides: dict[str, Any] = {
            "task": args.task,
            "ratio": ratio,
            "method": method,
            "eval_steps": args.eval_steps,
            **(recipe or {}),
        }
        if method != "distill-only":
            overrides["pattern"] = pattern
        if steps or args.max_steps:
            overrides["max_steps"] = steps or args.max_steps
        if fraction < 1.0:
            n = len(load_glue(args.task, "train", args.data_dir))
            overrides["max_train_samples"] = int(n * fraction)
        elif args.max_train_samples:
            overrides["max_train_samples"] = args.max_train_samples
        compress(compress_preset("default", **overrides), args.teacher, out, data_dir=args.data_dir)
    return row_from_run(rid, method, ratio, fraction, out)


def row_from_run(rid: str, method: str, ratio: float, fraction: float, out: Path) -> dict[str, Any]:
    """A table row, read from the run directory's metrics.json (the single source of every number)."""
    m = json.loads((out / "metrics.json").read_text())
    return {
        "id": rid,
        "method": method,
        "pattern": m["pattern"] or "none",
        "hybrid": m.get("hybrid") if method == "hybrid" else None,
        "ratio_target": ratio,
        "ratio": m["ratio"],
        "train_fraction": fraction,
        "value": m["value"],
        "value_at_init": m["value_at_init"],
        "params": m["student_nonzero_params"],
        "teacher_params": m["teacher_params"],
        "steps": m["steps"],
        "wall_s": m["wall_s"],
        "bf16_autocast": bool(m.get("bf16_autocast")),
        "augment": m["config"].get("augment", 0.0),
        "average_last": m["config"].get("average_last", 0.0),
        "config": m["config"],
        "device": m["device"],
        "curve": m["curve"],
        "schedule": m.get("schedule", []),
        "teacher_value": m.get("teacher_value"),
        "student_dir": str(out),
    }


def render(task: str) -> None:
    d = load_results(f"accuracy_{task}.json")
    if not d:
        raise SystemExit(f"no accuracy_{task}.json yet")
    t = d["teacher_value"]
    lines = [
        f"| row | method | pattern | SVD share | recipe (how it differs from the current defaults) | target | exact ratio | non-zero params "
        f"| dev {d['metric']} | % of teacher | steps | wall | device |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| teacher | fine-tuned | - | - | - | 1x | 1.000x | {d['teacher_params']:,} | {100 * t:.2f}% | 100.0% | "
        f"{d.get('teacher_steps', '-')} | - | - |",
    ]
    for r in d["rows"]:
        recipe = describe_changes(row_changes(r))
        lines.append(
            f"| {r['id']} | {r['method']} | {r['pattern']} | {'-' if r.get('hybrid') is None else r['hybrid']} | "
            f"{recipe} | "
            f"{r['ratio_target']:g}x | {r['ratio']:.3f}x | {r['params']:,} | {100 * r['value']:.2f}% | "
            f"{100 * r['value'] / t:.1f}% | {r['steps']:,} | {r['wall_s'] / 60:.0f} min"
            f"{' (bf16)' if r.get('bf16_autocast') else ''} | {r['device']} |"
        )
    if d.get("training_cost"):
        lines += [
            "",
            "| comparison | LadaBERT row | target (LadaBERT final - 1 pt) | steps LadaBERT needs (at its final "
            "ratio, reached at step) | steps distill-only needs (row of the same recipe) | ratio |",
            "|---|---|---|---|---|---|",
        ]
        for c in d["training_cost"]:
            dist = c["distill_only_steps"] or f"not reached in {c['distill_only_max_steps']:,}"
            if c.get("step_ratio"):
                ratio = f"{c['step_ratio']:.1f}x"
            elif c.get("step_ratio_at_least"):
                ratio = f">= {c['step_ratio_at_least']:.1f}x"
            else:
                ratio = "-"
            lines.append(
                f"| {c['setting']} | {c.get('ladabert_row', '')} | {100 * c['target']:.2f}% | {c['ladabert_steps'] or 'not reached'} "
                f"({c.get('ladabert_schedule_end', 0)}) | {dist} ({c.get('distill_only_row', '')}) | {ratio} |"
            )
    (RESULTS / f"accuracy_{task}.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in ratio_lines(d["rows"]).items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
    ax.axhline(100 * t, color="k", ls="--", label="teacher")
    ax.set(
        xscale="log",
        xlabel="compression ratio (teacher / non-zero params)",
        ylabel=f"dev {d['metric']} (%)",
        title=f"{task}: accuracy vs compression",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"accuracy_vs_ratio_{task}.png", dpi=120)
    _plot_steps(d, task, plt)
    print(f"rendered {RESULTS / f'accuracy_{task}.md'} and two plots")


def steps_panels(rows: list[dict[str, Any]], costs: list[dict[str, Any]]) -> list[tuple[str, list[dict]]]:
    """The accuracy-vs-steps panels: one per full-data 10x comparison of distinct recipe (today's first), each
    with that comparison's LadaBERT row and every full-data 10x distill-only row of the same recipe."""
    by_id = {r["id"]: r for r in rows}
    panels, seen = [], set()
    for c in costs:
        lada = by_id.get(c["ladabert_row"])
        if not lada or lada["train_fraction"] != 1.0 or _recipe(lada) in seen or len(panels) == 2:
            continue
        seen.add(_recipe(lada))
        dists = [
            r
            for r in rows
            if r["method"] == "distill-only"
            and r["train_fraction"] == 1.0
            and r["ratio_target"] == lada["ratio_target"]
            and _recipe(r) == _recipe(lada)
            and r["curve"]
        ]
        title = describe_changes(row_changes(lada))
        panels.append(("today's recipe" if title == "default" else title, [lada, *dists]))
    return panels


def _plot_steps(d: dict[str, Any], task: str, plt: Any) -> None:
    panels = steps_panels(d["rows"], d.get("training_cost", []))
    t = d["teacher_value"]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 4.6), sharey=True)
    axes = axes if hasattr(axes, "__len__") else [axes]
    costs = {c["ladabert_row"]: c for c in d.get("training_cost", [])}
    for ax, (title, rows) in zip(axes, panels, strict=False):
        for r in rows:
            ax.plot([c[0] for c in r["curve"]], [100 * c[1] for c in r["curve"]], "o-", ms=3, label=r["id"])
        ax.axhline(100 * t, color="k", ls="--", label="teacher")
        c = costs.get(rows[0]["id"])
        if c:
            ax.axhline(100 * c["target"], color="gray", ls=":", label="LadaBERT final - 1 pt")
            if c.get("ladabert_schedule_end"):
                ax.axvline(
                    c["ladabert_schedule_end"], color="C0", ls=":", lw=0.8, label="LadaBERT at 10x from here"
                )
        ax.set(xscale="log", xlabel="training steps", title=f"{task} 10x, {title}"[:90])
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel(f"dev {d['metric']} (%)")
    fig.tight_layout()
    fig.savefig(RESULTS / f"accuracy_vs_steps_{task}.png", dpi=120)
    plt.close("all")


def ratio_lines(rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Accuracy-vs-ratio lines, one per method and pattern: full-data rows of today's default recipe only,
    so that a line never mixes recipes (rows read back from older runs stay in the table, off the plot)."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r["train_fraction"] == 1.0 and not row_changes(r):
            groups.setdefault(f"{r['method']} ({r['pattern']})", []).append((r["ratio"], 100 * r["value"]))
    return {name: sorted(pts) for name, pts in sorted(groups.items())}


# The settings a LadaBERT run and its distill-only baseline must share to be compared: loss, data, optimizer.
PAIRED = (
    "augment",
    "augment_swap",
    "average_last",
    "length_weight",
    "w_attention",
    "w_logits",
    "w_hidden",
    "w_hard",
    "temperature",
    "learning_rate",
    "dropout",
)


def _recipe(row: dict[str, Any]) -> tuple[Any, ...]:
    changes = row_changes(row)
    return tuple(changes[f]["run"] if f in changes else "default" for f in PAIRED)


def training_cost(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps LadaBERT 10x (at its final ratio) and distill-only 10x (its longest run of the same recipe) need
    to come within one point of LadaBERT's final accuracy, on the full training set and on 10% of it: one
    entry per LadaBERT row that has a distill-only run of its recipe."""
    out = []
    for frac, label in ((1.0, "10x, full training set"), (0.1, "10x, 10% of the training set")):
        ladas = [
            r
            for r in rows
            if r["method"] == "hybrid"
            and r["pattern"] == "unstructured"
            and r["ratio_target"] == 10.0
            and r["train_fraction"] == frac
        ]
        for lada in ladas:
            # Only a distill-only run of the same recipe (loss, data, optimizer) is a fair baseline.
            dists = [
                r
                for r in rows
                if r["method"] == "distill-only"
                and r["ratio_target"] == 10.0
                and r["train_fraction"] == frac
                and _recipe(r) == _recipe(lada)
            ]
            if not dists:
                continue
            dist = max(dists, key=lambda r: r["steps"])
            target = lada["value"] - 0.01
            lada_steps = steps_to_reach(lada["curve"], target, schedule_end(lada))
            dist_steps = steps_to_reach(dist["curve"], target)
            out.append(
                {
                    "setting": label,
                    "ladabert_row": lada["id"],
                    "augment": lada.get("augment", 0.0),
                    "target": target,
                    "ladabert_steps": lada_steps,
                    "ladabert_schedule_end": schedule_end(lada),
                    "distill_only_row": dist["id"],
                    "distill_only_steps": dist_steps,
                    "distill_only_max_steps": dist["steps"],
                    # None when distill-only never got there: the ratio is then at least max_steps / lada_steps.
                    "step_ratio": (dist_steps / lada_steps) if (dist_steps and lada_steps) else None,
                    "step_ratio_at_least": (dist["steps"] / lada_steps) if lada_steps else None,
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sst2")
    p.add_argument("--teacher", default=None, help="default runs/teacher-<task>")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--only", nargs="+", default=None, help="row ids to run (see ROWS)")
    p.add_argument("--max-steps", type=int, default=None, help="override the default 3000 steps")
    p.add_argument("--max-train-samples", type=int, default=None, help="for quick development runs")
    p.add_argument("--eval-steps", type=int, default=250, help="evaluate every N steps (the curves)")
    p.add_argument("--render", action="store_true", help="only render the table and plots")
    args = p.parse_args(argv)
    args.teacher = args.teacher or f"runs/teacher-{args.task}"
    if args.render:
        render(args.task)
        return 0
    teacher = read_teacher_metrics(args.teacher, args.task, "accuracy")
    if teacher is None:
        return 2
    name = f"accuracy_{args.task}.json"
    recorded_value = (load_results(name) or {}).get("teacher_value")
    if recorded_value is not None and not math.isclose(recorded_value, teacher["value"], abs_tol=1e-9):
        # One table, one teacher: rows of two teachers would share one "% of teacher" column.
        print(
            f"benchmarks.accuracy: error: benchmarks/results/{name} was made with a teacher scoring "
            f"{100 * recorded_value:.2f}%, but {args.teacher} scores {100 * teacher['value']:.2f}%; pass "
            f"--teacher with the table's teacher, or move {name} aside to start a table for this one",
            file=sys.stderr,
        )
        return 2
    done = {r["id"]: r for r in (load_results(name) or {}).get("rows", [])}
    for spec in ROWS:
        rid = row_id(*spec)
        if rid in done or (args.only and rid not in args.only):
            continue
        t0 = time.perf_counter()
        row = run_row(args, *spec)
        print(f"{rid}: {row['value']:.4f} ({time.perf_counter() - t0:.0f} s)")
        # Re-read before writing: another process may have added rows meanwhile.
        done = {r["id"]: r for r in (load_results(name) or {}).get("rows", [])} | {rid: row}
        _save(name, args, teacher, done)
    recorded = load_results(name)
    if recorded:
        # Recompute the derived numbers from every row (rows from older runs may lack newer fields).
        _save(name, args, teacher, {r["id"]: r for r in recorded.get("rows", [])})
        render(args.task)
    return 0


def _save(name: str, args: argparse.Namespace, teacher: dict[str, Any], done: dict[str, Any]) -> None:
    rows = [_complete(done[row_id(*r)]) for r in ROWS if row_id(*r) in done]
    save_results(
        name,
        {
            "task": args.task,
            "metric": teacher["metric"],
            "teacher_value": teacher["value"],
            "teacher_params": _teacher_params(args.teacher),
            "teacher_steps": teacher["steps"],
            "rows": rows,
            "training_cost": training_cost(rows),
        },
    )


def _complete(row: dict[str, Any]) -> dict[str, Any]:
    """Re-read a recorded row from its run directory, so the JSON always matches the runs on disk (and rows
    recorded before a field existed gain it)."""
    out = Path(row.get("student_dir", ""))
    if (out / "metrics.json").is_file():
        return row_from_run(row["id"], row["method"], row["ratio_target"], row["train_fraction"], out)
    return row


@functools.cache
def _teacher_params(path: str) -> int:
    from ladabert.pipeline.student import load_classifier

    return sum(p.numel() for p in load_classifier(path).parameters())


if __name__ == "__main__":
    raise SystemExit(main())
