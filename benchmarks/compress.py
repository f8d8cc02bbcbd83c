"""Compress the SST-2 teacher at several ratios and record ``benchmarks/results/compress_<task>.json``.

    python -m benchmarks.compress --teacher runs/teacher-sst2 --ratios 5 10

Each ratio is one ``ladabert compress`` run with the default settings into ``runs/student-<task>-<R>x``;
runs whose directory already exists are read, not repeated, so the command resumes after a kill. A run read
back that was trained with settings that are no longer the defaults is recorded with its ``recipe_changes``
(and said so on the console): move the directory aside to rerun it with today's recipe.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._common import describe_changes, load_results, recipe_changes, save_results

ROW_KEYS = [
    "method",
    "pattern",
    "hybrid",
    "ratio_target",
    "ratio",
    "encoder_ratio",
    "value",
    "value_at_init",
    "teacher_params",
    "student_nonzero_params",
    "bytes",
    "steps",
    "wall_s",
    "curve",
    "device",
    "config",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="runs/teacher-sst2")
    p.add_argument("--task", default="sst2")
    p.add_argument("--ratios", type=float, nargs="+", default=[5.0, 10.0])
    p.add_argument("--method", default="hybrid")
    p.add_argument("--pattern", default="unstructured")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)

    from ladabert.pipeline.compress import compress, compress_preset

    rows = []
    for ratio in args.ratios:
        out = (
            Path(args.runs_dir)
            / f"student-{args.task}-{args.method}-{args.pattern.replace(':', '')}-{ratio:g}x"
        )
        if not (out / "metrics.json").is_file():
            cfg = compress_preset(
                "default", task=args.task, ratio=ratio, method=args.method, pattern=args.pattern
            )
            compress(cfg, args.teacher, out, data_dir=args.data_dir)
        m = json.loads((out / "metrics.json").read_text())
        changes = recipe_changes(m["config"])
        rows.append({k: m.get(k) for k in ROW_KEYS} | {"student_dir": str(out), "recipe_changes": changes})
        print(
            f"{ratio:g}x: {m['metric']} {m['value']:.4f} (teacher {m['teacher_value']:.4f}), "
            f"exact ratio {m['ratio']:.3f}, {m['steps']} steps, {m['wall_s']:.0f} s"
        )
        if changes:
            print(
                f"  note: {out} was trained with settings that are no longer the defaults: "
                f"{describe_changes(changes)}; move it aside to rerun it with today's recipe"
            )
    teacher = json.loads((Path(args.teacher) / "metrics.json").read_text())
    # Merge with rows recorded earlier (other ratios, methods or patterns), replacing same-key rows.
    key = ("method", "pattern", "ratio_target")
    previous = (load_results(f"compress_{args.task}.json") or {}).get("runs", [])
    for r in previous:  # defaults may have changed since the row was recorded
        if r.get("config"):
            r["recipe_changes"] = recipe_changes(r["config"])
    mine = {tuple(r[k] for k in key) for r in rows}
    rows = sorted(
        [r for r in previous if tuple(r[k] for k in key) not in mine] + rows,
        key=lambda r: (r["method"], r["pattern"] or "", r["ratio_target"]),
    )
    out = save_results(
        f"compress_{args.task}.json",
        {
            "task": args.task,
            "metric": teacher["metric"],
            "teacher_value": m["teacher_value"],
            "teacher_dir": args.teacher,
            "runs": rows,
        },
    )
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
