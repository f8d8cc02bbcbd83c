"""Block-sparse linear: ``y = act(x @ W^T + b)`` where ``W`` keeps only some ``b x b`` blocks.

For layers that stayed dense and were pruned with the ``block`` pattern. ``W`` is stored in BSR form,
built once at load time (:func:`to_bsr`): for each block row of ``W`` (``b`` output features) the column
indices of its non-zero blocks and the blocks themselves. Each program computes a ``BLOCK_M x b`` output
tile and loops only over that block row's non-zero blocks, so zero blocks are neither loaded nor
multiplied.

Reference: :func:`torch_block_sparse_linear` (dense ``F.linear`` of the masked weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


def torch_block_sparse_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: bool = False
) -> torch.Tensor:
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


@dataclass
class BSR:
    """Block-sparse rows of an ``out x in`` matrix (``out`` and ``in`` multiples of ``block``)."""

    blocks: torch.Tensor  # (nnz_blocks, block, block)
    col_idx: torch.Tensor  # (nnz_blocks,) int32 block column of each block
    row_ptr: torch.Tensor  # (out / block + 1,) int32 offsets into blocks per block row
    shape: tuple[int, int]
    block: int

    @property
    def density(self) -> float:
        return self.blocks.shape[0] / ((self.shape[0] // self.block) * (self.shape[1] // self.block))


def to_bsr(weight: torch.Tensor, block: int) -> BSR:
    """Convert a (block-pruned) dense weight to :class:`BSR`, keeping blocks with any non-zero."""
    out_f, in_f = weight.shape
    if out_f % block or in_f % block:
        raise ValueError(f"weight {tuple(weight.shape)} is not a whole number of {block}x{block} blocks")
    tiles = weight.reshape(out_f // block, block, in_f // block, block).permute(0, 2, 1, 3)
    live = (tiles != 0).any(dim=(2, 3))
    rows, cols = live.nonzero(as_tuple=True)
    counts = live.sum(1)
    row_ptr = torch.zeros(out_f // block + 1, dtype=torch.int32, device=weight.device)
    row_ptr[1:] = counts.cumsum(0)
    return BSR(
        tiles[rows, cols].contiguous(), cols.to(torch.int32).contiguous(), row_ptr, (out_f, in_f), block
    )


if triton is not None:

    @triton.jit
    def _bsr_linear_kernel(
        x_ptr,  # (M, K) activations
        blocks_ptr,  # (nnz, BS, BS) non-zero blocks of W, each (out rows, in cols)
        col_ptr,  # (nnz,) block column of each block
        rowptr_ptr,  # (N / BS + 1,) block offsets per block row
        b_ptr,  # (N,) bias (unused when HAS_BIAS is false)
        y_ptr,  # (M, N) output
        M,
        N,
        stride_xm,
        stride_xk,
        stride_ym,
        stride_yn,
        HAS_BIAS: tl.constexpr,
        GELU: tl.constexpr,
        FP32_IEEE: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BS: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        brow = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_b = tl.arange(0, BS)
        m_ok = offs_m < M
        acc = tl.zeros((BLOCK_M, BS), dtype=tl.float32)
        start = tl.load(rowptr_ptr + brow)
        end = tl.load(rowptr_ptr + brow + 1)
        for i in range(start, end):
            col = tl.load(col_ptr + i)
            offs_k = col * BS + offs_b
            x = tl.load(
                x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                mask=m_ok[:, None],
                other=0.0,
            )
            # block (out, in) read transposed as (in, out)
            wt = tl.load(blocks_ptr + i * BS * BS + offs_b[None, :] * BS + offs_b[:, None])
            if FP32_IEEE:
                acc += tl.dot(x, wt, input_precision="ieee")
            else:
                acc += tl.dot(x, wt)
        offs_n = brow * BS + offs_b
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n).to(tl.float32)[None, :]
        if GELU:
            acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
        tl.store(
            y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
            acc.to(y_ptr.dtype.element_ty),
            mask=m_ok[:, None],
        )


def block_sparse_linear(
    x: torch.Tensor, bsr: BSR, bias: torch.Tensor | None = None, gelu: bool = False, block_m: int = 64
) -> torch.Tensor:
    """``act(x @ W^T + b)`` for ``W`` in :class:`BSR` form; ``x`` of shape (..., in)."""
    if triton is None:
        raise RuntimeError("triton is not installed; use backend='torch'")
    n, k = bsr.shape
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} features, the weight expects {k}")
    if x.dtype != bsr.blocks.dtype:
        raise ValueError(f"x ({x.dtype}) and the weight ({bsr.blocks.dtype}) must share a dtype")
    if bsr.block < 16 or bsr.block & (bsr.block - 1):
        raise ValueError(f"block size must be a power of two >= 16, got {bsr.block}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(m, block_m), n // bsr.block)
    _bsr_linear_kernel[grid](
        x2,
        bsr.blocks,
        bsr.col_idx,
        bsr.row_ptr,
        bias if bias is not None else y,
        y,
        m,
        n,
        x2.stride(0),
        x2.stride(1),
        y.stride(0),
        y.stride(1),
        HAS_BIAS=bias is not None,
        GELU=gelu,
        FP32_IEEE=x.dtype == torch.float32,
        BLOCK_M=block_m,
        BS=bsr.block,
    )
    return y.reshape(*lead, n)
