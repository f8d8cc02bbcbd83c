"""How the hybrid share (SVD vs pruning) affects the student before any distillation.

    python -m research.hybrid_share --teacher runs/teacher-sst2 --ratios 5 10

For each ratio and share ``h`` (0 = prune only, 1 = SVD only) the teacher is compressed with the real
allocation and evaluated on the dev set without training, with the paper's plain SVD and magnitude pruning
and with data-aware compression (``--data-aware``: input covariances and token frequencies from 2,048
training examples; ``--modes`` picks). Writes ``research/results/hybrid_share_<task>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import time

from research._common import save_results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="runs/teacher-sst2")
    p.add_argument("--task", default="sst2")
    p.add_argument("--ratios", type=float, nargs="+", default=[5.0, 10.0])
    p.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--pattern", default="unstructured")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--max-eval-samples", type=int, default=None)
    p.add_argument("--modes", nargs="+", choices=("plain", "data-aware"), default=["plain", "data-aware"])
    p.add_argument("--calibration-samples", type=int, default=2048)
    args = p.parse_args(argv)

    from transformers import AutoTokenizer

    from ladabert.pipeline import hybrid
    from ladabert.pipeline.build import build_student
    from ladabert.pipeline.compress import CompressConfig, calibration_stats
    from ladabert.pipeline.data import get_task, load_glue, make_collator, tokenize
    from ladabert.pipeline.harness import evaluate_module
    from ladabert.pipeline.student import load_classifier

    teacher = load_classifier(args.teacher).eval()
    tok = AutoTokenizer.from_pretrained(args.teacher)
    n = sum(p.numel() for p in teacher.parameters())
    shapes = hybrid.matrix_shapes(teacher)
    base = evaluate_module(teacher, tok, args.task, args.data_dir, max_samples=args.max_eval_samples)
    stats = None
    if "data-aware" in args.modes:
        cfg = CompressConfig(task=args.task)  # the seed and length a compress run uses
        train = tokenize(load_glue(get_task(args.task), "train", args.data_dir), tok, cfg.max_length)
        stats = calibration_stats(
            teacher, train, make_collator(tok), args.calibration_samples, cfg.seed, tok.all_special_ids
        )
    rows = []
    for ratio, h, mode in itertools.product(args.ratios, args.shares, args.modes):
        t0 = time.perf_counter()
        cfg = CompressConfig(
            task=args.task, ratio=ratio, hybrid=h, pattern=args.pattern, data_aware=mode == "data-aware"
        )
        plan = hybrid.allocate(shapes, n, ratio, h, args.pattern)  # the ranks and sparsities recorded below
        student = build_student(teacher, cfg, stats if mode == "data-aware" else None)
        m = evaluate_module(student, tok, args.task, args.data_dir, max_samples=args.max_eval_samples)
        ranks = sorted({mp.rank for mp in plan.matrices.values() if mp.rank})
        sp = sorted({round(mp.sparsity, 3) for mp in plan.matrices.values()})
        rows.append(
            {
                "ratio_target": ratio,
                "hybrid": h,
                "pattern": args.pattern,
                "data_aware": mode == "data-aware",
                "ratio": n / hybrid.count_parameters(student)["total"],
                "value_at_init": m["value"],
                "ranks": ranks,
                "sparsities": sp,
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
        print(f"{ratio:g}x h={h:g} {mode}: {m['metric']} {m['value']:.4f} (ranks {ranks}, sparsity {sp})")
    out = save_results(
        f"hybrid_share_{args.task}.json",
        {
            "task": args.task,
            "metric": base["metric"],
            "teacher_value": base["value"],
            "calibration_samples": args.calibration_samples if stats else None,
            "rows": rows,
        },
    )
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
