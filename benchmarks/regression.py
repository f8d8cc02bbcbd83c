"""CI throughput-regression gate: student speedups over BERT-base must not fall below the baseline.

    python -m benchmarks.regression                      # in .ci/run, after the tests; < 3 minutes
    python -m benchmarks.regression --update-baseline    # rewrite benchmarks/baseline.json on purpose

Measures batch 1, sequence 128, interleaved in one process: BERT-base and the 5x and 10x BERT-base-shaped
students (rank pattern, every rewrite), plain and narrow (``NARROW_DEFAULT`` heads and FFN neurons kept), on
ONNX Runtime fp32 and int8, and OpenVINO bf16 where installed.
Each check is the student's speedup over BERT-base *on the same backend* (a ratio measured in the same
run, never an absolute time); it fails when it falls more than ``--tolerance`` (default 25%) below
``benchmarks/baseline.json``. Prints the table and a closing ``N passed, N failed`` line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BASELINE = Path(__file__).resolve().parent / "baseline.json"


def measure_ratios(threads: int, rounds: int, disable: tuple[str, ...], pattern: str) -> tuple[dict, list]:
    from ladabert import BenchConfig, benchmark
    from ladabert.export.runtime import openvino_available

    backends = ["ort-fp32", "ort-int8"] + (["openvino-bf16"] if openvino_available() else [])
    cfg = BenchConfig(
        ratios=(5.0, 10.0),
        backends=tuple(backends),
        batches=(1,),
        seqs=(128,),
        threads=threads,
        rounds=rounds,
        warmup=3,
        pattern=pattern,
        disable=disable,
        min_seconds=20.0,
    )
    res = benchmark(cfg, progress=False)
    rows = res["rows"]
    base = {r["backend"]: r["median_ms"] for r in rows if r["model"] == "bert-base"}
    ratios = {
        f"{r['model']}/{r['backend']}": base[r["backend"]] / r["median_ms"]
        for r in rows
        if r["model"] != "bert-base"
    }
    return ratios, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--update-baseline", action="store_true")
    p.add_argument("--tolerance", type=float, default=0.25, help="allowed relative drop below the baseline")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--baseline", default=str(BASELINE))
    p.add_argument(
        "--disable-rewrite",
        nargs="*",
        default=[],
        choices=["shrink", "merge", "align", "fuse"],
        help="export the students without these rewrites (to show the gate catching a regression)",
    )
    p.add_argument("--pattern", default="rank", help="students' pruning pattern (unstructured: a regression)")
    args = p.parse_args(argv)

    ratios, rows = measure_ratios(args.threads, args.rounds, tuple(args.disable_rewrite), args.pattern)
    for r in rows:
        print(
            f"  {r['model']:>12} {r['backend']:>14}: median {r['median_ms']:7.2f} ms, p90 {r['p90_ms']:7.2f} ms "
            f"({r['samples']} samples)"
        )
    path = Path(args.baseline)
    if args.update_baseline:
        from ladabert.utils import run_environment, write_json_atomic

        env = run_environment()
        write_json_atomic(
            path,
            {
                "ratios": ratios,
                "tolerance": args.tolerance,
                "threads": args.threads,
                "batch": 1,
                "seq": 128,
                "machine": env["machine"],
                "versions": env["versions"],
                "git_sha": env["git_sha"],
            },
        )
        print(f"baseline written to {path}")
        return 0
    if not path.is_file():
        print(f"no baseline at {path}; run with --update-baseline first", file=sys.stderr)
        return 2
    baseline = json.loads(path.read_text())["ratios"]
    passed = failed = 0
    print(f"{'check':<28} {'speedup':>8} {'baseline':>9} {'floor':>7}  result")
    for key, want in sorted(baseline.items()):
        got = ratios.get(key)
        if got is None:
            print(f"{key:<28} {'-':>8} {want:9.2f} {'-':>7}  skipped (backend not installed here)")
            continue
        floor = want * (1 - args.tolerance)
        ok = got >= floor
        passed += ok
        failed += not ok
        print(f"{key:<28} {got:8.2f} {want:9.2f} {floor:7.2f}  {'PASS' if ok else 'FAIL'}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
