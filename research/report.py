"""Render the studies' results (``research/results/``) into ``docs/experiments.md``.

python -m research.report            # rewrites the block between the results markers
python -m research.report --print    # prints it instead
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._common import describe_changes, recipe_changes  # noqa: F401
from benchmarks.report import machine, pct, replace_block

from research._common import RESULTS

EXPERIMENTS = Path(__file__).resolve().parents[1] / "docs" / "experiments.md"


def seed_means(rows: list[dict]) -> str:
    """A table of the recipes run with more than one seed: each seed's final value, their mean, and the mean as
    a share of the teacher (empty when no recipe has two seeds). Runs are grouped by what they compress (method,
    pattern, ratio) and by how their recorded config differs from today's defaults, the seed aside, so that a
    run of the default recipe counts with the others whatever its sweep id says."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        cfg = r.get("config") or {}
        what = {k: cfg.get(k, r["overrides"].get(k)) for k in ("method", "pattern", "ratio")}
        changes = (
            {k: v["run"] for k, v in recipe_changes(cfg).items() if k != "seed"} if cfg else r["overrides"]
        )
        groups.setdefault(json.dumps([what, changes], sort_keys=True, default=str), []).append(r)
    lines = []
    for key, runs in groups.items():
        if len(runs) < 2:
            continue
        what, changes = json.loads(key)
        fmt = lambda v: f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
        recipe = ", ".join(f"{k} {fmt(v)}" for k, v in changes.items()) or "default recipe"
        mean = sum(r["value"] for r in runs) / len(runs)
        seeds = ", ".join(f"{(r.get('config') or {}).get('seed', '?')}: {pct(r['value'])}%" for r in runs)
        lines.append(
            f"| {what['method']} {what['pattern']} {fmt(what['ratio'])}x | {recipe} | {len(runs)} | {seeds} | "
            f"**{pct(mean)}%** | {100 * mean / runs[0]['teacher_value']:.1f}% |"
        )
    if not lines:
        return ""
    head = (
        "| student | recipe (what differs from today's defaults) | runs | final by seed | mean | mean / teacher |\n"
        "|---|---|---|---|---|---|\n"
    )
    return "\n\nRecipes run with several seeds:\n\n" + head + "\n".join(lines)


def render() -> str:
    parts = []
    for path in sorted(RESULTS.glob("hybrid_share_*.json")):
        d = json.loads(path.read_text())
        ratios = sorted({r["ratio_target"] for r in d["rows"]})
        shares = sorted({r["hybrid"] for r in d["rows"]})
        modes = sorted({bool(r.get("data_aware")) for r in d["rows"]})
        cols = [(x, a) for x in ratios for a in modes]
        rows = [
            "| hybrid share h | "
            + " | ".join(
                f"{x:g}x" + (", data-aware" if a else ", plain" if len(modes) > 1 else "") for x, a in cols
            )
            + " |",
            "|---|" + "---|" * len(cols),
        ]
        for h in shares:
            cells = [
                next(
                    (
                        f"{pct(r['value_at_init'])}%"
                        for r in d["rows"]
                        if r["hybrid"] == h and r["ratio_target"] == x and bool(r.get("data_aware")) == a
                    ),
                    "-",
                )
                for x, a in cols
            ]
            rows.append(f"| {h:g} | " + " | ".join(cells) + " |")
        cal = d.get("calibration_samples")
        parts.append(
            f"**Hybrid share before distillation** (`{path.name}`): dev {d['metric']} of the teacher compressed "
            f"with share h of the reduction from SVD (0 = pruning only, 1 = SVD only), no training; teacher "
            f"{pct(d['teacher_value'])}%"
            + (
                f"; *plain* is the paper's SVD and magnitude pruning, *data-aware* uses {cal:,} training "
                "examples (`--data-aware`)"
                if cal
                else ""
            )
            + ".\n\n"
            + "\n".join(rows)
        )
    for path in sorted(RESULTS.glob("sweep_*.json")):
        d = json.loads(path.read_text())
        rows = [
            "| setting | set by the setting (augment: as the run had it) | dev at each evaluation | final | "
            "steps | wall |"
        ]
        rows.append("|---|---|---|---|---|---|")
        for r in d["rows"]:
            # Defaults change over time: show the augmentation each run really had.
            settings = {"augment": (r.get("config") or {}).get("augment", 0.0)} | r["overrides"]
            changed = ", ".join(
                f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in settings.items()
            )
            curve = " / ".join(pct(v) for _, v in r["curve"])
            rows.append(
                f"| {r['id']} | {changed} | {curve} | **{pct(r['value'])}%** | {r['steps']:,} | "
                f"{r['wall_s'] / 60:.0f} min |"
            )
        teacher = d["rows"][0]["teacher_value"] if d["rows"] else float("nan")
        parts.append(
            f"**Settings sweep** (`{path.name}`; short `ladabert compress` runs from `{d['teacher_dir']}`, "
            f"teacher {pct(teacher)}%, {machine(d)}, one thread per run):\n\n"
            + "\n".join(rows)
            + seed_means(d["rows"])
        )
    for path in sorted(RESULTS.glob("agreement_*.json")):
        d = json.loads(path.read_text())
        rows = [
            "| model | train accuracy | train agreement with the teacher | dev accuracy | dev agreement |",
            "|---|---|---|---|---|",
        ]
        buckets = [b["words"] for b in d["rows"][0].get("dev_by_length", [])] if d["rows"] else []
        if buckets:  # files written since the by-length breakdown exist have it for every model
            counts = [b["n"] for b in d["rows"][0]["dev_by_length"]]
            rows[0] += "".join(
                f" dev {lo}-{hi - 1} words ({n}) |" if hi else f" dev {lo}+ words ({n}) |"
                for (lo, hi), n in zip(buckets, counts)
            )
            rows[1] += "---|" * len(buckets)
        for r in d["rows"]:
            rows.append(
                f"| `{Path(r['model']).name}` | {pct(r['train_accuracy'])}% | {pct(r['train_agreement'])}% | "
                f"{pct(r['dev_accuracy'])}% | {pct(r['dev_agreement'])}% |"
                + "".join(
                    f" {pct(b['accuracy'])}% |" if b["n"] else " - |" for b in r.get("dev_by_length", [])
                )
            )
        parts.append(
            f"**Agreement with the teacher** (`{path.name}`; {d['train_examples']:,} random training sentences "
            f"and all {d['dev_examples']} dev sentences, fp32 models reloaded from disk):\n\n"
            + "\n".join(rows)
        )
    return "\n\n".join(parts) if parts else "_No results yet: run the studies._"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--print", action="store_true", help="print the block instead of rewriting the file")
    args = p.parse_args(argv)
    block = render()
    if args.print:
        print(block)
        return 0
    replace_block(EXPERIMENTS, block)
    print(f"updated {EXPERIMENTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
