"""How often the throughput gate catches a real slowdown, and how often it cries wolf, on this machine.

    python -m benchmarks.gate_power                       # ~15 minutes on 2 cores
    python -m benchmarks.gate_power --trials 10 4 4 4     # a quick look

Model A has the shape of the default teacher, MiniLM-L6 (hidden 384, 6 layers, FFN 1536; random weights:
latency does not depend on values), exported with every rewrite; the slower models are the same model with
a wider FFN, in steps of 64 neurons (a student's ranks make a poor lever: crossing 64 on the attention
factors alone costs ORT about 9% at once). A calibration run times the widths interleaved against A and
picks the ones nearest 5%, 10% and 20% slower; a long verification run then measures their true slowdowns. Every decision is
one ``ladabert.gate`` call with the default settings (fresh sessions, the default budget), A against A or
against a slower model, on ORT fp32 at batch 1, sequence 128. Writes ``results/gate_power.json`` and
``results/gate_power.md``: per condition the outcomes, the regression rate with its 95% Wilson interval,
and the time per decision (setup included).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS, save_results
from ladabert.config import GateConfig

GRID = tuple(range(1536, 2560 + 1, 64))  # FFN widths; the first is model A
TARGETS = (0.05, 0.10, 0.20)


def minilm_models(widths: tuple[int, ...], workdir: Path) -> dict[int, Path]:
    """Directories with ``model.onnx`` and ``config.json`` of the MiniLM-shaped BERT at each FFN width."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from ladabert.bench.latency import export_graphs

    out = {}
    for w in widths:
        torch.manual_seed(0)
        config = BertConfig(
            hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=w, num_labels=2
        )
        d = workdir / f"ffn-{w}"
        d.mkdir()
        paths = export_graphs(BertForSequenceClassification(config).eval(), d, "graph", int8=False)
        paths["fp32"].rename(d / "model.onnx")
        (d / "config.json").write_text(json.dumps(config.to_dict()))
        out[w] = d
    return out


def slowdowns(
    models: dict[float, Path], reference: float, seconds: float, threads: int
) -> dict[float, float]:
    """Median per-round latency ratio of every model to ``reference``, interleaved for ``seconds``."""
    from ladabert.bench.latency import random_feeds
    from ladabert.export.runtime import ort_runner

    runs = {r: ort_runner(p / "model.onnx", threads, spinning=False) for r, p in models.items()}
    feeds = random_feeds(1, 128, 30522)
    for run in runs.values():
        for _ in range(3):
            run(feeds)
    times: dict[float, list[float]] = {r: [] for r in runs}
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        order = list(runs.items())
        for r, run in order if n % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            run(feeds)
            times[r].append(time.perf_counter() - t0)
        n += 1
    return {
        r: statistics.median(a / b for a, b in zip(times[r], times[reference]))
        for r in runs
        if r != reference
    }


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def run_trials(
    reference: Path, candidate: Path, trials: int, threads: int, sessions: int
) -> list[dict[str, Any]]:
    from ladabert import GateConfig, gate

    out = []
    for _ in range(trials):
        t0 = time.perf_counter()
        cfg = GateConfig(
            reference=str(reference), candidates=(str(candidate),), threads=threads, sessions=sessions
        )
        res = gate(cfg, False)
        c = res["checks"][0]
        out.append(
            {
                "outcome": c["outcome"],
                "ratio": c["ratio"],
                "low": c["low"],
                "high": c["high"],
                "rounds": c["rounds"],
                "decision_s": time.perf_counter() - t0,
            }
        )
    return out


def summarize(name: str, slowdown: float | None, trials: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(trials)
    counts = {k: sum(t["outcome"] == k for t in trials) for k in ("pass", "regression", "inconclusive")}
    secs = sorted(t["decision_s"] for t in trials)
    return {
        "condition": name,
        "measured_slowdown": slowdown,
        "trials": n,
        **counts,
        "regression_rate": counts["regression"] / n,
        "regression_rate_95ci": wilson(counts["regression"], n),
        "median_decision_s": statistics.median(secs),
        "max_decision_s": secs[-1],
        "median_rounds": statistics.median(t["rounds"] for t in trials),
        "runs": trials,
    }


def render(d: dict[str, Any], name: str = "gate_power.json") -> str:
    """The markdown table of the gate_power result ``d``, read from ``name`` (also quoted in docs/ci.md by
    benchmarks.report)."""
    m = d["machine"]
    s = d["settings"]
    lines = [
        f"Gate power (`benchmarks/results/{name}`; {m['cpu']}, {m['cores']} cores, flags "
        f"{' '.join(m['flags']) or 'none'}; {s['threads']} threads, ORT fp32, batch 1, sequence 128; every decision "
        f"one `ladabert gate`: max slowdown {s['max_slowdown']:g}, confidence "
        f"{s['confidence']:g}, budget {s['budget_s']:g} s, sessions per model {s['sessions']}; model A: MiniLM-L6-shaped BERT, FFN 1536, random weights, "
        f"{d['model_a_ms']:.2f} ms):",
        "",
        "| candidate | measured slowdown | decisions | pass | regression | inconclusive | regression rate (95% CI) "
        "| median / max s per decision | median rounds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["conditions"]:
        lo, hi = r["regression_rate_95ci"]
        slow = "-" if r["measured_slowdown"] is None else f"{100 * r['measured_slowdown']:+.1f}%"
        lines.append(
            f"| {r['condition']} | {slow} | {r['trials']} | {r['pass']} | {r['regression']} | {r['inconclusive']} "
            f"| {100 * r['regression_rate']:.1f}% ({100 * lo:.1f}-{100 * hi:.1f}%) | "
            f"{r['median_decision_s']:.1f} / {r['max_decision_s']:.1f} | {r['median_rounds']:.0f} |"
        )
    lines += [
        "",
        "Measured slowdowns: median per-round latency ratio to A over a "
        f"{d['verify_seconds']:g}-second interleaved run; FFN widths of the slower models: "
        + ", ".join(str(w) for w in d["chosen_widths"])
        + ".",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--trials",
        type=int,
        nargs=4,
        default=[200, 5, 40, 20],
        metavar=("SAME", "P5", "P10", "P20"),
        help="decisions for A vs A and for the 5%%, 10%% and 20%% slower models",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--sessions",
        type=int,
        default=GateConfig.sessions,
        help="the gate's sessions per model (default: its own)",
    )
    p.add_argument("--calibrate-seconds", type=float, default=60.0)
    p.add_argument("--verify-seconds", type=float, default=120.0)
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gate-power-") as tmp:
        models = minilm_models(GRID, Path(tmp))
        grid = slowdowns(models, GRID[0], args.calibrate_seconds, args.threads)
        chosen = [min(grid, key=lambda r, t=t: abs(grid[r] - 1 - t)) for t in TARGETS]
        print(
            "calibration:", {w: f"{100 * (v - 1):+.1f}%" for w, v in grid.items()}, "->", chosen, flush=True
        )
        verify = slowdowns(
            {r: models[r] for r in {GRID[0], *chosen}}, GRID[0], args.verify_seconds, args.threads
        )
        from ladabert.bench.latency import random_feeds
        from ladabert.export.runtime import ort_runner

        run = ort_runner(models[GRID[0]] / "model.onnx", args.threads, spinning=False)
        feeds = random_feeds(1, 128, 30522)
        run(feeds)
        t0 = time.perf_counter()
        for _ in range(50):
            run(feeds)
        model_a_ms = (time.perf_counter() - t0) / 50 * 1e3
        conditions = [
            summarize(
                "A (same model)",
                None,
                run_trials(models[GRID[0]], models[GRID[0]], args.trials[0], args.threads, args.sessions),
            )
        ]
        for target, r, n in zip(TARGETS, chosen, args.trials[1:]):
            name = f"~{100 * target:.0f}% slower (FFN {r})"
            conditions.append(
                summarize(
                    name,
                    verify[r] - 1,
                    run_trials(models[GRID[0]], models[r], n, args.threads, args.sessions),
                )
            )
            print(name, {k: conditions[-1][k] for k in ("pass", "regression", "inconclusive")}, flush=True)
    data = {
        "benchmark": "gate_power",
        "settings": {
            **GateConfig(
                reference="A", candidates=("B",), threads=args.threads, sessions=args.sessions
            ).to_dict(),
            **{k: v for k, v in vars(args).items() if k != "results"},
        },
        "model_a_ms": model_a_ms,
        "calibration": {str(r): v - 1 for r, v in grid.items()},
        "chosen_widths": chosen,
        "verify_seconds": args.verify_seconds,
        "conditions": conditions,
        "wall_s": time.perf_counter() - started,
    }
    name = (
        "gate_power.json"
        if args.sessions == GateConfig.sessions
        else f"gate_power_sessions{args.sessions}.json"
    )
    path = save_results(name, data, Path(args.results))
    saved = json.loads(path.read_text())
    path.with_suffix(".md").write_text(render(saved, name) + "\n")
    print(render(saved, name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
