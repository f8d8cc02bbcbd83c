"""The latency/accuracy frontier: SST-2 students compressed to latency budgets, against the teacher and
today's default and narrow students, each model on its fastest backend.

    python -m benchmarks.frontier --teacher runs/teacher-sst2                       # budgets: fastest / 1.5 2 3 4 6
    python -m benchmarks.frontier --teacher runs/teacher-sst2 --divisors 2 3 --max-steps 1500
    python -m benchmarks.frontier --teacher runs/teacher-sst2 --search-only   # shapes only, no training
    python -m benchmarks.frontier --teacher runs/teacher-sst2 --divisors 3 2 --speedups   # speedup targets

Steps (each one skipped when its output exists, so a killed run continues where it stopped):

1. the teacher is exported (``runs/frontier/teacher-onnx``) and timed on every backend at the budget's
   batch and length; on its fastest backend it is timed alone by the budget protocol, the way the students
   are checked, and that latency sets the budgets, ``latency / divisor`` (kept in ``teacher-fastest.json``,
   so that a resumed run keeps its budgets; it is also the machine's speed when the budgets are set);
2. one ``ladabert compress --latency-budget`` student per budget, on that backend, and the comparison
   students (``--compare``: ``default`` = the 5x student of the results tables, ``narrow`` = the same with
   a sixth of the heads and FFN neurons), all with the same ``--max-steps``; each exported;
3. for each divisor of ``--distill-only`` (default: every budget), a distill-only student of the same
   latency: every layer, randomly initialised, the widest hidden size whose exported random-weight graph
   measures within the budget less the search's margin on the budget's backend (bisection over the widths
   distill-only can take; kept in ``distill-only-<d>x.match.json``), distilled with the same steps;
4. for each divisor of ``--depth-alternative`` (default: none), the students the search finds at the same
   budget with the layers of ``--alternative-depths`` (default: one fewer than the budget student) kept
   (``--keep-layers``), ``budget-<d>x-L<n>``: trained beside it, they check the proxy's trade of depth
   against width;
5. every bundle timed in one interleaved run on every backend, at ``--batch`` and 8 (the speedups); the
   bundles with a budget timed again on their budget's backend by the budget protocol, each alone in turn
   for five one-second blocks, or ``--check-blocks`` of them (the budget check: interleaving other models
   between its calls evicts its weights from the caches and adds to its latency; more blocks spread the
   medians over a longer time), the teacher taking its turns among them: a student's
   reading over the teacher's, block by block, times the teacher's reading of step 1 is its latency at the
   machine's speed when the budgets were set, judged against the budget beside the plain reading.

With ``--speedups`` the divisors are targets of ``ladabert compress --latency-speedup``: each search times
the teacher's shape itself and beside every pick, so the budgets hold through the machine's drift, and
each student is judged by its speedup over the teacher in the final check (the two alone in turn).
``--student-backend B`` searches and serves the students on ``B`` instead of the teacher's fastest (the
teacher's shape stays on its fastest: ``--reference-backend`` of the searches), for a CPU on which the
two differ; ``--student-backend fastest`` searches each budget on every backend and serves each student on
the one its search picked (``ladabert compress --backend fastest``); the distill-only students, dense and
at full depth like the teacher, are then matched on the teacher's fastest.

Writes ``benchmarks/results/frontier_sst2.{json,md,png}``: per model its accuracy (the student's fp32 dev
accuracy, the bundle's ORT int8 one, and the dev accuracy as its fastest backend at ``--batch`` serves it,
:func:`ladabert.export.served.evaluate_bundle`), latency per backend, fastest backend, speedup over the
teacher's fastest, and for budget students the budget, the searched shape, the search's proxy and whether the final
measurement is within the budget. The proxy is set beside the trained accuracy (rank correlation).

``--search-only`` stops after step 1 and the latency search of every budget
(:func:`ladabert.search_shape`): ``benchmarks/results/frontier_sst2_search.{json,md}`` with each budget's
shape, measured latency, proxy and search cost (``benchmarks.budget_bert_base`` reads the shapes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks._common import block_range, cpu_name, publish
from ladabert.utils import write_json_atomic

COMPARE = {
    "default": {"ratio": 5.0},
    "narrow": {"ratio": 5.0, "keep_heads": 1 / 6, "keep_ffn": 1 / 6},
}


def _spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    import numpy as np

    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _export(student: Path, bundle: Path, data_dir: str | None) -> dict[str, Any]:
    from ladabert.config import ExportConfig
    from ladabert.export.bundle import bundle_summary, export_bundle

    if (bundle / "ladabert.json").is_file():
        return bundle_summary(bundle)
    return export_bundle(student, bundle, ExportConfig(), data_dir=data_dir)


def _time(
    bundles: list[Path],
    backends: list[str],
    batches: list[int],
    seq: int,
    rounds: int,
) -> list[dict]:
    import torch

    from ladabert.bench.latency import bundle_runners, measure

    torch.set_num_threads(2)
    runners = [r for b in bundles for r in bundle_runners(b, backends, 2)]
    vocab = json.loads((bundles[0] / "config.json").read_text())["vocab_size"]
    return measure(runners, batches, [seq], rounds, 3, vocab)


def _teacher_fastest(work: Path, bundle: Path, backends: list[str], args: argparse.Namespace) -> dict:
    """The teacher's fastest backend at the budgets' batch and length, timed once per work folder."""
    path = work / "teacher-fastest.json"
    if path.is_file():
        ref = json.loads(path.read_text())
        if (ref["batch"], ref["seq"]) == (args.batch, args.seq):
            return ref
    ref = _fastest(_time([bundle], backends, [args.batch], args.seq, args.rounds), bundle.name, args.batch)
    # The machine's speed at the time the budgets are set, by the protocol that checks them at the end.
    alone = _budget_checks({"teacher": (bundle, ref["backend"], args.batch, float("inf"))}, args.seq)
    t = alone["teacher"]
    ref["protocol_ms"], ref["protocol_blocks_ms"] = t["measured_ms"], t["blocks_ms"]
    write_json_atomic(path, ref)
    return ref


def _budget_base(ref: dict) -> float:
    """What the budgets divide: the teacher alone by the budget protocol, the way the students' bundles are
    checked (the interleaved median runs slower, each model evicting the others' weights from the caches,
    and would set budgets no student running alone is measured against); the interleaved median where a
    work folder has no protocol reading."""
    return ref.get("protocol_ms") or ref["median_ms"]


def _recorded_search(student: Path) -> dict[str, Any] | None:
    """A budget student's search record, once on record (its metrics, or its checkpoints while it trains):
    the students matched to it keep its budget even when a later run's teacher timing differs slightly."""
    from ladabert.pipeline.compress import SEARCH_FILE
    from ladabert.pipeline.harness import checkpoint_dir_for

    for path, key in (
        (student / "metrics.json", "latency_search"),
        (checkpoint_dir_for(student) / SEARCH_FILE, None),
    ):
        if path.is_file():
            record = json.loads(path.read_text())
            return record[key] if key else record
    return None


def _distill_only_match(
    teacher: Path, budget_ms: float, margin: float, backend: str, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    """The widest distill-only student of ``teacher`` whose exported graph (random weights: latency does
    not depend on values) measures within ``budget_ms`` less ``margin`` on ``backend``, the target a budget
    student's search has; bisection over hidden sizes, which distill-only takes in steps of the teacher's
    head count. Kept beside ``out`` for resumed runs."""
    import tempfile

    import torch
    from transformers import AutoConfig, BertForSequenceClassification

    from ladabert import CompressConfig
    from ladabert.bench.latency import calibration_feeds, export_graphs, median_ms, onnx_runner, random_feeds
    from ladabert.errors import LadaBertError
    from ladabert.pipeline.build import build_student, count_all, narrow_configs

    path = out.with_name(out.name + ".match.json")
    if path.is_file():
        return json.loads(path.read_text())
    tcfg = AutoConfig.from_pretrained(teacher)
    torch.manual_seed(0)
    model = BertForSequenceClassification(tcfg).eval()
    n = count_all(model)
    # distill-only keeps every head (attention distillation), so its widths step by the head count
    ratios = {cfg.hidden_size: n / params for params, cfg in narrow_configs(tcfg, same_heads=True)}
    widths = sorted(ratios)
    feeds = random_feeds(args.batch, args.seq, tcfg.vocab_size, seed=0)
    calib = calibration_feeds(tcfg.vocab_size)
    timed: dict[int, dict[str, float]] = {}
    target_ms = budget_ms * (1 - margin)

    def ms(width: int) -> float:
        ratio = round(ratios[width], 4)
        with torch.inference_mode():
            student = build_student(model, CompressConfig(method="distill-only", ratio=ratio))
        assert student.config.hidden_size == width, (student.config.hidden_size, width)
        with tempfile.TemporaryDirectory() as tmp:
            paths = export_graphs(student, Path(tmp), f"w{width}", int8=backend == "ort-int8")
            timed[width] = {"ratio": ratio, "ms": median_ms(onnx_runner(paths, backend, 2, calib), feeds)}
        print(f"distill-only hidden {width} (ratio {ratio:g}): {timed[width]['ms']:.2f} ms on {backend}")
        return timed[width]["ms"]

    # the widest width within the target; latency grows with width
    lo, hi = 0, len(widths) - 1
    if ms(widths[lo]) > target_ms:
        raise LadaBertError(
            f"the narrowest distill-only student measures {timed[widths[lo]]['ms']:.2f} ms on {backend}, above "
            f"{target_ms:.2f} ms; leave this divisor out of --distill-only"
        )
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ms(widths[mid]) <= target_ms:
            lo = mid
        else:
            hi = mid - 1
    w = widths[lo]
    match = {
        "budget_ms": budget_ms,
        "margin": margin,
        "target_ms": target_ms,
        "backend": backend,
        "hidden_size": w,
        "ratio": timed[w]["ratio"],
        "measured_ms": timed[w]["ms"],
        "timed": {str(k): v for k, v in sorted(timed.items())},
    }
    write_json_atomic(path, match)
    return match


def _train(name: str, out: Path, cfg: Any, teacher: Path, work: Path, args: argparse.Namespace) -> None:
    from ladabert import compress

    if not (out / "metrics.json").is_file():
        print(f"{name}: compressing ({cfg.max_steps} steps)")
        compress(cfg, teacher, out, data_dir=args.data_dir)
    _export(out, work / f"{name}-onnx", args.data_dir)


def _budget_checks(
    checks: dict[str, tuple[Path, str, int, float]],
    seq: int,
    reference: tuple[str, float] | None = None,
    blocks: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Each bundle's latency on its budget's backend and batch by the budget protocol
    (:func:`ladabert.bench.latency.block_medians`: alone, as production runs it and as the search and the
    export time it; in the interleaved run the other models evict its weights from the caches between
    calls, which adds to every model's latency), and whether it is within the budget. The bundles take
    turns block by block, so a slow stretch of the machine does not fall on one of them alone.

    ``reference`` names one of ``checks`` and its protocol reading when the budgets were set. The machine's
    speed drifts (a shared host): each other bundle at the reference's batch is also read block by block
    against the reference, and that ratio at the reference's earlier reading is its latency at the speed
    the machine had when the budgets were set (``at_budget_speed_ms``), judged against the budget too.

    ``blocks`` (default: the protocol's five) lengthens the check: the verdicts are medians over the blocks,
    so more of them spread over a longer time outlast a slow stretch that hits the models unevenly."""
    import statistics

    import torch

    from ladabert.bench.latency import block_medians, bundle_runners, random_feeds

    torch.set_num_threads(2)
    out: dict[str, dict[str, Any]] = {}
    for batch in sorted({c[2] for c in checks.values()}):
        names = [n for n, c in checks.items() if c[2] == batch]
        runs = {n: bundle_runners(checks[n][0], [checks[n][1]], 2)[0].run for n in names}
        vocab = json.loads((checks[names[0]][0] / "config.json").read_text())["vocab_size"]
        for n, timed in block_medians(runs, random_feeds(batch, seq, vocab), blocks).items():
            _, backend, _, budget_ms = checks[n]
            out[n] = {
                "backend": backend,
                "measured_ms": timed["ms"],
                "blocks_ms": timed["blocks"],
                "within_budget": timed["ms"] <= budget_ms,
            }
    if reference is None:
        return out
    ref_name, then_ms = reference
    ref = out[ref_name]
    ref["drift"] = ref["measured_ms"] / then_ms
    for n, r in out.items():
        if n == ref_name or checks[n][2] != checks[ref_name][2]:
            continue
        # Adjacent blocks share the machine's state: their ratio holds through a slowdown.
        r["vs_reference_blocks"] = [round(a / b, 4) for a, b in zip(r["blocks_ms"], ref["blocks_ms"])]
        r["vs_reference"] = statistics.median(r["vs_reference_blocks"])
        r["at_budget_speed_ms"] = r["vs_reference"] * then_ms
        r["within_budget_at_budget_speed"] = r["at_budget_speed_ms"] <= checks[n][3]
    return out


def _fastest(rows: list[dict], model: str, batch: int) -> dict:
    return min((r for r in rows if r["model"] == model and r["batch"] == batch), key=lambda r: r["median_ms"])


def main(argv: list[str] | None = None) -> int:
    from ladabert.config import FASTEST, GATE_BACKENDS, TARGET_BACKENDS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="runs/teacher-sst2")
    p.add_argument("--data-dir", default=None, help="GLUE root (default: see ladabert.pipeline.data)")
    p.add_argument("--work", default="runs/frontier", help="where students and bundles are written")
    p.add_argument("--divisors", type=float, nargs="+", default=[1.5, 2, 3, 4, 6])
    p.add_argument("--compare", nargs="*", default=list(COMPARE), choices=list(COMPARE))
    p.add_argument(
        "--distill-only",
        type=float,
        nargs="*",
        default=None,
        help="budget divisors that get a distill-only student of the same latency (default: all; none: empty)",
    )
    p.add_argument(
        "--depth-alternative",
        type=float,
        nargs="*",
        default=[],
        help="budget divisors that also get the best students at other depths (--alternative-depths), at the "
        "same budget (checks the proxy's depth-against-width trade)",
    )
    p.add_argument(
        "--alternative-depths",
        type=int,
        nargs="+",
        default=None,
        help="layers the depth alternatives keep (default: one fewer than the searched student)",
    )
    p.add_argument(
        "--speedups",
        action="store_true",
        help="the divisors are speedup targets (ladabert compress --latency-speedup): each search times the "
        "teacher's shape beside its picks, and each student is judged by its speedup over the teacher alone",
    )
    p.add_argument(
        "--student-backend",
        default=None,
        choices=TARGET_BACKENDS,
        help="backend the students are searched and served on (default: the teacher's fastest; 'fastest': "
        "each search tries every backend); with --speedups the teacher's shape stays timed on its fastest "
        "(--reference-backend)",
    )
    p.add_argument("--max-steps", type=int, default=3000, help="distillation steps of every student")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=40, help="interleaved rounds of the final timing")
    p.add_argument(
        "--check-blocks",
        type=int,
        default=None,
        help="blocks of the final budget check (default: the budget protocol's five); its verdicts are "
        "medians over them, so more blocks outlast a slow stretch of a shared host",
    )
    p.add_argument("--name", default="frontier_sst2")
    p.add_argument("--search-only", action="store_true", help="search the budgets' shapes, train nothing")
    args = p.parse_args(argv)
    unknown = sorted(set(args.depth_alternative) - set(args.divisors))
    if unknown:
        p.error(f"--depth-alternative {' '.join(f'{d:g}' for d in unknown)} is not among --divisors")
    if args.alternative_depths and min(args.alternative_depths) < 1:
        p.error(f"--alternative-depths must be >= 1, got {min(args.alternative_depths)}")
    if args.check_blocks is not None and args.check_blocks < 1:
        p.error(f"--check-blocks must be >= 1, got {args.check_blocks}")

    from ladabert import CompressConfig
    from ladabert.errors import LadaBertError
    from ladabert.export.runtime import openvino_available
    from ladabert.export.served import evaluate_bundle

    teacher = Path(args.teacher)
    if not (teacher / "metrics.json").is_file():
        print(
            f"benchmarks.frontier: error: {teacher} is not a fine-tuned teacher; run ladabert finetune first",
            file=sys.stderr,
        )
        return 2
    work = Path(args.work)
    backends = [b for b in GATE_BACKENDS if openvino_available() or not b.startswith("openvino")]
    teacher_bundle = work / "teacher-onnx"
    _export(teacher, teacher_bundle, args.data_dir)
    ref = _teacher_fastest(work, teacher_bundle, backends, args)
    print(
        f"teacher: fastest {ref['backend']} {ref['median_ms']:.2f} ms at batch {args.batch} x seq {args.seq}, "
        f"budgets divide {_budget_base(ref):.2f} ms"
    )

    students: dict[str, tuple[Path, dict[str, Any]]] = {}
    base = {"max_steps": args.max_steps}
    served_on = args.student_backend or ref["backend"]
    matched_on = ref["backend"] if served_on == FASTEST else served_on
    for d in args.divisors:
        target: dict[str, Any] = (
            {"latency_speedup": d} if args.speedups else {"latency_budget": round(_budget_base(ref) / d, 3)}
        )
        if args.speedups and served_on != ref["backend"]:
            target["latency_reference_backend"] = ref["backend"]
        cfg = CompressConfig(
            **base,
            **target,
            latency_backend=served_on,
            latency_batch=args.batch,
            latency_seq=args.seq,
        )
        students[f"budget-{d:g}x"] = (work / f"budget-{d:g}x", {"divisor": d, "config": cfg})
    if args.search_only:
        return _searches(args, students, teacher, ref)
    for name in args.compare:
        students[name] = (work / name, {"config": CompressConfig(**base, **COMPARE[name])})
    margin = CompressConfig().latency_margin
    for d in args.divisors if args.distill_only is None else args.distill_only:
        out = work / f"distill-only-{d:g}x"
        budget = (_recorded_search(work / f"budget-{d:g}x") or {}).get("budget_ms") or _budget_base(ref) / d
        try:
            match = _distill_only_match(teacher, budget, margin, matched_on, args, out)
        except LadaBertError as e:
            print(f"benchmarks.frontier: error: {e}", file=sys.stderr)
            return 2
        cfg = CompressConfig(**base, method="distill-only", ratio=match["ratio"])
        students[out.name] = (out, {"config": cfg, "match": match})
    for name, (out, info) in students.items():
        _train(name, out, info["config"], teacher, work, args)
    # Other depths at the same budget: the search's proxy ranked those depths' best shapes lower.
    refused: dict[str, str] = {}
    for d in args.depth_alternative:
        record = _recorded_search(work / f"budget-{d:g}x")
        searched = record["chosen"]["layers"]
        for layers in sorted(set(args.alternative_depths or [searched - 1]) - {searched}):
            if layers < 1:
                print(f"budget-{d:g}x keeps one layer: no shallower alternative")
                continue
            name = f"budget-{d:g}x-L{layers}"
            cfg = dataclasses.replace(
                students[f"budget-{d:g}x"][1]["config"],
                latency_budget=record["budget_ms"],
                latency_speedup=None,
                latency_reference_backend=None,
                keep_layers=layers,
            )
            try:
                _train(name, work / name, cfg, teacher, work, args)
            except LadaBertError as e:  # that depth misses the budget even at its narrowest
                print(f"{name}: {e}")
                refused[name] = str(e)
                continue
            students[name] = (work / name, {"config": cfg})

    bundles = [teacher_bundle] + [work / f"{n}-onnx" for n in students]
    batches = sorted({args.batch, 8})
    rows = _time(bundles, backends, batches, args.seq, args.rounds)
    checks = {}
    for name in students:
        match = students[name][1].get("match")
        search = json.loads((work / name / "metrics.json").read_text()).get("latency_search")
        if match:
            checks[name] = (work / f"{name}-onnx", match["backend"], args.batch, match["budget_ms"])
        elif search:
            checks[name] = (work / f"{name}-onnx", search["backend"], search["batch"], search["budget_ms"])
    # The teacher takes its turns too, on its fastest backend: speedups of models each running alone.
    checks["teacher"] = (teacher_bundle, ref["backend"], args.batch, float("inf"))
    then = ("teacher", ref["protocol_ms"]) if "protocol_ms" in ref else None
    on_budget = _budget_checks(checks, args.seq, then, args.check_blocks)
    tmetrics = json.loads((teacher / "metrics.json").read_text())
    out_rows = []
    for bundle in bundles:
        name = bundle.name.removesuffix("-onnx")
        meta = json.loads((bundle / "ladabert.json").read_text())
        metrics = json.loads(((teacher if name == "teacher" else work / name) / "metrics.json").read_text())
        row: dict[str, Any] = {
            "model": name,
            "value": metrics["value"],
            "of_teacher": metrics["value"] / tmetrics["value"],
            "int8_value": meta["validation"].get("int8", {}).get("value"),
            "ratio": meta.get("ratio", 1.0),
            "num_layers": meta["num_layers"],
            "steps": metrics.get("steps"),
            "latency": {
                f"{r['backend']}/b{r['batch']}": r["median_ms"] for r in rows if r["model"] == bundle.name
            },
        }
        for b in batches:
            best = _fastest(rows, bundle.name, b)
            tbest = _fastest(rows, teacher_bundle.name, b)
            row[f"fastest_b{b}"] = {"backend": best["backend"], "ms": best["median_ms"]}
            row[f"speedup_b{b}"] = tbest["median_ms"] / best["median_ms"]
        # The targets compare each model on its fastest backend: its accuracy as that backend serves it.
        served = row[f"fastest_b{args.batch}"]["backend"]
        row["served"] = {
            "backend": served,
            "value": evaluate_bundle(bundle, served, data_dir=args.data_dir, threads=2)["value"],
        }
        row["served"]["of_teacher"] = (
            row["served"]["value"] / out_rows[0]["served"]["value"] if out_rows else 1.0
        )
        if name in on_budget:
            timed = on_budget[name]
            # Block by block against the teacher (on its fastest backend) where it was read so, else the
            # ratio of the medians; each student on the backend it is served on.
            vs = timed.get("vs_reference", timed["measured_ms"] / on_budget["teacher"]["measured_ms"])
            row["alone"] = {"backend": timed["backend"], "ms": timed["measured_ms"], "speedup": 1 / vs}
            if timed.get("vs_reference_blocks"):
                row["alone"]["speedup_blocks"] = [round(1 / v, 3) for v in timed["vs_reference_blocks"]]
        match = students.get(name, (None, {}))[1].get("match")
        if match:
            row.update(
                on_budget[name],
                matched_budget_ms=match["budget_ms"],
                hidden_size=match["hidden_size"],
                match_ms=match["measured_ms"],
            )
        search = metrics.get("latency_search")
        if search:
            row.update(
                on_budget[name],
                budget_ms=search["budget_ms"],
                shape=search["chosen"],
                proxy=search["proxy"]["proxy"],
                search_ms=search["measured_ms"],
                timed=len(search["timed"]),
                search_s=search["search_s"],
            )
            if search.get("speedup") is not None and "alone" in row:
                # The target is a speedup: judged beside the teacher alone, whatever the machine's speed.
                row["speedup_target"] = search["speedup"]
                row["within_target"] = row["alone"]["speedup"] >= search["speedup"]
        out_rows.append(row)
    budget_rows = [r for r in out_rows if "proxy" in r]
    data = {
        "task": "sst2",
        "teacher": str(teacher),
        "teacher_value": tmetrics["value"],
        "teacher_fastest": {
            "backend": ref["backend"],
            "ms": ref["median_ms"],
            "batch": args.batch,
            "seq": args.seq,
            "protocol_ms": ref.get("protocol_ms"),
            "protocol_blocks_ms": ref.get("protocol_blocks_ms"),
            "protocol_ms_at_end": on_budget["teacher"]["measured_ms"],
            # The teacher's own blocks in the final check: a change of the machine's speed part-way shows.
            "protocol_blocks_ms_at_end": on_budget["teacher"]["blocks_ms"],
            "budgets_divide_ms": _budget_base(ref),
        },
        "settings": {**vars(args), "backends": backends, "batches": batches},
        "rows": out_rows,
        "refused": refused,
        "proxy_vs_accuracy_spearman": _spearman(
            [r["proxy"] for r in budget_rows], [r["value"] for r in budget_rows]
        ),
        "timing_rows": rows,
    }
    path = publish(f"{args.name}.json", data, render)
    print(f"-> {path}")
    return 0


def _searches(args: argparse.Namespace, students: dict, teacher: Path, ref: dict) -> int:
    from ladabert import search_shape

    rows = []
    for name, (_, info) in students.items():
        path = Path(args.work) / f"search-{name}.json"
        if path.is_file():
            record = json.loads(path.read_text())
        else:
            print(f"{name}: searching")
            record = search_shape(info["config"], teacher, data_dir=args.data_dir)
            write_json_atomic(path, record)
        rows.append(
            {"model": name, "divisor": info["divisor"], **{k: v for k, v in record.items() if k != "config"}}
        )
        data = {
            "task": "sst2",
            "teacher": str(teacher),
            "teacher_fastest": {
                **{k: ref[k] for k in ("backend", "median_ms", "batch", "seq")},
                "budgets_divide_ms": _budget_base(ref),
            },
            "rows": rows,
            "settings": vars(args),
        }
        # Written after every search, so that the budgets searched so far are on file.
        out = publish(f"{args.name}_search.json", data, render_search)
    print(out.with_suffix(".md").read_text())
    return 0


def render_search(path: Path) -> None:
    d = json.loads(path.read_text())
    t = d["teacher_fastest"]
    m = d.get("machine", {})
    lines = [
        f"Teacher fastest: {t['backend']} {t['median_ms']:.2f} ms at batch {t['batch']} x seq {t['seq']}"
        + (
            f", alone by the budget protocol {t['budgets_divide_ms']:.2f} ms"
            if "budgets_divide_ms" in t
            else ""
        )
        + f"; {cpu_name(m)}, {m.get('cores', '?')} cores, 2 threads.",
        "",
        "| budget | ms | backend | shape (layers/heads/FFN/ratio factor) | kept layers | measured ms | predicted ms "
        "| proxy | shapes timed | search s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        c = r["chosen"]
        lines.append(
            f"| teacher / {r['divisor']:g} | {r['budget_ms']:.2f} | {r['backend']} | "
            f"{c['layers']}/{c['heads']}/{c['ffn']}/"
            f"{c['ratio_factor']:g} | {r['kept_layers']} | {r['measured_ms']:.2f} | {r['predicted_ms']:.2f} | "
            f"{r['proxy']['proxy']:.3f} | {len(r['timed'])} of {r['candidates']} | {r['search_s']:.0f} |"
        )
    tried = [r for r in d["rows"] if r.get("backends")]
    if tried:
        lines += [
            "",
            "Each backend's pick (`--backend fastest`: the budget's row above is the highest proxy, then the "
            "lower latency):",
            "",
            "| budget | backend | shape (layers/heads/FFN/ratio factor) | proxy | measured ms | search s |",
            "|---|---|---|---|---|---|",
        ]
        for r in tried:
            for p in r["backends"]:
                if "error" in p:
                    lines.append(
                        f"| teacher / {r['divisor']:g} | {p['backend']} | none: {p['error']} | - | - | - |"
                    )
                    continue
                c = p["chosen"]
                lines.append(
                    f"| teacher / {r['divisor']:g} | {p['backend']} | {c['layers']}/{c['heads']}/{c['ffn']}/"
                    f"{c['ratio_factor']:g} | {p['proxy']:.3f} | {p['measured_ms']:.2f} | {p['search_s']:.0f} |"
                )
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def table(d: dict) -> list[str]:
    b = d["teacher_fastest"]["batch"]
    lines = [
        f"| model | layers | shape (layers/heads/FFN/ratio factor) | ratio | dev accuracy | % of teacher | budget ms | "
        f"budget protocol (blocks) | fastest b{b} | vs teacher b{b} | fastest b8 | vs teacher b8 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        s = r.get("shape")
        shape = f"{s['layers']}/{s['heads']}/{s['ffn']}/{s['ratio_factor']:g}" if s else "-"
        if "hidden_size" in r:
            shape = f"hidden {r['hidden_size']}"
        budget_ms = r.get("budget_ms", r.get("matched_budget_ms"))
        budget = f"{budget_ms:.2f} ({r['backend']})" if budget_ms else "-"
        if "speedup_target" in r:
            budget = f"{r['speedup_target']:g}x: {budget}"
        measured = "-"
        if r.get("measured_ms"):
            measured = f"{r['measured_ms']:.2f} ({'within' if r['within_budget'] else 'ABOVE'})"
            if r.get("blocks_ms"):  # the spread of the protocol's one-second blocks
                measured += f" {block_range(r['blocks_ms'])}"
            if "at_budget_speed_ms" in r:
                verdict = "within" if r["within_budget_at_budget_speed"] else "ABOVE"
                measured += f"; {r['at_budget_speed_ms']:.2f} at the budget's speed ({verdict})"
            if "speedup_target" in r:
                verdict = "within" if r["within_target"] else "BELOW"
                spread = r["alone"].get("speedup_blocks")
                over = (
                    f", {min(spread):.2f}-{max(spread):.2f}x over its {len(spread)} blocks" if spread else ""
                )
                measured += f"; {r['alone']['speedup']:.2f}x the teacher alone{over} ({verdict} target)"
        fb, f8 = r[f"fastest_b{b}"], r.get("fastest_b8", {})
        lines.append(
            f"| {r['model']} | {r['num_layers']} | {shape} | {r['ratio']:.2f}x | {100 * r['value']:.2f}% | "
            f"{100 * r['of_teacher']:.1f}% | {budget} | {measured} | {fb['ms']:.2f} ({fb['backend']}) | "
            f"{r[f'speedup_b{b}']:.2f}x | {f8.get('ms', 0):.2f} ({f8.get('backend', '-')}) | "
            f"{r.get('speedup_b8', 0):.2f}x |"
        )
    return lines


def served_table(d: dict) -> list[str]:
    """Each model's accuracy as its fastest backend at the budgets' batch serves it (the targets' terms)."""
    b = d["teacher_fastest"]["batch"]
    rows = [r for r in d["rows"] if "served" in r]
    if not rows:
        return []
    alone = any("alone" in r for r in rows)  # results before the teacher was timed alone have no column
    head = (
        f"| model | fastest b{b} | dev accuracy there | % of the teacher's on its fastest | vs teacher b{b} |"
    )
    lines = [
        head + " alone (budget protocol), vs teacher alone |" * alone,
        "|---|---|---|---|---|" + "---|" * alone,
    ]
    for r in rows:
        s, a = r["served"], r.get("alone")
        cell = f" {a['ms']:.2f} ms, {a['speedup']:.2f}x |" if a else " - |"
        lines.append(
            f"| {r['model']} | {s['backend']} | {100 * s['value']:.2f}% | {100 * s['of_teacher']:.1f}% | "
            f"{r[f'speedup_b{b}']:.2f}x |" + cell * alone
        )
    return lines


def _budget_note(t: dict, speedups: bool = False, student_backend: str | None = None) -> str:
    where = f"at batch {t['batch']} x seq {t['seq']}"
    served = (
        f"; the students searched and served on {student_backend}"
        if student_backend and student_backend not in (t["backend"], "fastest")
        else "; each student searched on every backend and served on the one its search picked"
        if student_backend == "fastest"
        else ""
    )
    if speedups:
        return (
            f"Targets: speedups over the teacher on its fastest backend, {t['backend']} ({t['ms']:.2f} ms "
            f"interleaved {where}){served}; each search timed the teacher's shape by the budget protocol, set "
            "the budget to that latency over the target and timed the teacher's shape beside every pick; each "
            "student is judged by its speedup over the teacher, the two alone in turn"
        )
    if "budgets_divide_ms" in t:
        return (
            f"Budgets: the teacher's fastest backend, {t['backend']} ({t['ms']:.2f} ms interleaved {where}), "
            f"the teacher alone there by the budget protocol before training, {t['budgets_divide_ms']:.2f} ms, "
            "divided by the budget's divisor"
        )
    return f"Budgets: the teacher's fastest as timed before training, {t['backend']} {t['ms']:.2f} ms {where}"


def _speed_note(t: dict) -> str:
    if not t.get("protocol_ms"):
        return ""

    def blocks(key: str) -> str:
        b = t.get(key)
        return f" ({block_range(b)})" if b else ""

    ranges = " (the range of its block medians)" if t.get("protocol_blocks_ms_at_end") else ""
    return (
        f"The teacher alone by the budget protocol: {t['protocol_ms']:.2f} ms{blocks('protocol_blocks_ms')} "
        f"when the budgets were set, {t['protocol_ms_at_end']:.2f} ms{blocks('protocol_blocks_ms_at_end')} "
        f"in the final check{ranges}; 'at the budget's speed' is a student's final reading over the "
        "teacher's, block by block, times the teacher's first reading. "
    )


def render(path: Path) -> None:
    d = json.loads(path.read_text())
    md = table(d)
    served = served_table(d)
    if served:
        md += ["", *served]
    rho = d.get("proxy_vs_accuracy_spearman")
    m = d.get("machine", {})
    md += [
        "",
        _budget_note(
            d["teacher_fastest"], d["settings"].get("speedups", False), d["settings"].get("student_backend")
        )
        + f"; {cpu_name(m)}, "
        f"{m.get('cores', '?')} cores, 2 threads; {d['settings']['max_steps']} distillation steps per student. "
        + _speed_note(d["teacher_fastest"])
        + (
            f"Spearman rank correlation of the search's proxy with trained accuracy: {rho:.2f}."
            if rho is not None
            else ""
        ),
    ]
    # Depths the budget leaves no room for, in the search's own words.
    refused = [f"- {name}: not trained: {why}" for name, why in d.get("refused", {}).items()]
    md += ["", *refused] if refused else []
    path.with_suffix(".md").write_text("\n".join(md) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = d["teacher_fastest"]["batch"]
    where = f"batch {b}, seq {d['teacher_fastest']['seq']}"
    # The budgets hold for a model running alone: where every model was timed so, that is the axis the
    # budget lines belong to; older results have the interleaved run only.
    alone = all("alone" in r for r in d["rows"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in d["rows"]:
        kind = "budget" if "budget_ms" in r else r["model"]
        marker = {"budget": "o", "teacher": "*", "default": "s", "narrow": "^"}.get(kind, "D")
        x = r["alone"]["ms"] if alone else r[f"fastest_b{b}"]["ms"]
        ax.scatter(x, 100 * r["value"], marker=marker, s=80 if kind == "teacher" else 40)
        ax.annotate(r["model"], (x, 100 * r["value"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    for r in d["rows"]:
        if "budget_ms" in r:
            ax.axvline(r["budget_ms"], color="grey", lw=0.5, ls=":")
    on = {r["alone"]["backend"] for r in d["rows"]} if alone else set()
    on_what = f"on {on.pop()}" if len(on) == 1 else f"(teacher on {d['teacher_fastest']['backend']})"
    ax.set_xlabel(
        f"latency alone {on_what} by the budget protocol, {where} (ms)"
        if alone
        else f"latency on the model's fastest backend, {where} (ms)"
    )
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title("Students compressed to latency budgets (dotted: the budgets)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
