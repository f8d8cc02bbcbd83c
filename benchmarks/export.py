"""Export a student (and optionally its teacher) and record ``benchmarks/results/export_<task>.json``.

    python -m benchmarks.export --student runs/student-sst2-hybrid-unstructured-10x

Records dev accuracy in PyTorch, ONNX fp32 and ONNX int8, the fused attention count, and the node
counts after each rewrite. Bundles go to ``<student>-onnx`` (reused when present).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._common import save_results


def _row(meta: dict) -> dict:
    v = meta["validation"]
    return {
        "source": meta["source"],
        "kind": meta["kind"],
        "ratio": meta["ratio"],
        "pytorch_value": v["pytorch_value"],
        "onnx_fp32_value": v["fp32"]["value"],
        "onnx_int8_value": v.get("int8", {}).get("value"),
        "fp32_max_abs_logit_diff": v["fp32"]["dev_max_abs_diff"],
        "int8_settings": meta["int8_settings"],
        "fused_attention_nodes": meta["fused_attention_nodes"],
        "num_layers": meta["num_layers"],
        "nodes_per_stage": {k: s["nodes"] for k, s in meta["stages"].items()},
        "ops_per_stage": {k: s["ops"] for k, s in meta["stages"].items()},
        "eval_examples": v["examples"],
        "wall_s": meta["wall_s"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", required=True)
    p.add_argument("--teacher", default=None, help="also export the teacher as the dense reference")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)

    from ladabert.export.bundle import export_bundle

    rows = []
    for src in [args.student] + ([args.teacher] if args.teacher else []):
        out = Path(f"{src.rstrip('/')}-onnx")
        if not (out / "ladabert.json").is_file():
            export_bundle(src, out, data_dir=args.data_dir)
        meta = json.loads((out / "ladabert.json").read_text())
        rows.append(_row(meta) | {"bundle": str(out)})
        r = rows[-1]
        print(
            f"{src}: PyTorch {r['pytorch_value']:.4f}  ONNX fp32 {r['onnx_fp32_value']:.4f}  "
            f"int8 {r['onnx_int8_value']:.4f}  fused attention {r['fused_attention_nodes']}/{r['num_layers']}"
        )
    student = rows[0]
    out = save_results(
        f"export_{meta['task']}.json",
        {
            "task": meta["task"],
            "metric": meta["metric"],
            **{
                k: student[k]
                for k in (
                    "pytorch_value",
                    "onnx_fp32_value",
                    "onnx_int8_value",
                    "fused_attention_nodes",
                    "num_layers",
                    "ratio",
                    "nodes_per_stage",
                )
            },
            "rows": rows,
        },
    )
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
