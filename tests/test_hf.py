"""Students among the Hugging Face tools: Auto classes and pipeline with ladabert imported, a loud refusal
without it, and densify to a stock BERT."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ladabert.cli import main


@pytest.fixture(scope="module")
def saved_student(tmp_path_factory, tiny_teacher):
    from transformers import AutoTokenizer

    from ladabert import CompressConfig, build_student, load_classifier

    out = tmp_path_factory.mktemp("hf") / "student"
    teacher = load_classifier(tiny_teacher).eval()
    student = build_student(teacher, CompressConfig(ratio=3, keep_ffn=0.5, data_aware=False, max_length=32))
    student.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_teacher).save_pretrained(out)
    return out


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)


def test_plain_transformers_refuses_a_student_instead_of_loading_random_weights(saved_student):
    assert json.loads((saved_student / "config.json").read_text())["model_type"] == "ladabert"
    res = _run(
        "import sys, transformers as t; t.AutoModelForSequenceClassification.from_pretrained(sys.argv[1])",
        saved_student,
    )
    assert res.returncode != 0 and "model type `ladabert`" in res.stderr


def test_with_ladabert_imported_auto_classes_and_pipeline_give_the_students_predictions(saved_student):
    code = """
import sys, json, torch, ladabert, transformers as t
m = t.AutoModelForSequenceClassification.from_pretrained(sys.argv[1]).eval()
ref = ladabert.load_classifier(sys.argv[1]).eval()
tok = t.AutoTokenizer.from_pretrained(sys.argv[1])
x = tok(["good w1 w2", "w3 bad"], padding=True, return_tensors="pt")
with torch.no_grad():
    diff = (m(**x).logits - ref(**x).logits).abs().max().item()
out = t.pipeline("text-classification", model=sys.argv[1])(["good w1 w2", "w3 bad"])
print(json.dumps({"cls": type(m).__name__, "diff": diff, "out": out}))
"""
    res = _run(code, saved_student)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["cls"] == "LadaBertForSequenceClassification" and got["diff"] == 0.0
    assert [p["label"] for p in got["out"]] and all(
        p["label"] in ("negative", "positive") for p in got["out"]
    )


def test_registration_is_in_place_whatever_was_imported_first():
    # transformers' modeling modules loaded before ladabert, and ladabert's student module before the Auto ones.
    for code in (
        "import transformers as t; t.BertModel; import ladabert; from ladabert.student_config import LadaBertConfig;"
        "assert t.AutoModelForSequenceClassification._model_mapping[LadaBertConfig].__name__ == "
        "'LadaBertForSequenceClassification'",
        "import ladabert.pipeline.student as s, transformers as t;"
        "assert t.AutoModelForSequenceClassification._model_mapping[s.LadaBertConfig] is "
        "s.LadaBertForSequenceClassification",
        "import ladabert, sys; assert 'torch' not in sys.modules and 'transformers' not in sys.modules",
    ):
        res = _run("import warnings; warnings.simplefilter('error'); " + code)
        assert res.returncode == 0, res.stderr


def test_densify_writes_a_stock_bert_with_the_same_logits(tmp_path, saved_student, capsys):
    out = tmp_path / "dense"
    assert main(["densify", str(saved_student), "--out", str(out)]) == 0
    assert "max logit difference" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert (
        cfg["model_type"] == "bert"
        and "ladabert" not in cfg
        and cfg["architectures"] == ["BertForSequenceClassification"]
    )
    from transformers import AutoTokenizer, BertForSequenceClassification

    from ladabert import load_classifier

    dense = BertForSequenceClassification.from_pretrained(out).eval()
    student = load_classifier(saved_student).eval()
    assert cfg["intermediate_size"] == student.bert.encoder.layer[0].intermediate.dense.out_features < 96
    tok = AutoTokenizer.from_pretrained(out)
    x = tok(["good w1 w2 w3 w4", "w3 bad"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = student(**x).logits
        assert (dense(**x).logits - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())
    # Not a student, or an existing --out: one line, exit 2.
    assert main(["densify", str(out), "--out", str(tmp_path / "again")]) == 2
    assert "is not a LadaBERT student" in capsys.readouterr().err
    assert main(["densify", str(saved_student), "--out", str(out)]) == 2
    assert not (tmp_path / "again").exists()
