"""Model cards: the ``README.md`` written into every student directory and ONNX bundle.

YAML front matter (what the Hugging Face hub and tools read: base model, task or data files, metrics,
compression ratio, non-zero parameters, and for a bundle the latency measured at export on the machine
named), then how to load the model with ladabert, transformers, optimum, onnxruntime and OpenVINO.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """A small YAML emitter for nested dicts/lists of scalars (strings are JSON-quoted, valid YAML)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{k}:")
                lines += _yaml(v, indent + 2)
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    else:
        for item in value:
            if isinstance(item, dict):
                first, *rest = _yaml(item, indent + 2)
                lines.append(f"{pad}- {first.strip()}")
                lines += rest
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return lines


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(round(v, 6)) if isinstance(v, float) else str(v)
    if isinstance(v, dict | list):
        return "{}" if isinstance(v, dict) else "[]"
    return json.dumps(str(v))


def _data_lines(data: dict[str, Any] | None, task: str) -> tuple[dict[str, Any], str]:
    if data and data.get("validation_file"):
        files = {k: data[k] for k in ("train_file", "validation_file") if data.get(k)}
        cols = ", ".join(data.get("text_columns") or []) or "default"
        return {"data_files": files}, (
            f"your own data files ({', '.join(Path(v).name for v in files.values())}; text column(s) {cols}, "
            f"label column {data.get('label_column') or 'label'})"
        )
    return {"datasets": ["nyu-mll/glue"], "task": task}, f"the GLUE task {task}"


def model_card(kind: str, facts: dict[str, Any]) -> str:
    """The README.md of a ``student`` directory or a ``bundle``.

    ``facts``: task, metric, value, metrics (dict), labels, base_model, ratio, nonzero_params,
    teacher_params, data (the recorded data files or None), max_length; for a bundle also files (precision
    -> file name), latency (list of measurements) and machine.
    """
    front_data, data_text = _data_lines(facts.get("data"), facts["task"])
    front: dict[str, Any] = {
        "library_name": "ladabert" if kind == "student" else "onnx",
        "pipeline_tag": "text-classification",
        "tags": ["ladabert", "bert", "compressed"] + (["onnx", "openvino"] if kind == "bundle" else []),
        "base_model": facts.get("base_model"),
        **front_data,
        "metrics": [{"name": k, "value": v} for k, v in (facts.get("metrics") or {}).items()],
        "ladabert": {
            "compression_ratio": facts.get("ratio"),
            "nonzero_params": facts.get("nonzero_params"),
            "teacher_params": facts.get("teacher_params"),
            "labels": list(facts.get("labels") or []),
            "max_length": facts.get("max_length"),
        },
    }
    if kind == "bundle":
        front["ladabert"]["files"] = facts.get("files")
        front["ladabert"]["latency_at_export"] = facts.get("latency")
        front["ladabert"]["machine"] = facts.get("machine")
    body = _student_body(facts, data_text) if kind == "student" else _bundle_body(facts, data_text)
    return "---\n" + "\n".join(_yaml(front)) + "\n---\n\n" + body


def _summary(facts: dict[str, Any], data_text: str) -> str:
    ratio = facts.get("ratio") or 1.0
    nz = facts.get("nonzero_params")
    size = f" ({nz:,} non-zero parameters)" if nz else ""
    return (
        f"A text classifier for {data_text}, compressed {ratio:.2f}x by LadaBERT (truncated SVD plus magnitude "
        f"pruning, with iterative knowledge distillation){size}. Dev {facts['metric']}: {facts['value']:.4f}. "
        f"Labels: {', '.join(facts.get('labels') or []) or 'one regression score'}. Texts are truncated at "
        f"{facts.get('max_length')} tokens.\n"
    )


def _student_body(facts: dict[str, Any], data_text: str) -> str:
    return f"""# LadaBERT student

{_summary(facts, data_text)}
## Load it

With ladabert imported, transformers' Auto classes and `pipeline` load the student (plain transformers
refuses the `ladabert` model type rather than loading a random BERT):

```python
import ladabert
from transformers import AutoModelForSequenceClassification, pipeline

model = AutoModelForSequenceClassification.from_pretrained("THIS_DIR")
classify = pipeline("text-classification", model="THIS_DIR")
classify("a gripping, beautifully acted film", truncation=True)
```

For tools that need a stock BERT: `ladabert densify THIS_DIR --out DENSE_DIR` writes a
`BertForSequenceClassification` with the factors multiplied back (the same logits to 1e-5 of their size).

For serving: `ladabert export THIS_DIR --out BUNDLE` writes a validated ONNX bundle (ONNX Runtime and
OpenVINO, no torch needed).
"""


NOT_MEASURED = "- not measured\n"


def _bundle_body(facts: dict[str, Any], data_text: str) -> str:
    files = facts.get("files") or {}
    int8 = files.get("int8")
    int8_lines = (
        f'\nThe int8 model: `ORTModelForSequenceClassification.from_pretrained("THIS_DIR", file_name="{int8}")`.\n'
        if int8
        else ""
    )
    lat = facts.get("latency") or []
    lat_lines = "".join(
        f"- {r['runtime']} {r['precision']}: {r['median_ms']:.2f} ms (batch {r['batch']}, {r['seq']} tokens, "
        f"{r['threads']} threads)\n"
        for r in lat
    )
    machine = facts.get("machine") or {}
    return f"""# LadaBERT student, ONNX bundle

{_summary(facts, data_text)}
Files: {", ".join(f"`{v}` ({k})" for k, v in files.items())}; `openvino_model.xml`/`.bin` where OpenVINO was
installed at export; tokenizer files; `config.json`; `ladabert.json` (how it was exported and validated).

Latency measured at export on {machine.get("cpu", "the exporting machine")} ({machine.get("cores", "?")} cores):

{lat_lines or NOT_MEASURED}
## Load it

```bash
ladabert predict THIS_DIR "a gripping, beautifully acted film"
```

```python
from optimum.onnxruntime import ORTModelForSequenceClassification
from transformers import AutoTokenizer, pipeline

model = ORTModelForSequenceClassification.from_pretrained("THIS_DIR")
classify = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained("THIS_DIR"))
classify("a gripping, beautifully acted film", truncation=True)  # truncation as the bundle was validated
```
{int8_lines}
```python
from optimum.intel import OVModelForSequenceClassification

model = OVModelForSequenceClassification.from_pretrained("THIS_DIR")
# OpenVINO infers in bf16 by default on CPUs with bf16 units; the validated fp32 outputs take
# ov_config={{"INFERENCE_PRECISION_HINT": "f32"}}.
```

```python
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

session = ort.InferenceSession("THIS_DIR/model.onnx")
tok = Tokenizer.from_file("THIS_DIR/tokenizer.json")
tok.enable_truncation({facts.get("max_length")})
enc = tok.encode("a gripping, beautifully acted film")
feeds = {{"input_ids": [enc.ids], "attention_mask": [enc.attention_mask], "token_type_ids": [enc.type_ids]}}
logits = session.run(None, {{k: np.array(v, dtype=np.int64) for k, v in feeds.items()}})[0]
```
"""


def write_card(tmp: Path, final: Path, kind: str, facts: dict[str, Any]) -> None:
    """Write the card into ``tmp`` (the directory being written), naming it by its ``final`` path."""
    (tmp / "README.md").write_text(model_card(kind, facts).replace("THIS_DIR", str(final)))
