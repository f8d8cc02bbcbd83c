"""Render the README's results section from the JSON in ``benchmarks/results/``.

    python -m benchmarks.report            # rewrites the block between the results markers in README.md
    python -m benchmarks.report --print    # prints it instead

Nothing in that block is typed by hand: every number comes from a results file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._common import RESULTS

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _machine(d: dict) -> str:
    m = d.get("machine", {})
    return (
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores"
        if str(d.get("device", "")).startswith("cpu")
        else d.get("device", "?")
    )


def render() -> str:
    parts = []
    for path in sorted(RESULTS.glob("teacher_*.json")):
        d = json.loads(path.read_text())
        parts.append(
            f"**Teacher** ({d.get('model')}, fine-tuned on {d['task']}; `{path.name}`): dev {d['metric']} "
            f"**{_pct(d['value'])}%** after {d['steps']:,} steps ({d['config']['epochs']:g} epochs, batch "
            f"{d['config']['batch_size']}, lr {d['config']['learning_rate']:g}), {d['wall_s'] / 60:.0f} min on "
            f"{_machine(d)}."
        )
    for path in sorted(RESULTS.glob("compress_*.json")):
        d = json.loads(path.read_text())
        rows = [
            "| method | pattern | target | exact ratio | encoder ratio | non-zero params | dev "
            f"{d['metric']} | vs teacher | before distillation | steps | wall |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in d["runs"]:
            rows.append(
                f"| {r['method']} | {r['pattern']} | {r['ratio_target']:g}x | {r['ratio']:.3f}x | "
                f"{r['encoder_ratio']:.2f}x | {r['student_nonzero_params']:,} | {_pct(r['value'])}% | "
                f"{100 * (r['value'] - d['teacher_value']):+.2f} pt | {_pct(r['value_at_init'])}% | {r['steps']:,} | "
                f"{r['wall_s'] / 60:.0f} min |"
            )
        parts.append(
            f"**LadaBERT students** of that teacher (`{path.name}`; teacher {_pct(d['teacher_value'])}%, "
            f"{_machine(d)}):\n\n" + "\n".join(rows)
        )
    return "\n\n".join(parts) if parts else "_No results yet: run the benchmarks._"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--print", action="store_true", help="print the block instead of rewriting README.md")
    args = p.parse_args(argv)
    block = render()
    if args.print:
        print(block)
        return 0
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md lacks the {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{block}\n{END}{tail}")
    print(f"updated {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
