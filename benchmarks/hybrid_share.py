"""How the hybrid share (SVD vs pruning) affects the student before any distillation.

    python -m benchmarks.hybrid_share --teacher runs/teacher-sst2 --ratios 5 10

For each ratio and share ``h`` (0 = prune only, 1 = SVD only) the teacher is compressed with the real
allocation and evaluated on the dev set without training. Writes ``benchmarks/results/hybrid_share_<task>.json``.
"""

from __future__ import annotations

import argparse
import copy
import time

from benchmarks._common import save_results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="runs/teacher-sst2")
    p.add_argument("--task", default="sst2")
    p.add_argument("--ratios", type=float, nargs="+", default=[5.0, 10.0])
    p.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--pattern", default="unstructured")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--max-eval-samples", type=int, default=None)
    args = p.parse_args(argv)

    from transformers import AutoTokenizer

    from ladabert.pipeline import hybrid
    from ladabert.pipeline.student import load_classifier
    from ladabert.pipeline.teacher import evaluate_module

    teacher = load_classifier(args.teacher).eval()
    tok = AutoTokenizer.from_pretrained(args.teacher)
    n = sum(p.numel() for p in teacher.parameters())
    shapes = hybrid.matrix_shapes(teacher)
    base = evaluate_module(teacher, tok, args.task, args.data_dir, max_samples=args.max_eval_samples)
    rows = []
    for ratio in args.ratios:
        for h in args.shares:
            t0 = time.perf_counter()
            plan = hybrid.allocate(shapes, n, ratio, h, args.pattern)
            student = hybrid.install(copy.deepcopy(teacher), plan).eval()
            m = evaluate_module(student, tok, args.task, args.data_dir, max_samples=args.max_eval_samples)
            ranks = sorted({mp.rank for mp in plan.matrices.values() if mp.rank})
            sp = sorted({round(mp.sparsity, 3) for mp in plan.matrices.values()})
            rows.append(
                {
                    "ratio_target": ratio,
                    "hybrid": h,
                    "pattern": args.pattern,
                    "ratio": n / hybrid.count_parameters(student)["total"],
                    "value_at_init": m["value"],
                    "ranks": ranks,
                    "sparsities": sp,
                    "wall_s": round(time.perf_counter() - t0, 1),
                }
            )
            print(f"{ratio:g}x h={h:g}: {m['metric']} {m['value']:.4f} (ranks {ranks}, sparsity {sp})")
    out = save_results(
        f"hybrid_share_{args.task}.json",
        {"task": args.task, "metric": base["metric"], "teacher_value": base["value"], "rows": rows},
    )
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
