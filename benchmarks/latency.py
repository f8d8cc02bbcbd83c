"""Latency of LadaBERT students against BERT-base, side by side in one process.

    python -m benchmarks.latency --quick                  # batch 1 and 8, sequence 128
    python -m benchmarks.latency                          # batch {1, 8, 32} x sequence {32, 128, 384}
    python -m benchmarks.latency --quick --bundle runs/main/student-5x-onnx runs/main/teacher-onnx

Students are BERT-base-shaped (``BertConfig()``, random weights: latency does not depend on them),
compressed with the real allocation at 2.5x/5x/10x/20x with the ``rank`` pattern (whole rank components,
the pattern that makes dense CPU inference faster; unstructured zeros do not), exported with every
rewrite. Writes ``benchmarks/results/latency_<host>.json``, a markdown table and a PNG plot from it.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
from pathlib import Path

from benchmarks._common import save_results


def host_slug() -> str:
    return re.sub(r"[^a-z0-9]+", "-", socket.gethostname().lower()).strip("-")[:40] or "host"


def best_table(d: dict) -> list[str]:
    """Markdown lines: every model on its fastest backend, against BERT-base's fastest (and the reference
    model's, e.g. the teacher bundle, when the run measured one)."""
    from ladabert.bench.latency import best_backends

    best = d.get("best") or best_backends(d["rows"])
    ref = next((b["reference"] for b in best if b.get("reference")), None)
    lines = [
        "| model | ratio | batch | seq | fastest backend | median ms | vs BERT-base fastest |"
        + (f" vs {ref} fastest |" if ref else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if ref else ""),
    ]
    for b in best:
        vs_ref = b.get("speedup_vs_reference_fastest")
        lines.append(
            f"| {b['model']} | {b['ratio']:.2f}x | {b['batch']} | {b['seq']} | {b['backend']} | "
            f"{b['median_ms']:.2f} | {b['speedup_vs_bert_base_fastest']:.2f}x |"
            + (f" {vs_ref:.2f}x |" if ref and vs_ref else (" - |" if ref else ""))
        )
    return lines


def _kind(model: str) -> str | None:
    """``student`` / ``narrow`` for the generated BERT-base-shaped students, None for a bundle."""
    m = re.fullmatch(r"(student|narrow)-[0-9.]+x", model)
    return m.group(1) if m else None


def render(path: Path) -> None:
    d = json.loads(path.read_text())
    rows = d["rows"]
    lines = [
        "| model | ratio | backend | batch | seq | median ms | p90 ms | vs BERT-base ORT fp32 | vs ORT int8 | "
        "vs BERT-base fastest |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["batch"], r["seq"], r["ratio"], r["model"], r["median_ms"])):
        lines.append(
            f"| {r['model']} | {r['ratio']:.2f}x | {r['backend']} | {r['batch']} | {r['seq']} | {r['median_ms']:.2f} | "
            f"{r['p90_ms']:.2f} | {r['speedup_vs_ort_fp32']:.2f}x | {r['speedup_vs_ort_int8']:.2f}x | "
            f"{r['speedup_vs_fastest']:.2f}x |"
        )
    path.with_suffix(".md").write_text("\n".join(best_table(d) + ["", *lines]) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combos = sorted({(r["batch"], r["seq"]) for r in rows if r["seq"] == 128}) or sorted(
        {(r["batch"], r["seq"]) for r in rows}
    )
    fig, axes = plt.subplots(1, len(combos), figsize=(5.5 * len(combos), 4.2), squeeze=False)
    for ax, (b, s) in zip(axes[0], combos):
        sel = [r for r in rows if r["batch"] == b and r["seq"] == s]
        backends = sorted({r["backend"] for r in sel})
        for i, be in enumerate(backends):
            color = f"C{i}"
            for kind, style in (("student", "o-"), ("narrow", "s:"), (None, "^")):
                pts = sorted(
                    (r["ratio"], r["median_ms"])
                    for r in sel
                    if r["backend"] == be and r["model"] != "bert-base" and _kind(r["model"]) == kind
                )
                if pts:
                    label = {"student": be, "narrow": f"{be} (narrow)", None: f"{be} (--bundle)"}[kind]
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, label=label)
            base = [r["median_ms"] for r in sel if r["backend"] == be and r["model"] == "bert-base"]
            if base:
                ax.axhline(base[0], color=color, ls="--", lw=0.8)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="compression ratio",
            ylabel="median latency (ms)",
            title=f"batch {b}, seq {s} (dashed: BERT-base)",
        )
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        # The target ratios (the exact ones differ in the third digit) and those of bundles.
        ratios = sorted(
            set(d["settings"].get("ratios") or [])
            | {round(r["ratio"], 1) for r in sel if r["model"] != "bert-base" and _kind(r["model"]) is None}
        )
        if ratios:
            ax.set_xticks(ratios, [f"{x:g}" for x in ratios])
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(f"{d['machine']['cpu']}, {d['settings']['threads']} threads", fontsize=9)
    # One legend for all panels, below them, so that it hides no line.
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * -(-len(labels) // 4), 1, 1))
    fig.savefig(path.with_suffix(".png"), dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="batch 1 and 8, sequence 128")
    p.add_argument("--ratios", type=float, nargs="+", default=[2.5, 5.0, 10.0, 20.0])
    p.add_argument("--backends", nargs="+", default=None, help="default: all (OpenVINO ones where installed)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per (batch, seq) (default 20 / 10)")
    p.add_argument("--bundle", nargs="*", default=[], help="exported bundles to measure too")
    p.add_argument("--pattern", default="rank", help="pruning pattern of the students (default rank)")
    p.add_argument(
        "--narrow",
        type=float,
        nargs=2,
        default=None,
        metavar=("KEEP_HEADS", "KEEP_FFN"),
        help="kept shares of heads and FFN neurons of the narrow-<R>x students measured beside the others "
        "(ladabert compress --keep-heads/--keep-ffn; default 0.167 0.167)",
    )
    p.add_argument("--no-narrow", action="store_true", help="measure no narrow students")
    p.add_argument(
        "--openvino-dynamic",
        action="store_true",
        help="compile OpenVINO models once with dynamic axes (default: once per measured batch x sequence)",
    )
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/latency_<host>.json)")
    p.add_argument("--render", default=None, help="only render the table and plot of this JSON")
    args = p.parse_args(argv)
    if args.render:
        render(Path(args.render))
        return 0

    from ladabert import BenchConfig, benchmark
    from ladabert.errors import LadaBertError

    settings = {
        "ratios": args.ratios,
        "threads": args.threads,
        "bundles": args.bundle,
        "pattern": args.pattern,
    }
    settings.update({"backends": args.backends} if args.backends else {})
    settings.update({"rounds": args.rounds} if args.rounds else {})
    settings.update({"narrow": False} if args.no_narrow else {})
    if args.narrow:
        settings.update(narrow_keep_heads=args.narrow[0], narrow_keep_ffn=args.narrow[1])
    settings["openvino_static"] = not args.openvino_dynamic
    try:
        res = benchmark(BenchConfig.preset("quick" if args.quick else "default", **settings))
    except LadaBertError as exc:
        print(f"benchmarks.latency: error: {exc}", file=sys.stderr)
        return 2
    name = Path(args.out).name if args.out else f"latency_{host_slug()}.json"
    out = save_results(name, res) if not args.out else Path(args.out)
    if args.out:
        from ladabert.utils import run_environment, write_json_atomic

        write_json_atomic(out, {**res, **run_environment()})
    render(out)
    for r in res["rows"]:
        if r["seq"] == 128 and r["batch"] in (1, 8):
            print(
                f"b{r['batch']} {r['model']:>16} {r['backend']:>14}: {r['median_ms']:8.2f} ms  "
                f"x{r['speedup_vs_ort_fp32']:.2f} vs ORT fp32  x{r['speedup_vs_fastest']:.2f} vs fastest"
            )
    print(f"-> {out} (+ .md, .png)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
