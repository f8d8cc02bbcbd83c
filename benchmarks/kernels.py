"""GPU benchmark of the Triton kernels against cuBLAS, per BERT-base layer shape, and end to end.

    python -m benchmarks.kernels            # on a CUDA machine; writes benchmarks/results/kernels_<gpu>.json
    python -m benchmarks.kernels --quick    # fewer token counts

Per layer shape (768x768, 768x3072, 3072x768), tokens M in {512, 2048, 8192, 32768} and layer compression
2.5x/5x/10x (rank k = in*out / (R*(in+out))), all in bf16 and timed with ``triton.testing.do_bench``
(median): cuBLAS dense ``F.linear`` (+ GELU for the FFN-in shape), two torch GEMMs + bias (+ GELU), the
fused kernel (bias and GELU in the epilogue), the fused kernel with 50% block-sparse factors, and the BSR
kernel on a dense weight pruned to 1/R of its blocks. Each row has ms, effective TFLOP/s (of the layer's
useful FLOPs), GB/s (bytes of x, weights and y) and the fraction of the measured copy bandwidth and bf16
GEMM peak. End to end: a BERT-base-shaped student (real ``compress`` allocation, random weights, Triton
backend) against BERT-base (torch SDPA, bf16) at batch 64 and 256, sequence 128.
"""

from __future__ import annotations

import argparse
import re
import sys

from benchmarks._common import save_results

SHAPES = [(768, 768), (768, 3072), (3072, 768)]  # (in, out)
TOKENS = [512, 2048, 8192, 32768]
RATIOS = [2.5, 5.0, 10.0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tokens 2048 and 8192 only")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end model comparison")
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(
            "benchmarks.kernels needs a CUDA GPU (none here); the kernels' CPU correctness tests are in "
            "tests/kernels (TRITON_INTERPRET=1).",
            file=sys.stderr,
        )
        return 2
    import torch.nn.functional as F
    from triton.testing import do_bench

    from ladabert.kernels.block_sparse_linear import block_sparse_linear, to_bsr
    from ladabert.kernels.lowrank_linear import block_map, fused_lowrank_linear
    from ladabert.pipeline.prune import block_mask

    dev, dt = "cuda", torch.bfloat16
    torch.manual_seed(0)
    gpu = torch.cuda.get_device_name(0)

    # Measured peaks: device-to-device copy bandwidth and a large bf16 GEMM.
    big = torch.empty(1 << 28, dtype=torch.uint8, device=dev)
    copy_ms = do_bench(lambda big=big: big.clone(), warmup=25, rep=200)
    copy_gbps = 2 * big.numel() / copy_ms / 1e6
    sq = torch.randn(8192, 8192, device=dev, dtype=dt)
    gemm_ms = do_bench(lambda sq=sq: sq @ sq, warmup=25, rep=200)
    gemm_tflops = 2 * 8192**3 / gemm_ms / 1e9
    del big, sq

    rows = []
    tokens = [2048, 8192] if args.quick else TOKENS
    for k_in, n_out in SHAPES:
        gelu = n_out > k_in  # FFN-in: GELU follows
        w = torch.randn(n_out, k_in, device=dev, dtype=dt) * 0.02
        b = torch.randn(n_out, device=dev, dtype=dt) * 0.02
        for m in tokens:
            x = torch.randn(m, k_in, device=dev, dtype=dt)
            dense_flops = 2 * m * k_in * n_out

            def dense(x=x, w=w, b=b, gelu=gelu):
                y = F.linear(x, w, b)
                return F.gelu(y) if gelu else y

            t_dense = do_bench(dense)
            dense_bytes = 2 * (m * k_in + n_out * k_in + m * n_out)
            rows.append(
                _row(
                    "dense_cublas",
                    k_in,
                    n_out,
                    m,
                    1.0,
                    "torch",
                    t_dense,
                    dense_flops,
                    dense_bytes,
                    t_dense,
                    copy_gbps,
                    gemm_tflops,
                )
            )
            for ratio in RATIOS:
                r = max(16, int(round(k_in * n_out / (ratio * (k_in + n_out)))))
                v = torch.randn(r, k_in, device=dev, dtype=dt) * 0.05
                u = torch.randn(n_out, r, device=dev, dtype=dt) * 0.05
                flops = 2 * m * r * (k_in + n_out)
                nbytes = 2 * (m * k_in + r * (k_in + n_out) + m * n_out)

                def two_gemms(x=x, v=v, u=u, b=b, gelu=gelu):
                    y = F.linear(F.linear(x, v), u, b)
                    return F.gelu(y) if gelu else y

                def fused(x=x, v=v, u=u, b=b, gelu=gelu):
                    return fused_lowrank_linear(x, v, u, b, gelu=gelu)

                torch.testing.assert_close(fused(), two_gemms(), atol=5e-2, rtol=5e-2)
                for op, fn, nb in (("two_torch_gemms", two_gemms, nbytes), ("fused_lowrank", fused, nbytes)):
                    t = do_bench(fn)
                    rows.append(
                        _row(
                            op,
                            k_in,
                            n_out,
                            m,
                            ratio,
                            "triton" if op == "fused_lowrank" else "torch",
                            t,
                            flops,
                            nb,
                            t_dense,
                            copy_gbps,
                            gemm_tflops,
                        )
                    )
                # Factors with half of their 32x32 blocks pruned (the block pattern of a hybrid student).
                vs = v * block_mask(v, 0.5, 32).to(dev)
                us = u * block_mask(u, 0.5, 32).to(dev)
                vm, um = block_map(vs, 32), block_map(us, 32)
                t = do_bench(
                    lambda x=x, vs=vs, us=us, vm=vm, um=um, b=b, gelu=gelu: fused_lowrank_linear(
                        x, vs, us, b, gelu=gelu, vmap=vm, umap=um, block=32
                    )
                )
                rows.append(
                    _row(
                        "fused_lowrank_block50",
                        k_in,
                        n_out,
                        m,
                        ratio * 2,
                        "triton",
                        t,
                        flops / 2,
                        2 * (m * k_in + r * (k_in + n_out) // 2 + m * n_out),
                        t_dense,
                        copy_gbps,
                        gemm_tflops,
                    )
                )
                # A dense layer pruned to 1/ratio of its 32x32 blocks, in BSR form.
                ws = w * block_mask(w, 1 - 1 / ratio, 32).to(dev)
                bsr = to_bsr(ws, 32)
                t = do_bench(lambda x=x, bsr=bsr, b=b, gelu=gelu: block_sparse_linear(x, bsr, b, gelu))
                rows.append(
                    _row(
                        "bsr_linear",
                        k_in,
                        n_out,
                        m,
                        ratio,
                        "triton",
                        t,
                        dense_flops / ratio,
                        2 * (m * k_in + bsr.blocks.numel() + m * n_out),
                        t_dense,
                        copy_gbps,
                        gemm_tflops,
                    )
                )
                print(
                    f"{k_in}x{n_out} M={m} {ratio:g}x: dense {t_dense:.3f} ms, "
                    + ", ".join(f"{r_['op']} {r_['median_ms']:.3f}" for r_ in rows[-4:]),
                    flush=True,
                )

    e2e = [] if args.no_e2e else _end_to_end(torch, do_bench)
    slug = re.sub(r"[^a-z0-9]+", "_", gpu.lower()).strip("_")
    out = save_results(
        f"kernels_{slug}.json",
        {
            "gpu": gpu,
            "dtype": "bfloat16",
            "copy_gbps": copy_gbps,
            "bf16_gemm_tflops": gemm_tflops,
            "rows": rows,
            "end_to_end": e2e,
        },
    )
    print(f"-> {out}")
    return 0


def _row(op, k_in, n_out, m, ratio, backend, ms, flops, nbytes, dense_ms, copy_gbps, peak_tflops) -> dict:
    gbps = nbytes / ms / 1e6
    return {
        "op": op,
        "shape": [k_in, n_out],
        "tokens": m,
        "ratio": ratio,
        "backend": backend,
        "median_ms": ms,
        "tflops": flops / ms / 1e9,
        "gbps": gbps,
        "roofline_fraction": gbps / copy_gbps,
        "tensor_core_fraction": flops / ms / 1e9 / peak_tflops,
        "speedup_vs_dense": dense_ms / ms,
    }


def _end_to_end(torch, do_bench) -> list[dict]:
    from transformers import BertConfig, BertForSequenceClassification

    from ladabert import CompressConfig, build_student

    cfg = BertConfig(num_labels=2, attn_implementation="sdpa")
    base = BertForSequenceClassification(cfg).eval()
    models = {}
    for ratio in (5.0, 10.0):
        st = build_student(base, CompressConfig(ratio=ratio, hybrid=0.5, data_aware=False))
        models[f"student-{ratio:g}x"] = st.to("cuda", torch.bfloat16).set_backend("triton")
    models = {"bert-base": base.to("cuda", torch.bfloat16), **models}
    out = []
    for batch in (64, 256):
        ids = torch.randint(1000, 20000, (batch, 128), device="cuda")
        times = {}
        with torch.inference_mode():
            for name, model in models.items():
                times[name] = do_bench(
                    lambda model=model, ids=ids: model(input_ids=ids).logits, warmup=10, rep=100
                )
        for name, ms in times.items():
            out.append(
                {
                    "model": name,
                    "batch": batch,
                    "seq": 128,
                    "median_ms": ms,
                    "sequences_per_s": batch / ms * 1e3,
                    "speedup_vs_bert_base": times["bert-base"] / ms,
                }
            )
            print(f"b{batch} {name}: {ms:.2f} ms ({batch / ms * 1e3:.0f} seq/s)", flush=True)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
