"""Render the results from the JSON in ``benchmarks/results/``: README's two tables, ``docs/results.md``, and
the generated blocks of ``docs/data.md``, ``docs/ci.md`` and ``docs/latency-budgets.md``.

    python -m benchmarks.report            # rewrites the block between the results markers of README.md
                                           # and docs/results.md
    python -m benchmarks.report --print    # prints both instead

Nothing in either is typed by hand: every number comes from a results file. The studies of
``research/`` render into ``docs/experiments.md`` with ``python -m research.report``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._common import RESULTS, cpu_name, describe_changes, load_results, recipe_changes
from benchmarks.latency import best_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS_DOC = ROOT / "docs" / "results.md"
DATA_DOC = ROOT / "docs" / "data.md"
CI_DOC = ROOT / "docs" / "ci.md"
BUDGET_DOC = ROOT / "docs" / "latency-budgets.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
# The latency run the README quotes: the default settings of benchmarks.latency on one machine.
README_LATENCY = "latency_vm.json"


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def machine(d: dict) -> str:
    m = d.get("machine", {})
    return (
        f"{cpu_name(m)}, {m.get('cores', '?')} cores"
        if str(d.get("device", "")).startswith("cpu")
        else d.get("device", "?")
    )


def _todays_rows(d: dict) -> list[dict]:
    """The accuracy rows trained with today's defaults on all the data: one per ratio of the hybrid student
    (unstructured pattern, every head and neuron kept), then the distill-only baseline."""
    rows = [
        r
        for r in d["rows"]
        if r["train_fraction"] == 1.0
        and not recipe_changes(r["config"])
        and r["config"]["keep_heads"] == 1.0
        and r["config"]["keep_ffn"] == 1.0
        and (r["method"], r["pattern"]) in (("hybrid", "unstructured"), ("distill-only", "none"))
    ]
    return sorted(rows, key=lambda r: (r["method"] == "distill-only", r["ratio_target"]))


def readme_accuracy(task: str = "sst2") -> str:
    path = RESULTS / f"accuracy_{task}.json"
    d = json.loads(path.read_text())
    lines = [
        f"| model | ratio | non-zero params | {d['task']} dev {d['metric']} | of the teacher | steps |",
        "|---|---|---|---|---|---|",
        f"| teacher (all-MiniLM-L6-v2, fine-tuned) | 1x | {d['teacher_params']:,} | {pct(d['teacher_value'])}% | "
        f"100% | {d.get('teacher_steps', '-'):,} |",
    ]
    for r in _todays_rows(d):
        name = "LadaBERT" if r["method"] == "hybrid" else "distill-only baseline (dense, narrower)"
        lines.append(
            f"| {name} `{r['id']}` | {r['ratio']:.2f}x | {r['params']:,} | **{pct(r['value'])}%** | "
            f"{100 * r['value'] / d['teacher_value']:.1f}% | {r['steps']:,} |"
        )
    return (
        f"Accuracy (`benchmarks/results/{path.name}`; today's defaults, one seed, fp32 models; "
        f"{machine(d)}):\n\n" + "\n".join(lines)
    )


def readme_latency() -> str:
    path = RESULTS / README_LATENCY
    d = json.loads(path.read_text())
    best = [b for b in d["best"] if b["seq"] == 128 and b["batch"] in (1, 8)]
    by = {(b["model"], b["batch"]): b for b in best}
    models = sorted(
        {b["model"] for b in best}, key=lambda m: (m != "bert-base", round(by[(m, 1)]["ratio"]), m)
    )
    lines = [
        "| model | ratio | batch 1: fastest backend | ms | vs BERT-base | batch 8: fastest backend | ms | vs BERT-base |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        cells = []
        for batch in (1, 8):
            b = by.get((m, batch))
            cells += (
                [b["backend"], f"{b['median_ms']:.1f}", f"{b['speedup_vs_bert_base_fastest']:.2f}x"]
                if b
                else ["-"] * 3
            )
        lines.append(f"| {m} | {by[(m, 1)]['ratio']:.1f}x | " + " | ".join(cells) + " |")
    return (
        f"Latency (`benchmarks/results/{path.name}`; {machine(d)}, {d['settings']['threads']} threads, sequence "
        "128, interleaved medians of one run, each model on its fastest backend; BERT-base-shaped students with "
        "random weights):\n\n" + "\n".join(lines)
    )


def readme_block() -> str:
    return readme_accuracy() + "\n\n" + readme_latency()


def render() -> str:
    parts = []
    for path in sorted(RESULTS.glob("teacher_*.json")):
        d = json.loads(path.read_text())
        parts.append(
            f"**Teacher** ({d.get('model')}, fine-tuned on {d['task']}; `{path.name}`): dev {d['metric']} "
            f"**{pct(d['value'])}%** after {d['steps']:,} steps ({d['config']['epochs']:g} epochs, batch "
            f"{d['config']['batch_size']}, lr {d['config']['learning_rate']:g}"
            + (
                f", weights averaged over the last {100 * d['config']['average_last']:.0f}%"
                if d["config"].get("average_last")
                else ""
            )
            + f"), {d['wall_s'] / 60:.0f} min on "
            f"{machine(d)}."
        )
        runs = d.get("default_recipe_values") or []
        if len(runs) > 1:
            parts.append(
                f"Every run of the default recipe on record ({len(runs)} runs, same settings and seed; CPU "
                "training here is not bit-reproducible): "
                + ", ".join(f"{pct(v)}%" for v in runs)
                + f" (mean {pct(sum(runs) / len(runs))}%)."
            )
        if len(d.get("sweep", [])) > 1:
            rows = [
                "| run | default recipe | learning rate | epochs | weights averaged over | bf16 autocast | "
                "final dev (fp32 model) | best evaluated during training | steps | wall |"
            ]
            rows.append("|---|---|---|---|---|---|---|---|---|---|")
            for r in sorted(
                d["sweep"], key=lambda r: (r["learning_rate"], r["epochs"], r.get("average_last", 0))
            ):
                avg = (
                    f"last {100 * r['average_last']:.0f}% ({r['weights_averaged']} samples)"
                    if r.get("average_last")
                    else "-"
                )
                rows.append(
                    f"| `{Path(r['dir']).name}` | {'yes' if r.get('default_recipe') else '-'} | "
                    f"{r['learning_rate']:g} | {r['epochs']:g} | {avg} | "
                    f"{'yes' if r['bf16_autocast'] else 'no'} | {pct(r['value'])}% | "
                    f"{pct(r['best_evaluated'])}% | {r['steps']:,} | {r['wall_s'] / 60:.0f} min |"
                )
            parts.append(
                "Teacher recipe sweep (the same `ladabert finetune` command with the flags changed; the best-"
                "evaluated column is for reference only, no checkpoint is picked on the dev set; wall times are "
                "not comparable across rows):\n\n" + "\n".join(rows)
            )
    for path in sorted(RESULTS.glob("compress_*.json")):
        d = json.loads(path.read_text())
        rows = [
            "| method | pattern | recipe (how it differs from the current defaults) | target | exact ratio | encoder ratio | non-zero params | dev "
            f"{d['metric']} | vs teacher | step 0 (initial-ratio student, untrained) | steps | wall |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in d["runs"]:
            rows.append(
                f"| {r['method']} | {r['pattern']} | {describe_changes(recipe_changes(r['config']))} | "
                f"{r['ratio_target']:g}x | "
                f"{r['ratio']:.3f}x | "
                f"{r['encoder_ratio']:.2f}x | {r['student_nonzero_params']:,} | {pct(r['value'])}% | "
                f"{100 * (r['value'] - d['teacher_value']):+.2f} pt | {pct(r['value_at_init'])}% ({r['config']['initial_ratio']:g}x) | {r['steps']:,} | "
                f"{r['wall_s'] / 60:.0f} min |"
            )
        parts.append(
            f"**LadaBERT students** (`{path.name}`; distilled from `{d.get('teacher_dir', '?')}`, teacher "
            f"{pct(d['teacher_value'])}%, "
            f"{machine(d)}):\n\n" + "\n".join(rows)
        )
    for path in sorted(RESULTS.glob("export_*.json")):
        d = json.loads(path.read_text())
        rows = [
            "| model | ratio | PyTorch | ONNX fp32 | ONNX int8 | fused attention / layers | nodes per stage |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in d["rows"]:
            stages = " -> ".join(f"{k} {v}" for k, v in r["nodes_per_stage"].items())
            int8 = pct(r["onnx_int8_value"]) + "%" if r["onnx_int8_value"] is not None else "-"
            rows.append(
                f"| {r['kind']} `{Path(r['source']).name}` | {r['ratio']:.2f}x | {pct(r['pytorch_value'])}% | "
                f"{pct(r['onnx_fp32_value'])}% | {int8} | {r['fused_attention_nodes']} / {r['num_layers']} | "
                f"{stages} |"
            )
        parts.append(
            f"**ONNX export** (`{path.name}`, dev {d['metric']} on all {d['rows'][0]['eval_examples']} "
            "examples):\n\n" + "\n".join(rows)
        )
    # The default run (latency_<host>.json) first, then runs with other settings (longer names).
    for path in sorted(RESULTS.glob("latency_*.json"), key=lambda p: (p.stem.count("_"), p.name)):
        d = json.loads(path.read_text())
        sel = [r for r in d["rows"] if r["seq"] == 128 and r["batch"] in (1, 8)]
        rows = [
            "| model | ratio | backend | batch | median ms | vs BERT-base ORT fp32 | vs BERT-base ORT int8 | "
            "vs BERT-base fastest |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(sel, key=lambda r: (r["batch"], r["ratio"], r["model"], r["median_ms"])):
            rows.append(
                f"| {r['model']} | {r['ratio']:.2f}x | {r['backend']} | {r['batch']} | {r['median_ms']:.2f} | "
                f"{r['speedup_vs_ort_fp32']:.2f}x | {r['speedup_vs_ort_int8']:.2f}x | "
                f"{r['speedup_vs_fastest']:.2f}x |"
            )
        png = path.with_suffix(".png").name
        best = [line for line in best_table(d) if "| 128 |" in line or line.startswith(("| model", "|---"))]
        narrow = d["settings"].get("narrow_keep_heads_ffn")
        narrow_text = (
            f"; `narrow-<R>x` first keep {narrow[0]:g} of the heads and {narrow[1]:g} of the FFN neurons "
            "(`--keep-heads/--keep-ffn`)"
            if narrow
            else ""
        )
        parts.append(
            f"**Latency** (`{path.name}`; {machine(d)}, {d['settings']['threads']} threads, sequence 128, "
            f"interleaved medians of one run; `student-<R>x` are BERT-base-shaped, "
            f"{d['settings']['student_pattern']} pattern, random weights{narrow_text}; OpenVINO compiled with "
            # runs before the setting existed compiled once with dynamic axes
            f"{d['settings'].get('openvino_shapes', 'dynamic')} shapes). "
            "Each model on its fastest backend:\n\n"
            + "\n".join(best)
            + "\n\nEvery backend:\n\n"
            + "\n".join(rows)
            + f"\n\n![latency](../benchmarks/results/{png})"
        )
    for path in sorted(RESULTS.glob("accuracy_*.md")):
        task = path.stem.split("_", 1)[1]
        parts.append(
            f"**Accuracy table** (`{path.name}`, from `{path.with_suffix('.json').name}`):\n\n"
            + path.read_text().strip()
            + f"\n\n![accuracy vs ratio](../benchmarks/results/accuracy_vs_ratio_{task}.png)"
            + f"\n\n![accuracy vs steps](../benchmarks/results/accuracy_vs_steps_{task}.png)"
        )
    return "\n\n".join(parts) if parts else "_No results yet: run the benchmarks._"


def frontier_block(path: Path) -> str:
    """A frontier run's table (from its JSON) and plot, a search-only run's table, or the BERT-base
    carry-over table, for docs/latency-budgets.md."""
    if path.name.startswith("budget_bert_base"):
        from benchmarks.budget_bert_base import render
    elif path.stem.endswith("_search"):
        from benchmarks.frontier import render_search as render
    else:
        from benchmarks.frontier import render
    render(path)  # the .md (and .png) beside the JSON, from the JSON
    text = f"`{path.name}`:\n\n" + path.with_suffix(".md").read_text().strip()
    if path.with_suffix(".png").is_file():
        text += f"\n\n![accuracy vs latency](../benchmarks/results/{path.with_suffix('.png').name})"
    return text


def replace_block(path: Path, block: str) -> None:
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path} lacks the {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{block}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--print", action="store_true", help="print the blocks instead of rewriting the files")
    args = p.parse_args(argv)
    readme, full = readme_block(), render()
    if args.print:
        print(readme + "\n\n" + full)
        return 0
    replace_block(README, readme)
    replace_block(RESULTS_DOC, full)
    updated = [README, RESULTS_DOC]
    small = load_results("small_data_sst2.json")
    if small:
        from benchmarks.small_data import render as render_small

        replace_block(DATA_DOC, render_small(small))
        updated.append(DATA_DOC)
    powers = sorted(RESULTS.glob("gate_power*.json"))
    if powers:
        from benchmarks.gate_power import render as render_power

        replace_block(CI_DOC, "\n\n".join(render_power(json.loads(p.read_text()), p.name) for p in powers))
        updated.append(CI_DOC)
    frontiers = sorted(RESULTS.glob("frontier_*.json")) + sorted(RESULTS.glob("budget_bert_base*.json"))
    if frontiers:
        replace_block(BUDGET_DOC, "\n\n".join(frontier_block(p) for p in frontiers))
        updated.append(BUDGET_DOC)
    print("updated " + ", ".join(str(p) for p in updated))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
