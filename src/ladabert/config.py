"""The settings of every stage, as dataclasses: one place for each default, its help text and its check.

The CLI builds its flags from these fields (:mod:`ladabert.cli_args`), the Python API takes them as they
are, and every result record stores ``to_dict()`` of the config that produced it. This module imports no
torch, so ``ladabert --help`` stays instant. Why each default is what it is: ``docs/method.md``.

Example::

    from ladabert import CompressConfig
    cfg = CompressConfig(ratio=10, pattern="rank")
    CompressConfig.from_json(cfg.to_json()) == cfg
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ladabert.errors import LadaBertError

METHODS = ("hybrid", "svd", "prune", "distill-only")
PATTERNS = ("unstructured", "n:m", "block", "rank")
AUGMENT_SWAPS = ("batch", "neighbors")
MIXED_PRECISION = ("auto", "no", "bf16")
PRECISIONS = ("fp32", "int8", "fp16")
MERGES = ("break-even", "all", "none")
REWRITE_NAMES = ("shrink", "merge", "align", "fuse")
GATE_BACKENDS = ("ort-fp32", "ort-int8", "openvino-f32", "openvino-bf16", "openvino-int8")
# A latency target's backend may be this instead of one of GATE_BACKENDS: every installed one is tried.
FASTEST = "fastest"
TARGET_BACKENDS = (*GATE_BACKENDS, FASTEST)
ALL_BACKENDS = (
    "pytorch-fp32",
    "pytorch-bf16",
    "ort-fp32",
    "ort-int8",
    "openvino-f32",
    "openvino-bf16",
    "openvino-int8",
)


def _f(default: Any, help: str, **meta: Any) -> Any:  # noqa: A002
    """A dataclass field with its CLI help (and optional ``choices`` / ``aliases``) in the metadata;
    sequence defaults are tuples, so no default factory is needed."""
    return field(default=default, metadata={"help": help, **meta})


def check_range(name: str, value: Any, lo: float, hi: float | None = None, lo_open: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` and the allowed range unless ``lo <= value <= hi``.

    NaN fails every range (every comparison with it is false); infinity is refused as no setting's value
    (an infinite budget or ratio would silently mean "no limit")."""
    if isinstance(value, float) and math.isinf(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    ok = not (isinstance(value, float) and math.isnan(value))
    ok = ok and value >= lo and not (lo_open and value == lo) and (hi is None or value <= hi)
    if not ok:
        rng = f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise ValueError(f"{name} must be {rng}, got {value!r}")


def reference_backend(latency: dict[str, Any]) -> str:
    """The backend a speedup target's teacher is timed on, from a latency record (search, student config,
    bundle): the ``reference_backend`` it names, else the student's own ``backend``."""
    return latency.get("reference_backend") or latency["backend"]


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


class JsonConfig:
    """Mixin for the config dataclasses: dict/JSON round trip that rejects unknown fields, and presets."""

    PRESETS: dict[str, dict[str, Any]] = {"default": {}}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> Any:
        return cls.from_dict(json.loads(text))

    @classmethod
    def preset(cls, name: str = "default", **overrides: Any) -> Any:
        """The named preset with ``overrides`` on top; an unknown name or an invalid value is a
        :class:`LadaBertError` that says what to do."""
        if name not in cls.PRESETS:
            raise LadaBertError(f"unknown preset {name!r}; choose one of: {', '.join(cls.PRESETS)}")
        try:
            return cls(**{**cls.PRESETS[name], **overrides})
        except ValueError as exc:
            raise LadaBertError(f"invalid setting: {exc}") from None


def _check_data_fields(cfg: Any, need_train: bool) -> None:
    """A GLUE task name, or data files: with ``need_train`` both a training and a validation file."""
    cfg.text_columns = tuple(cfg.text_columns)
    if len(cfg.text_columns) > 2:
        raise ValueError(
            f"text_columns takes one column, or two for sentence pairs, got {list(cfg.text_columns)}"
        )
    train = getattr(cfg, "train_file", None)
    if need_train and (train is None) != (cfg.validation_file is None):
        given, missing = ("train_file", "validation_file") if train else ("validation_file", "train_file")
        raise ValueError(
            f"{given} needs {missing} too (a labelled file for training and one for evaluation); pass both"
        )
    if train is None and cfg.validation_file is None and cfg.task is not None:
        from ladabert.pipeline.data import get_task

        get_task(cfg.task)  # raises LadaBertError on an unknown task


def _check_training_fields(cfg: Any) -> None:
    """The checks that fine-tuning and compression configs share."""
    _check_data_fields(cfg, need_train=True)
    check_range("max_length", cfg.max_length, 8)
    check_range("batch_size", cfg.batch_size, 1)
    check_range("eval_batch_size", cfg.eval_batch_size, 1)
    check_range("learning_rate", cfg.learning_rate, 0, 1, lo_open=True)
    check_range("warmup_ratio", cfg.warmup_ratio, 0, 1)
    check_range("weight_decay", cfg.weight_decay, 0, 1)
    check_range("eval_steps", cfg.eval_steps, 0)
    check_range("save_steps", cfg.save_steps, 1)
    check_range("logging_steps", cfg.logging_steps, 1)
    check_range("seed", cfg.seed, 0)
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(cfg, name) is not None:
            check_range(name, getattr(cfg, name), 1)
    check_choice("mixed_precision", cfg.mixed_precision, MIXED_PRECISION)
    check_range("average_every", cfg.average_every, 1)


_MIXED_HELP = "bf16 autocast in training: auto uses it on bf16 GPUs and AMX/AVX512-BF16 CPUs"


@dataclass
class TrainingData:
    """The data fields that fine-tuning and compression share: a GLUE task, or a user's files."""

    task: str = _f(
        "sst2", "GLUE task: sst2 mrpc qnli rte qqp mnli mnli-mm cola stsb (unused with --train-file)"
    )
    train_file: str | None = _f(
        None, "your own training data: csv, tsv, json/jsonl or parquet (instead of --task)"
    )
    validation_file: str | None = _f(None, "your own labelled evaluation data, same columns as --train-file")
    text_columns: tuple[str, ...] = _f(
        (),
        "text column(s) of the data files: one, or two for pairs (default: sentence1 sentence2, text, "
        "or sentence)",
        aliases=("--text-column",),
    )
    label_column: str | None = _f(None, "label column of the data files (default: label)")


@dataclass
class FinetuneConfig(TrainingData, JsonConfig):
    """Settings of teacher fine-tuning (defaults: the SST-2 teacher of the results tables)."""

    model: str | None = _f(None, "base checkpoint: local directory or hub id (default: all-MiniLM-L6-v2)")
    max_length: int = _f(128, "max tokens per example")
    epochs: float = _f(2.0, "training epochs (ignored when --max-steps > 0)")
    min_steps: int = _f(
        1000, "train at least this many steps: small datasets get more epochs (ignored when --max-steps > 0)"
    )
    max_steps: int = _f(-1, "training steps; > 0 overrides --epochs and --min-steps")
    batch_size: int = _f(32, "training batch size per device")
    eval_batch_size: int = _f(128, "evaluation batch size")
    learning_rate: float = _f(3e-5, "peak learning rate (linear warm-up and decay)", aliases=("--lr",))
    warmup_ratio: float = _f(0.06, "share of the steps spent warming the learning rate up")
    weight_decay: float = _f(0.01, "AdamW weight decay")
    seed: int = _f(42, "random seed (data order, subsets, initialisation)")
    max_train_samples: int | None = _f(None, "train on a random subset of N examples")
    max_eval_samples: int | None = _f(None, "evaluate on the first N dev examples")
    eval_steps: int = _f(500, "evaluate every N steps (0: only at the end)")
    save_steps: int = _f(500, "checkpoint every N steps (a killed run resumes from the last one)")
    logging_steps: int = _f(50, "log the loss every N steps")
    mixed_precision: str = _f("auto", _MIXED_HELP, choices=MIXED_PRECISION)
    average_last: float = _f(
        0.4, "save the mean of the weights over this last share of training (0: the last weights)"
    )
    average_every: int = _f(50, "steps between averaged weight samples")

    PRESETS = {
        "default": {},
        # Minutes on 2 CPU cores: shows the pipeline end to end, not a good teacher.
        "quick": {
            "epochs": 1.0,
            "min_steps": 0,
            "max_train_samples": 4000,
            "eval_steps": 0,
            "save_steps": 100,
        },
    }

    def __post_init__(self) -> None:
        _check_training_fields(self)
        check_range("epochs", self.epochs, 0, lo_open=True)
        check_range("min_steps", self.min_steps, 0)
        check_range("average_last", self.average_last, 0, 1)
        if self.max_steps != -1:
            check_range("max_steps", self.max_steps, 1)


@dataclass
class CompressConfig(TrainingData, JsonConfig):
    """Settings of one compression run (defaults: the SST-2 students of the results tables)."""

    ratio: float = _f(5.0, "target compression ratio (teacher params / student non-zero params)")
    method: str = _f("hybrid", "hybrid (SVD + pruning), svd, prune, or distill-only", choices=METHODS)
    pattern: str = _f("unstructured", "pruning pattern of the factors", choices=PATTERNS)
    hybrid: float = _f(0.75, "share of the (log) reduction that comes from SVD; the rest from pruning")
    embedding_scale: float = _f(1.0, "word-embedding kept share relative to the encoder's (1: uniform)")
    keep_layers: int | None = _f(
        None,
        "encoder layers kept, the ones whose removal changes the teacher's outputs least dropped first "
        "(with --latency-budget: the depth the search keeps)",
    )
    keep_heads: float = _f(1.0, "share of attention heads kept per layer, least important removed first")
    keep_ffn: float = _f(1.0, "share of FFN neurons kept per layer, least important removed first")
    block_size: int = _f(16, "tile size of the block pattern")
    latency_budget: float | None = _f(
        None,
        "milliseconds per call the exported student may take on --backend at --batch x --seq: the layers, "
        "heads, FFN neurons and ratio are then searched (--ratio and --keep-* are set by the search)",
    )
    latency_speedup: float | None = _f(
        None,
        "instead of --latency-budget: times faster than the teacher the exported student must be on --backend "
        "at --batch x --seq; the teacher's graph timed there sets the budget (its latency / this), and the "
        "export checks the ratio with the teacher timed beside the bundle",
    )
    latency_backend: str = _f(
        "ort-int8",
        "backend the budget is measured on; 'fastest' searches on every installed backend and keeps the "
        "best shape within the budget on any (the student is then served on that one)",
        choices=TARGET_BACKENDS,
        aliases=("--backend",),
    )
    latency_reference_backend: str | None = _f(
        None,
        "with --latency-speedup: backend the teacher's graph is timed on (default: --backend), e.g. the "
        "teacher's fastest while the student is served on the backend fastest for its own shape; 'fastest' "
        "times the teacher on every installed backend and takes the fastest",
        choices=TARGET_BACKENDS,
        aliases=("--reference-backend",),
    )
    latency_batch: int = _f(1, "batch size the budget is measured at", aliases=("--batch",))
    latency_seq: int = _f(128, "sequence length the budget is measured at", aliases=("--seq",))
    latency_margin: float = _f(
        0.1, "the search picks a student that measures at most (1 - this) of the budget"
    )
    latency_threads: int = _f(2, "intra-op threads the budget is measured with")
    search_timings: int = _f(16, "most candidate shapes the latency search times")
    initial_ratio: float = _f(
        2.0,
        "ratio of the student at step 0; it grows to --ratio along the schedule (the default 2 is capped at --ratio)",
    )
    schedule: str = _f("cubic", "shape of the ratio schedule", choices=("cubic", "linear"))
    schedule_fraction: float = _f(
        0.25, "share of the steps over which the ratio grows to --ratio; the rest trains at it"
    )
    schedule_updates: int = _f(10, "recompressions along the schedule")
    max_steps: int = _f(3000, "distillation steps")
    batch_size: int = _f(32, "training batch size per device")
    eval_batch_size: int = _f(128, "evaluation batch size")
    learning_rate: float = _f(3e-4, "peak distillation learning rate", aliases=("--lr",))
    warmup_ratio: float = _f(0.05, "share of the steps spent warming the learning rate up")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    temperature: float = _f(2.0, "softmax temperature of the logit term")
    w_logits: float = _f(1.0, "weight of the logit KL term")
    w_hidden: float = _f(1.0, "weight of the per-layer hidden-state MSE term")
    w_attention: float = _f(
        1.0, "weight of the attention-map KL term (each kept head against the teacher head it comes from)"
    )
    w_hard: float = _f(0.0, "weight of the cross-entropy on the gold labels")
    average_last: float = _f(
        0.0, "save the mean of the weights over this last share of training, after the schedule"
    )
    average_every: int = _f(50, "steps between averaged weight samples")
    augment: float = _f(0.3, "token-replacement probability in every second training example (0: off)")
    augment_swap: str = _f(
        "batch",
        "a replaced token becomes [MASK] or, half of the time, a token of the batch or a nearest neighbour "
        "by the teacher's word embeddings",
        choices=AUGMENT_SWAPS,
    )
    length_weight: float = _f(
        1.5, "draw training examples with probability proportional to token count ** this (0: uniform)"
    )
    dropout: float | None = _f(None, "dropout in the student while it is distilled (default: the teacher's)")
    data_aware: bool = _f(
        True, "truncate and prune for each layer's outputs on calibration data instead of the weights alone"
    )
    calibration_samples: int = _f(2048, "training examples read for the data-aware statistics")
    max_length: int = _f(128, "max tokens per example")
    seed: int = _f(42, "random seed (data order, subsets, initialisation)")
    max_train_samples: int | None = _f(None, "train on a random subset of N examples")
    max_eval_samples: int | None = _f(None, "evaluate on the first N dev examples")
    eval_steps: int = _f(500, "evaluate every N steps (0: only at the end)")
    save_steps: int = _f(250, "checkpoint every N steps (a killed run resumes from the last one)")
    logging_steps: int = _f(50, "log the loss every N steps")
    mixed_precision: str = _f("auto", _MIXED_HELP, choices=MIXED_PRECISION)

    PRESETS = {
        "default": {},
        # Minutes on 2 CPU cores: shows the pipeline end to end, not the accuracy it can reach.
        "quick": {"max_steps": 200, "max_train_samples": 4000, "eval_steps": 0, "save_steps": 100},
    }

    def __post_init__(self) -> None:
        _check_training_fields(self)
        check_choice("method", self.method, METHODS)
        check_choice("pattern", self.pattern, PATTERNS)
        check_choice("augment_swap", self.augment_swap, AUGMENT_SWAPS)
        check_choice("schedule", self.schedule, ("cubic", "linear"))
        check_range("ratio", self.ratio, 1)
        check_range("initial_ratio", self.initial_ratio, 1)
        if self.initial_ratio > self.ratio and self.initial_ratio != 2.0:
            # The default 2 is capped at a smaller target ratio (its help says so); an explicit larger start
            # is a mistake.
            raise ValueError(
                f"initial_ratio ({self.initial_ratio:g}) must be <= ratio ({self.ratio:g}): the schedule grows the "
                "ratio; pass a smaller --initial-ratio"
            )
        check_range("hybrid", self.hybrid, 0, 1)
        check_range("embedding_scale", self.embedding_scale, 0, lo_open=True)
        check_range("keep_heads", self.keep_heads, 0, 1, lo_open=True)
        check_range("keep_ffn", self.keep_ffn, 0, 1, lo_open=True)
        if self.keep_layers is not None:
            check_range("keep_layers", self.keep_layers, 1)
        self._check_latency_target()
        if self.structured and self.method == "distill-only":
            raise ValueError(
                "keep_layers / keep_heads / keep_ffn apply to hybrid, svd and prune; distill-only sets its own width"
            )
        for name in ("block_size", "schedule_updates", "max_steps", "calibration_samples"):
            check_range(name, getattr(self, name), 1)
        check_range("schedule_fraction", self.schedule_fraction, 0, 1, lo_open=True)
        check_range("augment", self.augment, 0, 1)
        check_range("length_weight", self.length_weight, 0)
        if self.dropout is not None:
            check_range("dropout", self.dropout, 0, 1 - 1e-9)
        if not isinstance(self.data_aware, bool):
            raise ValueError(f"data_aware must be true or false, got {self.data_aware!r}")
        if not 0 <= self.average_last <= 1 - self.schedule_fraction + 1e-9:  # NaN fails too
            raise ValueError(
                f"average_last must be >= 0 and <= 1 - schedule_fraction ({1 - self.schedule_fraction:g}) so "
                f"that every averaged sample has the final masks, got {self.average_last!r}"
            )
        check_range("temperature", self.temperature, 0, lo_open=True)
        weights = ("w_logits", "w_hidden", "w_attention", "w_hard")
        for name in weights:
            check_range(name, getattr(self, name), 0)
        if sum(getattr(self, name) for name in weights) == 0:
            raise ValueError("at least one loss weight (w_logits, w_hidden, w_attention, w_hard) must be > 0")

    @property
    def structured(self) -> bool:
        """Layers, heads or FFN neurons are removed before the hybrid compression."""
        return self.keep_heads < 1 or self.keep_ffn < 1 or self.keep_layers is not None

    def _check_latency_target(self) -> None:
        if self.latency_budget is not None and self.latency_speedup is not None:
            raise ValueError(
                "give latency_budget (milliseconds) or latency_speedup (times the teacher), not both"
            )
        if self.latency_budget is not None:
            check_range("latency_budget", self.latency_budget, 0, lo_open=True)
        if self.latency_speedup is not None:
            check_range("latency_speedup", self.latency_speedup, 1, lo_open=True)
        if self.budgeted and self.method == "distill-only":
            raise ValueError(
                "a latency target applies to hybrid, svd and prune; distill-only sets its own width"
            )
        check_choice("latency_backend", self.latency_backend, TARGET_BACKENDS)
        if self.latency_reference_backend is not None:
            if self.latency_speedup is None:
                raise ValueError(
                    "latency_reference_backend applies to latency_speedup: give a speedup, or leave it out"
                )
            check_choice("latency_reference_backend", self.latency_reference_backend, TARGET_BACKENDS)
        for name in ("latency_batch", "latency_seq", "latency_threads", "search_timings"):
            check_range(name, getattr(self, name), 1)
        check_range("latency_seq", self.latency_seq, 1, 512)
        check_range("latency_margin", self.latency_margin, 0, 0.9)

    @property
    def reference_backend(self) -> str:
        """The backend the teacher's shape is timed on for a speedup target."""
        return self.latency_reference_backend or self.latency_backend

    @property
    def budgeted(self) -> bool:
        """The shape is searched for a latency target (milliseconds, or a speedup over the teacher)."""
        return self.latency_budget is not None or self.latency_speedup is not None

    @property
    def hybrid_share(self) -> float:
        """The SVD share of the reduction that ``method`` implies."""
        return {"hybrid": self.hybrid, "svd": 1.0, "prune": 0.0}.get(self.method, self.hybrid)


@dataclass
class ExportConfig(JsonConfig):
    """Settings of ``ladabert export``."""

    precisions: tuple[str, ...] = _f(
        ("fp32", "int8"), "ONNX files to write and validate: fp32 int8 fp16", aliases=("--precision",)
    )
    merge: str = _f("break-even", "merge factors back to dense: break-even, all or none", choices=MERGES)
    align: int = _f(32, "pad factor ranks to a multiple of N with zeros (1: off)")
    fuse: bool = _f(True, "apply ONNX Runtime's transformer fusions")
    skip_layer_norm: bool | None = _f(
        None, "fuse Add+LayerNorm into SkipLayerNormalization (default: dense models only)"
    )
    opset: int = _f(17, "ONNX opset")
    max_length: int | None = _f(
        None,
        "max tokens per example the bundle is validated at (default: the length the model was trained at)",
    )
    task: str | None = _f(
        None, "GLUE task for validation (default: the model's fine-tuning task or data files)"
    )
    validation_file: str | None = _f(
        None, "your own labelled data for validation (default: the file the model was trained with)"
    )
    text_columns: tuple[str, ...] = _f(
        (), "text column(s) of --validation-file (default: the model's)", aliases=("--text-column",)
    )
    label_column: str | None = _f(None, "label column of --validation-file (default: the model's)")
    validate_samples: int = _f(256, "dev examples compared logit by logit in fp32")
    max_eval_samples: int | None = _f(None, "dev examples for the metric checks (default: all)")
    fp32_atol: float = _f(1e-3, "largest allowed fp32 logit difference against PyTorch")
    int8_max_drop: float = _f(0.01, "largest allowed drop of the task metric in int8 (0.01 = 1 point)")
    fp16_atol: float = _f(0.05, "largest allowed fp16 logit difference against PyTorch")
    rewrites: tuple[str, ...] = _f(REWRITE_NAMES, "graph rewrites, in order: shrink merge align fuse")

    def __post_init__(self) -> None:
        _check_data_fields(self, need_train=False)
        self.precisions, self.rewrites = tuple(self.precisions), tuple(self.rewrites)
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or "fp32" not in self.precisions:
            raise ValueError(
                f"precisions must include fp32 and come from {PRECISIONS}, got {list(self.precisions)}"
            )
        unknown = [r for r in self.rewrites if r not in REWRITE_NAMES]
        if unknown:
            raise ValueError(f"rewrites must come from {REWRITE_NAMES}, got {unknown}")
        check_choice("merge", self.merge, MERGES)
        check_range("align", self.align, 1)
        check_range("opset", self.opset, 14, 20)
        if self.max_length is not None:
            check_range("max_length", self.max_length, 8, 512)
        for name in ("fp32_atol", "int8_max_drop", "fp16_atol"):
            check_range(name, getattr(self, name), 0)
        check_range("validate_samples", self.validate_samples, 1)
        if self.max_eval_samples is not None:
            check_range("max_eval_samples", self.max_eval_samples, 1)


@dataclass
class BenchConfig(JsonConfig):
    """Settings of ``ladabert bench``: BERT-base, BERT-base-shaped students and bundles, interleaved."""

    ratios: tuple[float, ...] = _f(
        (2.5, 5.0, 10.0, 20.0), "compression ratios of the BERT-base-shaped students"
    )
    backends: tuple[str, ...] = _f(ALL_BACKENDS, "backends (OpenVINO ones only where it is installed)")
    batches: tuple[int, ...] = _f((1, 8, 32), "batch sizes")
    seqs: tuple[int, ...] = _f((32, 128, 384), "sequence lengths")
    threads: int = _f(2, "intra-op threads of every runtime")
    rounds: int = _f(10, "timed rounds per shape (each calls every runner once, interleaved)")
    warmup: int = _f(2, "untimed calls of each runner per shape")
    min_seconds: float = _f(0.0, "keep timing rounds until this many seconds have passed")
    pattern: str = _f("rank", "pruning pattern of the students", choices=PATTERNS)
    hybrid: float = _f(0.5, "SVD share of the students' reduction")
    narrow: bool = _f(True, "also measure narrow-<R>x students that first lose heads and FFN neurons")
    narrow_keep_heads: float = _f(0.167, "kept share of heads of the narrow students")
    narrow_keep_ffn: float = _f(0.167, "kept share of FFN neurons of the narrow students")
    openvino_static: bool = _f(True, "compile OpenVINO once per measured shape (else once, dynamic axes)")
    bundles: tuple[str, ...] = _f((), "exported bundles to measure too", aliases=("--bundle",))
    disable: tuple[str, ...] = _f((), "rewrites left out of the students' export (simulates a regression)")

    PRESETS = {"default": {}, "quick": {"batches": (1, 8), "seqs": (128,), "rounds": 20}}

    def __post_init__(self) -> None:
        for name in ("ratios", "backends", "batches", "seqs", "bundles", "disable"):
            setattr(self, name, tuple(getattr(self, name)))
        unknown = [b for b in self.backends if b not in ALL_BACKENDS]
        if unknown:
            raise ValueError(f"backends must come from {' '.join(ALL_BACKENDS)}, got {unknown}")
        for r in self.ratios:
            check_range("ratios", r, 1, lo_open=True)
        for name, values, hi in (("batches", self.batches, None), ("seqs", self.seqs, 512)):
            if not values:
                raise ValueError(f"{name} needs at least one value")
            for v in values:
                check_range(name, v, 1, hi)
        for name in ("threads", "rounds"):
            check_range(name, getattr(self, name), 1)
        check_range("warmup", self.warmup, 0)
        check_range("min_seconds", self.min_seconds, 0)
        check_choice("pattern", self.pattern, PATTERNS)
        check_range("hybrid", self.hybrid, 0, 1)
        check_range("narrow_keep_heads", self.narrow_keep_heads, 0, 1, lo_open=True)
        check_range("narrow_keep_ffn", self.narrow_keep_ffn, 0, 1, lo_open=True)
        bad = [d for d in self.disable if d not in REWRITE_NAMES]
        if bad:
            raise ValueError(f"disable must come from {REWRITE_NAMES}, got {bad}")

    @property
    def narrow_keep(self) -> tuple[float, float] | None:
        return (self.narrow_keep_heads, self.narrow_keep_ffn) if self.narrow else None


@dataclass
class GateConfig(JsonConfig):
    """Settings of ``ladabert gate``: is a candidate slower than its reference, decided with confidence.

    A model is named by a bundle directory (``ladabert export``), a directory with ``model.onnx`` and
    ``config.json`` (e.g. an optimum export), a model directory (a teacher or student; needs
    ``ladabert[train]``), a BERT ``config.json`` (random weights: latency does not depend on values), or one
    of ``bert-base``, ``student-<R>x``, ``narrow-<R>x`` (this project's BERT-base-shaped students).
    """

    reference: str | None = _f(None, "the model candidates are compared with (e.g. the bundle in production)")
    candidates: tuple[str, ...] = _f((), "models under test", aliases=("--candidate",))
    backends: tuple[str, ...] = _f(
        ("ort-fp32",), "backends, each compared with itself", choices=GATE_BACKENDS
    )
    batches: tuple[int, ...] = _f((1,), "batch sizes")
    seqs: tuple[int, ...] = _f((128,), "sequence lengths")
    threads: int = _f(2, "intra-op threads of every runtime (fixed, recorded in the fingerprint)")
    max_slowdown: float = _f(0.05, "fail when the candidate is slower than the reference by more than this")
    min_speedup: float | None = _f(
        None, "instead of --max-slowdown: fail when the candidate is not this many times faster"
    )
    confidence: float = _f(0.95, "confidence of every decision, over all of its looks at the data")
    budget_s: float = _f(120.0, "seconds of timing after which undecided checks are inconclusive")
    min_rounds: int = _f(20, "rounds before the first look at the data")
    max_rounds: int = _f(5000, "rounds after which undecided checks are inconclusive")
    warmup: int = _f(3, "untimed calls of each session per shape")
    sessions: int = _f(
        3,
        "runtime sessions per model and backend, used in turn (one session can be a few percent off for its life)",
    )
    baseline: str | None = _f(None, "a stored baseline (from --save-baseline) to use instead of --reference")
    save_baseline: str | None = _f(None, "write the reference's samples and this machine's fingerprint here")
    baseline_rounds: int = _f(300, "rounds of the reference alone when --save-baseline has no candidate")
    baseline_s: float = _f(
        2.0, "seconds of those rounds at least (up to --max-rounds): a small model's 300 calls span a moment"
    )
    seed: int = _f(0, "seed of the random input ids")

    def __post_init__(self) -> None:
        for name in ("candidates", "backends", "batches", "seqs"):
            setattr(self, name, tuple(getattr(self, name)))
        if (self.reference is None) == (self.baseline is None):
            raise ValueError(
                "give exactly one of reference (a model measured now) and baseline (a stored one)"
            )
        if not self.candidates and not self.save_baseline:
            raise ValueError(
                "candidates needs at least one model (or give save_baseline to store the reference)"
            )
        if self.save_baseline and self.baseline:
            raise ValueError(
                "save_baseline stores a reference measured now; it cannot be combined with baseline"
            )
        if not self.backends:
            raise ValueError("backends needs at least one value")
        for b in self.backends:
            check_choice("backends", b, GATE_BACKENDS)
        for name, values, hi in (("batches", self.batches, None), ("seqs", self.seqs, 512)):
            if not values:
                raise ValueError(f"{name} needs at least one value")
            for v in values:
                check_range(name, v, 1, hi)
        for name in ("threads", "baseline_rounds", "sessions"):
            check_range(name, getattr(self, name), 1)
        check_range("min_rounds", self.min_rounds, 5)
        check_range("baseline_s", self.baseline_s, 0)
        check_range("max_rounds", self.max_rounds, self.min_rounds)
        check_range("warmup", self.warmup, 0)
        check_range("max_slowdown", self.max_slowdown, 0, 10)
        if self.min_speedup is not None:
            check_range("min_speedup", self.min_speedup, 0, lo_open=True)
        check_range("confidence", self.confidence, 0.5, 1, lo_open=True)
        if self.confidence >= 1:
            raise ValueError(f"confidence must be < 1, got {self.confidence!r}")
        check_range("budget_s", self.budget_s, 1)

    @property
    def limit(self) -> float:
        """The largest acceptable candidate / reference ratio of median latencies."""
        return 1 / self.min_speedup if self.min_speedup is not None else 1 + self.max_slowdown
