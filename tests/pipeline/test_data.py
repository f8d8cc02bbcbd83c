from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ladabert.errors import LadaBertError
from ladabert.pipeline import data as data_mod
from ladabert.pipeline.data import TASKS, get_task, load_glue, make_collator, read_glue_tsv, tokenize
from ladabert.pipeline.metrics import accuracy, f1_binary, matthews_corrcoef, pearson, spearman

# One GLUE-format file per task: header (None for CoLA), then rows, and the labels they should give.
MNLI_HEADER = [
    "index",
    "promptID",
    "pairID",
    "genre",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
    "label1",
    "gold_label",
]
SAMPLES = {
    "sst2": (["sentence", "label"], [["a fine film", "1"], ["dull", "0"]], [1, 0]),
    "mrpc": (
        ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
        [["1", "7", "8", "He said so .", "He said it ."], ["0", "9", "10", "A b", "C d"]],
        [1, 0],
    ),
    "qnli": (
        ["index", "question", "sentence", "label"],
        [["0", "Who?", "Me .", "entailment"], ["1", "Why?", "No .", "not_entailment"]],
        [0, 1],
    ),
    "rte": (
        ["index", "sentence1", "sentence2", "label"],
        [["0", "A dog runs .", "An animal runs .", "entailment"]],
        [0],
    ),
    "qqp": (
        ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        [["0", "1", "2", "How?", "How so?", "1"], ["1", "3", "4", "What?", "Where?", "0"]],
        [1, 0],
    ),
    "mnli": (
        MNLI_HEADER,
        [
            ["0", "1", "2", "g", "", "", "", "", "P .", "H .", "neutral", "neutral"],
            ["1", "1", "2", "g", "", "", "", "", "P .", "H .", "x", "contradiction"],
        ],
        [1, 2],
    ),
    "cola": (None, [["gj04", "1", "", "The book is red ."], ["gj04", "0", "*", "Book red the ."]], [1, 0]),
    "stsb": (
        [
            "index",
            "genre",
            "filename",
            "year",
            "old_index",
            "source1",
            "source2",
            "sentence1",
            "sentence2",
            "score",
        ],
        [["0", "g", "f", "y", "0", "s", "s", "A man .", "A guy .", "4.25"]],
        [4.25],
    ),
}


def _write(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ([] if header is None else ["\t".join(header)]) + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_task_parses_its_glue_format(tmp_path, name):
    header, rows, labels = SAMPLES[name]
    task = get_task(name)
    split = read_glue_tsv(_write(tmp_path / task.dirname / "train.tsv", header, rows), task)
    assert len(split) == len(rows)
    assert len(split.texts[0]) == len(task.text_columns)
    np.testing.assert_allclose(split.labels, labels)
    assert split.labels.dtype == (np.float32 if task.is_regression else np.int64)


def test_mnli_matched_and_mismatched_read_their_dev_files(tmp_path):
    header, rows, _ = SAMPLES["mnli"]
    _write(tmp_path / "MNLI" / "dev_matched.tsv", header, rows[:1])
    _write(tmp_path / "MNLI" / "dev_mismatched.tsv", header, rows)
    assert len(load_glue("mnli", "dev", tmp_path)) == 1
    assert len(load_glue("mnli-mm", "dev", tmp_path)) == 2


def test_task_names_and_unknown_task():
    assert get_task("SST-2") is TASKS["sst2"] and get_task("sts-b").is_regression
    with pytest.raises(LadaBertError, match="unknown task 'sst3'.*sst2.*stsb"):
        get_task("sst3")


@pytest.mark.parametrize(
    "header,rows,match",
    [
        (["text", "label"], [["a", "1"]], r"lacks column\(s\) \['sentence'\]"),
        (
            ["sentence", "label"],
            [["only-one-field"]],
            r"train.tsv:2: 1 tab-separated field\(s\), need at least 2",
        ),
        (
            ["sentence", "label"],
            [["ok", "1"], ["bad", "positive"]],
            r"train.tsv:3: label 'positive' is not one of",
        ),
        (["sentence", "label"], [], "has no examples"),
    ],
)
def test_garbled_tsv_names_file_line_and_fix(tmp_path, header, rows, match):
    path = _write(tmp_path / "SST-2" / "train.tsv", header, rows)
    with pytest.raises(LadaBertError, match=match) as err:
        read_glue_tsv(path, get_task("sst2"))
    assert "expected GLUE SST-2 TSV format" in str(err.value)


def test_stsb_score_must_be_numeric(tmp_path):
    header, rows, _ = SAMPLES["stsb"]
    bad = [rows[0][:-1] + ["high"]]
    with pytest.raises(LadaBertError, match="score 'high' is not a number"):
        read_glue_tsv(_write(tmp_path / "x.tsv", header, bad), get_task("stsb"))


def test_data_dir_accepts_glue_root_or_task_dir(synthetic_glue):
    a = load_glue("sst2", "dev", synthetic_glue)
    b = load_glue("sst2", "dev", synthetic_glue / "SST-2")
    assert len(a) == len(b) == 200 and a.texts == b.texts


def test_resolution_order_env_var_then_explicit_wins(tmp_path, monkeypatch, synthetic_glue):
    other = tmp_path / "other"
    _write(other / "SST-2" / "dev.tsv", ["sentence", "label"], [["x", "1"]] * 3)
    monkeypatch.setenv(data_mod.DATA_DIR_ENV, str(other))
    assert len(load_glue("sst2", "dev")) == 3  # the environment variable comes first
    assert len(load_glue("sst2", "dev", synthetic_glue)) == 200  # --data-dir beats it


def test_explicit_data_dir_is_authoritative(tmp_path):
    with pytest.raises(LadaBertError, match=r"--data-dir: .*empty.*Fix: pass --data-dir"):
        load_glue("sst2", "train", tmp_path / "empty")


def test_nothing_found_lists_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.delenv(data_mod.DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # RTE is not shipped with the package, so with no --data-dir and no environment variable every source misses.
    with pytest.raises(LadaBertError) as err:
        load_glue("rte", "train")
    msg = str(err.value)
    assert "Hugging Face datasets" in msg and "--data-dir" in msg and "--train-file" in msg
    # The environment variable is authoritative, like --data-dir.
    monkeypatch.setenv(data_mod.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(LadaBertError, match=r"tried LADABERT_DATA_DIR: .*nowhere"):
        load_glue("sst2", "train")


def test_sst2_ships_with_the_package(tmp_path, monkeypatch):
    monkeypatch.delenv(data_mod.DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # no data folder anywhere near
    train, dev = load_glue("sst2", "train"), load_glue("sst2", "dev")
    assert (len(train), len(dev)) == (67349, 872)
    assert train.source.startswith(str(data_mod.EMBEDDED_ROOT)) and train.source.endswith("train.tsv.xz")
    assert 0.5 < train.labels.mean() < 0.6 and set(np.unique(dev.labels)) == {0, 1}
    assert get_task("sst2").names == ("negative", "positive")
    assert (data_mod.EMBEDDED_ROOT / "SST-2" / "SOURCE.md").read_text().count("Socher") == 1


def test_subsets_are_seeded_and_sized(synthetic_glue):
    full = load_glue("sst2", "train", synthetic_glue)
    a = load_glue("sst2", "train", synthetic_glue, max_samples=50, seed=3)
    b = load_glue("sst2", "train", synthetic_glue, max_samples=50, seed=3)
    c = load_glue("sst2", "train", synthetic_glue, max_samples=50)
    assert len(a) == 50 and a.texts == b.texts and c.texts == full.texts[:50]
    with pytest.raises(LadaBertError, match="must be positive"):
        full.subset(0)


def test_tokenize_truncates_and_pads_per_batch(synthetic_glue, tiny_bert_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    dev = load_glue("sst2", "dev", synthetic_glue)
    ds = tokenize(dev, tok, max_length=8)
    lengths = [len(ds[i]["input_ids"]) for i in range(len(ds))]
    assert max(lengths) == 8 and min(lengths) < 8
    batch = make_collator(tok)([ds[i] for i in range(4)])
    assert batch["input_ids"].shape == (4, max(lengths[:4]))
    assert batch["labels"].tolist() == dev.labels[:4].tolist()


def test_metrics_against_hand_computed_values():
    p, y = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    assert accuracy(p, y) == pytest.approx(0.6)
    assert f1_binary(p, y) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # tp=2 tn=1 fp=1 fn=1: (2*1 - 1*1) / sqrt(3*3*2*2)
    assert matthews_corrcoef(p, y) == pytest.approx(1 / 6)
    assert matthews_corrcoef(np.ones(4), np.array([0, 1, 0, 1])) == 0.0
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    # Ties get average ranks: x ranks [1.5, 1.5, 3], y ranks [1, 2, 3] -> r = sqrt(3)/2.
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.sqrt(3) / 2)
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)


def test_task_metrics_from_logits():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert get_task("sst2").compute_metrics(logits, np.array([1, 0, 0])) == {"accuracy": pytest.approx(2 / 3)}
    assert set(get_task("mrpc").compute_metrics(logits, np.array([1, 0, 0]))) == {"f1", "accuracy"}
    scores = get_task("stsb").compute_metrics(np.array([[1.0], [2.0], [3.0]]), np.array([0.5, 1.0, 2.0]))
    assert scores["spearmanr"] == pytest.approx(1.0)
