"""Compress to a latency budget: search the student's shape before any training.

``ladabert compress --latency-budget MS --backend B --batch N --seq L`` asks for a student whose exported
graph takes at most ``MS`` milliseconds per call on backend ``B`` of this machine. The levers are those that
dense runtimes turn into speed: encoder layers kept, attention heads and FFN neurons kept per layer, and
the compression ratio, whose truncated-SVD share sets the factor ranks (the export's ``align`` rewrite
pads them to what the backend wants; factors at or above break-even are merged back). Unstructured pruning
of the factors costs no latency, so it stays where the ratio puts it.

The search, in order:

1. **Reachability** (no data needed): the smallest student (one layer, one head, the narrowest FFN, the
   largest ratio) is exported and timed. A budget it does not meet, margin included, is refused in one line
   that names its latency, before the teacher is scored or calibrated.
2. **Candidates**: a grid of shapes (:func:`candidate_grid`). Each one's matrix shapes and factor ranks
   come from the same allocation compression uses (:func:`candidate_plan`), without building it.
3. **Proxy** for what a shape keeps of the teacher (:class:`Proxy`), from the calibration statistics of
   data-aware compression and the teacher's outputs on calibration examples:
   ``exp(-KL(layers)) * structure * ranks * embedding``, where ``KL(layers)`` is the divergence of the
   teacher's predictions when only the kept layers run (layers dropped greedily, least harmful first:
   :func:`layer_order`); ``structure`` the share of the kept layers' output energy that the kept heads and
   neurons carry (the importance scores of :mod:`ladabert.pipeline.structured`); ``ranks`` the share of
   each encoder matrix's output energy that its truncated SVD keeps (data-aware spectrum), times the
   share a Gaussian matrix keeps under magnitude pruning of the rest, energy-weighted over matrices; and
   ``embedding`` the same for the word-embedding table under token frequencies. It is a heuristic; the
   frontier benchmark (``benchmarks/frontier.py``) records it beside trained accuracy.
4. **Latency model**, fitted on the fly: median latency of timed candidates (random weights, exported
   through ladabert's export and rewrites, timed on the named backend) regressed on per-candidate counts
   (layers, heads, FFN neurons, GEMM multiply-adds per token, factor chains) with non-negative
   coefficients. The loop times the candidate with the best proxy among those that are measured, or
   predicted, within ``budget * (1 - margin)``; it stops when that candidate is one already measured within
   it (or after ``search_timings`` timings: then the best measured one). That candidate is then timed by
   the budget protocol the bundle is checked by after export (five one-second blocks, the median of their
   medians: :func:`ladabert.bench.latency.block_medians`); if that puts it above the target, it keeps
   that latency and the loop goes on.

With ``--latency-speedup X`` instead of a budget in milliseconds, the teacher's own shape (random weights,
exported the same way) is timed first by the budget protocol, and the budget is that latency divided by
``X``. Every confirmation then times the candidate in turn with the teacher's shape, block by block, and
reads the candidate at the machine's speed of that first reading (a shared machine drifts by tens of
percent within minutes; the ratio of adjacent blocks holds). The export checks the speedup the same way.

With ``--backend fastest`` the reachability check and the search run on every installed backend in turn
(:func:`installed_backends`), and the student is the best shape of any: the highest proxy among the
backends' picks, the lower confirmed latency between equal ones; the student is then served on its
backend, and the record lists every backend's pick. ``--reference-backend fastest`` (the default with
``--backend fastest``) times the teacher's shape on every installed backend, in turn block by block, and
a speedup is over the fastest of them: each model on its own fastest backend. The proxy does not see
int8's rounding; the bundle's served accuracy does.

With ``--keep-layers N`` the search keeps that depth and searches the widths and ratio at it (a
student whose layer map is fixed, or a check of the proxy's depth-against-width trade).

The chosen shape becomes ``keep_layers`` / ``keep_heads`` / ``keep_ffn`` / ``ratio`` of the compression
config; the search record (budget, shape, measured and predicted latency, every timed candidate) goes into
the student's config, and the export measures the bundle against the budget again.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ladabert.config import FASTEST, GATE_BACKENDS, CompressConfig
from ladabert.errors import LadaBertError
from ladabert.pipeline import hybrid as hyb
from ladabert.pipeline.factorize import whitening
from ladabert.pipeline.structured import FFN_MULTIPLE, head_scores, neuron_scores

HEAD_SHARES = (1.0, 0.75, 0.5, 1 / 3, 0.25, 1 / 6, 1 / 12)
FFN_SHARES = (1.0, 0.75, 0.5, 0.375, 0.25, 0.1875, 0.125, 0.0625)
# Compression ratio over what the structure alone gives: 1 keeps every weight of the kept structure.
RATIO_FACTORS = (1.0, 1.5, 2.0, 3.0)
_MATRICES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


@dataclass(frozen=True, order=True)
class Candidate:
    """One student shape: encoder layers kept, heads and FFN neurons kept per layer, and the compression
    ratio as a factor over the ratio that the structure alone gives."""

    layers: int
    heads: int
    ffn: int
    ratio_factor: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Teacher:
    """What the search needs to know of the teacher: its config and parameter counts per unit."""

    config: Any
    params: int  # all parameters
    layer_params: int  # of one encoder layer
    head_params: int  # of one head: its Q, K, V rows and biases, and its attention-output columns
    neuron_params: int  # of one FFN neuron: its FFN-in row and bias, its FFN-out column

    @classmethod
    def of(cls, model: nn.Module) -> Teacher:
        cfg = model.config
        hidden, heads = cfg.hidden_size, cfg.num_attention_heads
        d = hidden // heads
        base = getattr(model, model.base_model_prefix, model)
        return cls(
            cfg,
            sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in base.encoder.layer[0].parameters()),
            3 * (hidden * d + d) + d * hidden,
            2 * hidden + 1,
        )

    @property
    def head_dim(self) -> int:
        return self.config.hidden_size // self.config.num_attention_heads


def candidate_grid(t: Teacher) -> list[Candidate]:
    """Every shape the search considers: layers 1..L, head counts and FFN widths from fixed shares of
    the teacher's (widths in multiples of 16), and :data:`RATIO_FACTORS`."""
    cfg = t.config
    heads = sorted({max(1, round(s * cfg.num_attention_heads)) for s in HEAD_SHARES})
    f = cfg.intermediate_size
    step = FFN_MULTIPLE if f >= FFN_MULTIPLE else 1
    ffn = sorted({min(f, max(step, round(s * f / step) * step)) for s in FFN_SHARES})
    return [
        Candidate(n, h, w, r)
        for n in range(1, cfg.num_hidden_layers + 1)
        for h in heads
        for w in ffn
        for r in RATIO_FACTORS
    ]


def feasible(t: Teacher, base: CompressConfig) -> list[Candidate]:
    """The grid without shapes whose ratio the allocation cannot reach (the parameters that are never
    compressed leave too little for the factors); only ``base.keep_layers`` layers when it is set."""
    from ladabert.pipeline.build import check_keep_layers

    check_keep_layers(base, t.config.num_hidden_layers)
    out = []
    for c in candidate_grid(t):
        if base.keep_layers is not None and c.layers != base.keep_layers:
            continue
        try:
            candidate_plan(t, c, base)
        except LadaBertError:
            continue
        out.append(c)
    return out


def smallest(t: Teacher, base: CompressConfig) -> list[Candidate]:
    """The smallest structure, unfactorized and at its largest reachable ratio: one of them is the
    fastest student (at tiny ranks the extra factor MatMuls can cost more than they save)."""
    grid = feasible(t, base)
    low = min((c.layers, c.heads, c.ffn) for c in grid)
    same = [c for c in grid if (c.layers, c.heads, c.ffn) == low]
    return sorted({min(same), max(same)})


def largest(t: Teacher) -> Candidate:
    cfg = t.config
    return Candidate(cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size, 1.0)


def structure_params(t: Teacher, c: Candidate) -> int:
    """Parameters of the teacher with only ``c``'s layers, heads and FFN neurons (before factorization)."""
    cfg = t.config
    per_layer_removed = (cfg.num_attention_heads - c.heads) * t.head_params + (
        cfg.intermediate_size - c.ffn
    ) * t.neuron_params
    return t.params - (cfg.num_hidden_layers - c.layers) * t.layer_params - c.layers * per_layer_removed


def matrix_shapes(t: Teacher, c: Candidate, prefix: str = "bert") -> dict[str, tuple[int, int]]:
    """``(rows, cols)`` of every compressed matrix of ``c``, named as in the student."""
    cfg = t.config
    hidden, inner = cfg.hidden_size, c.heads * t.head_dim
    per = {
        "attention.self.query": (inner, hidden),
        "attention.self.key": (inner, hidden),
        "attention.self.value": (inner, hidden),
        "attention.output.dense": (hidden, inner),
        "intermediate.dense": (c.ffn, hidden),
        "output.dense": (hidden, c.ffn),
    }
    shapes = {f"{prefix}.embeddings.word_embeddings": (cfg.vocab_size, hidden)}
    for i in range(c.layers):
        shapes.update({f"{prefix}.encoder.layer.{i}.{m}": rc for m, rc in per.items()})
    return shapes


def candidate_config(t: Teacher, c: Candidate, base: CompressConfig) -> CompressConfig:
    """``base`` with ``c``'s structure and ratio (the latency settings dropped: the shape is chosen)."""
    cfg = t.config
    ratio = t.params / structure_params(t, c) * c.ratio_factor
    # Factor 1: the kept structure keeps every weight, nothing factorized (a factorization at break-even
    # rank would lose half the spectrum for no saving).
    dense = {"method": "prune", "pattern": "unstructured"} if c.ratio_factor == 1 else {}
    return dataclasses.replace(
        base,
        **dense,
        latency_budget=None,
        keep_layers=c.layers if c.layers < cfg.num_hidden_layers else None,
        keep_heads=c.heads / cfg.num_attention_heads,
        keep_ffn=c.ffn / cfg.intermediate_size,
        ratio=max(1.0, ratio),
    )


def candidate_plan(t: Teacher, c: Candidate, base: CompressConfig) -> hyb.CompressionPlan:
    """The compression plan (ranks, sparsities) that ``c`` gets, from shapes alone."""
    # Keyed by the teacher and the settings the plan depends on (not by object identity, which Python reuses).
    key = (
        c,
        t.params,
        t.config.hidden_size,
        base.method,
        base.pattern,
        base.hybrid,
        base.block_size,
        base.embedding_scale,
    )
    if key in _PLANS:
        return _PLANS[key]
    cfg = candidate_config(t, c, base)
    shapes = matrix_shapes(t, c)
    from ladabert.pipeline.build import allocation

    fixed = structure_params(t, c) - sum(r * k for r, k in shapes.values())
    _PLANS[key] = plan = allocation(cfg, shapes, t.params, fixed, cfg.ratio)
    return plan


_PLANS: dict[tuple, hyb.CompressionPlan] = {}  # features and proxy ask for the same plans


def _exported_rank(m: hyb.MatrixPlan, align: int = 32, max_growth: float = 0.25) -> int | None:
    """The rank a matrix has in the exported graph (None: dense), following the export's rewrites:
    unused components dropped, chains at or above break-even merged, ranks padded like ``align_factors``."""
    if m.rank is None:
        return None
    k = m.keep_rank or m.rank
    if k * (m.rows + m.cols) >= m.rows * m.cols:
        return None
    up = -(-k // align) * align
    return up if up - k <= max_growth * k else k


def features(t: Teacher, c: Candidate, base: CompressConfig) -> np.ndarray:
    """What the latency model regresses on: 1, layers, heads, FFN neurons (all layers), GEMM
    multiply-adds per token (millions) and factor chains of the exported graph."""
    plan = candidate_plan(t, c, base)
    macs, chains = 0, 0
    for name, m in plan.matrices.items():
        if name.endswith("word_embeddings"):
            continue  # a gather: no multiply-adds
        k = _exported_rank(m)
        macs += m.rows * m.cols if k is None else k * (m.rows + m.cols)
        chains += k is not None
    return np.array([1.0, c.layers, c.layers * c.heads, c.layers * c.ffn / 64, macs / 1e6, chains], float)


def fit_latency(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with non-negative coefficients (a feature whose coefficient comes out negative is
    dropped and the rest refitted): latency only grows with work."""
    active = list(range(x.shape[1]))
    while True:
        coef = np.zeros(x.shape[1])
        if active:
            sol, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
            coef[active] = sol
        neg = [i for i in active if coef[i] < 0]
        if not neg:
            return coef
        active.remove(min(neg, key=lambda i: coef[i]))


# ---------------------------------------------------------------------------------------------------------
# The proxy: what a shape keeps of the teacher.


def _prediction_gap(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean KL(reference || logits) of the softmax predictions (for one output: squared error over the
    reference's variance)."""
    if reference.shape[-1] == 1:
        return float((logits - reference).pow(2).mean() / reference.var().clamp_min(1e-12))
    log_r, log_s = reference.log_softmax(-1), logits.log_softmax(-1)
    return float((log_r.exp() * (log_r - log_s)).sum(-1).mean())


@torch.no_grad()
def layer_order(
    model: nn.Module, batches: list[dict[str, torch.Tensor]]
) -> tuple[list[list[int]], list[float]]:
    """Greedy layer dropping on calibration ``batches``: for ``n = L .. 1`` the kept layers (teacher
    indices) and the prediction gap (:func:`_prediction_gap`) of the teacher running only them. Each step
    drops the layer whose removal changes the predictions least."""
    base = getattr(model, model.base_model_prefix, model)
    layers = base.encoder.layer
    model.eval()

    def logits_with(kept: list[int]) -> torch.Tensor:
        base.encoder.layer = nn.ModuleList([layers[i] for i in kept])
        try:
            return torch.cat([model(**b).logits.float() for b in batches])
        finally:
            base.encoder.layer = layers

    full = list(range(len(layers)))
    reference = logits_with(full)
    sets, gaps = [full], [0.0]
    kept = full
    while len(kept) > 1:
        trials = [(_prediction_gap(logits_with([j for j in kept if j != i]), reference), i) for i in kept]
        gap, drop = min(trials)
        kept = [j for j in kept if j != drop]
        sets.append(kept)
        gaps.append(gap)
    return sets[::-1], gaps[::-1]  # index n - 1: n layers


def _gaussian_pruned_energy(keep: float) -> float:
    """Share of a Gaussian matrix's squared norm that magnitude pruning to a ``keep`` share of its entries
    keeps: ``keep + 2 t phi(t)`` with ``t`` the threshold, ``P(|x| > t) = keep``."""
    if keep >= 1:
        return 1.0
    if keep <= 0:
        return 0.0
    nd = statistics.NormalDist()
    t = nd.inv_cdf(1 - keep / 2)
    return min(1.0, keep + 2 * t * nd.pdf(t))


def _spectrum(weight: torch.Tensor, stat: torch.Tensor | None) -> torch.Tensor:
    """Cumulative output-energy shares of the data-aware singular components of ``weight`` (out x in)."""
    w = weight.detach().double()
    if stat is not None:
        lower = whitening(stat)
        w = w * lower if lower.dim() == 1 else w @ lower
    s2 = torch.linalg.svdvals(w).pow(2)
    return torch.cat([s2.new_zeros(1), s2.cumsum(0)]) / s2.sum().clamp_min(1e-30)


class Proxy:
    """What a candidate keeps of the teacher (see the module docstring), from tables computed once."""

    def __init__(
        self,
        teacher: nn.Module,
        stats: dict[str, torch.Tensor] | None,
        batches: list[dict[str, torch.Tensor]],
    ):
        self.teacher = Teacher.of(teacher)
        prefix = teacher.base_model_prefix
        self.layer_sets, self.layer_gaps = layer_order(teacher, batches)
        heads, neurons = head_scores(teacher, stats), neuron_scores(teacher, stats)
        self.heads = [self._cumulative(s) for s in heads]
        self.neurons = [self._cumulative(s) for s in neurons]
        self.attention_energy = [float(s.sum()) for s in heads]
        self.ffn_energy = [float(s.sum()) for s in neurons]
        self.spectra: dict[str, torch.Tensor] = {}
        self.energy: dict[str, float] = {}
        for i in range(self.teacher.config.num_hidden_layers):
            for m in _MATRICES:
                name = f"{prefix}.encoder.layer.{i}.{m}"
                w = teacher.get_submodule(name).weight
                stat = (stats or {}).get(name)
                self.spectra[name] = _spectrum(w, stat)
                # E||W x||^2 over the inputs' mean squares (unit inputs without statistics)
                col = w.detach().double().pow(2).sum(0)
                if stat is not None:
                    col = col * (stat.diagonal() if stat.dim() == 2 else stat).double()
                self.energy[name] = float(col.sum())
        emb = f"{prefix}.embeddings.word_embeddings"
        table = teacher.get_submodule(emb).weight
        freq = (stats or {}).get(emb)
        self.spectra[emb] = _spectrum(table.T, freq)  # the table read as W^T acting on one-hot tokens
        self.prefix = prefix

    @staticmethod
    def _cumulative(scores: torch.Tensor) -> torch.Tensor:
        s = scores.double().sort(descending=True).values
        return torch.cat([s.new_zeros(1), s.cumsum(0)]) / s.sum().clamp_min(1e-30)

    @staticmethod
    def _svd_share(spectrum: torch.Tensor, rank: int, full: int, rows_cols_min: int) -> float:
        # A matrix that lost heads or neurons has a shorter spectrum; rank k of it is read as the same
        # share of the teacher matrix's.
        k = min(full, round(rank * full / max(1, rows_cols_min)))
        return float(spectrum[min(k, len(spectrum) - 1)])

    def _matrix_share(self, spectrum: torch.Tensor, m: hyb.MatrixPlan, teacher_min: int) -> float:
        if m.rank is None:  # dense, pruned only
            return _gaussian_pruned_energy(1 - m.sparsity)
        k = m.keep_rank or m.rank
        svd = self._svd_share(spectrum, k, teacher_min, min(m.rows, m.cols))
        prune = 1.0 if m.keep_rank else _gaussian_pruned_energy(1 - m.sparsity)
        return svd * prune

    def __call__(self, c: Candidate, base: CompressConfig) -> dict[str, float]:
        t = self.teacher
        kept = self.layer_sets[c.layers - 1]
        layer_part = math.exp(-self.layer_gaps[c.layers - 1])
        structure = []
        for i in kept:
            a, f = self.attention_energy[i], self.ffn_energy[i]
            structure.append(
                (a * float(self.heads[i][c.heads]) + f * float(self.neurons[i][c.ffn])) / (a + f)
            )
        plan = candidate_plan(t, c, base)
        num = den = 0.0
        emb_part = 1.0
        for name, m in plan.matrices.items():
            if name.endswith("word_embeddings"):
                cfg = t.config
                emb_part = self._matrix_share(self.spectra[name], m, min(cfg.vocab_size, cfg.hidden_size))
                continue
            layer = int(name.split(".encoder.layer.")[1].split(".")[0])
            mat = name.split(f".encoder.layer.{layer}.")[1]
            teacher_name = f"{self.prefix}.encoder.layer.{kept[layer]}.{mat}"
            w = self.energy[teacher_name]
            hidden = t.config.hidden_size
            full = t.config.intermediate_size if "intermediate" in mat or mat == "output.dense" else hidden
            num += w * self._matrix_share(self.spectra[teacher_name], m, min(hidden, full))
            den += w
        parts = {
            "layers": layer_part,
            "structure": sum(structure) / len(structure),
            "ranks": num / den if den else 1.0,
            "embedding": emb_part,
        }
        parts["proxy"] = parts["layers"] * parts["structure"] * parts["ranks"] * parts["embedding"]
        return parts


# ---------------------------------------------------------------------------------------------------------
# Timing candidates.


class CandidateTimer:
    """Exports candidates of a random-weight model shaped like the teacher and times them on one backend
    (latency does not depend on weight values)."""

    def __init__(self, teacher_config: Any, base: CompressConfig, workdir: Path, runs: int = 30):
        from transformers import BertForSequenceClassification

        from ladabert.bench.latency import random_feeds

        cfg = teacher_config.__class__.from_dict(teacher_config.to_dict())
        cfg.pruned_heads = {}
        torch.manual_seed(0)
        self.model = BertForSequenceClassification(cfg).eval()
        self.teacher = Teacher.of(self.model)
        self.base, self.workdir, self.runs = base, workdir, runs
        self.feeds = random_feeds(base.latency_batch, base.latency_seq, cfg.vocab_size, seed=0)
        self.seconds = 0.0
        self.measured: dict[Candidate, float] = {}  # every candidate timed so far
        self._reference: tuple[Callable, float] | None = None  # the teacher's shape: runner, reading

    def on(self, backend: str) -> CandidateTimer:
        """This timer on ``backend``: the same model, feeds and teacher reading, its own timings."""
        other = copy.copy(self)
        other.base = dataclasses.replace(self.base, latency_backend=backend)
        other.measured, other.seconds = {}, 0.0
        return other

    def student(self, c: Candidate) -> nn.Module:
        from ladabert.pipeline.build import build_student

        cfg = dataclasses.replace(candidate_config(self.teacher, c, self.base), data_aware=False)
        return build_student(self.model, cfg)

    def _timed(self, c: Candidate, how: Callable[[Callable], Any]) -> Any:
        t0 = time.perf_counter()
        name = f"c{c.layers}-{c.heads}-{c.ffn}-{c.ratio_factor:g}"
        b = self.base
        with torch.inference_mode():
            student = self.student(c)
        run, paths = graph_runner(student, name, b.latency_backend, b.latency_threads, self.workdir)
        out = how(run)
        for p in paths.values():
            p.unlink(missing_ok=True)
        self.seconds += time.perf_counter() - t0
        return out

    def reference(self) -> dict[str, Any]:
        """The teacher's own shape (every layer, head and FFN neuron, dense) timed by the budget protocol
        on the reference backend (``latency_reference_backend``, by default the budget's):
        ``{"ms", "blocks", "backend"}``, what a speedup over the teacher is measured against. From then on
        :meth:`confirm` times each candidate in turn with it. With ``fastest`` the shape is timed on every
        installed backend, in turn block by block, and the fastest reading is the reference (every
        backend's reading in ``backends_ms``)."""
        from ladabert.bench.latency import block_medians

        t0 = time.perf_counter()
        b = self.base
        backends = backends_of(b.reference_backend)
        runs = {
            k: graph_runner(
                self.model,
                "reference" if len(backends) == 1 else f"reference-{k}",
                k,
                b.latency_threads,
                self.workdir,
            )[0]
            for k in backends
        }
        timed = block_medians(runs, self.feeds)
        best = min(timed, key=lambda k: timed[k]["ms"])
        out = {**timed[best], "backend": best}
        if len(backends) > 1:
            out["backends_ms"] = {k: v["ms"] for k, v in timed.items()}
        self._reference = (runs[best], out["ms"])
        self.seconds += time.perf_counter() - t0
        return out

    def __call__(self, c: Candidate) -> float:
        """Median milliseconds of ``c``'s exported graph on the budget's backend (a short timing)."""
        from ladabert.bench.latency import median_ms

        ms = self._timed(c, lambda run: median_ms(run, self.feeds, self.runs))
        self.measured[c] = ms
        return ms

    def confirm(self, c: Candidate) -> dict[str, Any]:
        """``c`` timed by the budget protocol (:func:`ladabert.bench.latency.block_medians`), the one the
        bundle is checked by after export: ``{"ms", "blocks"}``.

        After :meth:`reference`, the teacher's shape takes turns with ``c`` block by block and ``ms`` is
        ``c``'s latency at the machine's speed of the reference reading (its reading divided by the
        speedup measured now, ``speedup``): a speedup target holds through the machine's drift."""
        from ladabert.bench.latency import block_medians, block_speedup

        if self._reference is None:
            out = self._timed(c, lambda run: block_medians({"c": run}, self.feeds)["c"])
        else:
            ref_run, ref_ms = self._reference
            timed = self._timed(c, lambda run: block_medians({"c": run, "reference": ref_run}, self.feeds))
            speedup = block_speedup(timed["c"]["blocks"], timed["reference"]["blocks"])
            out = {
                "ms": ref_ms / speedup,
                "blocks": timed["c"]["blocks"],
                "reference_blocks": timed["reference"]["blocks"],
                "speedup": speedup,
            }
        self.measured[c] = out["ms"]
        return out


REFERENCE_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "num_labels",
)


def reference_shape(teacher_config: Any) -> dict[str, int]:
    """What rebuilds a random-weight model of the teacher's latency (:func:`reference_model`)."""
    return {k: int(getattr(teacher_config, k)) for k in REFERENCE_KEYS}


def reference_model(shape: dict[str, int]) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(**shape)).eval()


def graph_runner(
    model: nn.Module, name: str, backend: str, threads: int, workdir: Path
) -> tuple[Callable, dict[str, Path]]:
    """A runner of ``model``'s graph, exported through ladabert's export and rewrites into ``workdir``
    as ``name``, on ``backend``; and the ONNX files it reads."""
    from ladabert.bench.latency import calibration_feeds, export_graphs, onnx_runner

    with torch.inference_mode():
        paths = export_graphs(model, workdir, name, int8=backend == "ort-int8")
    calib = calibration_feeds(model.config.vocab_size, model.config.max_position_embeddings)
    return onnx_runner(paths, backend, threads, calib), paths


def installed_backends() -> tuple[str, ...]:
    """The budget backends this installation can time (OpenVINO's need the ``openvino`` extra)."""
    from ladabert.export.runtime import openvino_available

    ov = openvino_available()
    return tuple(b for b in GATE_BACKENDS if ov or not b.startswith("openvino"))


def backends_of(choice: str) -> tuple[str, ...]:
    """The backends a target's backend setting names: every installed one for ``fastest``."""
    return installed_backends() if choice == FASTEST else (choice,)


def _where(base: CompressConfig) -> str:
    backend = "every installed backend" if base.latency_backend == FASTEST else base.latency_backend
    return f"{backend} at batch {base.latency_batch} x seq {base.latency_seq}"


def check_budget_reachable(
    timer: CandidateTimer, base: CompressConfig, reference: dict[str, Any] | None = None
) -> float:
    """The latency of the smallest student; raises when even it misses the budget (margin included).
    With ``reference`` (``speedup`` and the teacher's ``reference_ms``) the budget is the teacher's latency
    over the speedup asked, and the refusal speaks of speedups."""
    return reachable({base.latency_backend: timer}, base, reference)[base.latency_backend]


def reachable(
    timers: dict[str, CandidateTimer], base: CompressConfig, reference: dict[str, Any] | None = None
) -> dict[str, float]:
    """Per backend (a timer each), the latency of the smallest student, for the backends where it meets
    the budget (margin included); raises when it meets it on none, naming the fastest reading."""
    low = smallest(next(iter(timers.values())).teacher, base)
    readings = {b: min(timer(c) for c in low) for b, timer in timers.items()}
    target = base.latency_budget * (1 - base.latency_margin)
    within = {b: ms for b, ms in readings.items() if ms <= target}
    if not within:
        quickest = min(readings, key=readings.get)
        fastest = readings[quickest]
        n = low[0].layers
        reference_ms = reference["reference_ms"] if reference else None
        what = (
            f"a speedup of {reference['speedup']:g} over the teacher ({reference_ms:.2f} ms)"
            if reference
            else f"latency budget {base.latency_budget:g} ms"
        )
        most = (
            f"the speedup can be at most {reference_ms * (1 - base.latency_margin) / fastest:.2f}"
            if reference
            else f"the budget must be at least {fastest / (1 - base.latency_margin):.2f} ms"
        )
        on = f" (on {quickest}, the fastest of them)" if len(readings) > 1 else ""
        raise LadaBertError(
            f"{what} is out of reach on {_where(base)}: the fastest student of this teacher ({n} "
            f"layer{'s' if n > 1 else ''}, 1 head) measures {fastest:.2f} ms here{on}; with the "
            f"{base.latency_margin:g} margin {most}"
            f"{', or use a faster --backend' if len(readings) == 1 else ''}"
            f"{' or fewer --keep-layers' if base.keep_layers is not None else ''}"
        )
    return within


def at_ratio(t: Teacher, base: CompressConfig, ratio: float) -> list[Candidate]:
    """The structures whose compression ratio can be exactly ``ratio`` (ratio factor ``ratio`` over the
    structure's own): the grid of a search for the fastest-and-best student of a given size."""
    out = []
    for c in {(c.layers, c.heads, c.ffn) for c in candidate_grid(t)}:
        factor = ratio * structure_params(t, Candidate(*c, 1.0)) / t.params
        if factor >= 1:
            cand = Candidate(*c, round(factor, 6))
            try:
                candidate_plan(t, cand, base)
            except LadaBertError:
                continue
            out.append(cand)
    return sorted(out)


def search(
    proxy: Proxy,
    timer: CandidateTimer,
    base: CompressConfig,
    fastest_ms: float | None = None,
    progress: bool = True,
    grid: list[Candidate] | None = None,
) -> dict[str, Any]:
    """Pick the candidate with the best proxy whose latency is within the budget (see the module
    docstring). Returns the search record; ``record["config"]`` is the compression config to run.
    ``grid`` replaces the default candidates (:func:`feasible`), e.g. :func:`at_ratio`."""
    from tqdm.auto import tqdm

    t = timer.teacher
    target = base.latency_budget * (1 - base.latency_margin)
    grid = grid if grid is not None else feasible(t, base)
    x = np.stack([features(t, c, base) for c in grid])
    scores = [proxy(c, base) for c in grid]
    bar = tqdm(
        total=base.search_timings,
        desc=f"latency search ({base.latency_backend})",
        leave=False,
        disable=not progress,
    )

    def time_one(i: int) -> None:
        measured[i] = timer(grid[i])
        bar.update()

    measured = {grid.index(c): ms for c, ms in timer.measured.items() if c in grid}

    # An initial design spread over the work: the largest shape and shapes at quantiles of the GEMM work.
    order = np.argsort(x[:, 4])
    design = [grid.index(largest(t))] if largest(t) in grid else []
    design += [int(order[int(q * (len(grid) - 1))]) for q in (0.1, 0.3, 0.5, 0.7)]
    for i in design:
        if i not in measured and len(measured) < base.search_timings:
            time_one(i)
    coef = np.zeros(x.shape[1])
    # The short timings pick the shape; the budget protocol has the last word on it. A pick that the
    # protocol puts above the target takes that latency and the search goes on.
    confirmed: dict[int, dict[str, Any]] = {}
    while True:
        while True:
            idx = list(measured)
            coef = fit_latency(x[idx], np.array([measured[i] for i in idx]))
            predicted = x @ coef
            ok = [
                i
                for i in range(len(grid))
                if (measured[i] <= target if i in measured else predicted[i] <= target)
            ]
            if not ok:
                break
            best = max(ok, key=lambda i: (scores[i]["proxy"], -predicted[i]))
            if best in measured or len(measured) >= base.search_timings:
                break
            time_one(best)
        within = [i for i in measured if measured[i] <= target]
        if not within:
            bar.close()
            raise LadaBertError(
                f"no candidate shape measured within {target:.2f} ms on {_where(base)} ({len(measured)} "
                "timed); ask for a larger budget or a smaller speedup, or give more --search-timings"
            )
        best = max(within, key=lambda i: scores[i]["proxy"])
        if best in confirmed:
            break
        confirmed[best] = timer.confirm(grid[best])
        measured[best] = confirmed[best]["ms"]
    bar.close()
    chosen = grid[best]
    return {
        "budget_ms": base.latency_budget,
        "backend": base.latency_backend,
        "batch": base.latency_batch,
        "seq": base.latency_seq,
        "threads": base.latency_threads,
        "margin": base.latency_margin,
        "target_ms": target,
        "chosen": chosen.to_dict(),
        "kept_layers": proxy.layer_sets[chosen.layers - 1],
        "measured_ms": measured[best],
        "blocks_ms": confirmed[best]["blocks"],
        "measured_speedup": confirmed[best].get("speedup"),
        "confirmed": [{**grid[i].to_dict(), **confirmed[i]} for i in confirmed],
        "predicted_ms": float(predicted[best]),
        "proxy": scores[best],
        "fastest_ms": fastest_ms,
        "candidates": len(grid),
        "timed": [
            {
                **grid[i].to_dict(),
                "ms": measured[i],
                "predicted_ms": float(predicted[i]),
                "proxy": scores[i]["proxy"],
            }
            for i in sorted(measured, key=lambda i: measured[i])
        ],
        "latency_model": {
            "features": ["1", "layers", "heads", "ffn/64", "macs_M", "chains"],
            "coef": coef.tolist(),
        },
        "search_s": round(timer.seconds, 1),
        "config": candidate_config(t, chosen, base),
    }


def search_backends(
    proxy: Proxy,
    timers: dict[str, CandidateTimer],
    base: CompressConfig,
    fastest: dict[str, float],
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`search` on each backend of ``timers`` that :func:`reachable` kept (``fastest``), and the
    record of the best pick: the highest proxy, then the lower confirmed latency (the same shape is often
    best on several). With more than one backend, ``backends`` lists each one's pick or why it had none,
    and ``search_s`` is the time of all of them."""
    records: dict[str, dict[str, Any]] = {}
    missed: dict[str, str] = {}
    for b, timer in timers.items():
        if b not in fastest:
            missed[b] = "even the smallest student misses the target"
            continue
        try:
            records[b] = search(
                proxy, timer, dataclasses.replace(base, latency_backend=b), fastest[b], progress
            )
        except LadaBertError as e:
            missed[b] = str(e)
    if not records:
        raise LadaBertError(next(iter(missed.values())))
    best = max(records, key=lambda b: (round(records[b]["proxy"]["proxy"], 9), -records[b]["measured_ms"]))
    record = records[best]
    if len(timers) > 1:
        record["backends"] = [
            {"backend": b, **({"error": missed[b]} if b in missed else _pick(records[b]))} for b in timers
        ]
        record["search_s"] = round(sum(t.seconds for t in timers.values()), 1)
    return record


def _pick(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "chosen": record["chosen"],
        "proxy": record["proxy"]["proxy"],
        "measured_ms": record["measured_ms"],
        "search_s": record["search_s"],
    }


def calibration_batches(
    train_ds: Any, collator: Any, samples: int, seed: int
) -> list[dict[str, torch.Tensor]]:
    """Up to ``samples`` training examples (drawn with ``seed``) in batches of 32, without labels."""
    n = min(samples, len(train_ds))
    order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed + 1))[:n].tolist()
    batches = []
    for j in range(0, n, 32):
        b = collator([train_ds[i] for i in order[j : j + 32]])
        batches.append({k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
    return batches
