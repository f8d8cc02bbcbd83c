"""The default teacher recipe on small training sets: seeded random subsets of SST-2 (2k and 5k examples
by default), fine-tuned with no flags but the subset size, against the majority-class baseline and the
full-data teacher of ``teacher_sst2.json``.

Each subset is fine-tuned twice: with today's defaults (``--min-steps 1000``: at least 1,000 optimizer
steps, so small data gets more epochs) and with ``--min-steps 0`` (epochs alone: the recipe tuned on the
67k examples, which gives a couple of hundred steps here), so that the table shows what the rule buys::

    python -m benchmarks.small_data --data-dir ../shared/data/glue --sizes 2000 5000

Writes ``benchmarks/results/small_data_sst2.json`` (rows with their full config) and
``small_data_sst2.md``. Finished runs in ``--runs`` are reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._common import RESULTS, load_results, save_results

RULES = {"min-steps 1000 (default)": {}, "epochs only (min-steps 0)": {"min_steps": 0}}


def _row(m: dict, size: int, rule: str) -> dict:
    return {
        "train_examples": size,
        "rule": rule,
        "value": m["value"],
        "majority_value": m["majority_value"],
        "steps": m["steps"],
        "epochs": m["epochs"],
        "wall_s": m["wall_s"],
        "metric": m["metric"],
        "config": m["config"],
        "machine": m["machine"],
    }


def render(data: dict) -> str:
    full = data.get("full_data")
    machine = data["rows"][0]["machine"]
    where = f"{machine['cpu']}, {machine['cores']} cores"
    if full and full["machine"]["cpu"] != machine["cpu"]:
        where += f"; the full-data teacher on {full['machine']['cpu']}"
    lines = [
        f"SST-2 dev {data['metric']} of the default teacher recipe (all-MiniLM-L6-v2) on seeded random training "
        f"subsets ({where}); majority = always the most frequent training label.",
        "",
        "| train examples | rule | steps | epochs | dev accuracy | majority | vs full data |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        gap = f"{100 * (r['value'] - full['value']):+.1f} pts" if full else "-"
        lines.append(
            f"| {r['train_examples']:,} | {r['rule']} | {r['steps']:,} | {r['epochs']:.1f} | "
            f"{100 * r['value']:.1f} | {100 * r['majority_value']:.1f} | {gap} |"
        )
    if full:
        lines.append(
            f"| {full['train_examples']:,} (full) | default | {full['steps']:,} | {full['epochs']:.1f} | "
            f"{100 * full['value']:.1f} | - | - |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000])
    p.add_argument("--runs", default="runs/small-data", help="where the teachers are written (and reused)")
    p.add_argument("--data-dir", default=None, help="GLUE root (default: see ladabert.pipeline.data)")
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    args = p.parse_args(argv)
    from ladabert.config import FinetuneConfig
    from ladabert.pipeline.teacher import finetune

    rows = []
    for size in args.sizes:
        for rule in args.rules:
            out = Path(args.runs) / f"teacher-{size}-{'default' if not RULES[rule] else 'epochs'}"
            if not (out / "metrics.json").is_file():
                cfg = FinetuneConfig(task="sst2", max_train_samples=size, **RULES[rule])
                finetune(cfg, out, data_dir=args.data_dir)
            m = json.loads((out / "metrics.json").read_text())
            rows.append(_row(m, size, rule))
            print(f"{size:>6} {rule:<28} steps {m['steps']:>5}  {m['metric']} {m['value']:.4f}")
    teacher = load_results("teacher_sst2.json")
    full = (
        {k: teacher[k] for k in ("value", "steps", "epochs", "train_examples", "machine")}
        if teacher
        else None
    )
    data = {"task": "sst2", "metric": rows[0]["metric"], "rows": rows, "full_data": full}
    save_results("small_data_sst2.json", data)
    (RESULTS / "small_data_sst2.md").write_text(render(data))
    print(render(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
