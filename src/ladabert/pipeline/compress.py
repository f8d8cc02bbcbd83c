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

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ladabert.config import CompressConfig
from ladabert.errors import LadaBertError
from ladabert.pipeline import hybrid as hyb
from ladabert.pipeline.build import narrow_student_config, plan_student  # noqa: F401  (re-exported)
from ladabert.pipeline.data import GlueSplit, get_task, make_collator, tokenize
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
from ladabert.pipeline.teacher import (
    base_model_of,
    check_max_length,
    load_bert_config,
    load_tokenizer_from,
    resolve_model,
    set_labels,
)
from ladabert.utils import check_length, run_environment, write_json_atomic


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


SEARCH_FILE = "latency_search.json"  # in the checkpoint directory: a resumed run keeps the searched shape


class _BudgetSearch:
    """The latency search of a compression run: the reachability check at construction (it needs no
    data, so it comes before the teacher is scored), the search itself once calibration statistics exist.
    Its record is kept in the checkpoint directory, so that a resumed run keeps the shape it trains."""

    def __init__(self, config: CompressConfig, teacher: torch.nn.Module, work_dir: Path):
        from ladabert.pipeline import budget

        check_budget_settings(config, teacher.config)
        self.config, self.teacher, self.path = config, teacher, work_dir / SEARCH_FILE
        self.saved = json.loads(self.path.read_text()) if self.path.is_file() else None
        if self.saved is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="ladabert-search-")
            self.timer = budget.CandidateTimer(teacher.config, config, Path(self.tmp.name))
            self.reference: dict[str, Any] = {}
            if config.latency_speedup is not None:
                # A speedup is a budget in milliseconds at this machine's speed: the teacher's latency / it.
                ref = self.timer.reference()
                self.config = dataclasses.replace(
                    config,
                    latency_budget=ref["ms"] / config.latency_speedup,
                    latency_speedup=None,
                    latency_reference_backend=None,
                )
                self.timer.base = self.config
                self.reference = {
                    "speedup": config.latency_speedup,
                    "reference_ms": ref["ms"],
                    "reference_blocks_ms": ref["blocks"],
                    "reference_backend": ref["backend"],
                    "reference": budget.reference_shape(teacher.config),
                }
                if "backends_ms" in ref:
                    self.reference["reference_backends_ms"] = ref["backends_ms"]
            backends = budget.backends_of(self.config.latency_backend)
            self.timers = (
                {b: self.timer.on(b) for b in backends} if len(backends) > 1 else {backends[0]: self.timer}
            )
            self.fastest = budget.reachable(self.timers, self.config, self.reference or None)

    def run(self, train_ds: Any, collator: Any, stats: dict[str, torch.Tensor] | None) -> dict[str, Any]:
        from ladabert.pipeline import budget

        if self.saved is not None:
            return self.saved
        batches = budget.calibration_batches(train_ds, collator, 128, self.config.seed)
        record = budget.search_backends(
            budget.Proxy(self.teacher, stats, batches), self.timers, self.config, self.fastest
        )
        record.update(self.reference)
        record["config"] = record["config"].to_dict()
        write_json_atomic(self.path, record)
        self.tmp.cleanup()
        return record


def check_budget_settings(config: CompressConfig, teacher_config: Any) -> None:
    """A latency budget sets the widths and ratio itself: refuse settings that would fight it. A kept
    layer count is a constraint the search keeps (the widths are searched at that depth). The budget's
    sequence must fit the teacher's position embeddings, or no candidate's graph runs at all."""
    positions = getattr(teacher_config, "max_position_embeddings", None)
    check_length(config.latency_seq, positions, "the teacher", "--seq")
    given = [
        flag
        for flag, on in (("--keep-heads", config.keep_heads < 1), ("--keep-ffn", config.keep_ffn < 1))
        if on
    ]
    if given:
        raise LadaBertError(
            f"--latency-budget chooses the heads and FFN neurons itself; leave out {' '.join(given)}"
        )


def compress_preset(name: str, **overrides: Any) -> CompressConfig:
    return CompressConfig.preset(name, **overrides)


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


def _layer_map(student: torch.nn.Module) -> tuple[int, ...] | None:
    kept = (getattr(student.config, "ladabert", None) or {}).get("layer_map")
    return tuple(kept) if kept is not None else None


def _pruned(config: Any) -> dict[int, set[int]]:
    return {int(k): set(v) for k, v in (getattr(config, "pruned_heads", None) or {}).items() if v}


def head_map(student: torch.nn.Module, teacher: torch.nn.Module) -> tuple[tuple[int, ...], ...] | None:
    """Per student layer, the positions of its heads among the heads of the teacher layer it came from
    (None when every layer of both has the same heads).

    Hugging Face's ``prune_heads`` keeps the remaining heads in their order and records the removed ones in
    ``config.pruned_heads`` in the original numbering (``num_attention_heads`` stays the original count);
    a student inherits the teacher's record, so a teacher that had heads removed itself pairs up too."""
    s_pruned, t_pruned = _pruned(student.config), _pruned(teacher.config)
    every = range(student.config.num_attention_heads)
    layers = _layer_map(student) or tuple(range(student.config.num_hidden_layers))
    out, same = [], True
    for i, j in enumerate(layers):
        t_kept = [h for h in every if h not in t_pruned.get(j, ())]
        s_kept = [h for h in every if h not in s_pruned.get(i, ())]
        same = same and s_kept == t_kept
        out.append(tuple(t_kept.index(h) for h in s_kept))
    return None if same else tuple(out)


def _distillation_trainer(student, teacher, tokenizer, config, task, train_ds, dev_ds, **kw):  # noqa: ANN001, ANN202
    from ladabert.pipeline.distill import DistillationTrainer, DistillLoss, neighbor_table

    neighbors = None
    if config.augment > 0 and config.augment_swap == "neighbors":
        vocab = tokenizer.convert_ids_to_tokens(list(range(teacher.config.vocab_size)))
        neighbors = neighbor_table(teacher.get_input_embeddings().weight, vocab)
    return DistillationTrainer(
        model=student,
        teacher=teacher,
        loss=DistillLoss(
            config.temperature,
            config.w_logits,
            config.w_hidden,
            config.w_attention,
            config.w_hard,
            layer_map=_layer_map(student),
            head_map=head_map(student, teacher),
        ),
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
        **kw,
    )


def _finish_student(student: torch.nn.Module) -> torch.nn.Module:
    """The saved form: masks applied, the distill-only projection dropped, unused rank components removed."""
    from ladabert.pipeline.student import shrink_factors

    hyb.apply_masks(student)
    if hasattr(student, "ladabert_hidden_proj"):
        del student.ladabert_hidden_proj
    return shrink_factors(student)


def _student_section(  # noqa: ANN202
    config: CompressConfig,
    student,
    teacher,
    teacher_name: str,
    data_aware: bool,
    layers=None,
    searched=None,  # noqa: ANN001
):
    """The ``ladabert`` section of the student's config.json (what rebuilds its shapes, and how it was
    made): with ``layers`` the teacher layer of each student layer, with ``searched`` the latency budget."""
    from ladabert.pipeline.student import layer_specs

    counts, teacher_counts = hyb.count_parameters(student), hyb.count_parameters(teacher)
    factorized = config.method != "distill-only"
    extra: dict[str, Any] = {}
    if layers is not None:
        extra["layer_map"] = list(layers)
    if searched is not None:
        keys = (
            "budget_ms",
            "backend",
            "batch",
            "seq",
            "threads",
            "margin",
            "chosen",
            "measured_ms",
            "blocks_ms",
            "speedup",
            "reference_ms",
            "reference_backend",
            "reference",
        )
        extra["latency_budget"] = {k: searched[k] for k in keys if k in searched}
    return {
        **extra,
        "method": config.method,
        "pattern": config.pattern if factorized else None,
        "hybrid": config.hybrid_share if factorized else None,
        "embedding_scale": config.embedding_scale if factorized else None,
        "data_aware": data_aware,
        "keep_heads": config.keep_heads,
        "keep_ffn": config.keep_ffn,
        "block_size": config.block_size if config.pattern == "block" else None,
        "ratio_target": config.ratio,
        "ratio": teacher_counts["total"] / counts["total"],
        "encoder_ratio": teacher_counts["encoder_linear"] / max(1, counts["encoder_linear"]),
        "teacher": teacher_name,
        "teacher_params": teacher_counts["total"],
        "nonzero_params": counts["total"],
        "param_counts": counts,
        "layers": layer_specs(student),
    }


def compress_model(
    teacher: torch.nn.Module,
    tokenizer: Any,
    train_split: GlueSplit,
    dev_split: GlueSplit,
    config: CompressConfig | None = None,
    work_dir: str | os.PathLike | None = None,
    callbacks: list[Any] | None = None,
    teacher_name: str = "",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Compress an in-memory teacher into a student module (the in-memory form of :func:`compress`).

    Args:
        teacher: a fine-tuned BERT sequence classifier; its weights are not changed (with the attention
            term on, its config is switched to eager attention, the only one that returns the maps).
        tokenizer: its tokenizer.
        train_split, dev_split: labelled examples (:func:`ladabert.load_glue`) for distillation and scoring.
        config: see :class:`~ladabert.config.CompressConfig` (default: the 5x hybrid student).
        work_dir: checkpoint directory; a rerun with the same one resumes (default: a temporary one).
        callbacks: extra ``transformers.TrainerCallback`` objects.
        teacher_name: recorded in the student's config.

    Returns:
        The fp32 student (a :class:`~ladabert.pipeline.student.LadaBertForSequenceClassification`) and its
        metrics.
    """
    from ladabert.pipeline.distill import CompressionCallback

    config = config or CompressConfig()
    task = train_split.task
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="ladabert-compress-") as tmp:
            return compress_model(
                teacher, tokenizer, train_split, dev_split, config, tmp, callbacks, teacher_name
            )
    from ladabert.pipeline.build import check_reachable

    asked = config  # what the checkpoints are recorded with; a budget's search sets the shape below
    search = _BudgetSearch(config, teacher, Path(work_dir)) if config.budgeted else None
    if search is None:
        check_reachable(teacher, config)  # before the teacher is scored and calibrated
    if config.w_attention > 0 or config.budgeted:
        # the attention term reads the maps that only eager attention returns
        teacher.config._attn_implementation = "eager"
    teacher.eval()
    train_ds, dev_ds = (tokenize(s, tokenizer, config.max_length) for s in (train_split, dev_split))
    scored = {"max_length": config.max_length, "dev": dev_split}
    teacher_metrics = evaluate_module(teacher, tokenizer, task, **scored)
    stats = None
    if config.data_aware and config.method != "distill-only":
        special = tokenizer.all_special_ids
        stats = calibration_stats(
            teacher, train_ds, make_collator(tokenizer), config.calibration_samples, config.seed, special
        )
    searched, layers = None, None
    if search is not None:
        searched = search.run(train_ds, make_collator(tokenizer), stats)
        config = CompressConfig.from_dict(searched["config"])
        layers = searched["kept_layers"] if config.keep_layers is not None else None
    elif config.keep_layers is not None:
        from ladabert.pipeline.budget import calibration_batches, layer_order

        batches = calibration_batches(train_ds, make_collator(tokenizer), 128, config.seed)
        layers = layer_order(teacher, batches)[0][config.keep_layers - 1]
    torch.manual_seed(config.seed)
    built = plan_student(teacher, config, stats, layers)
    student = built.student
    if config.dropout is not None:
        set_dropout(student, config.dropout)
    if config.w_attention > 0:
        student.config._attn_implementation = "eager"
        _no_attention_dropout(student)
    init_metrics = evaluate_module(student, tokenizer, task, **scored)

    def make_trainer(**kw: Any) -> Any:
        return _distillation_trainer(student, teacher, tokenizer, config, task, train_ds, dev_ds, **kw)

    comp_cb = CompressionCallback(built.plans, stats)
    # The weight average samples after the compression callback has applied this step's masks.
    run = train(
        make_trainer,
        Path(work_dir),
        config,
        [comp_cb, *(callbacks or [])],
        settings={**asked.to_dict(), "teacher": teacher_name},
    )
    student = _finish_student(run.model)
    section = _student_section(config, student, teacher, teacher_name, bool(stats), layers, searched)
    student.config.ladabert = {k: v for k, v in section.items() if k != "param_counts"}
    student.config.architectures = ["LadaBertForSequenceClassification"]
    final = evaluate_module(student, tokenizer, task, **scored)
    metrics = {
        "task": task.name,
        "metric": task.metric,
        "value": final["value"],
        "value_precision": "fp32",
        "metrics": final["metrics"],
        "teacher_value": teacher_metrics["value"],
        "value_at_init": init_metrics["value"],
        **{
            k: section[k]
            for k in ("method", "pattern", "hybrid", "embedding_scale", "keep_heads", "keep_ffn")
        },
        "ratio_target": config.ratio,
        "ratio": section["ratio"],
        "encoder_ratio": section["encoder_ratio"],
        "teacher_params": section["teacher_params"],
        "student_nonzero_params": section["nonzero_params"],
        "param_counts": section["param_counts"],
        **run.record(task.metric),
        "train_examples": len(train_split),
        "eval_examples": len(dev_split),
        "schedule": built.schedule.targets() if built.schedule else [],
        # What was asked (a rerun with it reuses or resumes this run); with a budget, what the search set too.
        "config": asked.to_dict(),
        **({"trained_config": config.to_dict()} if searched else {}),
        **({"latency_search": {k: v for k, v in searched.items() if k != "config"}} if searched else {}),
    }
    return student, metrics


def _load_teacher(teacher: str | os.PathLike, config: CompressConfig) -> tuple[str, Any, Any]:
    """Resolve and check the teacher directory before any expensive work; returns (path, model config)."""
    path = resolve_model(str(teacher))
    tcfg = load_bert_config(path)
    if getattr(tcfg, "ladabert", None):
        raise LadaBertError(f"{path} is already a LadaBERT student; pass the fine-tuned teacher")
    check_max_length(config.max_length, tcfg, path)
    return path, tcfg


def _check_labels(path: str, tcfg: Any, task: Any, files: DataFiles | None) -> None:
    if tcfg.num_labels == task.num_labels:
        return
    if files is not None:
        raise LadaBertError(
            f"teacher {path} has {tcfg.num_labels} output label(s) but the data files give {task.num_labels}; "
            "compress with the files the teacher was fine-tuned on"
        )
    raise LadaBertError(
        f"teacher {path} has {tcfg.num_labels} output label(s) but {task.name} needs "
        f"{task.num_labels}; fine-tune it first: ladabert finetune --task {task.name} --model {path}"
    )


def _teacher_and_data(config: CompressConfig, teacher: str | os.PathLike, data_dir: Any) -> tuple:
    """The teacher's path and the data, checked against each other before any model is loaded."""
    path, tcfg = _load_teacher(teacher, config)
    if config.budgeted:
        check_budget_settings(config, tcfg)
    files = DataFiles.from_config(config)
    if files is None:  # a GLUE task's label count is known before any data is read
        _check_labels(path, tcfg, get_task(config.task), None)
    # Data files are read with the teacher's label names, so that label ids mean what the teacher learnt.
    names = model_label_names(tcfg) if files is not None else False
    task, train_split, dev = load_task_data(config, data_dir, label_names=names)
    _check_labels(path, tcfg, task, files)
    return path, files, task, train_split, dev


def search_shape(
    config: CompressConfig, teacher: str | os.PathLike, data_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The latency search of :func:`compress` alone: the shape ``config.latency_budget`` gets, and the
    search record (every timed shape, the latency model, the proxy), without training; nothing is written.

    Raises:
        LadaBertError: no budget in ``config``, or the budget is out of reach (as in :func:`compress`).
    """
    from ladabert.pipeline.student import load_classifier

    if not config.budgeted:
        raise LadaBertError(
            "search_shape needs a latency target: latency_budget (milliseconds) or latency_speedup"
        )
    path, _, _, train_split, _ = _teacher_and_data(config, teacher, data_dir)
    model = load_classifier(path).eval()
    tokenizer = load_tokenizer_from(path)
    with tempfile.TemporaryDirectory(prefix="ladabert-search-") as tmp:
        search = _BudgetSearch(config, model, Path(tmp))
        train_ds = tokenize(train_split, tokenizer, config.max_length)
        stats = None
        if config.data_aware:
            stats = calibration_stats(
                model,
                train_ds,
                make_collator(tokenizer),
                config.calibration_samples,
                config.seed,
                tokenizer.all_special_ids,
            )
        return search.run(train_ds, make_collator(tokenizer), stats)


def compress(
    config: CompressConfig,
    teacher: str | os.PathLike,
    out: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    keep_checkpoints: bool = False,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Compress a fine-tuned teacher directory into a student directory at ``out``.

    Args:
        config: see :class:`~ladabert.config.CompressConfig`.
        teacher: directory (or hub id) of a fine-tuned BERT sequence classifier for ``config.task`` or
            the data files of ``config``.
        out: student directory, written atomically once training and evaluation end.
        data_dir: GLUE data location (see :mod:`ladabert.pipeline.data`); unused with data files.
        overwrite: replace an existing ``out``.
        keep_checkpoints: keep ``<out>.checkpoints`` after success (kept after a failure for resuming).
        callbacks: extra ``transformers.TrainerCallback`` objects.

    Returns:
        The metrics written to ``out/metrics.json``.
    """

    from ladabert.pipeline.student import load_classifier

    path, files, task, train_split, dev = _teacher_and_data(config, teacher, data_dir)
    inputs = [path, config.train_file, config.validation_file, data_dir]
    out, work_dir = prepare_output(out, overwrite, inputs)
    with output_lock(out):
        check_resume(work_dir, resume_settings(config, teacher=str(teacher)))
        attn = {"attn_implementation": "eager"} if config.w_attention > 0 else {}
        teacher_model = load_classifier(path, **attn).eval()
        tokenizer = load_tokenizer_from(path)
        tokenizer.model_max_length = config.max_length
        student, metrics = compress_model(
            teacher_model, tokenizer, train_split, dev, config, work_dir, callbacks, teacher_name=str(teacher)
        )
        if files is not None or not getattr(student.config, "finetuning_task", None):
            set_labels(student.config, task, files)
        metrics.update(run_environment())

        def write(tmp: Path) -> None:
            from ladabert.card import write_card

            student.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            metrics["bytes"] = (tmp / "model.safetensors").stat().st_size
            (tmp / "compress_config.json").write_text(config.to_json() + "\n")
            write_card(tmp, out, "student", card_facts(student.config, metrics, base_model_of(path)))

        save_run(out, write, metrics, overwrite, keep_checkpoints, inputs)
        return metrics


def card_facts(model_config: Any, metrics: dict[str, Any], base_model: str | None) -> dict[str, Any]:
    """What a model card states about a student (see :func:`ladabert.card.model_card`)."""
    section = getattr(model_config, "ladabert", None) or {}
    n = model_config.num_labels
    labels = [] if n == 1 else [model_config.id2label[i] for i in range(n)]
    return {
        "task": metrics["task"],
        "metric": metrics["metric"],
        "value": metrics["value"],
        "metrics": metrics.get("metrics"),
        "labels": labels,
        "base_model": base_model,
        "ratio": section.get("ratio", 1.0),
        "nonzero_params": section.get("nonzero_params"),
        "teacher_params": section.get("teacher_params"),
        "data": getattr(model_config, "ladabert_data", None),
        "max_length": metrics.get("config", {}).get("max_length"),
    }


def student_summary(path: str | os.PathLike) -> dict[str, Any]:
    """The ``metrics.json`` of a student directory."""
    p = Path(path) / "metrics.json"
    if not p.is_file():
        raise LadaBertError(f"{path} has no metrics.json; pass a directory written by ladabert compress")
    return json.loads(p.read_text())
