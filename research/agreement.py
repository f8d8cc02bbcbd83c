"""Where a student follows its teacher: accuracy and agreement with the teacher on training and dev data.

    python -m research.agreement --teacher runs/teacher-sst2 \\
        --students runs/student-sst2-hybrid-unstructured-2.5x runs/student-sst2-hybrid-unstructured-5x

A student that agrees with its teacher on nearly every training sentence but much less on the dev set has
learned the teacher's function on the training data and not around it (the reason for ``--augment``).
Dev accuracy is also broken down by example length in words (``--length-buckets``): SST-2 trains on
phrases and is judged on whole sentences, the reason for ``--length-weight``. Writes
``research/results/agreement_<task>.json`` (``--results`` names another file)::

    python -m research.agreement --results agreement_sst2_length.json \
        --students runs/sweep_sst2_length-5x-base-seed7 runs/sweep_sst2_length-5x-len1.5-seed7
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from research._common import save_results

LENGTH_BUCKETS = (12, 20, 28)  # word counts that split SST-2 dev into four groups of 169-278 sentences


def length_buckets(edges: tuple[int, ...]) -> list[tuple[int, int | None]]:
    """``[(1, 12), (12, 20), (20, 28), (28, None)]`` for edges ``(12, 20, 28)``: lower bound inclusive."""
    if list(edges) != sorted(set(edges)) or (edges and edges[0] < 2):
        raise ValueError(f"length bucket edges must be increasing word counts >= 2, got {list(edges)}")
    lows = [1, *edges]
    return [(lo, hi) for lo, hi in zip(lows, [*edges, None])]


def measure(
    teacher: str,
    students: list[str],
    task_name: str,
    train_samples: int,
    data_dir: str | None,
    seed: int = 0,
    edges: tuple[int, ...] = LENGTH_BUCKETS,
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from ladabert.pipeline.data import get_task, load_glue
    from ladabert.pipeline.harness import predict_split
    from ladabert.pipeline.student import load_classifier

    task = get_task(task_name)
    if task.is_regression:
        raise SystemExit(f"{task.name} is a regression task; agreement needs class predictions")
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    splits = {
        "train": load_glue(task, "train", data_dir, train_samples, seed=seed),
        "dev": load_glue(task, "dev", data_dir),
    }
    preds: dict[str, dict[str, Any]] = {}
    for path in [teacher, *students]:
        model = load_classifier(path).eval().float()
        preds[path] = {k: predict_split(model, tokenizer, s).argmax(-1) for k, s in splits.items()}
    dev = splits["dev"]
    words = np.array([sum(len(t.split()) for t in text) for text in dev.texts])
    buckets = length_buckets(edges)
    rows = []
    for path in [teacher, *students]:
        row: dict[str, Any] = {"model": str(path), "is_teacher": path == teacher}
        for k, s in splits.items():
            row[f"{k}_accuracy"] = float((preds[path][k] == s.labels).mean())
            row[f"{k}_agreement"] = float((preds[path][k] == preds[teacher][k]).mean())
        row["dev_by_length"] = []
        for lo, hi in buckets:
            sel = (words >= lo) & (words < (hi if hi is not None else np.inf))
            correct = preds[path]["dev"][sel] == dev.labels[sel]
            row["dev_by_length"].append(
                {
                    "words": [lo, hi],
                    "n": int(sel.sum()),
                    "accuracy": float(correct.mean()) if sel.any() else None,
                }
            )
        rows.append(row)
    return {
        "task": task.name,
        "teacher": str(teacher),
        "train_examples": len(splits["train"]),
        "dev_examples": len(splits["dev"]),
        "seed": seed,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="runs/teacher-sst2")
    p.add_argument("--students", nargs="+", required=True)
    p.add_argument("--task", default="sst2")
    p.add_argument("--train-samples", type=int, default=2000, help="random training examples to score")
    p.add_argument("--data-dir", default=None)
    p.add_argument(
        "--length-buckets",
        type=int,
        nargs="*",
        default=list(LENGTH_BUCKETS),
        help="word counts that split the dev set for the by-length accuracy (default 12 20 28)",
    )
    p.add_argument("--results", default=None, help="results file name (default agreement_<task>.json)")
    args = p.parse_args(argv)
    name = args.results or f"agreement_{args.task}.json"
    if not (name.startswith("agreement_") and name.endswith(".json")) or "/" in name:
        p.error(f"--results must be a file name agreement_<something>.json, got {name!r}")
    try:
        length_buckets(tuple(args.length_buckets))
    except ValueError as e:
        p.error(str(e))
    res = measure(
        args.teacher,
        args.students,
        args.task,
        args.train_samples,
        args.data_dir,
        edges=tuple(args.length_buckets),
    )
    out = save_results(name, res)
    print(f"{'model':>50} {'train acc':>9} {'train agree':>11} {'dev acc':>7} {'dev agree':>9}")
    for r in res["rows"]:
        print(
            f"{Path(r['model']).name:>50} {r['train_accuracy']:9.4f} {r['train_agreement']:11.4f} "
            f"{r['dev_accuracy']:7.4f} {r['dev_agreement']:9.4f}"
        )
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
