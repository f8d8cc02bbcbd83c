"""A user's own data files: formats, label names, the run_glue column conventions and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ladabert.config import CompressConfig, ExportConfig, FinetuneConfig
from ladabert.errors import LadaBertError
from ladabert.pipeline.files import DataFiles, load_files, load_task_data
from ladabert.pipeline.metrics import f1_macro


def _csv(path, rows, bom=True, crlf=True):
    text = ("\r\n" if crlf else "\n").join(rows) + ("\r\n" if crlf else "\n")
    path.write_bytes((("\ufeff" if bom else "") + text).encode("utf-8"))
    return path


def test_csv_with_bom_crlf_quotes_and_extra_columns(tmp_path):
    train = _csv(
        tmp_path / "train.csv",
        [
            "id,review,sentiment,notes",
            '1,"great, really great",pos,x',
            '2,"a ""dull"" film",neg,',
            '3,"two\r\nlines",pos,y',
        ],
    )
    dev = _csv(tmp_path / "dev.csv", ["review,sentiment", "fine,pos", "poor,neg"], bom=False, crlf=False)
    task, tr, dv = load_files(DataFiles(str(train), str(dev), ("review",), "sentiment"))
    assert task.names == ("neg", "pos") and task.label_maps()[0] == {0: "neg", 1: "pos"}
    assert tr.texts == [("great, really great",), ('a "dull" film',), ("two\r\nlines",)]
    assert tr.labels.tolist() == [1, 0, 1] and dv.labels.tolist() == [1, 0]
    assert task.metrics == ("accuracy", "f1") and task.name == "train"


def test_jsonl_json_tsv_and_parquet_forms(tmp_path):
    rows = [
        {"sentence1": f"a{i}", "sentence2": f"b{i}", "label": lab} for i, lab in enumerate([10, 2, 2, 10, 7])
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "d.json").write_text(json.dumps(rows[:3]))
    task, tr, dv = load_files(DataFiles(str(tmp_path / "t.jsonl"), str(tmp_path / "d.json")))
    # Two columns found by the run_glue convention; integer labels in numeric order, three classes.
    assert task.text_columns == ("sentence1", "sentence2") and tr.texts[0] == ("a0", "b0")
    assert task.names == ("2", "7", "10") and tr.labels.tolist() == [2, 0, 0, 2, 1]
    assert task.metrics == ("accuracy", "f1_macro")
    tsv = tmp_path / "t.tsv"
    tsv.write_text('text\tlabel\n"quoted" text\t0.5\nplain\t1.25\n')
    task, tr, _ = load_files(DataFiles(str(tsv), str(tsv)))
    assert task.is_regression and task.label_maps()[0] == {0: "LABEL_0"}
    assert tr.texts[0] == ('"quoted" text',) and tr.labels.dtype == np.float32
    assert task.metrics == ("pearson", "spearmanr")
    with pytest.raises(LadaBertError, match=r"t\.parquet.*(pyarrow|not a readable parquet)"):
        (tmp_path / "t.parquet").write_bytes(b"PAR1 not really")
        load_files(DataFiles(str(tmp_path / "t.parquet"), str(tsv)))


@pytest.mark.parametrize(
    ("train_rows", "dev_rows", "kw", "match"),
    [
        (
            ["text,label", "a,x"],
            None,
            {"label_column": "y"},
            r"train\.csv: column\(s\) y not found \(columns: text, label\); pass --label-column",
        ),
        (
            ["review,label", "a,x"],
            None,
            {},
            r"no text column found \(columns: review, label\); pass --text-column",
        ),
        ([], None, {}, r"train\.csv is empty; write a header row"),
        (["text,label"], None, {}, r"train\.csv has no examples"),
        (
            ["text,label", "a,x", "b,y"],
            ["text,label", "c,x", "d,z"],
            {},
            r"dev\.csv:3: label 'z' does not occur in the training file .*train\.csv \(labels: x, y\)",
        ),
        (["text,label", "a,x", "b,"], None, {}, r"train\.csv:3: empty label in column 'label'"),
        (
            ["text,label", "a,x", "b,x"],
            None,
            {},
            r"every example has the label 'x'; a classifier needs at least two",
        ),
        (["text,label", "a,x", "b"], None, {}, r"train\.csv:3: 1 field\(s\) but the header has 2"),
        (["text,label", 'a "b,x', '"open,y'], None, {}, r"train\.csv:\d+: .*quote"),
        (
            ["text,label", "a,x"],
            None,
            {"text_columns": ("text", "label")},
            r"both a text and the label column",
        ),
    ],
)
def test_bad_files_get_one_line_naming_file_line_and_fix(tmp_path, train_rows, dev_rows, kw, match):
    train = tmp_path / "train.csv"
    train.write_text("\n".join(train_rows) + ("\n" if train_rows else ""))
    dev = tmp_path / "dev.csv"
    dev.write_text("\n".join(dev_rows or ["text,label", "q,x", "r,y"]) + "\n")
    with pytest.raises(LadaBertError, match=match) as err:
        load_files(DataFiles(str(train), str(dev), **kw))
    assert "\n" not in str(err.value)


def test_not_utf8_unknown_type_and_missing_files(tmp_path):
    bad = tmp_path / "latin.csv"
    bad.write_bytes("text,label\ncaf\xe9,x\nok,y\n".encode("latin-1"))
    with pytest.raises(
        LadaBertError,
        match=r"line 2 of .*latin\.csv: byte .* is not UTF-8; save the file as UTF-8 \(e\.g\. iconv",
    ):
        load_files(DataFiles(str(bad), str(bad)))
    with pytest.raises(LadaBertError, match=r"unknown data file type '\.xlsx'; use one of \.csv"):
        load_files(DataFiles(str(tmp_path / "a.xlsx"), str(bad)))
    with pytest.raises(LadaBertError, match=r"nothere\.csv does not exist"):
        load_files(DataFiles(str(tmp_path / "nothere.csv"), str(bad)))
    lines = tmp_path / "l.jsonl"
    lines.write_text('{"text": "a", "label": 1}\n{"text": oops}\n')
    with pytest.raises(LadaBertError, match=r"l\.jsonl:2: invalid JSON"):
        load_files(DataFiles(str(lines), str(lines)))


def test_configs_need_both_files_and_load_subsets(tmp_path):
    with pytest.raises(ValueError, match="train_file needs validation_file too"):
        FinetuneConfig(train_file="a.csv")
    with pytest.raises(ValueError, match="validation_file needs train_file too"):
        CompressConfig(validation_file="a.csv")
    with pytest.raises(ValueError, match="one column, or two"):
        ExportConfig(text_columns=("a", "b", "c"))
    rows = ["text,label"] + [f"t{i},{'ab'[i % 2]}" for i in range(40)]
    path = _csv(tmp_path / "d.csv", rows)
    cfg = FinetuneConfig(
        train_file=str(path), validation_file=str(path), max_train_samples=10, max_eval_samples=5
    )
    task, tr, dv = load_task_data(cfg)
    assert (len(tr), len(dv)) == (10, 5) and dv.texts[0] == ("t0",)
    # A model's own label names decide the ids, whatever order the file lists them in.
    _, _, dv = load_task_data(cfg, label_names=("b", "a"), splits=("dev",))
    assert dv.labels.tolist() == [1, 0, 1, 0, 1]


def test_macro_f1():
    labels = np.array([0, 1, 2, 2])
    assert f1_macro(labels, labels) == 1.0
    # class 0: F1 1; class 1: 0 (never predicted); class 2: predictions [2,2,2] vs [2,2] -> 2*2/(4+1) = 0.8
    assert f1_macro(np.array([0, 2, 2, 2]), labels) == pytest.approx((1 + 0 + 0.8) / 3)
