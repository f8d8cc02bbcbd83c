"""Bring your own data through the CLI: a spreadsheet-saved CSV (BOM, CRLF, quotes) with string labels goes
through finetune, compress, eval, export and predict, and the label names follow it everywhere."""

from __future__ import annotations

import json

from ladabert.cli import main
from tests.conftest import synthetic_sentences


def _write_csv(path, n, seed):
    rows = ["review,sentiment,source"] + [
        f'"{s}, really",{"pos" if y else "neg"},web' for s, y in synthetic_sentences(n, seed)
    ]
    path.write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    return path


def test_csv_with_bom_and_string_labels_end_to_end(tmp_path, tiny_bert_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_csv(tmp_path / "a.csv", 600, 1)
    _write_csv(tmp_path / "b.csv", 160, 2)
    data = ["--train-file", "a.csv", "--validation-file", "b.csv", "--text-column", "review"]
    data += ["--label-column", "sentiment", "--max-length", "32"]
    fast = ["--batch-size", "16", "--lr", "2e-3", "--eval-steps", "0"]
    rc = main(["finetune", "--model", str(tiny_bert_dir), *data, *fast, "--max-steps", "120", "--out", "t"])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "neg", "1": "pos"} and cfg["label2id"] == {"neg": 0, "pos": 1}
    assert cfg["ladabert_data"]["validation_file"] == str(tmp_path / "b.csv")
    teacher = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert teacher["labels"] == ["neg", "pos"] and teacher["value"] > 0.9 > 0.6 > teacher["majority_value"]
    assert set(teacher["metrics"]) == {"accuracy", "f1"}

    rc = main(
        ["compress", "--teacher", "t", *data, *fast, "--ratio", "2", "--max-steps", "40"]
        + ["--calibration-samples", "64", "--schedule-updates", "2", "--out", "s"]
    )
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "s" / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    card = (tmp_path / "s" / "README.md").read_text()
    assert "data_files:" in card and "b.csv" in card and "compression_ratio: 2." in card

    capsys.readouterr()
    assert main(["eval", "s"]) == 0  # the student knows its validation file
    assert json.loads(capsys.readouterr().out)["eval_examples"] == 160
    # export validates on the recorded file without any data flag
    assert main(["export", "s", "--out", "bundle", "--max-length", "32"]) == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "bundle" / "ladabert.json").read_text())
    assert meta["labels"] == ["neg", "pos"] and meta["validation"]["examples"] == 160
    capsys.readouterr()
    assert main(["predict", "bundle", "w1 good w2, really", "w3 awful w4, really"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["pos", "neg"]
    assert lines[0].split("\t")[2] == "w1 good w2, really"

    # A validation label the teacher never saw is refused with the file and line.
    (tmp_path / "c.csv").write_text("review,sentiment\ngood,pos\nmeh,neutral\n")
    assert (
        main(
            ["export", "s", "--out", "b2", "--validation-file", "c.csv", "--text-column", "review"]
            + ["--label-column", "sentiment"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "c.csv:3: label 'neutral' does not occur in the model's labels (labels: neg, pos)" in err
    assert not (tmp_path / "b2").exists()


def test_a_fine_tuned_model_moves_to_a_task_of_another_label_count(tmp_path, tiny_teacher, capsys):
    """The encoder carries over; the classifier head is new, sized for the new task's labels."""
    import torch
    from safetensors.torch import load_file

    rows = ["text,label"] + [
        f"{s},{'mixed' if i % 3 == 2 else ('pos' if y else 'neg')}"
        for i, (s, y) in enumerate(synthetic_sentences(90, 3))
    ]
    (tmp_path / "three.csv").write_text("\n".join(rows) + "\n")
    data = ["--train-file", str(tmp_path / "three.csv"), "--validation-file", str(tmp_path / "three.csv")]
    out = tmp_path / "t3"
    # A vanishing learning rate: the encoder's weights come out as they went in.
    rc = main(
        ["finetune", "--model", str(tiny_teacher), *data, "--max-length", "32", "--max-steps", "2"]
        + ["--lr", "1e-12", "--eval-steps", "0", "--out", str(out)]
    )
    assert rc == 0, capsys.readouterr().err
    assert "has a 2-label head; the 3-label task gets a new one" in capsys.readouterr().out
    assert len(json.loads((out / "config.json").read_text())["id2label"]) == 3
    old, new = load_file(tiny_teacher / "model.safetensors"), load_file(out / "model.safetensors")
    assert new["classifier.weight"].shape[0] == 3 and old["classifier.weight"].shape[0] == 2
    emb = "bert.embeddings.word_embeddings.weight"
    assert torch.allclose(old[emb], new[emb], atol=1e-9)
