"""BERT-base shape: the shapes the latency search chose, at a fixed ratio, against BERT-base.

    python -m benchmarks.frontier --teacher runs/teacher-sst2 --search-only    # the searched shapes
    python -m benchmarks.budget_bert_base                                      # ratio 10, batch 1 and 8

Each shape of ``benchmarks/results/frontier_sst2_search.json`` (chosen by the search for the all-MiniLM
teacher at a budget; ``--searches`` takes a frontier result too, whose budget students' shapes are then
the ones carried over) is carried over to BERT-base as shares: layers, heads and FFN neurons kept of the
teacher's. The compression ratio is then fixed at ``--ratio`` (the ratio factor makes up what the
structure does not give, with this project's BERT-base students' pattern, ``rank``, and SVD share 0.5).
Random weights throughout (``BertConfig()``; latency does not depend on values). Every model is timed in
one interleaved run on every backend at batch 1 and 8, with BERT-base, ``student-<R>x`` and
``narrow-<R>x``; each model on its fastest backend against BERT-base's fastest. Then, per batch, each
model on its fastest backend and BERT-base on every backend are timed again alone by the budget protocol
(:func:`ladabert.bench.latency.block_medians`, taking turns block by block): the speedups of models each
running by itself, as production runs them, beside the interleaved ones.

Writes ``benchmarks/results/budget_bert_base.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks._common import RESULTS, block_range, cpu_name, publish


def carried_over(shape: dict, source: dict, target, ratio: float):  # noqa: ANN001, ANN201
    """``shape`` (of a teacher with config ``source``) as a candidate of BERT-base config ``target`` at
    ``ratio``: the same kept shares, FFN widths in multiples of 16."""
    from ladabert.pipeline import budget as B

    layers = max(1, round(shape["layers"] / source["num_hidden_layers"] * target.config.num_hidden_layers))
    heads = max(1, round(shape["heads"] / source["num_attention_heads"] * target.config.num_attention_heads))
    ffn = max(
        16, round(shape["ffn"] / source["intermediate_size"] * target.config.intermediate_size / 16) * 16
    )
    structural = target.params / B.structure_params(target, B.Candidate(layers, heads, ffn, 1.0))
    return B.Candidate(layers, heads, ffn, round(max(1.0, ratio / structural), 6))


def searched_shapes(searches: dict) -> dict[str, dict]:
    """``{model: shape}`` of the budget rows of a search-only result (``chosen``) or of a frontier result
    (``shape``, the students that were trained); the other rows (teacher, comparison students) have none."""
    out = {}
    for row in searches["rows"]:
        shape = row.get("chosen") or row.get("shape")
        if isinstance(shape, dict) and {"layers", "heads", "ffn"} <= shape.keys():
            out[row["model"]] = shape
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ratio", type=float, default=10.0)
    p.add_argument("--searches", default=str(RESULTS / "frontier_sst2_search.json"))
    p.add_argument("--backends", nargs="+", default=None, help="default: every installed ONNX backend")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--name", default="budget_bert_base")
    p.add_argument(
        "--teacher", default=None, help="the searches' teacher directory (default: the one recorded)"
    )
    args = p.parse_args(argv)
    searches = json.loads(Path(args.searches).read_text())
    # Only the teacher's config is read (the shares carried over); a path that is not a directory would
    # send transformers to the model hub.
    teacher = Path(args.teacher or searches["teacher"])
    if not (teacher / "config.json").is_file():
        print(
            f"benchmarks.budget_bert_base: error: the searches' teacher {teacher} has no config.json; "
            "pass --teacher with the directory the searches ran on",
            file=sys.stderr,
        )
        return 2

    import torch
    from transformers import AutoConfig, BertConfig

    from ladabert import CompressConfig
    from ladabert.bench.latency import bert_base_students, best_backends, measure, model_runners
    from ladabert.config import GATE_BACKENDS
    from ladabert.export.runtime import openvino_available
    from ladabert.pipeline import budget as B
    from ladabert.pipeline.hybrid import count_parameters

    torch.set_num_threads(2)
    backends = args.backends or [
        b for b in GATE_BACKENDS if openvino_available() or not b.startswith("openvino")
    ]
    source = AutoConfig.from_pretrained(str(teacher)).to_dict()
    models = bert_base_students([args.ratio], "rank", 0.5, (0.167, 0.167))
    base = models["bert-base"][1]
    cfg = CompressConfig(pattern="rank", hybrid=0.5, data_aware=False)
    with tempfile.TemporaryDirectory() as tmp:
        timer = B.CandidateTimer(BertConfig(num_labels=2), cfg, Path(tmp))
        shapes = {}
        for model, chosen in searched_shapes(searches).items():
            cand = carried_over(chosen, source, timer.teacher, args.ratio)
            name = f"searched-{model}-{args.ratio:g}x"
            shapes[name] = {"from": chosen, "bert_base": cand.to_dict()}
            student = timer.student(cand)
            n = count_parameters(student)["total"]
            shapes[name]["ratio"] = timer.teacher.params / n
            models[name] = (shapes[name]["ratio"], student)
        runners = []
        for name, (ratio, model) in models.items():
            runners += model_runners(name, ratio, model, Path(tmp), backends, 2, base.config.vocab_size)
        rows = measure(runners, [1, 8], [128], args.rounds, 3, base.config.vocab_size)
        best = best_backends(rows)
        alone = alone_rows(runners, best, 128, base.config.vocab_size)
    data = {
        "settings": {**vars(args), "backends": backends},
        "shapes": shapes,
        "rows": rows,
        "best": best,
        "alone": alone,
    }
    path = publish(f"{args.name}.json", data, render)
    print(path.with_suffix(".md").read_text())
    return 0


def alone_rows(runners: list, best: list[dict], seq: int, vocab: int) -> list[dict]:
    """Per batch of ``best``: each model on its fastest backend there, and BERT-base on every backend,
    timed alone by the budget protocol; each model's speedup over BERT-base's fastest alone."""
    from ladabert.bench.latency import block_medians, random_feeds

    out = []
    for batch in sorted({b["batch"] for b in best}):
        pick = {(b["model"], b["backend"]) for b in best if b["batch"] == batch}
        chosen = [r for r in runners if r.model == "bert-base" or (r.model, r.backend) in pick]
        timed = block_medians({(r.model, r.backend): r.run for r in chosen}, random_feeds(batch, seq, vocab))
        base_ms = min(t["ms"] for (m, _), t in timed.items() if m == "bert-base")
        for r in chosen:
            t = timed[(r.model, r.backend)]
            out.append(
                {
                    "model": r.model,
                    "ratio": r.ratio,
                    "backend": r.backend,
                    "batch": batch,
                    "ms": t["ms"],
                    "blocks_ms": t["blocks"],
                    "speedup_vs_bert_base_fastest": base_ms / t["ms"],
                }
            )
    return out


def render(path: Path) -> None:
    d = json.loads(path.read_text())
    m = d.get("machine", {})
    lines = [
        f"BERT-base shape, random weights, ratio {d['settings']['ratio']:g}; {cpu_name(m)}, "
        f"{m.get('cores', '?')} cores, 2 threads, seq 128, interleaved medians of one run.",
        "",
        "| model | shape (layers/heads/FFN/ratio factor) | ratio | batch | fastest backend | median ms | vs BERT-base fastest |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in d["best"]:
        s = d["shapes"].get(b["model"], {}).get("bert_base")
        shape = f"{s['layers']}/{s['heads']}/{s['ffn']}/{s['ratio_factor']:g}" if s else "-"
        lines.append(
            f"| {b['model']} | {shape} | {b['ratio']:.2f}x | {b['batch']} | {b['backend']} | {b['median_ms']:.2f} | "
            f"{b['speedup_vs_bert_base_fastest']:.2f}x |"
        )
    alone = d.get("alone")
    if alone:
        lines += [
            "",
            "Alone, by the budget protocol (five one-second blocks, the median of the block medians; the "
            "models take turns block by block): each model on its fastest backend above, BERT-base on every "
            "backend.",
            "",
            "| model | batch | backend | ms (blocks) | vs BERT-base fastest alone |",
            "|---|---|---|---|---|",
        ]
        for a in alone:
            lines.append(
                f"| {a['model']} | {a['batch']} | {a['backend']} | {a['ms']:.2f} ({block_range(a['blocks_ms'])}) | "
                f"{a['speedup_vs_bert_base_fastest']:.2f}x |"
            )
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
