"""BERT-base shape: a student of a given ratio whose shape the latency search picks, against BERT-base.

    python -m benchmarks.budget_bert_base                    # ratio 10, budget = BERT-base fastest / 4
    python -m benchmarks.budget_bert_base --ratio 10 --speedup 4 --backends ort-int8 openvino-int8

Random weights throughout (``BertConfig()``; latency does not depend on values):

1. BERT-base is exported and timed on every backend at batch 1: its fastest backend and latency set the
   budget, ``fastest / --speedup``, on that backend;
2. the latency search of ``ladabert compress --latency-budget`` runs over the shapes whose compression
   ratio is exactly ``--ratio`` (``ladabert.pipeline.budget.at_ratio``); with random weights its proxy
   sees weights only, so it stands for "keep as much structure as the budget allows";
3. the chosen student, this project's ``student-<R>x`` and ``narrow-<R>x`` and BERT-base are timed in one
   interleaved run on every backend at batch 1 and 8; each on its fastest backend against BERT-base's.

Writes ``benchmarks/results/budget_bert_base.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks._common import save_results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ratio", type=float, default=10.0)
    p.add_argument("--speedup", type=float, default=4.0, help="budget = BERT-base's fastest / this")
    p.add_argument("--backends", nargs="+", default=None, help="default: every installed ONNX backend")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--search-timings", type=int, default=12)
    p.add_argument("--name", default="budget_bert_base")
    args = p.parse_args(argv)

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from ladabert import CompressConfig
    from ladabert.bench.latency import bert_base_students, best_backends, measure, model_runners
    from ladabert.config import GATE_BACKENDS
    from ladabert.export.runtime import openvino_available
    from ladabert.pipeline import budget as B

    torch.set_num_threads(2)
    backends = args.backends or [
        b for b in GATE_BACKENDS if openvino_available() or not b.startswith("openvino")
    ]
    torch.manual_seed(0)
    base = BertForSequenceClassification(BertConfig(num_labels=2)).eval()
    vocab = base.config.vocab_size
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        first = measure(
            model_runners("bert-base", 1.0, base, work, backends, 2, vocab), [1], [128], 20, 3, vocab
        )
        ref = min(first, key=lambda r: r["median_ms"])
        cfg = CompressConfig(
            latency_budget=ref["median_ms"] / args.speedup,
            latency_backend=ref["backend"],
            search_timings=args.search_timings,
            pattern="rank",
            hybrid=0.5,
            data_aware=False,
        )
        timer = B.CandidateTimer(base.config, cfg, work)
        gen = torch.Generator().manual_seed(0)
        batches = [
            {
                "input_ids": torch.randint(1000, 20000, (16, 64), generator=gen),
                "attention_mask": torch.ones(16, 64, dtype=torch.long),
            }
            for _ in range(2)
        ]
        proxy = B.Proxy(base, None, batches)
        grid = B.at_ratio(timer.teacher, cfg, args.ratio)
        record = B.search(proxy, timer, cfg, grid=grid)
        chosen = timer.student(B.Candidate(**record["chosen"]))
        models = bert_base_students([args.ratio], "rank", 0.5, (0.167, 0.167))
        models[f"searched-{args.ratio:g}x"] = (args.ratio, chosen)
        runners = []
        for name, (ratio, model) in models.items():
            runners += model_runners(name, ratio, model, work, backends, 2, vocab)
        rows = measure(runners, [1, 8], [128], args.rounds, 3, vocab)
    best = best_backends(rows)
    search = {k: v for k, v in record.items() if k != "config"}
    data = {
        "settings": {**vars(args), "backends": backends},
        "bert_base_fastest_b1": {"backend": ref["backend"], "ms": ref["median_ms"]},
        "search": search,
        "rows": rows,
        "best": best,
    }
    path = save_results(f"{args.name}.json", data)
    render(path)
    print(path.with_suffix(".md").read_text())
    return 0


def render(path: Path) -> None:
    d = json.loads(path.read_text())
    s = d["search"]
    c = s["chosen"]
    m = d.get("machine", {})
    lines = [
        f"Search at ratio {d['settings']['ratio']:g}, budget {s['budget_ms']:.2f} ms on {s['backend']} at batch "
        f"{s['batch']} x seq {s['seq']} (BERT-base's fastest / {d['settings']['speedup']:g}): "
        f"{c['layers']} layers, {c['heads']} heads, FFN {c['ffn']}, ratio factor {c['ratio_factor']:g}; "
        f"{s['measured_ms']:.2f} ms in the search, {len(s['timed'])} of {s['candidates']} shapes timed "
        f"({s['search_s']:.0f} s). {m.get('cpu', '?')}, {m.get('cores', '?')} cores, 2 threads.",
        "",
        "| model | batch | fastest backend | median ms | vs BERT-base fastest |",
        "|---|---|---|---|---|",
    ]
    for b in d["best"]:
        lines.append(
            f"| {b['model']} | {b['batch']} | {b['backend']} | {b['median_ms']:.2f} | "
            f"{b['speedup_vs_bert_base_fastest']:.2f}x |"
        )
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
