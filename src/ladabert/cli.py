"""The ``ladabert`` command: finetune, compress, eval, export, densify, bench, gate, predict, run.

The CLI only parses arguments, builds a config and calls the Python API. Its flags are generated from the
config dataclasses (:mod:`ladabert.config`), so help and defaults live in one place; heavy libraries are
imported inside each subcommand so that ``ladabert --help`` is instant. User errors print one line and
exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ladabert.cli_args import add_config_args, config_overrides
from ladabert.config import (
    GATE_BACKENDS,
    BenchConfig,
    CompressConfig,
    ExportConfig,
    FinetuneConfig,
    GateConfig,
)

# Fields that ``ladabert run`` passes to both fine-tuning and compression from one flag (the run's data and
# cadence); the other fields the two configs share get a ``--compress-`` prefix for the compression stage.
RUN_SHARED = (
    "task",
    "train_file",
    "validation_file",
    "text_columns",
    "label_column",
    "max_length",
    "batch_size",
    "eval_batch_size",
    "seed",
    "max_train_samples",
    "max_eval_samples",
    "eval_steps",
    "save_steps",
    "logging_steps",
    "mixed_precision",
)
_FINETUNE_FIELDS = tuple(FinetuneConfig.__dataclass_fields__)
RUN_PREFIXED = tuple(
    f for f in CompressConfig.__dataclass_fields__ if f in _FINETUNE_FIELDS and f not in RUN_SHARED
)
EXPORT_SHARED = ("task", "validation_file", "text_columns", "label_column", "max_length", "max_eval_samples")


def _data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="GLUE root or task directory (default: LADABERT_DATA_DIR, then the SST-2 copy shipped with "
        "ladabert, then Hugging Face datasets); unused with --train-file",
    )


def _preset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="default", help="default | quick (a few-minute run on a subset)")


def _training_output_args(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep <out>.checkpoints after success")


def _add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a BERT teacher on a GLUE task or your own data files")
    add_config_args(p, FinetuneConfig)
    _data_dir_arg(p)
    _preset_arg(p)
    _training_output_args(p, "output directory (written atomically)")

    p = sub.add_parser("compress", help="compress a fine-tuned teacher into a LadaBERT student")
    p.add_argument("--teacher", required=True, help="fine-tuned teacher directory (from ladabert finetune)")
    add_config_args(p, CompressConfig)
    _data_dir_arg(p)
    _preset_arg(p)
    _training_output_args(p, "student directory (written atomically)")

    p = sub.add_parser("export", help="export a student or teacher to a validated ONNX bundle")
    p.add_argument("model_dir", help="student (ladabert compress) or fine-tuned teacher directory")
    p.add_argument("--out", required=True, help="bundle directory (written only if validation passes)")
    add_config_args(p, ExportConfig)
    _data_dir_arg(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    p = sub.add_parser("predict", help="classify text with an exported bundle (needs no torch)")
    p.add_argument("bundle", help="directory written by ladabert export")
    p.add_argument("texts", nargs="*", help="text(s) to classify; - reads one text per line from stdin")
    p.add_argument(
        "--input",
        default=None,
        help="file of one text per line, or .jsonl with text (and text_pair) fields; - for stdin",
    )
    p.add_argument("--pair", nargs="+", default=None, help="second segment(s) for pair tasks")
    p.add_argument("--batch-size", type=int, default=32, help="texts per model call (default 32)")
    p.add_argument("--precision", default="fp32", help="fp32 | int8 (default fp32)")
    p.add_argument("--runtime", default="onnxruntime", help="onnxruntime | openvino")
    p.add_argument("--openvino-precision", default="f32", help="OpenVINO inference precision: f32 | bf16")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--json", action="store_true", help='print [{"label": ..., "score": ...}], as transformers\' pipeline'
    )

    p = sub.add_parser("densify", help="write a student as a stock BertForSequenceClassification")
    p.add_argument("model_dir", help="student directory (ladabert compress)")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    p = sub.add_parser(
        "eval",
        help="evaluate a saved model, or an exported bundle on a backend, on a dev set or a validation file",
    )
    p.add_argument("model_dir", help="a teacher or student directory, or a bundle (ladabert export)")
    add_config_args(p, ExportConfig, only=EXPORT_SHARED)
    _data_dir_arg(p)
    p.add_argument(
        "--backend",
        choices=GATE_BACKENDS,
        default=None,
        help="for a bundle: the backend that serves it (default ort-fp32); OpenVINO int8 calibrates on the "
        "model's training data",
    )
    p.add_argument("--threads", type=int, default=None, help="for a bundle: intra-op threads")

    p = sub.add_parser(
        "run",
        help="end-to-end main job on the embedded default: finetune (or reuse), compress, export, predict",
    )
    add_config_args(p, FinetuneConfig)
    add_config_args(p, CompressConfig, skip=_FINETUNE_FIELDS)
    add_config_args(p, CompressConfig, prefix="compress-", only=RUN_PREFIXED)
    add_config_args(p, ExportConfig, skip=EXPORT_SHARED)
    _data_dir_arg(p)
    _preset_arg(p)
    p.add_argument("--out", default="runs/main", help="run directory (default runs/main)")
    p.add_argument(
        "--quick", action="store_true", help="a few-minute run on a subset (same as --preset quick)"
    )


def _add_measuring_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency of BERT-base-shaped students and bundles against BERT-base")
    add_config_args(p, BenchConfig)
    p.add_argument(
        "--quick", action="store_true", help="the quick preset: batch 1 and 8, sequence 128, 20 rounds"
    )
    p.add_argument(
        "--out", default="runs/bench.json", help="JSON file for the rows (default runs/bench.json)"
    )

    p = sub.add_parser(
        "gate",
        help="fail CI when a candidate model is slower than its reference (exit 0 pass, 1 regression, "
        "3 inconclusive)",
    )
    add_config_args(p, GateConfig)
    p.add_argument("--json", default=None, help="write the full record (settings, checks, machine) here")
    p.add_argument("--junit", default=None, help="write JUnit XML here (a regression is a failed test)")
    p.add_argument("--markdown", default=None, help="write a markdown summary here (a PR comment)")


class UsageError(Exception):
    """A command line argparse cannot read; :func:`main` prints it and returns 2."""


class _Parser(argparse.ArgumentParser):
    """A usage error is one line, as every other error is: the problem and where the options are listed
    (argparse's own prints the whole usage first). Subcommand parsers inherit it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message}; see {self.prog} --help")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ladabert",
        description="LadaBERT: compress a fine-tuned BERT by hybrid SVD + pruning with iterative distillation, "
        "and export it to fast ONNX.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_subcommands(sub)
    _add_measuring_subcommands(sub)
    return parser


def _preset_name(args: argparse.Namespace) -> str:
    return "quick" if getattr(args, "quick", False) else args.preset


def _finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    return FinetuneConfig.preset(_preset_name(args), **config_overrides(args, FinetuneConfig))


def _compress_config(args: argparse.Namespace) -> CompressConfig:
    overrides = config_overrides(args, CompressConfig)
    if args.command == "run":
        overrides = {k: v for k, v in overrides.items() if k not in RUN_PREFIXED}
        overrides.update(config_overrides(args, CompressConfig, prefix="compress_"))
    return CompressConfig.preset(_preset_name(args), **overrides)


def _export_config(args: argparse.Namespace) -> ExportConfig:
    return ExportConfig.preset("default", **config_overrides(args, ExportConfig))


def cmd_finetune(args: argparse.Namespace) -> int:
    from ladabert.pipeline.teacher import finetune

    cfg = _finetune_config(args)
    m = finetune(
        cfg,
        args.out,
        data_dir=args.data_dir,
        overwrite=args.overwrite,
        keep_checkpoints=args.keep_checkpoints,
    )
    print(
        f"{m['task']} dev {m['metric']} = {m['value']:.4f} after {m['steps']} steps, {m['wall_s']:.0f} s "
        f"-> {Path(args.out).absolute()}"
    )
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from ladabert.pipeline.compress import compress

    cfg = _compress_config(args)
    m = compress(
        cfg,
        args.teacher,
        args.out,
        data_dir=args.data_dir,
        overwrite=args.overwrite,
        keep_checkpoints=args.keep_checkpoints,
    )
    _print_student(m, args.out)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ladabert.export.bundle import export_bundle

    m = export_bundle(
        args.model_dir, args.out, _export_config(args), data_dir=args.data_dir, overwrite=args.overwrite
    )
    _print_bundle(m, args.out)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ladabert.bench.latency import benchmark
    from ladabert.utils import check_output_file, run_environment, write_json_atomic

    cfg = BenchConfig.preset("quick" if args.quick else "default", **config_overrides(args, BenchConfig))
    check_output_file(args.out, list(cfg.bundles))  # before minutes of timing, not after
    res = benchmark(cfg)
    write_json_atomic(args.out, {**res, **run_environment()})
    print(
        f"{'model':>24} {'backend':>14} {'batch':>5} {'seq':>4} {'median ms':>10} {'vs ORT fp32':>11} "
        f"{'vs fastest':>10}"
    )
    for r in res["rows"]:
        print(
            f"{r['model']:>24} {r['backend']:>14} {r['batch']:>5} {r['seq']:>4} {r['median_ms']:10.2f} "
            f"{r['speedup_vs_ort_fp32'] or 0:10.2f}x {r['speedup_vs_fastest'] or 0:9.2f}x"
        )
    for b in res["budgets"]:
        where = f"{b['backend']} at batch {b['batch']} x seq {b['seq']}"
        if b.get("speedup") is not None:
            print(_speedup_line(b, where))
        elif b["median_ms"] is None:
            print(
                f"{b['bundle']}: latency budget {b['budget_ms']:g} ms on {where} not measured in this run; "
                f"pass --backends {b['backend']} --batches {b['batch']} --seqs {b['seq']}"
            )
        else:
            verdict = "within" if b["within_budget"] else "ABOVE"
            print(
                f"{b['bundle']}: {b['median_ms']:.2f} ms on {where}, {verdict} its {b['budget_ms']:g} ms budget"
            )
    print(f"-> {Path(args.out).absolute()}")
    return 0


def _speedup_line(b: dict, where: str) -> str:
    """The verdict of ``ladabert bench`` on a student compressed to a speedup over its teacher."""
    if b["speedup_measured"] is not None:
        verdict = "within" if b["within_budget"] else "BELOW"
        return (
            f"{b['bundle']}: {b['median_ms']:.2f} ms on {where}, {b['speedup_measured']:.2f}x the teacher's "
            f"{b['teacher']} ({b['teacher_ms']:.2f} ms on {b['teacher_backend']}), {verdict} its "
            f"{b['speedup']:g}x target"
        )
    if b["teacher"] is None:
        return (
            f"{b['bundle']}: its {b['speedup']:g}x target over the teacher needs the teacher's bundle in the "
            "same run; pass it beside the student (ladabert export TEACHER_DIR makes one)"
        )
    return (
        f"{b['bundle']}: {b['speedup']:g}x target on {where} not measured in this run; "
        f"pass --backends {' '.join(dict.fromkeys((b['backend'], b['teacher_backend'])))} --batches {b['batch']} "
        f"--seqs {b['seq']}"
    )


def cmd_gate(args: argparse.Namespace) -> int:
    from ladabert.bench import gate_report
    from ladabert.bench.gate import gate
    from ladabert.utils import check_output_file, write_json_atomic, write_text_atomic

    cfg = GateConfig.preset("default", **config_overrides(args, GateConfig))
    outputs = {"--json": args.json, "--junit": args.junit, "--markdown": args.markdown}
    outputs["--save-baseline"] = cfg.save_baseline
    for flag, path in outputs.items():
        if path:  # before minutes of timing, not after
            check_output_file(path, [cfg.reference, cfg.baseline, *cfg.candidates], flag)
    res = gate(cfg)
    if cfg.save_baseline:
        print(f"baseline of {cfg.reference} ({res['rounds']} rounds) -> {Path(cfg.save_baseline).absolute()}")
    if res["checks"]:
        print(gate_report.table(res))
    if args.json:
        write_json_atomic(args.json, res)
    if args.junit:
        write_text_atomic(args.junit, gate_report.junit(res))
    if args.markdown:
        write_text_atomic(args.markdown, gate_report.markdown(res))
    return res["exit_code"]


def _on_other(record: dict) -> str:
    """`` on B`` when a speedup's teacher is timed on another backend than the student's."""
    from ladabert.config import reference_backend

    other = reference_backend(record)
    return f" on {other}" if other != record["backend"] else ""


def _backends_searched(search: dict) -> str:
    """`` here, the best of N backends searched`` for a search on every backend."""
    n = len(search.get("backends", ()))
    return f" here, the best of {n} backends searched" if n > 1 else ""


def _print_student(m: dict, out: str) -> None:
    print(
        f"{m['task']} dev {m['metric']}: student {m['value']:.4f} (teacher {m['teacher_value']:.4f}, "
        f"before distillation {m['value_at_init']:.4f}); ratio {m['ratio']:.2f}x "
        f"({m['student_nonzero_params']:,} of {m['teacher_params']:,} params), {m['steps']} steps, "
        f"{m['wall_s']:.0f} s -> {Path(out).absolute()}"
    )
    search = m.get("latency_search")
    if search:
        c = search["chosen"]
        target = (
            f"speedup {search['speedup']:g} over the teacher's {search['reference_ms']:.2f} ms"
            f"{_on_other(search)}: "
            if search.get("speedup") is not None
            else ""
        )
        print(
            f"{target}latency budget {search['budget_ms']:g} ms on {search['backend']} at batch {search['batch']} x seq "
            f"{search['seq']}: {c['layers']} layers, {c['heads']} heads, FFN {c['ffn']}, ratio factor "
            f"{c['ratio_factor']:g}; {search['measured_ms']:.2f} ms measured in the search "
            f"({len(search['timed'])} of {search['candidates']} shapes timed"
            f"{_backends_searched(search)}, {search['search_s']:.0f} s); ladabert export measures the bundle"
        )


def _print_bundle(m: dict, out: str) -> None:
    v = m["validation"]
    line = (
        f"{m['task']} dev {m['metric']}: PyTorch {v['pytorch_value']:.4f}, ONNX fp32 {v['fp32']['value']:.4f} "
        f"(max logit diff {v['fp32']['max_abs_diff']:.2g})"
    )
    if "int8" in v:
        line += f", ONNX int8 {v['int8']['value']:.4f}"
    print(
        f"{line}; fused attention nodes {m['fused_attention_nodes']}/{m['num_layers']} layers -> "
        f"{Path(out).absolute()}"
    )
    b = m.get("latency_budget")
    if b and b.get("bundle_ms") is not None and b.get("speedup") is not None:
        verdict = "within" if b["within_budget"] else "BELOW"
        print(
            f"speedup target {b['speedup']:g}x on {b['backend']} at batch {b['batch']} x seq {b['seq']}: bundle "
            f"measures {b['bundle_ms']:.2f} ms, {b['bundle_speedup']:.2f}x the teacher's shape "
            f"({b['reference_ms']:.2f} ms{_on_other(b)}, timed in turn with it), {verdict} target"
        )
    elif b and b.get("bundle_ms") is not None:
        verdict = "within" if b["within_budget"] else "ABOVE"
        print(
            f"latency budget {b['budget_ms']:g} ms on {b['backend']} at batch {b['batch']} x seq {b['seq']}: "
            f"bundle measures {b['bundle_ms']:.2f} ms, {verdict} budget"
        )


def _predict_inputs(args: argparse.Namespace) -> Any:
    """``(text, pair or None)`` from the arguments, ``--input`` or stdin, read lazily."""
    from ladabert.errors import LadaBertError

    source = args.input if args.input is not None else ("-" if args.texts == ["-"] else None)
    if source is None:
        if not args.texts:
            if args.pair:  # --pair takes every value after it, texts meant for the model included
                raise LadaBertError(
                    f"no text given, only {len(args.pair)} --pair segment(s); put the texts before --pair"
                )
            raise LadaBertError("no text given; pass texts, --input FILE, or - to read stdin")
        if args.pair is not None and len(args.pair) != len(args.texts):
            raise LadaBertError(
                f"got {len(args.texts)} text(s) but {len(args.pair)} --pair segment(s); give one each"
            )
        yield from zip(args.texts, args.pair or [None] * len(args.texts))
        return
    if args.texts and args.texts != ["-"]:
        raise LadaBertError("pass texts or --input, not both")
    if args.pair is not None:
        raise LadaBertError("--pair goes with texts on the command line; in a .jsonl --input use text_pair")
    if source == "-":
        yield from ((line.rstrip("\r\n"), None) for line in sys.stdin if line.strip())
        return
    yield from _read_input_file(Path(source))


def _read_input_file(path: Path) -> Any:
    from ladabert.errors import LadaBertError

    try:
        fh = open(path, encoding="utf-8-sig")
    except OSError as exc:
        raise LadaBertError(f"cannot read --input {path}: {exc.strerror}; check the path") from None
    with fh:
        try:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                if path.suffix.lower() != ".jsonl":
                    yield line.rstrip("\r\n"), None
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise LadaBertError(
                        f"{path}:{lineno}: invalid JSON ({exc.msg}); one object per line"
                    ) from None
                if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                    raise LadaBertError(
                        f'{path}:{lineno}: need an object with a "text" string (and "text_pair")'
                    )
                yield rec["text"], rec.get("text_pair")
        except UnicodeDecodeError:
            raise LadaBertError(f"{path} is not UTF-8 text; save it as UTF-8") from None


def _checked(inputs: Any) -> Any:
    """The inputs, refusing empty texts and text that is not valid UTF-8 (undecodable argument bytes)."""
    from ladabert.errors import LadaBertError

    for n, (text, pair) in enumerate(inputs, start=1):
        for part in (text, pair):
            if part is None:
                continue
            if not part.strip():
                raise LadaBertError(f"input {n} is empty; give every input some text")
            try:
                part.encode("utf-8")
            except UnicodeEncodeError:
                raise LadaBertError(
                    f"input {n} is not valid UTF-8 text; pass UTF-8 (check the terminal's locale)"
                ) from None
        yield text, pair


def _batched(items: Any, size: int) -> Any:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def cmd_predict(args: argparse.Namespace) -> int:
    from ladabert.errors import LadaBertError
    from ladabert.export.runner import OnnxClassifier

    if args.batch_size < 1:
        raise LadaBertError(f"--batch-size must be >= 1, got {args.batch_size}")
    inputs = _predict_inputs(args)
    clf = OnnxClassifier(
        args.bundle,
        precision=args.precision,
        runtime=args.runtime,
        threads=args.threads,
        openvino_hint=args.openvino_precision,
    )
    results = []
    for batch in _batched(_checked(inputs), args.batch_size):
        texts = [t for t, _ in batch]
        pairs = [p for _, p in batch]
        if any(p is None for p in pairs) and any(p is not None for p in pairs):
            raise LadaBertError("some inputs have a text_pair and some do not; give every input one or none")
        preds = clf(texts, None if pairs[0] is None else pairs)
        if args.json:
            results += preds
            continue
        for t, p in zip(texts, preds):
            print(f"{p['label']}\t{p['score']:.4f}\t{t}", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def cmd_densify(args: argparse.Namespace) -> int:
    from ladabert.pipeline.student import densify_dir

    m = densify_dir(args.model_dir, args.out, overwrite=args.overwrite)
    print(
        f"stock BertForSequenceClassification, max logit difference to the student {m['max_abs_diff']:.2g} "
        f"-> {Path(args.out).absolute()}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ladabert.errors import LadaBertError

    data = {
        "data_dir": args.data_dir,
        "max_length": args.max_length,
        "max_samples": args.max_eval_samples,
        "validation_file": args.validation_file,
        "text_columns": tuple(args.text_columns or ()),
        "label_column": args.label_column,
    }
    if (Path(args.model_dir) / "ladabert.json").is_file():
        from ladabert.export.served import evaluate_bundle

        backend = args.backend or "ort-fp32"
        m = evaluate_bundle(args.model_dir, backend, args.task, threads=args.threads, **data)
    elif args.backend is not None or args.threads is not None:
        raise LadaBertError(
            f"{args.model_dir} is not an exported bundle (no ladabert.json); --backend and --threads evaluate "
            "a bundle: export it with ladabert export, or leave them out"
        )
    else:
        from ladabert.pipeline.teacher import evaluate

        m = evaluate(args.model_dir, args.task, **data)
    print(json.dumps(m, indent=2))
    return 0


# Settings that say how often to evaluate, log or save, not what a stage makes: a stage made with other
# values of these is still reused.
_CADENCE = {"eval_steps", "save_steps", "logging_steps", "eval_batch_size", "max_eval_samples", "precisions"}


def _reuse(stage_dir: Path, record: str, key: str, wanted: Any) -> dict | None:
    """The record of a finished stage made with the ``wanted`` config, None when the stage is still to run.

    Raises:
        LadaBertError: the directory holds something else (unfinished, unreadable, or other settings).
    """
    from ladabert.errors import LadaBertError

    path = stage_dir / record
    if not stage_dir.exists():
        return None
    fix = "pass another --out, or delete it to run the stage again"
    try:
        done = json.loads(path.read_text())
        before = done[key]
    except (OSError, ValueError, KeyError, TypeError):
        raise LadaBertError(
            f"{stage_dir} is not a finished stage of ladabert run (no readable {record}); {fix}"
        ) from None
    now = json.loads(json.dumps(wanted.to_dict()))
    changed = [k for k in sorted(set(now) | set(before)) if k not in _CADENCE and before.get(k) != now.get(k)]
    if changed:
        diff = ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:3])
        raise LadaBertError(f"{stage_dir} was made with other settings ({diff}); {fix}")
    return done


def cmd_run(args: argparse.Namespace) -> int:
    from ladabert.pipeline.teacher import finetune

    run_dir = Path(args.out)
    teacher_dir = run_dir / "teacher"
    # Every step's settings are checked before the first one trains.
    cfg, ccfg, ecfg = _finetune_config(args), _compress_config(args), _export_config(args)
    m = _reuse(teacher_dir, "metrics.json", "config", cfg)
    if m is not None:
        print(f"[1/4] teacher: reusing {teacher_dir} ({m['metric']} {m['value']:.4f})")
    else:
        data = cfg.train_file or cfg.task
        print(f"[1/4] teacher: fine-tuning {cfg.model or 'all-MiniLM-L6-v2'} on {data} -> {teacher_dir}")
        m = finetune(cfg, teacher_dir, data_dir=args.data_dir)
        print(
            f"      {m['task']} dev {m['metric']} = {m['value']:.4f} ({m['steps']} steps, {m['wall_s']:.0f} s)"
        )
    from ladabert.pipeline.compress import compress

    student_dir = run_dir / f"student-{ccfg.ratio:g}x"
    sm = _reuse(student_dir, "metrics.json", "config", ccfg)
    if sm is not None:
        print(f"[2/4] student: reusing {student_dir}")
    else:
        print(
            f"[2/4] student: {ccfg.method} compression to {ccfg.ratio:g}x with distillation -> {student_dir}"
        )
        sm = compress(ccfg, teacher_dir, student_dir, data_dir=args.data_dir)
    _print_student(sm, str(student_dir))
    from ladabert.export.bundle import export_bundle
    from ladabert.export.runner import OnnxClassifier

    bundle = run_dir / f"student-{ccfg.ratio:g}x-onnx"
    bm = _reuse(bundle, "ladabert.json", "export_config", ecfg)
    if bm is not None:
        print(f"[3/4] export: reusing {bundle}")
    else:
        print(f"[3/4] export: ONNX fp32 + int8, validated against PyTorch -> {bundle}")
        from ladabert.export.bundle import ExportValidationError

        try:
            bm = export_bundle(student_dir, bundle, ecfg, data_dir=args.data_dir)
        except ExportValidationError as exc:
            served_int8 = (sm.get("latency_search") or {}).get("backend") == "ort-int8"
            if "int8" not in str(exc) or "int8" not in ecfg.precisions or served_int8:
                raise
            # The end-to-end run keeps going with the fp32 model, unless its latency budget is on the
            # int8 file; `ladabert export` alone stays strict.
            print(f"      {exc}\n      -> exporting fp32 only")
            ecfg.precisions = ("fp32",)
            bm = export_bundle(student_dir, bundle, ecfg, data_dir=args.data_dir)
    _print_bundle(bm, str(bundle))
    texts, pairs = (
        (RUN_EXAMPLES, None) if bm["task"] == "sst2" else _first_examples(student_dir, args.data_dir)
    )
    precision = "int8" if "int8" in bm["files"] else "fp32"
    print(f"[4/4] predict (ONNX Runtime, {precision}, no torch needed):")
    clf = OnnxClassifier(bundle, precision=precision)
    for text, p in zip(texts, clf(texts, pairs)):
        print(f"      {p['label']}\t{p['score']:.4f}\t{text}")
    return 0


RUN_EXAMPLES = ["a gripping , beautifully acted film", "a dull , lifeless mess"]


def _first_examples(student_dir: Path, data_dir: str | None) -> tuple[list[str], list[str] | None]:
    """The first two validation examples of the student's data, for the run's closing demo."""
    from ladabert.pipeline.teacher import load_bert_config, validation_data

    _, dev = validation_data(
        load_bert_config(str(student_dir)), str(student_dir), data_dir=data_dir, max_samples=2
    )
    return [t[0] for t in dev.texts], ([t[1] for t in dev.texts] if len(dev.texts[0]) > 1 else None)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    args, extra = build_parser().parse_known_args(argv)
    if args.command == "predict":
        # Texts after an option (`predict BUNDLE --threads 2 "a text"`): argparse has closed the
        # positional list by then, and parse_intermixed_args does not take subcommands.
        texts = [a for a in extra if a == "-" or not a.startswith("-")]
        args.texts, extra = [*args.texts, *texts], [a for a in extra if a not in texts]
    if extra:
        prog = f"ladabert {args.command}" if args.command else "ladabert"
        raise UsageError(f"{prog}: error: unrecognized arguments: {' '.join(extra)}; see {prog} --help")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.version:
        from ladabert import __version__

        print(f"ladabert {__version__}")
        return 0
    if args.command is None:
        build_parser().print_help()
        return 2
    from ladabert.errors import LadaBertError

    handler = {
        "finetune": cmd_finetune,
        "compress": cmd_compress,
        "eval": cmd_eval,
        "run": cmd_run,
        "export": cmd_export,
        "predict": cmd_predict,
        "densify": cmd_densify,
        "bench": cmd_bench,
        "gate": cmd_gate,
    }[args.command]
    try:
        return handler(args)
    except LadaBertError as exc:
        print(f"ladabert {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"ladabert {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
