"""The training harness that fine-tuning and compression share.

Both stages run on transformers' ``Trainer`` (one CPU, one GPU, or many under ``torchrun`` /
``accelerate launch``) and get the same services from here: resumable checkpoints beside ``--out``,
wall time summed over kill/resume cycles, weight averaging over the end of training, the fp32 model and
its fp32 evaluation as the reported result, and an atomic save with ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ladabert.errors import LadaBertError
from ladabert.pipeline.data import get_task, load_glue, make_collator, tokenize
from ladabert.utils import (
    atomic_output_dir,
    check_not_input,
    check_writable_dir,
    cpu_info,
    make_parents,
    remove_empty,
    write_json_atomic,
)


def checkpoint_dir_for(out: str | os.PathLike) -> Path:
    """Where a run writing ``out`` keeps its resumable checkpoints until it finishes."""
    out = Path(out).expanduser().absolute()
    return out.parent / f"{out.name}.checkpoints"


def prepare_output(out: str | os.PathLike, overwrite: bool, inputs: list[Any] = ()) -> tuple[Path, Path]:
    """The absolute ``out`` (its parent writable) and its checkpoint directory; refuses an existing ``out``
    unless ``overwrite``, and an ``out`` that overlaps one of ``inputs`` always."""
    check_not_input(out, list(inputs))
    out = check_writable_dir(out)
    if out.exists() and not overwrite:
        raise LadaBertError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    return out, checkpoint_dir_for(out)


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
    ok = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_has_bf16_matmul()
    if setting == "bf16" and not ok:
        raise LadaBertError(
            "--mixed-precision bf16 needs a bf16-capable GPU or a CPU with AMX/AVX512-BF16; "
            "pass --mixed-precision no"
        )
    return ok


def training_arguments(work_dir: Path, config: Any, **extra: Any) -> Any:
    """``TrainingArguments`` of both stages: linear schedule, checkpoints every ``save_steps`` (two kept),
    evaluation every ``eval_steps`` (0: none), no reporting integrations, bf16 autocast where the hardware
    has it, and torch's fused AdamW (a 5x faster optimizer step than the for-each one on CPU)."""
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
        max_steps=extra.pop("max_steps", config.max_steps),
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


class WallClock:
    """Training wall time summed across kill/resume cycles, kept in the checkpoint directory."""

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


def fp32_model(trainer: Any) -> Any:
    """The trained model without the autocast wrapper that Accelerate puts around ``forward`` when training
    runs in mixed precision: what is evaluated, saved, exported and served is the fp32 model."""
    return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)


@dataclass
class TrainedRun:
    """What :func:`train` hands back: the fp32 model (averaged where asked) and the run's record."""

    trainer: Any
    model: Any
    wall_s: float
    resumed_from: str | None
    weights_averaged: int

    def record(self, metric: str) -> dict[str, Any]:
        state = self.trainer.state
        return {
            "steps": state.global_step,
            "wall_s": round(self.wall_s, 1),
            "bf16_autocast": bool(self.trainer.args.bf16),
            "weights_averaged": self.weights_averaged,
            "resumed_from": self.resumed_from,
            "curve": [[h["step"], h[f"eval_{metric}"]] for h in state.log_history if f"eval_{metric}" in h],
        }


COMPLETE = "ladabert-complete.json"  # written last into a checkpoint: the checkpoint is whole
SETTINGS = "settings.json"  # what the checkpoints in a checkpoint directory were made with
# Settings a resumed run may change: they decide what is logged, evaluated or kept, not what is trained.
RESUME_FREE = {"eval_steps", "save_steps", "logging_steps", "eval_batch_size", "max_eval_samples"}


def complete_checkpoints(work_dir: Path) -> list[Path]:
    """The checkpoints of ``work_dir`` that were written to the end, oldest first. Incomplete ones (a run
    killed while saving) are removed with a warning, so that resuming starts from the last whole one."""
    import warnings

    if not work_dir.is_dir():
        return []
    found = []
    for d in work_dir.glob("checkpoint-*"):
        suffix = d.name.split("-", 1)[1]
        if d.is_dir() and suffix.isdigit():
            found.append((int(suffix), d))
    whole = []
    for _, d in sorted(found):
        if (d / COMPLETE).is_file():
            whole.append(d)
        else:
            warnings.warn(
                f"removing the incomplete checkpoint {d} (the run stopped while saving it)", stacklevel=2
            )
            shutil.rmtree(d, ignore_errors=True)
    return whole


def _complete_marker() -> Any:
    from transformers import TrainerCallback

    class _MarkComplete(TrainerCallback):
        """Runs after every other ``on_save``: the checkpoint and the harness's own files are all written."""

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and ckpt.is_dir():
                # A pickle a resume never reads (the settings come from the command and settings.json).
                (ckpt / "training_args.bin").unlink(missing_ok=True)
                write_json_atomic(ckpt / COMPLETE, {"step": state.global_step})

    return _MarkComplete()


def resume_settings(config: Any, **extra: Any) -> dict[str, Any]:
    """What a run's checkpoints are recorded with: its config and ``extra`` (teacher, steps), as JSON reads
    them back (tuples become lists), so that a record compares equal to the settings that made it."""
    return json.loads(json.dumps({**config.to_dict(), **extra}, default=str))


def check_resume(work_dir: Path, settings: dict[str, Any]) -> str | None:
    """The checkpoint a run with ``settings`` resumes from (None: a fresh start), after dropping incomplete
    checkpoints; refuses checkpoints made with other settings. Called before any expensive work."""
    whole = complete_checkpoints(work_dir)
    last = str(whole[-1]) if whole else None
    check_settings(work_dir, settings, last is not None)
    return last


def check_settings(work_dir: Path, settings: dict[str, Any], resumable: bool) -> None:
    """Record ``settings`` in a new checkpoint directory; refuse to resume checkpoints made with others."""
    path = work_dir / SETTINGS
    if resumable and path.is_file():
        try:
            before = json.loads(path.read_text())
        except ValueError:
            before = None
        changed = sorted(
            k
            for k in set(settings) | set(before or {})
            if k not in RESUME_FREE and (before or {}).get(k) != settings.get(k)
        )
        if before is None or changed:
            what = (
                ", ".join(f"{k} {before.get(k)!r} -> {settings.get(k)!r}" for k in changed[:3])
                if before
                else "unreadable settings"
            )
            raise LadaBertError(
                f"{work_dir} holds checkpoints of a run with other settings ({what}); rerun with the same "
                f"settings to resume, or delete {work_dir} to start fresh"
            )
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, settings)


@contextlib.contextmanager
def output_lock(out: Path) -> Any:
    """Hold an exclusive lock for ``out`` (a file in its checkpoint directory) while a run writes it, so that
    a second run on the same ``--out`` stops at once instead of sharing the checkpoints."""
    import fcntl

    work_dir = checkpoint_dir_for(out)
    created = make_parents(work_dir)
    work_dir.mkdir(exist_ok=True)
    fh = open(work_dir / ".lock", "w")  # noqa: SIM115 (held for the whole run)
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise LadaBertError(
            f"another run is writing {out} (it holds {work_dir / '.lock'}); wait for it or choose another --out"
        ) from None
    try:
        yield
    finally:
        fh.close()
        # A run that stopped before its first checkpoint leaves nothing to resume: leave nothing behind.
        if work_dir.is_dir() and not any(work_dir.glob("checkpoint-*")):
            shutil.rmtree(work_dir, ignore_errors=True)
            if not out.exists():
                remove_empty(created)


def train(
    make_trainer: Callable[..., Any],
    work_dir: Path,
    config: Any,
    callbacks: list[Any] | None = None,
    settings: dict[str, Any] | None = None,
    **training_args: Any,
) -> TrainedRun:
    """Build a trainer with ``make_trainer(args=..., callbacks=[...])``, resume it from the last complete
    checkpoint in ``work_dir`` if there is one, train it, and return the fp32 model with the averaged weights
    loaded.

    ``callbacks`` run after the harness's own (wall clock) and before weight averaging, so that the average
    samples what they left (e.g. the masks a compression callback applied). ``settings`` (default: the
    config) are recorded with the checkpoints; resuming with different ones is refused."""
    args = training_arguments(work_dir, config, **training_args)
    last = check_resume(work_dir, resume_settings(config, **(settings or {}), **training_args))
    clock = WallClock(work_dir)
    average = WeightAverage(config.average_last, config.average_every, last) if config.average_last else None
    trainer = make_trainer(
        args=args,
        callbacks=[
            clock.callback(),
            *(callbacks or []),
            *([average.callback()] if average else []),
            _complete_marker(),
        ],
    )
    trainer.train(resume_from_checkpoint=last)
    wall = clock.total()
    model = fp32_model(trainer)
    if average:
        average.apply(model)
    return TrainedRun(trainer, model, wall, last, average.count if average else 0)


def save_run(
    out: Path,
    write: Callable[[Path], None],
    metrics: dict[str, Any],
    overwrite: bool,
    keep_checkpoints: bool,
    inputs: list[Any] = (),
) -> None:
    """On the main process: ``write(tmp)`` the model files into a temporary directory beside ``out``, add
    ``metrics.json``, rename it to ``out``; then drop the checkpoints unless ``keep_checkpoints``."""
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under torchrun every rank trains, one writes
        return
    with atomic_output_dir(out, overwrite=overwrite, inputs=inputs) as tmp:
        write(tmp)
        write_json_atomic(tmp / "metrics.json", metrics)
    if not keep_checkpoints:
        shutil.rmtree(checkpoint_dir_for(out), ignore_errors=True)


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


def evaluate_module(
    model, tokenizer, task, data_dir=None, max_length=128, max_samples=None, batch_size=128, dev=None
):  # noqa: ANN001
    """Dev-set metrics of an in-memory classifier (any module returning ``.logits``); ``dev`` (a
    :class:`GlueSplit`) replaces the task's dev set."""
    task = get_task(task) if isinstance(task, str) else task
    dev = dev if dev is not None else load_glue(task, "dev", data_dir, max_samples)
    scores = task.compute_metrics(predict_split(model, tokenizer, dev, max_length, batch_size), dev.labels)
    return {
        "task": task.name,
        "metric": task.metric,
        "value": scores[task.metric],
        "metrics": scores,
        "eval_examples": len(dev),
    }
