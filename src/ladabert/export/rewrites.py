"""Graph rewrites of exported models: pure ``ModelProto -> ModelProto`` functions.

None of them mutates its input. Each is tested by running the graph before and after in an ONNX Runtime
CPU session and comparing outputs.

- :func:`shrink_factors`: drop rank components that pruning zeroed entirely (smaller k).
- :func:`merge_factors`: multiply ``U V`` back into one dense MatMul where that is cheaper.
- :func:`align_factors`: zero-pad ranks to a multiple of 32 (the depth of a bf16 AMX tile) where that is cheap.
- :func:`fuse`: ONNX Runtime's transformer optimizer (Attention, SkipLayerNorm, BiasGelu, ...).
- :func:`count_ops`, :func:`fused_attention_count`: what a graph holds.

:data:`REWRITES` names them for :func:`apply_rewrites`, which export and the latency benchmark both use,
so that a benchmarked graph is the graph a bundle ships.

A *factor chain* is a MatMul whose weight is an initializer, feeding either one MatMul with an
initializer weight (``x @ V^T @ U^T``) or a Split whose every output feeds one such MatMul (the Q/K/V
first factors concatenated into one MatMul by the exporter).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, helper, numpy_helper

ATTENTION_OPS = ("Attention", "MultiHeadAttention")


def count_ops(model: ModelProto) -> dict[str, int]:
    """Node count per op type, most frequent first."""
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def fused_attention_count(model: ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type in ATTENTION_OPS)


def _copy(model: ModelProto) -> ModelProto:
    out = ModelProto()
    out.CopyFrom(model)
    return out


@dataclass
class _Chain:
    first: NodeProto  # MatMul(x, W1), W1: in x K
    split: NodeProto | None  # Split of the first MatMul's output, or None
    seconds: list[NodeProto]  # MatMul(h_i, W2_i), W2_i: k_i x out_i
    sizes: list[int]  # k_i


def _consumers(model: ModelProto) -> dict[str, list[NodeProto]]:
    out: dict[str, list[NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _find_chains(model: ModelProto) -> list[_Chain]:
    inits = {t.name: t for t in model.graph.initializer}
    graph_outputs = {o.name for o in model.graph.output}
    cons = _consumers(model)
    shared = {name for name, users in cons.items() if name in inits and len(users) > 1}
    constants = {name: numpy_helper.to_array(t) for name, t in inits.items() if len(t.dims) <= 1}
    for n in model.graph.node:  # Split sizes may also come from Constant nodes
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            constants[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    def weight_matmul(n: NodeProto) -> bool:
        return (
            n.op_type == "MatMul"
            and len(n.input) == 2
            and n.input[1] in inits
            and n.input[1] not in shared
            and len(inits[n.input[1]].dims) == 2
        )

    chains = []
    for n in model.graph.node:
        if not weight_matmul(n) or n.output[0] in graph_outputs:
            continue
        users = cons.get(n.output[0], [])
        if len(users) != 1:
            continue
        nxt = users[0]
        if weight_matmul(nxt) and nxt.input[0] == n.output[0]:
            chains.append(_Chain(n, None, [nxt], [inits[n.input[1]].dims[1]]))
        elif nxt.op_type == "Split" and len(nxt.input) > 1 and nxt.input[1] in constants:
            outs = [cons.get(o, []) for o in nxt.output]
            if all(
                len(u) == 1 and weight_matmul(u[0]) and u[0].input[0] == o for u, o in zip(outs, nxt.output)
            ):
                sizes = constants[nxt.input[1]].tolist()
                axis = next((a.i for a in nxt.attribute if a.name == "axis"), 0)
                if axis in (-1, 2):
                    chains.append(_Chain(n, nxt, [u[0] for u in outs], sizes))
    return chains


def _set_init(model: ModelProto, name: str, array: np.ndarray) -> None:
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, name))
            return
    raise KeyError(name)


def _set_split_sizes(model: ModelProto, split: NodeProto, sizes: list[int]) -> None:
    """Give ``split`` its own sizes initializer (the exporter often shares one between layers)."""
    name = f"{split.output[0]}_sizes"
    array = np.asarray(sizes, dtype=np.int64)
    if any(t.name == name for t in model.graph.initializer):
        _set_init(model, name, array)
    else:
        model.graph.initializer.append(numpy_helper.from_array(array, name))
    split.input[1] = name


def _array(model: ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def shrink_factors(model: ModelProto) -> ModelProto:
    """Drop rank components whose first-factor column or second-factor row is entirely zero."""
    model = _copy(model)
    for ch in _find_chains(model):
        w1 = _array(model, ch.first.input[1])
        keep_cols, new_sizes = [], []
        offset = 0
        for size, second in zip(ch.sizes, ch.seconds):
            w2 = _array(model, second.input[1])
            cols = np.arange(offset, offset + size)
            active = (w1[:, cols] != 0).any(0) & (w2 != 0).any(1)
            if not active.any():
                active[0] = True  # keep one (zero) component so that shapes stay valid
            keep_cols.append(cols[active])
            new_sizes.append(int(active.sum()))
            if not active.all():
                _set_init(model, second.input[1], np.ascontiguousarray(w2[active]))
            offset += size
        if sum(new_sizes) == w1.shape[1]:
            continue
        _set_init(model, ch.first.input[1], np.ascontiguousarray(w1[:, np.concatenate(keep_cols)]))
        if ch.split is not None:
            # Split-size initializers are often shared between layers: give this Split its own.
            _set_split_sizes(model, ch.split, new_sizes)
    _drop_unused_initializers(model)
    return model


def merge_factors(
    model: ModelProto, policy: str = "break-even", min_rank_fraction: float = 1.0
) -> ModelProto:
    """Multiply factor chains back into dense MatMuls where that is cheaper.

    Args:
        policy: ``break-even`` merges a chain when its factors hold at least ``min_rank_fraction`` times
            the dense matrix's parameters (and so FLOPs); ``all`` merges every chain; ``none`` none.
        min_rank_fraction: the threshold of ``break-even`` (1.0: merge when factors are not smaller).
    """
    if policy not in ("break-even", "all", "none"):
        raise ValueError(f"policy must be 'break-even', 'all' or 'none', got {policy!r}")
    model = _copy(model)
    if policy == "none":
        return model
    remove: list[NodeProto] = []
    for ch in _find_chains(model):
        w1 = _array(model, ch.first.input[1])
        w2s = [_array(model, s.input[1]) for s in ch.seconds]
        factor_params = w1.size + sum(w.size for w in w2s)
        dense_params = w1.shape[0] * sum(w.shape[1] for w in w2s)
        if policy == "break-even" and factor_params < min_rank_fraction * dense_params:
            continue
        offset = 0
        for size, second, w2 in zip(ch.sizes, ch.seconds, w2s):
            dense = (w1[:, offset : offset + size].astype(np.float64) @ w2.astype(np.float64)).astype(
                w2.dtype
            )
            _set_init(model, second.input[1], dense)
            second.input[0] = ch.first.input[0]
            offset += size
        remove += [ch.first] + ([ch.split] if ch.split is not None else [])
    if remove:
        ids = {id(n) for n in remove}
        kept = [n for n in model.graph.node if id(n) not in ids]
        del model.graph.node[:]
        model.graph.node.extend(kept)
        _drop_unused_initializers(model)
    return model


def align_factors(model: ModelProto, multiple: int = 32, max_growth: float = 0.25) -> ModelProto:
    """Zero-pad the rank of factor chains to a multiple of ``multiple`` where that adds at most
    ``max_growth`` of the rank; outputs do not change.

    The padded components are zero columns of the first factor and zero rows of the second, so the graph
    computes the same numbers. Why: OpenVINO's AMX kernels multiply bf16 in tiles 32 deep, and a rank such
    as 29 or 81 takes a slower remainder path. Measured interleaved in one process (batch 1, sequence 128,
    2 threads, static shapes), BERT-base-shaped students:

    - narrow 10x (ranks 29 and 81, padded to 32 and 96): OpenVINO bf16 faster in each of five A/B runs,
      by 2-5% in median latency; ONNX Runtime fp32 +2%, int8 -1% (within noise);
    - plain 10x (ranks 35 and 56), padding all to 64: ONNX Runtime fp32 10% slower and OpenVINO bf16 3%
      slower: 35 -> 64 nearly doubles that work. Hence ``max_growth``: 35 stays, 56 becomes 64.

    ``multiple=1`` returns an unchanged copy.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if max_growth < 0:
        raise ValueError(f"max_growth must be >= 0, got {max_growth}")

    def target(k: int) -> int:
        up = -(-k // multiple) * multiple
        return up if up - k <= max_growth * k else k

    model = _copy(model)
    if multiple == 1:
        return model
    for ch in _find_chains(model):
        w1 = _array(model, ch.first.input[1])
        padded = [target(k) for k in ch.sizes]
        if padded == list(ch.sizes):
            continue
        cols, offset = [], 0
        for size, k, second in zip(ch.sizes, padded, ch.seconds):
            w2 = _array(model, second.input[1])
            block = np.zeros((w1.shape[0], k), dtype=w1.dtype)
            block[:, :size] = w1[:, offset : offset + size]
            cols.append(block)
            rows = np.zeros((k, w2.shape[1]), dtype=w2.dtype)
            rows[:size] = w2
            _set_init(model, second.input[1], rows)
            offset += size
        _set_init(model, ch.first.input[1], np.ascontiguousarray(np.concatenate(cols, axis=1)))
        if ch.split is not None:
            _set_split_sizes(model, ch.split, padded)
    _drop_unused_initializers(model)
    return model


def factor_ranks(model: ModelProto) -> list[int]:
    """The rank of every factor chain's projection, in graph order (Q/K/V groups give one per projection)."""
    return [k for ch in _find_chains(model) for k in ch.sizes]


def _drop_unused_initializers(model: ModelProto) -> None:
    """Remove initializers and Constant nodes that nothing reads any more."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    nodes = [n for n in model.graph.node if n.op_type != "Constant" or n.output[0] in used]
    if len(nodes) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(nodes)


def attention_shape(config: Any) -> tuple[int, int]:
    """``(num_heads, hidden_size)`` to pass to :func:`fuse` for a model config: ``(0, 0)`` (ONNX Runtime reads
    them from each attention subgraph) when heads were removed, since layers then differ."""
    if getattr(config, "pruned_heads", None):
        return 0, 0
    return config.num_attention_heads, config.hidden_size


def fuse(
    model: ModelProto, num_heads: int, hidden_size: int, skip_layer_norm: bool | None = None
) -> ModelProto:
    """ONNX Runtime's transformer optimizer for BERT (graph fusions only; ORT applies its basic
    optimizations itself when a session is created).

    Dense BERT graphs get Attention, EmbedLayerNormalization, SkipLayerNormalization and BiasGelu; the
    factorized students already carry MultiHeadAttention from the exporter and gain the rest.

    ``skip_layer_norm=None`` (auto) fuses Add + LayerNormalization into SkipLayerNormalization for dense
    graphs only: on factorized students the fused node is slower on ORT CPU than the Add and
    LayerNormalization it replaces (``docs/method.md``, Export).
    """
    import logging

    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    # With heads removed the attention subgraphs are read with (0, 0); the fusion then compares the
    # attention width it reads with the Q/K/V input width and warns, though it takes every size from the
    # weights (the export validates the fused graph's outputs).
    logging.getLogger("fusion_attention").setLevel(logging.ERROR)
    if skip_layer_norm is None:
        # Our exporter emits MultiHeadAttention only for factorized Q/K/V: it marks a student graph.
        skip_layer_norm = not any(n.op_type == "MultiHeadAttention" for n in model.graph.node)
    opts = FusionOptions("bert")
    opts.enable_skip_layer_norm = skip_layer_norm
    optimized = optimize_model(
        _copy(model),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        optimization_options=opts,
        opt_level=0,
    )
    return _with_domain_imports(optimized.model)


def _with_domain_imports(model: ModelProto) -> ModelProto:
    """Declare every op domain the nodes use (the optimizer adds contrib ops without always doing so)."""
    have = {o.domain for o in model.opset_import}
    for domain in sorted({n.domain for n in model.graph.node} - have - {"", "ai.onnx"}):
        model.opset_import.append(helper.make_opsetid(domain, 1))
    return model


def quantize_int8(
    model: ModelProto, per_channel: bool = True, reduce_range: bool = False, weight_type: str = "QInt8"
) -> ModelProto:
    """Dynamic int8 quantization of MatMul/Gemm/Attention weights (activations quantized at run time)."""
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, str(src))
        quantize_dynamic(
            str(src),
            str(dst),
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=getattr(QuantType, weight_type),
            op_types_to_quantize=["MatMul", "Gemm", "Attention"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return _with_domain_imports(onnx.load(str(dst)))


def convert_fp16(model: ModelProto) -> ModelProto:
    """Float16 weights and compute for the CUDA execution provider, keeping fp32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(_copy(model), keep_io_types=True)


def make_node_summary(model: ModelProto) -> dict[str, object]:
    return {
        "nodes": len(model.graph.node),
        "ops": count_ops(model),
        "fused_attention": fused_attention_count(model),
    }


__all__ = [
    "count_ops",
    "fused_attention_count",
    "shrink_factors",
    "merge_factors",
    "align_factors",
    "factor_ranks",
    "fuse",
    "quantize_int8",
    "convert_fp16",
    "make_node_summary",
    "helper",
]


@dataclass(frozen=True)
class RewriteSettings:
    """What the rewrites need to know: the export settings and the model's attention shape."""

    num_heads: int = 0
    hidden_size: int = 0
    merge: str = "break-even"
    align: int = 32
    fuse: bool = True
    skip_layer_norm: bool | None = None

    @classmethod
    def for_model(cls, model_config: Any, **settings: Any) -> RewriteSettings:
        heads, hidden = attention_shape(model_config)
        return cls(heads, hidden, **settings)


REWRITES: dict[str, Any] = {
    "shrink": lambda g, s: shrink_factors(g),
    "merge": lambda g, s: merge_factors(g, s.merge),
    "align": lambda g, s: align_factors(g, s.align),
    "fuse": lambda g, s: fuse(g, s.num_heads, s.hidden_size, s.skip_layer_norm) if s.fuse else g,
}


def apply_rewrites(
    model: ModelProto, names: Any, settings: RewriteSettings, on_stage: Any = None
) -> ModelProto:
    """Apply the rewrites ``names`` (keys of :data:`REWRITES`) in order; ``on_stage(name, graph)`` sees the
    graph after each one."""
    unknown = [n for n in names if n not in REWRITES]
    if unknown:
        raise ValueError(f"unknown rewrite(s) {unknown}; choose from {', '.join(REWRITES)}")
    for name in names:
        model = REWRITES[name](model, settings)
        if on_stage is not None:
            on_stage(name, model)
    return model
