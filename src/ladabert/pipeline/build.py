"""Building a student from a teacher and a :class:`~ladabert.config.CompressConfig`: the one place that
turns settings into module shapes, used by compression, the latency and kernel benchmarks, and the tests.

Example (BERT-base shape, random weights: what the latency benchmark measures)::

    from transformers import BertConfig, BertForSequenceClassification
    from ladabert import CompressConfig, build_student
    student = build_student(BertForSequenceClassification(BertConfig()), CompressConfig(ratio=10, pattern="rank"))
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ladabert.config import CompressConfig
from ladabert.errors import LadaBertError
from ladabert.pipeline import hybrid as hyb
from ladabert.pipeline.schedule import CompressionSchedule
from ladabert.pipeline.structured import default_layers, prune_structure
from ladabert.pipeline.student import LadaBertForSequenceClassification, layer_specs, shrink_factors
from ladabert.student_config import LadaBertConfig


def count_all(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def narrow_configs(teacher_config: Any, same_heads: bool = False) -> list[tuple[int, Any]]:
    """``(parameters, config)`` of every width a narrow student of ``teacher_config`` can take, narrowest
    first: as deep as the teacher, narrower.

    Width moves in steps of the teacher's head size (heads are dropped, head size kept) or, with
    ``same_heads``, in steps of the teacher's head count (every head kept, each narrower: what attention
    distillation needs). The FFN keeps the teacher's expansion factor.
    """
    from transformers import BertForSequenceClassification

    heads = teacher_config.num_attention_heads
    head = teacher_config.hidden_size // heads
    expand = teacher_config.intermediate_size / teacher_config.hidden_size
    step = heads if same_heads else head
    out = []
    for width in range(step, teacher_config.hidden_size + 1, step):
        cfg = copy.deepcopy(teacher_config)
        cfg.hidden_size, cfg.num_attention_heads = width, heads if same_heads else width // head
        cfg.intermediate_size = int(round(width * expand))
        with torch.device("meta"):
            out.append((count_all(BertForSequenceClassification(cfg)), cfg))
    return out


def narrow_student_config(teacher_config: Any, target_params: int, same_heads: bool = False) -> Any:
    """The config of :func:`narrow_configs` with about ``target_params`` parameters."""
    return min(narrow_configs(teacher_config, same_heads), key=lambda nc: abs(nc[0] - target_params))[1]


@dataclass
class StudentPlan:
    """A student at the start of its schedule and the ``{step: plan}`` recompressions that take it to the
    target ratio (empty for distill-only, which has no schedule)."""

    student: LadaBertForSequenceClassification
    plans: dict[int, hyb.CompressionPlan]
    schedule: CompressionSchedule | None


def _distill_only(teacher: nn.Module, config: CompressConfig) -> StudentPlan:
    cfg = narrow_student_config(
        teacher.config, round(count_all(teacher) / config.ratio), same_heads=config.w_attention > 0
    )
    cfg.ladabert = {"method": "distill-only", "layers": {}}
    student = LadaBertForSequenceClassification(LadaBertConfig.from_bert(cfg))
    student.ladabert_hidden_proj = nn.Linear(cfg.hidden_size, teacher.config.hidden_size)
    return StudentPlan(student, {}, None)


def allocation(
    config: CompressConfig, shapes: dict[str, tuple[int, int]], n_teacher: int, fixed: int, ratio: float
) -> hyb.CompressionPlan:
    """The hybrid plan of ``config``'s method, pattern and budget split for matrices ``shapes`` at ``ratio``."""
    return hyb.allocate(
        shapes,
        n_teacher,
        ratio,
        hybrid=config.hybrid_share,
        pattern=config.pattern,
        block_size=config.block_size,
        embedding_scale=config.embedding_scale,
        fixed_params=fixed,
    )


def check_keep_layers(config: CompressConfig, total: int) -> None:
    """Refuse ``config.keep_layers`` above the teacher's ``total`` layers."""
    if config.keep_layers is not None and config.keep_layers > total:
        raise LadaBertError(
            f"--keep-layers {config.keep_layers} exceeds the teacher's {total} layers; lower it"
        )


def kept_layers(
    teacher: nn.Module, config: CompressConfig, layers: list[int] | None = None
) -> list[int] | None:
    """The teacher layers the student keeps: ``layers`` when given (chosen from data), else evenly spaced
    ``config.keep_layers`` of them; None when every layer stays."""
    if config.keep_layers is None:
        return None
    total = teacher.config.num_hidden_layers
    check_keep_layers(config, total)
    if layers is not None and len(layers) != config.keep_layers:
        raise LadaBertError(f"{len(layers)} layers given for --keep-layers {config.keep_layers}")
    return sorted(layers) if layers is not None else default_layers(total, config.keep_layers)


def _allocation(
    teacher: nn.Module,
    config: CompressConfig,
    stats: dict[str, torch.Tensor] | None,
    layers: list[int] | None = None,
) -> tuple:
    """The teacher without its removed layers, heads and FFN neurons, the ratio schedule, and
    ``ratio -> plan``; raises when the target ratio is out of reach."""
    n_teacher = count_all(teacher)
    dense = copy.deepcopy(teacher)
    # Structure goes first (``stats`` is sliced to what is kept); the hybrid plan spends the rest.
    prune_structure(dense, config.keep_heads, config.keep_ffn, stats, kept_layers(teacher, config, layers))
    shapes = hyb.matrix_shapes(dense)
    n_dense = count_all(dense)
    fixed = n_dense - sum(r * c for r, c in shapes.values())
    # Equal is allowed: the structure alone gives the ratio and the factors keep every weight.
    if config.structured and n_teacher / n_dense > config.ratio * (1 + 1e-9):
        raise LadaBertError(
            f"removing layers, heads and FFN neurons alone gives {n_teacher / n_dense:.2f}x, more than --ratio "
            f"{config.ratio:g}; raise --ratio or --keep-layers / --keep-heads / --keep-ffn"
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
        return allocation(config, shapes, n_teacher, fixed, ratio)

    plan_for(config.ratio)  # fails early when the final ratio is out of reach
    return dense, schedule, plan_for


def check_reachable(teacher: nn.Module, config: CompressConfig) -> None:
    """Raise :class:`LadaBertError` now when ``config.ratio`` cannot be reached from ``teacher`` (before any
    calibration or training is spent on it)."""
    if config.method != "distill-only":
        _allocation(teacher, config, None)


def plan_student(
    teacher: nn.Module,
    config: CompressConfig,
    stats: dict[str, torch.Tensor] | None = None,
    layers: list[int] | None = None,
) -> StudentPlan:
    """The initial student (at ``config.initial_ratio``) and its schedule; the teacher is not changed.

    ``stats`` (:func:`ladabert.pipeline.calibrate.activation_stats`) makes the compression data-aware;
    ``layers`` are the teacher layers kept with ``config.keep_layers`` (default: evenly spaced).

    Raises:
        LadaBertError: the target ratio is out of reach (checked before anything is trained).
    """
    if config.method == "distill-only":
        return _distill_only(teacher, config)
    dense, schedule, plan_for = _allocation(teacher, config, stats, layers)
    student = hyb.install(dense, plan_for(schedule.initial_ratio), stats)
    cfg = copy.deepcopy(dense.config)  # carries ``pruned_heads`` and the kept layer count
    cfg.ladabert = {"method": config.method, "layers": layer_specs(student)}
    kept = kept_layers(teacher, config, layers)
    if kept is not None:
        cfg.ladabert["layer_map"] = kept
    # Re-home the weights in the student class so that checkpoints reload through from_pretrained.
    shell = LadaBertForSequenceClassification(LadaBertConfig.from_bert(cfg))
    shell.load_state_dict(student.state_dict())
    plans = {step: plan_for(ratio) for step, ratio in schedule.targets()}
    return StudentPlan(shell, plans, schedule)


def build_student(
    teacher: nn.Module, config: CompressConfig, stats: dict[str, torch.Tensor] | None = None
) -> LadaBertForSequenceClassification:
    """A student at ``config.ratio`` straight away, without distillation: the shapes a trained student of
    the same settings has (unused rank components dropped). The teacher is not changed.

    For latency measurement and tests; a student for use comes from :func:`ladabert.compress`.
    """
    built = plan_student(teacher, dataclasses.replace(config, initial_ratio=config.ratio), stats)
    student = shrink_factors(built.student.eval())
    if config.method != "distill-only":
        student.config.ladabert = {
            **student.config.ladabert,
            "pattern": config.pattern,
            "block_size": config.block_size,
            "layers": layer_specs(student),
        }
    return student
