"""Knowledge distillation from the teacher, with the student recompressed along the schedule.

The loss is a weighted sum of
- soft cross-entropy between temperature-scaled teacher and student logits (times T^2),
- MSE between each student hidden state (embeddings and every layer) and the teacher's, over real tokens,
- KL divergence from the teacher's attention distributions (MiniLM's signal), each student head against
  the teacher head it was pruned from, and optionally cross-entropy on the gold labels.

With ``augment`` > 0 every second training example has some of its tokens replaced (:func:`augment_tokens`)
before both models see it.

Training runs on transformers' ``Trainer`` (so ``torchrun``/``accelerate launch`` work unchanged); the
:class:`CompressionCallback` enforces the pruning masks after every optimizer step and recompresses the
student at the schedule's update steps.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback
from transformers.modeling_outputs import SequenceClassifierOutput

from ladabert.pipeline.hybrid import CompressionPlan, apply_masks, recompress


@dataclass
class DistillLoss:
    """Weights of the distillation loss terms."""

    temperature: float = 2.0
    logits: float = 1.0
    hidden: float = 1.0
    attention: float = 0.0
    hard: float = 0.0
    # Teacher layer index of each student layer, when the student dropped layers (None: one to one).
    layer_map: tuple[int, ...] | None = None
    # Per student layer, the teacher heads its heads are, in order, when the student removed heads (None:
    # every layer keeps all of them): the attention term compares each kept head with its own origin.
    head_map: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("logits", "hidden", "attention", "hard"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss weight {name} must be >= 0, got {getattr(self, name)}")
        if self.logits + self.hidden + self.attention + self.hard == 0:
            raise ValueError("at least one loss weight must be > 0")

    def __call__(
        self,
        student: Any,
        teacher: Any,
        labels: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        regression: bool = False,
        hidden_proj: torch.nn.Module | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        parts: dict[str, torch.Tensor] = {}
        s_logits, t_logits = student.logits.float(), teacher.logits.float()
        t_hidden, t_att = teacher.hidden_states, teacher.attentions
        if self.layer_map is not None:  # hidden state 0 is the embeddings, i + 1 the output of layer i
            t_hidden = t_hidden and (t_hidden[0], *(t_hidden[i + 1] for i in self.layer_map))
            t_att = t_att and tuple(t_att[i] for i in self.layer_map)
        if self.head_map is not None and t_att:
            if len(self.head_map) != len(t_att):
                raise ValueError(f"head_map covers {len(self.head_map)} layers, the student has {len(t_att)}")
            t_att = tuple(a[:, list(heads)] for a, heads in zip(t_att, self.head_map))
        if self.logits:
            if regression:
                parts["logits"] = F.mse_loss(s_logits, t_logits)
            else:
                # Soft cross-entropy minus the teacher's entropy (a constant): the KL divergence. Same
                # gradients, but the logged value falls to 0 as the student matches the teacher.
                t = self.temperature
                log_t = F.log_softmax(t_logits / t, dim=-1)
                log_s = F.log_softmax(s_logits / t, dim=-1)
                parts["logits"] = (log_t.exp() * (log_t - log_s)).sum(-1).mean() * t * t
        if self.hidden:
            mask = (
                torch.ones(s_logits.shape[0], student.hidden_states[0].shape[1], device=s_logits.device)
                if attention_mask is None
                else attention_mask.float()
            )[..., None]
            terms = []
            if len(student.hidden_states) != len(t_hidden):
                raise ValueError(
                    f"the student returned {len(student.hidden_states)} hidden states and the teacher "
                    f"{len(t_hidden)}: a student with fewer layers needs its layer_map"
                )
            for hs, ht in zip(student.hidden_states, t_hidden):
                hs = hidden_proj(hs) if hidden_proj is not None else hs
                sq = (hs.float() - ht.float()).pow(2) * mask
                terms.append(sq.sum() / (mask.sum() * ht.shape[-1]))
            parts["hidden"] = torch.stack(terms).mean()
        if self.attention:
            parts["attention"] = attention_kl(student.attentions, t_att, attention_mask)
        if self.hard and labels is not None:
            parts["hard"] = (
                F.mse_loss(s_logits.squeeze(-1), labels.float())
                if regression
                else F.cross_entropy(s_logits, labels)
            )
        total = sum(getattr(self, k) * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}


def attention_kl(
    student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """Mean over layers, heads and real query tokens of KL(teacher || student) between attention distributions.

    ``student`` and ``teacher`` hold one ``(batch, heads, query, key)`` tensor of attention probabilities per
    layer (MiniLM's self-attention distillation). Padded keys have probability 0 under both models and add
    nothing; padded query rows are left out of the mean."""
    if len(student) != len(teacher):
        raise ValueError(f"the student returned {len(student)} attention maps and the teacher {len(teacher)}")
    terms = []
    for a, b in zip(student, teacher):
        if a.shape != b.shape:
            raise ValueError(
                f"attention maps of shape {tuple(a.shape)} (student) and {tuple(b.shape)} (teacher): attention "
                "distillation needs each student layer and head mapped to the teacher's (layer_map, head_map)"
            )
        p_t = b.float()
        kl = (p_t * (p_t.clamp_min(1e-12).log() - a.float().clamp_min(1e-12).log())).sum(-1)  # (B, H, Lq)
        if attention_mask is None:
            terms.append(kl.mean())
        else:
            rows = attention_mask[:, None, :].to(kl.dtype).expand_as(kl)
            terms.append((kl * rows).sum() / rows.sum().clamp_min(1.0))
    return torch.stack(terms).mean()


@torch.no_grad()
def neighbor_table(
    embeddings: torch.Tensor, tokens: list[str], k: int = 8, chunk: int = 2048
) -> torch.Tensor:
    """``(vocab, k)`` ids of each token's ``k`` nearest tokens by cosine similarity of the word embeddings.

    A neighbor is never the token itself, a bracketed token (``[CLS]``, ``[unused5]``) or a token of the other
    kind of WordPiece (a word start is replaced by word starts, a ``##`` continuation by continuations), so a
    substitution keeps the word boundaries of the text. Bracketed tokens get themselves as neighbors (they
    are never substituted)."""
    if embeddings.shape[0] != len(tokens):
        raise ValueError(f"{embeddings.shape[0]} embedding rows but {len(tokens)} tokens")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    e = F.normalize(embeddings.detach().float(), dim=-1)
    bracket = torch.tensor([t.startswith("[") and t.endswith("]") for t in tokens])
    cont = torch.tensor([t.startswith("##") for t in tokens])
    out = torch.arange(len(tokens))[:, None].repeat(1, k)
    for lo in range(0, len(tokens), chunk):
        hi = min(lo + chunk, len(tokens))
        sim = e[lo:hi] @ e.T
        sim[:, bracket] = -float("inf")
        sim[cont[lo:hi, None] != cont[None, :]] = -float("inf")
        sim[torch.arange(hi - lo), torch.arange(lo, hi)] = -float("inf")
        top = sim.topk(k, dim=-1)
        ids = torch.where(torch.isfinite(top.values), top.indices, torch.arange(lo, hi)[:, None])
        out[lo:hi] = torch.where(bracket[lo:hi, None], out[lo:hi], ids)
    return out


def augment_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    special_ids: torch.Tensor,
    mask_id: int,
    p: float,
    generator: torch.Generator | None = None,
    neighbors: torch.Tensor | None = None,
) -> torch.Tensor:
    """Token-replacement augmentation for distillation: in every second example of the batch, each real,
    non-special token is replaced with probability ``p``, half of the time by ``mask_id`` and otherwise by a
    token drawn from the batch's own real tokens or, given a ``neighbors`` table (:func:`neighbor_table`, on
    the device of ``input_ids``), by one of the token's nearest tokens in the embedding space. The teacher
    labels the altered text, so the student learns the teacher's function on inputs around the training
    data, not only on it. Returns a new tensor."""
    if p <= 0:
        return input_ids
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    real &= ~torch.isin(input_ids, special_ids.to(input_ids.device))
    rows = torch.zeros_like(real)
    rows[1::2] = True  # the even examples stay as they are
    rand = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    hit = real & rows & (rand < p)
    pool = input_ids[real]
    if not hit.any() or pool.numel() == 0:
        return input_ids
    out = input_ids.clone()
    to_mask = hit & (rand < p / 2)
    out[to_mask] = mask_id
    swap = hit & ~to_mask
    if neighbors is not None:
        cols = torch.randint(
            neighbors.shape[1], (int(swap.sum()),), generator=generator, device=input_ids.device
        )
        out[swap] = neighbors[input_ids[swap], cols]
        return out
    picks = torch.randint(pool.numel(), (int(swap.sum()),), generator=generator, device=input_ids.device)
    out[swap] = pool[picks]
    return out


def length_weighted_sampler(lengths: list[int], power: float) -> torch.utils.data.WeightedRandomSampler:
    """A sampler that draws ``len(lengths)`` examples per epoch, with replacement, each with probability
    proportional to ``length ** power`` (``power`` 0: uniform). It draws from torch's global generator, as
    ``Trainer``'s own ``RandomSampler`` does, so ``Trainer``'s seed fixes the order in every process."""
    if power < 0:
        raise ValueError(f"length_weight must be >= 0, got {power!r}")
    if not lengths or min(lengths) < 1:
        raise ValueError("every training example needs at least one token to be weighted by its length")
    weights = torch.tensor(lengths, dtype=torch.float64) ** power
    return torch.utils.data.WeightedRandomSampler(weights, num_samples=len(lengths), replacement=True)


class DistillationTrainer(Trainer):
    """``Trainer`` whose training loss is :class:`DistillLoss` against a frozen teacher."""

    def __init__(
        self,
        *args: Any,
        teacher: torch.nn.Module,
        loss: DistillLoss,
        regression: bool = False,
        augment: float = 0.0,
        special_ids: list[int] | None = None,
        mask_id: int | None = None,
        neighbors: torch.Tensor | None = None,
        length_weight: float = 0.0,
        **kwargs: Any,
    ):
        self.length_weight = length_weight
        super().__init__(*args, **kwargs)
        if augment > 0 and mask_id is None:
            raise ValueError("augment > 0 needs the tokenizer's mask token id")
        self.augment = augment
        # Moved to the training device once, not at every step.
        self.neighbors = None if neighbors is None else neighbors.to(self.args.device)
        self.special_ids = torch.tensor(sorted(set(special_ids or [])), dtype=torch.long)
        self.mask_id = mask_id
        self.teacher = teacher.to(self.args.device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.distill_loss = loss
        self.regression = regression
        self._parts: dict[str, list[float]] = defaultdict(list)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.length_weight > 0 and dataset is not None:
            return length_weighted_sampler(
                [len(dataset[i]["input_ids"]) for i in range(len(dataset))], self.length_weight
            )
        return super()._get_train_sampler(dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        if not model.training:  # evaluation: task loss and logits only
            out = model(**inputs)
            logits = out.logits.float()
            if labels is None:
                loss = logits.new_zeros(())
            elif self.regression:
                loss = F.mse_loss(logits.squeeze(-1), labels.float())
            else:
                loss = F.cross_entropy(logits, labels)
            return (loss, SequenceClassifierOutput(loss=loss, logits=out.logits)) if return_outputs else loss
        if self.augment > 0:
            inputs["input_ids"] = augment_tokens(
                inputs["input_ids"],
                inputs.get("attention_mask"),
                self.special_ids,
                self.mask_id,
                self.augment,
                neighbors=self.neighbors,
            )
        want_att = self.distill_loss.attention > 0
        # The teacher runs under the same autocast as the student (Accelerate wraps only the student).
        with torch.no_grad(), self.accelerator.autocast():
            t_out = self.teacher(**inputs, output_hidden_states=True, output_attentions=want_att)
        s_out = model(**inputs, output_hidden_states=True, output_attentions=want_att)
        unwrapped = self.accelerator.unwrap_model(model)
        loss, parts = self.distill_loss(
            s_out,
            t_out,
            labels,
            inputs.get("attention_mask"),
            self.regression,
            getattr(unwrapped, "ladabert_hidden_proj", None),
        )
        for k, v in parts.items():
            self._parts[k].append(v)
        return (loss, s_out) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._parts:
            for k, v in self._parts.items():
                logs[f"loss_{k}"] = round(sum(v) / len(v), 5)
            self._parts.clear()
        super().log(logs, *args, **kwargs)


def _reset_optimizer_state(optimizer: Any, params: list[torch.nn.Parameter]) -> None:
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
    for p in params:
        inner.state.pop(p, None)


class CompressionCallback(TrainerCallback):
    """Enforces masks after every optimizer step and recompresses the student at the schedule's steps.

    Args:
        plans: ``{global_step: CompressionPlan}``; after that step the student is brought to that plan.
        stats: calibration statistics for data-aware recompression (:mod:`ladabert.pipeline.calibrate`).
    """

    def __init__(self, plans: dict[int, CompressionPlan], stats: dict[str, torch.Tensor] | None = None):
        self.plans = plans
        self.stats = stats
        self.history: list[tuple[int, float]] = []

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):  # noqa: ANN001
        if model is None:
            return
        plan = self.plans.get(state.global_step)
        if plan is not None:
            changed = recompress(model, plan, self.stats)
            if optimizer is not None:
                _reset_optimizer_state(optimizer, changed)
            self.history.append((state.global_step, plan.ratio_target))
        else:
            apply_masks(model)
