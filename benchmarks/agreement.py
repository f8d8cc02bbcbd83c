"""Where a student follows its teacher: accuracy and agreement with the teacher on training and dev data.

    python -m benchmarks.agreement --teacher runs/teacher-sst2 \\
        --students runs/student-sst2-hybrid-unstructured-2.5x runs/student-sst2-hybrid-unstructured-5x

A student that agrees with its teacher on nearly every training sentence but much less on the dev set has
learned the teacher's function on the training data and not around it (the reason for ``--augment``).
Writes ``benchmarks/results/agreement_<task>.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks._common import save_results


def measure(
    teacher: str, students: list[str], task_name: str, train_samples: int, data_dir: str | None, seed: int = 0
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from ladabert.pipeline.data import get_task, load_glue
    from ladabert.pipeline.student import load_classifier
    from ladabert.pipeline.teacher import predict_split

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
    rows = []
    for path in [teacher, *students]:
        row: dict[str, Any] = {"model": str(path), "is_teacher": path == teacher}
        for k, s in splits.items():
            row[f"{k}_accuracy"] = float((preds[path][k] == s.labels).mean())
            row[f"{k}_agreement"] = float((preds[path][k] == preds[teacher][k]).mean())
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
    args = p.parse_args(argv)
    res = measure(args.teacher, args.students, args.task, args.train_samples, args.data_dir)
    out = save_results(f"agreement_{res['task']}.json", res)
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
