"""Fused low-rank linear: ``y = act((x @ V^T) @ U^T + b)`` in one Triton kernel.

Each program owns ``BLOCK_M`` rows of ``x``. It first computes the ``BLOCK_M x k`` intermediate
``t = x @ V^T`` (fp32 accumulation) and keeps it in registers, then sweeps the output columns in
``BLOCK_N`` tiles, multiplying ``t`` by the matching tile of ``U^T`` and applying bias and GELU before a
single store. ``x`` is read once and ``y`` written once, which is what a memory-bound rank-k layer is
worth: at k = 61 a 768 -> 3072 layer moves about as many bytes as it does FLOPs / 100.

With block-sparse factors (the ``block`` pruning pattern) the per-block non-zero maps are built once
(:func:`block_map`); zero ``b x b`` blocks of ``V`` and ``U`` are not loaded, and K chunks of ``V`` and N tiles
of ``U`` whose blocks are all zero are skipped entirely.

Reference: :func:`torch_lowrank_linear`. Run under ``TRITON_INTERPRET=1`` for CPU correctness tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # triton is optional (Linux x86-64 only)
    triton = None

MAX_RANK = 256


def torch_lowrank_linear(
    x: torch.Tensor, v: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None, gelu: bool = False
) -> torch.Tensor:
    """Reference: two GEMMs, bias, optional exact (erf) GELU, computed in the inputs' dtype."""
    y = F.linear(F.linear(x, v), u, bias)
    return F.gelu(y) if gelu else y


def block_map(weight: torch.Tensor, block: int) -> torch.Tensor:
    """``int8`` map of which ``block x block`` tiles of ``weight`` hold any non-zero (ragged edges padded)."""
    rows, cols = weight.shape
    tr, tc = triton.cdiv(rows, block) if triton else -(-rows // block), -(-cols // block)
    padded = torch.zeros(tr * block, tc * block, dtype=torch.bool, device=weight.device)
    padded[:rows, :cols] = weight != 0
    return padded.reshape(tr, block, tc, block).any(dim=(1, 3)).to(torch.int8).contiguous()


if triton is not None:

    @triton.jit
    def _fused_lowrank_kernel(
        x_ptr,  # (M, K) activations
        v_ptr,  # (R, K) first factor V
        u_ptr,  # (N, R) second factor U
        b_ptr,  # (N,) bias (unused when HAS_BIAS is false)
        y_ptr,  # (M, N) output
        vmap_ptr,  # (cdiv(R, BS), cdiv(K, BS)) int8 non-zero block map of V (unused unless BLOCK_SPARSE)
        umap_ptr,  # (cdiv(N, BS), cdiv(R, BS)) int8 non-zero block map of U (unused unless BLOCK_SPARSE)
        M,
        N,
        K,
        R,
        stride_xm,
        stride_xk,
        stride_vr,
        stride_vk,
        stride_un,
        stride_ur,
        stride_ym,
        stride_yn,
        stride_vmap,
        stride_umap,
        HAS_BIAS: tl.constexpr,
        GELU: tl.constexpr,
        BLOCK_SPARSE: tl.constexpr,
        BS: tl.constexpr,
        FP32_IEEE: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        BLOCK_R: tl.constexpr,
    ):
        pid = tl.program_id(0)
        offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_r = tl.arange(0, BLOCK_R)
        m_ok = offs_m < M
        r_ok = offs_r < R
        # Phase 1: t = x @ V^T, kept in registers.
        t = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < K
            v_ok = r_ok[None, :] & k_ok[:, None]
            run = True
            if BLOCK_SPARSE:  # BLOCK_K == BS: one block column of V per chunk
                live = tl.load(vmap_ptr + (offs_r // BS) * stride_vmap + k0 // BS, mask=r_ok, other=0)
                v_ok = v_ok & (live[None, :] != 0)
                run = tl.max(live, axis=0) != 0
            if run:
                x = tl.load(
                    x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=m_ok[:, None] & k_ok[None, :],
                    other=0.0,
                )
                vt = tl.load(
                    v_ptr + offs_r[None, :] * stride_vr + offs_k[:, None] * stride_vk, mask=v_ok, other=0.0
                )
                if FP32_IEEE:
                    t += tl.dot(x, vt, input_precision="ieee")
                else:
                    t += tl.dot(x, vt)
        t_in = t.to(u_ptr.dtype.element_ty)
        # Phase 2: y = t @ U^T (+ bias, GELU), one N tile at a time.
        for n0 in range(0, N, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            n_ok = offs_n < N
            u_ok = r_ok[:, None] & n_ok[None, :]
            run = True
            if BLOCK_SPARSE:
                live = tl.load(
                    umap_ptr + (offs_n[None, :] // BS) * stride_umap + offs_r[:, None] // BS,
                    mask=u_ok,
                    other=0,
                )
                u_ok = u_ok & (live != 0)
                run = tl.max(tl.max(live, axis=1), axis=0) != 0
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            if run:
                ut = tl.load(
                    u_ptr + offs_n[None, :] * stride_un + offs_r[:, None] * stride_ur, mask=u_ok, other=0.0
                )
                if FP32_IEEE:
                    acc = tl.dot(t_in, ut, input_precision="ieee")
                else:
                    acc = tl.dot(t_in, ut)
            if HAS_BIAS:
                acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
            if GELU:
                acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
            tl.store(
                y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
                acc.to(y_ptr.dtype.element_ty),
                mask=m_ok[:, None] & n_ok[None, :],
            )


def fused_lowrank_linear(
    x: torch.Tensor,
    v: torch.Tensor,
    u: torch.Tensor,
    bias: torch.Tensor | None = None,
    gelu: bool = False,
    vmap: torch.Tensor | None = None,
    umap: torch.Tensor | None = None,
    block: int = 16,
    block_m: int = 64,
    block_n: int = 64,
    block_k: int = 32,
) -> torch.Tensor:
    """Launch the fused kernel on ``x`` of shape (..., K) with ``V`` (R, K), ``U`` (N, R).

    Args:
        vmap, umap: block maps from :func:`block_map` for block-sparse factors (both or neither).
        block: their block size (a power of two >= 16).

    Raises:
        ValueError: on shape, dtype, rank or block-size mismatches.
    """
    if triton is None:
        raise RuntimeError("triton is not installed; use backend='torch'")
    if x.shape[-1] != v.shape[1] or u.shape[1] != v.shape[0]:
        raise ValueError(f"shapes do not chain: x {tuple(x.shape)}, V {tuple(v.shape)}, U {tuple(u.shape)}")
    if not (x.dtype == v.dtype == u.dtype):
        raise ValueError(f"x, V and U must share a dtype, got {x.dtype}, {v.dtype}, {u.dtype}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {x.dtype}")
    r = v.shape[0]
    if r > MAX_RANK:
        raise ValueError(f"rank {r} exceeds the fused kernel's maximum {MAX_RANK}; use backend='torch'")
    sparse = vmap is not None or umap is not None
    if sparse and (vmap is None or umap is None):
        raise ValueError("pass both vmap and umap (block maps of V and U) or neither")
    if sparse and (block < 16 or block & (block - 1)):
        raise ValueError(f"block size must be a power of two >= 16, got {block}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    m, k = x2.shape
    n = u.shape[0]
    y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    block_r = max(16, triton.next_power_of_2(r))
    if sparse:
        block_k = block
        block_n = max(block, block_n - block_n % block)
    dummy = torch.empty(1, device=x.device, dtype=torch.int8)
    vm = vmap if sparse else dummy
    um = umap if sparse else dummy
    grid = (triton.cdiv(m, block_m),)
    _fused_lowrank_kernel[grid](
        x2,
        v,
        u,
        bias if bias is not None else y,
        y,
        vm,
        um,
        m,
        n,
        k,
        r,
        x2.stride(0),
        x2.stride(1),
        v.stride(0),
        v.stride(1),
        u.stride(0),
        u.stride(1),
        y.stride(0),
        y.stride(1),
        vm.stride(0) if sparse else 0,
        um.stride(0) if sparse else 0,
        HAS_BIAS=bias is not None,
        GELU=gelu,
        BLOCK_SPARSE=sparse,
        BS=block,
        FP32_IEEE=x.dtype == torch.float32,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        BLOCK_R=block_r,
    )
    return y.reshape(*lead, n)
