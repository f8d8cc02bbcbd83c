"""Render the README's results section from the JSON in ``benchmarks/results/``.

    python -m benchmarks.report            # rewrites the block between the results markers in README.md
    python -m benchmarks.report --print    # prints it instead

Nothing in that block is typed by hand: every number comes from a results file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._common import RESULTS, describe_changes, recipe_changes
from benchmarks.latency import best_table

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
        seeds = ", ".join(f"{(r.get('config') or {}).get('seed', '?')}: {_pct(r['value'])}%" for r in runs)
        lines.append(
            f"| {what['method']} {what['pattern']} {fmt(what['ratio'])}x | {recipe} | {len(runs)} | {seeds} | "
            f"**{_pct(mean)}%** | {100 * mean / runs[0]['teacher_value']:.1f}% |"
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
    for path in sorted(RESULTS.glob("teacher_*.json")):
        d = json.loads(path.read_text())
        parts.append(
            f"**Teacher** ({d.get('model')}, fine-tuned on {d['task']}; `{path.name}`): dev {d['metric']} "
            f"**{_pct(d['value'])}%** after {d['steps']:,} steps ({d['config']['epochs']:g} epochs, batch "
            f"{d['config']['batch_size']}, lr {d['config']['learning_rate']:g}"
            + (
                f", weights averaged over the last {100 * d['config']['average_last']:.0f}%"
                if d["config"].get("average_last")
                else ""
            )
            + f"), {d['wall_s'] / 60:.0f} min on "
            f"{_machine(d)}."
        )
        runs = d.get("default_recipe_values") or []
        if len(runs) > 1:
            parts.append(
                f"Every run of the default recipe on record ({len(runs)} runs, same settings and seed; CPU "
                "training here is not bit-reproducible): "
                + ", ".join(f"{_pct(v)}%" for v in runs)
                + f" (mean {_pct(sum(runs) / len(runs))}%)."
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
                    f"{'yes' if r['bf16_autocast'] else 'no'} | {_pct(r['value'])}% | "
                    f"{_pct(r['best_evaluated'])}% | {r['steps']:,} | {r['wall_s'] / 60:.0f} min |"
                )
            parts.append(
                "Teacher recipe sweep (the same `ladabert finetune` command with the flags changed; the best-"
                "evaluated column is for reference only, no checkpoint is picked on the dev set; wall times are "
                "not comparable across rows: the runs shared the 2 cores with different other jobs):\n\n"
                + "\n".join(rows)
            )
    for path in sorted(RESULTS.glob("compress_*.json")):
        d = json.loads(path.read_text())
        rows = [
            "| method | pattern | recipe (vs today's defaults) | target | exact ratio | encoder ratio | non-zero params | dev "
            f"{d['metric']} | vs teacher | step 0 (initial-ratio student, untrained) | steps | wall |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in d["runs"]:
            rows.append(
                f"| {r['method']} | {r['pattern']} | {describe_changes(recipe_changes(r['config']))} | "
                f"{r['ratio_target']:g}x | "
                f"{r['ratio']:.3f}x | "
                f"{r['encoder_ratio']:.2f}x | {r['student_nonzero_params']:,} | {_pct(r['value'])}% | "
                f"{100 * (r['value'] - d['teacher_value']):+.2f} pt | {_pct(r['value_at_init'])}% ({r['config']['initial_ratio']:g}x) | {r['steps']:,} | "
                f"{r['wall_s'] / 60:.0f} min |"
            )
        parts.append(
            f"**LadaBERT students** (`{path.name}`; distilled from `{d.get('teacher_dir', '?')}`, teacher "
            f"{_pct(d['teacher_value'])}%, "
            f"{_machine(d)}):\n\n" + "\n".join(rows)
        )
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
                        f"{_pct(r['value_at_init'])}%"
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
            f"{_pct(d['teacher_value'])}%"
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
            curve = " / ".join(_pct(v) for _, v in r["curve"])
            rows.append(
                f"| {r['id']} | {changed} | {curve} | **{_pct(r['value'])}%** | {r['steps']:,} | "
                f"{r['wall_s'] / 60:.0f} min |"
            )
        teacher = d["rows"][0]["teacher_value"] if d["rows"] else float("nan")
        parts.append(
            f"**Settings sweep** (`{path.name}`; short `ladabert compress` runs from `{d['teacher_dir']}`, "
            f"teacher {_pct(teacher)}%, {_machine(d)}, one thread per run):\n\n"
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
                f"| `{Path(r['model']).name}` | {_pct(r['train_accuracy'])}% | {_pct(r['train_agreement'])}% | "
                f"{_pct(r['dev_accuracy'])}% | {_pct(r['dev_agreement'])}% |"
                + "".join(
                    f" {_pct(b['accuracy'])}% |" if b["n"] else " - |" for b in r.get("dev_by_length", [])
                )
            )
        parts.append(
            f"**Agreement with the teacher** (`{path.name}`; {d['train_examples']:,} random training sentences "
            f"and all {d['dev_examples']} dev sentences, fp32 models reloaded from disk):\n\n"
            + "\n".join(rows)
        )
    for path in sorted(RESULTS.glob("export_*.json")):
        d = json.loads(path.read_text())
        rows = [
            "| model | ratio | PyTorch | ONNX fp32 | ONNX int8 | fused attention / layers | nodes per stage |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in d["rows"]:
            stages = " -> ".join(f"{k} {v}" for k, v in r["nodes_per_stage"].items())
            int8 = _pct(r["onnx_int8_value"]) + "%" if r["onnx_int8_value"] is not None else "-"
            rows.append(
                f"| {r['kind']} `{Path(r['source']).name}` | {r['ratio']:.2f}x | {_pct(r['pytorch_value'])}% | "
                f"{_pct(r['onnx_fp32_value'])}% | {int8} | {r['fused_attention_nodes']} / {r['num_layers']} | "
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
            f"**Latency** (`{path.name}`; {_machine(d)}, {d['settings']['threads']} threads, sequence 128, "
            f"interleaved medians of one run; `student-<R>x` are BERT-base-shaped, "
            f"{d['settings']['student_pattern']} pattern, random weights{narrow_text}; OpenVINO compiled with "
            # runs before the setting existed compiled once with dynamic axes
            f"{d['settings'].get('openvino_shapes', 'dynamic')} shapes). "
            "Each model on its fastest backend:\n\n"
            + "\n".join(best)
            + "\n\nEvery backend:\n\n"
            + "\n".join(rows)
            + f"\n\n![latency](benchmarks/results/{png})"
        )
    for path in sorted(RESULTS.glob("accuracy_*.md")):
        parts.append(
            f"**Accuracy table** (`{path.name}`, from `{path.with_suffix('.json').name}`):\n\n"
            + path.read_text().strip()
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
