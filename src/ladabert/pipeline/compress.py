"""``ladabert compress``: a fine-tuned teacher becomes a student of a target compression ratio.

Methods (all through the same code path, so that ablations differ only in what they ablate):

- ``hybrid`` (LadaBERT): truncated SVD of every compressed matrix, then magnitude pruning of the factors;
  the share of the reduction that comes from SVD is the ``hybrid`` knob.
- ``svd``: factorization only; ``prune``: magnitude pruning only (matrices stay dense).
- ``distill-only``: a dense, narrower BERT with the same parameter count, randomly initialised and
  distilled with the same loss and data (hidden states through a learned projection).

The student starts at ``initial_ratio`` and is recompressed along a cubic schedule to ``ratio`` while it
is distilled from the teacher. Command line::

    ladabert compress --teacher runs/teacher-sst2 --ratio 5 --out runs/student-sst2-5x
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ladabert.errors import LadaBertError
from ladabert.pipeline import hybrid as hyb
from ladabert.pipeline.data import get_task, load_glue, make_collator, tokenize
from ladabert.pipeline.prune import PATTERNS
from ladabert.pipeline.schedule import CompressionSchedule
from ladabert.pipeline.teacher import (
    WeightAverage,
    _check_range,
    _WallClock,
    check_max_length,
    check_training_fields,
    checkpoint_dir_for,
    evaluate_module,
    fp32_model,
    load_bert_config,
    resolve_model,
    training_arguments,
)
from ladabert.utils import (
    JsonConfig,
    atomic_output_dir,
    check_writable_dir,
    run_environment,
    write_json_atomic,
)

METHODS = ("hybrid", "svd", "prune", "distill-only")
AUGMENT_SWAPS = ("batch", "neighbors")


@dataclass
class CompressConfig(JsonConfig):
    """Settings of one compression run (defaults: the README's SST-2 students)."""

    task: str = "sst2"
    ratio: float = 5.0
    method: str = "hybrid"
    pattern: str = "unstructured"
    hybrid: float = 0.75  # share of the (log) reduction that comes from SVD; the rest from pruning
    embedding_scale: float = 1.0  # word-embedding kept share relative to the encoder's (hybrid.allocate)
    # Shares of attention heads and FFN neurons kept in every layer, removed (least important first) before the
    # hybrid compression spends the rest of the budget (pipeline.structured). 1: none removed, the paper's
    # recipe. Below 1 the student is narrower where CPU latency goes (attention, FFN width).
    keep_heads: float = 1.0
    keep_ffn: float = 1.0
    block_size: int = 16
    initial_ratio: float = 2.0
    schedule: str = "cubic"
    # Share of training over which the ratio grows to R; the rest recovers at R. 0.25 (0.5 until the eighth
    # session of 2026-11-24) by experiment (benchmarks/results/sweep_sst2.json, sweep ids *-aware-s0.25).
    schedule_fraction: float = 0.25
    schedule_updates: int = 10
    max_steps: int = 3000
    batch_size: int = 32
    eval_batch_size: int = 128
    learning_rate: float = 3e-4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    temperature: float = 2.0
    w_logits: float = 1.0
    w_hidden: float = 1.0
    # Attention-map distillation (KL from the teacher's attention distributions, distill.attention_kl). None:
    # 1 where the student keeps the teacher's heads (every method unless keep_heads < 1), else 0. 1 by
    # experiment (benchmarks/results/sweep_sst2_length.json): with length weighting, SST-2 5x 88.42 -> 88.65%
    # (mean of three seeds), 10x 85.67 -> 87.84% (seed 42).
    w_attention: float | None = None
    w_hard: float = 0.0
    # Save the mean of the weights sampled every ``average_every`` steps over this last share of training
    # (0: the last weights). It must lie after the schedule, where the masks and ranks no longer change.
    average_last: float = 0.0
    average_every: int = 50
    # Token-replacement probability in every second training example (distill.augment_tokens); 0: off.
    # 0.3 by experiment (benchmarks/results/sweep_sst2.json): SST-2 5x 84.98 -> 86.70%, 10x 83.49 -> 84.75%.
    augment: float = 0.3
    # What a replaced token becomes (besides [MASK]): "batch", a token drawn from the batch; "neighbors", one of
    # its 8 nearest tokens by the teacher's word embeddings (distill.neighbor_table).
    augment_swap: str = "batch"
    # Draw training examples with probability proportional to (tokenized length) ** length_weight, with
    # replacement (0: uniform, each example once per epoch). SST-2's training set is mostly phrases (median 7
    # words) while its dev set holds whole sentences (median 19): a positive weight makes the transfer set
    # look more like the inputs the student is judged on (distill.length_weighted_sampler).
    # 1.5 by experiment (sweep_sst2_length.json): SST-2 5x 88.00 -> 88.42% (mean of three seeds).
    length_weight: float = 1.5
    # Dropout in the student while it is distilled (every Dropout module: hidden, attention, classifier);
    # None keeps the teacher's (0.1 in BERT). The student is a compressed copy of a model that was already
    # fine-tuned with dropout, fitting soft targets on augmented data (sweep setting 5x-len1.5-drop0 asks
    # whether dropout still helps there).
    dropout: float | None = None
    # Data-aware compression (pipeline.calibrate): truncate and prune for each layer's outputs on
    # ``calibration_samples`` training examples (input covariances; token frequencies for the embedding
    # table) instead of for the weights alone. False: the paper's plain SVD and magnitude pruning. True by
    # experiment (benchmarks/results/sweep_sst2.json, 5x-aware / 10x-aware; hybrid_share_sst2.json).
    data_aware: bool = True
    calibration_samples: int = 2048
    max_length: int = 128
    seed: int = 42
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    eval_steps: int = 500  # 0: evaluate only at the end
    save_steps: int = 250
    logging_steps: int = 50
    mixed_precision: str = "auto"  # auto | no | bf16 (autocast; see teacher.resolve_mixed_precision)

    def __post_init__(self) -> None:
        check_training_fields(self)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")
        _check_range("ratio", self.ratio, 1)
        _check_range("initial_ratio", self.initial_ratio, 1)
        _check_range("hybrid", self.hybrid, 0, 1)
        _check_range("embedding_scale", self.embedding_scale, 0, lo_open=True)
        _check_range("keep_heads", self.keep_heads, 0, 1, lo_open=True)
        _check_range("keep_ffn", self.keep_ffn, 0, 1, lo_open=True)
        if self.structured and self.method == "distill-only":
            raise ValueError(
                "keep_heads / keep_ffn apply to hybrid, svd and prune; distill-only sets its own width"
            )
        if self.w_attention is None:
            self.w_attention = 0.0 if self.keep_heads < 1 else 1.0
        if self.w_attention > 0 and self.keep_heads < 1:
            raise ValueError(
                "w_attention needs the student's heads to match the teacher's; set keep_heads to 1 or "
                "w_attention to 0"
            )
        _check_range("block_size", self.block_size, 1)
        _check_range("schedule_fraction", self.schedule_fraction, 0, 1, lo_open=True)
        _check_range("schedule_updates", self.schedule_updates, 1)
        _check_range("max_steps", self.max_steps, 1)
        _check_range("augment", self.augment, 0, 1)
        _check_range("length_weight", self.length_weight, 0)
        if self.dropout is not None:
            _check_range("dropout", self.dropout, 0, 1 - 1e-9)
        _check_range("average_every", self.average_every, 1)
        _check_range("calibration_samples", self.calibration_samples, 1)
        if not isinstance(self.data_aware, bool):
            raise ValueError(f"data_aware must be true or false, got {self.data_aware!r}")
        if not 0 <= self.average_last <= 1 - self.schedule_fraction + 1e-9:
            raise ValueError(
                f"average_last must be >= 0 and <= 1 - schedule_fraction ({1 - self.schedule_fraction:g}) so "
                f"that every averaged sample has the final masks, got {self.average_last!r}"
            )
        if self.augment_swap not in AUGMENT_SWAPS:
            raise ValueError(f"augment_swap must be one of {AUGMENT_SWAPS}, got {self.augment_swap!r}")
        if self.schedule not in ("cubic", "linear"):
            raise ValueError(f"schedule must be 'cubic' or 'linear', got {self.schedule!r}")
        self.loss()  # validates the loss weights

    def loss(self) -> Any:
        from ladabert.pipeline.distill import DistillLoss

        return DistillLoss(self.temperature, self.w_logits, self.w_hidden, self.w_attention, self.w_hard)

    @property
    def structured(self) -> bool:
        return self.keep_heads < 1 or self.keep_ffn < 1

    @property
    def hybrid_share(self) -> float:
        return {"hybrid": self.hybrid, "svd": 1.0, "prune": 0.0}.get(self.method, self.hybrid)


COMPRESS_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # Minutes on 2 CPU cores: shows the pipeline end to end, not the accuracy it can reach.
    "quick": {"max_steps": 200, "max_train_samples": 4000, "eval_steps": 0, "save_steps": 100},
}


def _no_attention_dropout(model: torch.nn.Module) -> None:
    """Turn off dropout on the attention probabilities (the maps BERT returns are taken after it, so the
    attention-distillation term would compare the teacher's maps with randomly zeroed and rescaled ones)."""
    from transformers.models.bert.modeling_bert import BertSelfAttention

    for module in model.modules():  # the saved config keeps the teacher's value
        if isinstance(module, BertSelfAttention):
            module.dropout.p = 0.0
            if hasattr(module, "dropout_prob"):  # the SDPA attention reads this float instead
                module.dropout_prob = 0.0


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Set every dropout of ``model`` (hidden, attention probabilities, classifier) to ``p``: the Dropout
    modules, and the float that transformers' SDPA attention passes to the fused kernel instead."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        elif isinstance(getattr(module, "dropout_prob", None), float):
            module.dropout_prob = p


def compress_preset(name: str, **overrides: Any) -> CompressConfig:
    return CompressConfig.from_preset(COMPRESS_PRESETS, name, **overrides)


def _count_all(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def narrow_student_config(teacher_config: Any, target_params: int, same_heads: bool = False) -> Any:
    """A BERT config as deep as the teacher, narrower, with about ``target_params`` parameters.

    Width moves in steps of the teacher's head size (heads are dropped, head size kept) or, with
    ``same_heads``, in steps of the teacher's head count (every head kept, each narrower: what attention
    distillation needs). The FFN keeps the teacher's expansion factor.
    """
    from transformers import BertForSequenceClassification

    heads = teacher_config.num_attention_heads
    head = teacher_config.hidden_size // heads
    expand = teacher_config.intermediate_size / teacher_config.hidden_size
    step = heads if same_heads else head
    best = None
    for width in range(step, teacher_config.hidden_size + 1, step):
        cfg = copy.deepcopy(teacher_config)
        cfg.hidden_size, cfg.num_attention_heads = width, heads if same_heads else width // head
        cfg.intermediate_size = int(round(width * expand))
        with torch.device("meta"):
            n = _count_all(BertForSequenceClassification(cfg))
        if best is None or abs(n - target_params) < abs(best[0] - target_params):
            best = (n, cfg)
    return best[1]


def build_student(
    teacher: torch.nn.Module, config: CompressConfig, stats: dict[str, torch.Tensor] | None = None
) -> tuple[torch.nn.Module, dict[int, Any], Any]:
    """The initial student and the ``{step: plan}`` schedule of recompressions (empty for distill-only).

    ``stats`` (:func:`calibration_stats`) makes the compression data-aware."""
    from ladabert.pipeline.student import LadaBertForSequenceClassification, layer_specs

    n_teacher = _count_all(teacher)
    if config.method == "distill-only":
        cfg = narrow_student_config(
            teacher.config, round(n_teacher / config.ratio), same_heads=config.w_attention > 0
        )
        cfg.ladabert = {"method": "distill-only", "layers": {}}
        student = LadaBertForSequenceClassification(cfg)
        student.ladabert_hidden_proj = torch.nn.Linear(cfg.hidden_size, teacher.config.hidden_size)
        return student, {}, None
    from ladabert.pipeline.structured import prune_structure

    dense = copy.deepcopy(teacher)
    # Heads and FFN neurons go first (``stats`` is sliced to what is kept); the hybrid plan spends the rest.
    prune_structure(dense, config.keep_heads, config.keep_ffn, stats)
    shapes = hyb.matrix_shapes(dense)
    n_dense = _count_all(dense)
    fixed = n_dense - sum(r * c for r, c in shapes.values())
    if config.structured and n_teacher / n_dense >= config.ratio:
        raise LadaBertError(
            f"removing heads and FFN neurons alone gives {n_teacher / n_dense:.2f}x, at least --ratio "
            f"{config.ratio:g}; raise --ratio or --keep-heads / --keep-ffn"
        )
    schedule = CompressionSchedule(
        min(max(config.initial_ratio, n_teacher / n_dense), config.ratio),
        config.ratio,
        config.max_steps,
        config.schedule_fraction,
        config.schedule_updates,
        config.schedule,
    )

    def plan_for(ratio: float) -> hyb.CompressionPlan:
        return hyb.allocate(
            shapes,
            n_teacher,
            ratio,
            config.hybrid_share,
            config.pattern,
            config.block_size,
            config.embedding_scale,
            fixed,
        )

    plan0 = plan_for(schedule.initial_ratio)
    final = plan_for(config.ratio)  # fail early when the final ratio is out of reach
    del final
    cfg = copy.deepcopy(dense.config)  # carries ``pruned_heads``
    student = hyb.install(dense, plan0, stats)
    cfg.ladabert = {"method": config.method, "layers": layer_specs(student)}
    # Re-home the weights in the student class so that checkpoints reload through from_pretrained.
    shell = LadaBertForSequenceClassification(cfg)
    shell.load_state_dict(student.state_dict())
    plans = {step: plan_for(ratio) for step, ratio in schedule.targets()}
    return shell, plans, schedule


def calibration_stats(
    teacher: torch.nn.Module, train_ds: Any, collator: Any, samples: int, seed: int, special_ids: list[int]
) -> dict[str, torch.Tensor]:
    """Statistics for data-aware compression: input covariances of the teacher's encoder Linears over
    ``samples`` training examples (drawn with ``seed``) and token frequencies over the whole training set."""
    from tqdm.auto import tqdm

    from ladabert.pipeline.calibrate import activation_stats, token_frequency

    n = min(samples, len(train_ds))
    order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    step = 64
    batches = (collator([train_ds[i] for i in order[j : j + step]]) for j in range(0, n, step))
    names = hyb.compressible_names(teacher)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher.to(device)
    try:
        stats = activation_stats(
            teacher, tqdm(batches, total=-(-n // step), desc="calibrating", leave=False), names
        )
    finally:
        teacher.to("cpu")
    ids = [train_ds[i]["input_ids"] for i in range(len(train_ds))]
    for name in names:
        if name.endswith("word_embeddings"):
            stats[name] = token_frequency(ids, teacher.config.vocab_size, special_ids)
    return stats


def compress(
    config: CompressConfig,
    teacher: str | os.PathLike,
    out: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    keep_checkpoints: bool = False,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Compress a fine-tuned teacher into a student directory at ``out``.

    Args:
        config: see :class:`CompressConfig`.
        teacher: directory (or hub id) of a fine-tuned BERT sequence classifier for ``config.task``.
        out: student directory, written atomically once training and evaluation end.
        data_dir: GLUE data location (see :mod:`ladabert.pipeline.data`).
        overwrite: replace an existing ``out``.
        keep_checkpoints: keep ``<out>.checkpoints`` after success (kept after a failure for resuming).
        callbacks: extra ``transformers.TrainerCallback`` objects.

    Returns:
        The metrics written to ``out/metrics.json``.
    """
    from transformers import AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint

    from ladabert.pipeline.distill import CompressionCallback, DistillationTrainer, neighbor_table
    from ladabert.pipeline.student import layer_specs, load_classifier, shrink_factors

    task = get_task(config.task)
    teacher_path = resolve_model(str(teacher))
    tcfg = load_bert_config(teacher_path)
    if getattr(tcfg, "ladabert", None):
        raise LadaBertError(f"{teacher_path} is already a LadaBERT student; pass the fine-tuned teacher")
    if tcfg.num_labels != task.num_labels:
        raise LadaBertError(
            f"teacher {teacher_path} has {tcfg.num_labels} output label(s) but {task.name} needs "
            f"{task.num_labels}; fine-tune it first: ladabert finetune --task {task.name} --model {teacher_path}"
        )
    check_max_length(config.max_length, tcfg, teacher_path)
    out = check_writable_dir(out)
    if out.exists() and not overwrite:
        raise LadaBertError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    work_dir = checkpoint_dir_for(out)

    attn = {"attn_implementation": "eager"} if config.w_attention > 0 else {}
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    teacher_model = load_classifier(teacher_path, **attn).eval()
    train = load_glue(task, "train", data_dir, config.max_train_samples, seed=config.seed)
    dev = load_glue(task, "dev", data_dir, config.max_eval_samples)
    train_ds, dev_ds = (
        tokenize(train, tokenizer, config.max_length),
        tokenize(dev, tokenizer, config.max_length),
    )

    teacher_metrics = evaluate_module(
        teacher_model, tokenizer, task, data_dir, config.max_length, config.max_eval_samples
    )
    stats = None
    if config.data_aware and config.method != "distill-only":
        stats = calibration_stats(
            teacher_model,
            train_ds,
            make_collator(tokenizer),
            config.calibration_samples,
            config.seed,
            tokenizer.all_special_ids,
        )
    torch.manual_seed(config.seed)
    student, plans, schedule = build_student(teacher_model, config, stats)
    if config.dropout is not None:
        set_dropout(student, config.dropout)
    if attn:
        student.config._attn_implementation = "eager"
        _no_attention_dropout(student)
    init_metrics = evaluate_module(
        student, tokenizer, task, data_dir, config.max_length, config.max_eval_samples
    )

    neighbors = None
    if config.augment > 0 and config.augment_swap == "neighbors":
        vocab = tokenizer.convert_ids_to_tokens(list(range(teacher_model.config.vocab_size)))
        neighbors = neighbor_table(teacher_model.get_input_embeddings().weight, vocab)
    args = training_arguments(work_dir, config)
    clock = _WallClock(work_dir)
    comp_cb = CompressionCallback(plans, stats)
    last = get_last_checkpoint(str(work_dir)) if work_dir.is_dir() else None
    average = WeightAverage(config.average_last, config.average_every, last) if config.average_last else None
    trainer = DistillationTrainer(
        model=student,
        args=args,
        teacher=teacher_model,
        loss=config.loss(),
        regression=task.is_regression,
        augment=config.augment,
        special_ids=tokenizer.all_special_ids,
        mask_id=tokenizer.mask_token_id,
        neighbors=neighbors,
        length_weight=config.length_weight,
        train_dataset=train_ds,
        eval_dataset=dev_ds,
        data_collator=make_collator(tokenizer),
        compute_metrics=lambda p: task.compute_metrics(p.predictions, p.label_ids),
        # The average samples after the compression callback has applied this step's masks.
        callbacks=[clock.callback(), comp_cb, *([average.callback()] if average else []), *(callbacks or [])],
    )
    trainer.train(resume_from_checkpoint=last)
    wall = clock.total()

    student = fp32_model(trainer)
    if average:
        average.apply(student)
    hyb.apply_masks(student)
    if hasattr(student, "ladabert_hidden_proj"):
        del student.ladabert_hidden_proj
    shrink_factors(student)
    counts = hyb.count_parameters(student)
    teacher_counts = hyb.count_parameters(teacher_model)
    final = evaluate_module(student, tokenizer, task, data_dir, config.max_length, config.max_eval_samples)
    section = {
        "method": config.method,
        "pattern": config.pattern if config.method != "distill-only" else None,
        "hybrid": config.hybrid_share if config.method != "distill-only" else None,
        "embedding_scale": config.embedding_scale if config.method != "distill-only" else None,
        "data_aware": bool(stats),
        "keep_heads": config.keep_heads,
        "keep_ffn": config.keep_ffn,
        "block_size": config.block_size if config.pattern == "block" else None,
        "ratio_target": config.ratio,
        "ratio": teacher_counts["total"] / counts["total"],
        "encoder_ratio": teacher_counts["encoder_linear"] / max(1, counts["encoder_linear"]),
        "teacher": str(teacher),
        "teacher_params": teacher_counts["total"],
        "nonzero_params": counts["total"],
        "layers": layer_specs(student),
    }
    student.config.ladabert = section
    student.config.architectures = ["LadaBertForSequenceClassification"]
    metrics = {
        "task": task.name,
        "metric": task.metric,
        "value": final["value"],
        "value_precision": "fp32",
        "metrics": final["metrics"],
        "teacher_value": teacher_metrics["value"],
        "value_at_init": init_metrics["value"],
        "method": config.method,
        "pattern": section["pattern"],
        "hybrid": section["hybrid"],
        "embedding_scale": section["embedding_scale"],
        "keep_heads": config.keep_heads,
        "keep_ffn": config.keep_ffn,
        "ratio_target": config.ratio,
        "ratio": section["ratio"],
        "encoder_ratio": section["encoder_ratio"],
        "teacher_params": teacher_counts["total"],
        "student_nonzero_params": counts["total"],
        "param_counts": counts,
        "steps": trainer.state.global_step,
        "wall_s": round(wall, 1),
        "bf16_autocast": bool(trainer.args.bf16),
        "weights_averaged": average.count if average else 0,
        "resumed_from": last,
        "train_examples": len(train),
        "eval_examples": len(dev),
        "schedule": schedule.targets() if schedule else [],
        "curve": [
            [h["step"], h[f"eval_{task.metric}"]]
            for h in trainer.state.log_history
            if f"eval_{task.metric}" in h
        ],
        "config": config.to_dict(),
        **run_environment(),
    }
    if trainer.is_world_process_zero():
        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            student.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            metrics["bytes"] = (tmp / "model.safetensors").stat().st_size
            write_json_atomic(tmp / "metrics.json", metrics)
            (tmp / "compress_config.json").write_text(config.to_json() + "\n")
        if not keep_checkpoints:
            shutil.rmtree(work_dir, ignore_errors=True)
    return metrics


def student_summary(path: str | os.PathLike) -> dict[str, Any]:
    """The ``metrics.json`` of a student directory."""
    p = Path(path) / "metrics.json"
    if not p.is_file():
        raise LadaBertError(f"{path} has no metrics.json; pass a directory written by ladabert compress")
    return json.loads(p.read_text())
