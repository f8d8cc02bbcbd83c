from __future__ import annotations

import pytest


def test_sweep_runs_each_setting_once_and_rebuilds_the_json(
    tmp_path, monkeypatch, tiny_teacher, synthetic_glue
):
    import json

    import research._common as common
    from research import sweep

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(
        sweep, "GRID", {"a": {"ratio": 2.0}, "b": {"ratio": 2.0, "embedding_scale": 0.5, "max_steps": 12}}
    )
    argv = [
        "--teacher",
        str(tiny_teacher),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--data-dir",
        str(synthetic_glue),
    ]
    argv += ["--max-length", "32"]
    assert sweep.main([*argv, "--only", "a", "--max-steps", "8", "--eval-steps", "4"]) == 0
    rows = json.loads((tmp_path / "results" / "sweep_sst2.json").read_text())["rows"]
    assert [r["id"] for r in rows] == ["a"] and rows[0]["steps"] == 8 and len(rows[0]["curve"]) == 2
    stamp = (tmp_path / "runs" / "sweep-sst2-a" / "metrics.json").stat().st_mtime_ns
    assert sweep.main([*argv, "--max-steps", "8", "--eval-steps", "4"]) == 0  # runs b, reads a
    rows = json.loads((tmp_path / "results" / "sweep_sst2.json").read_text())["rows"]
    assert [r["id"] for r in rows] == ["a", "b"] and rows[1]["config"]["embedding_scale"] == 0.5
    assert rows[1]["steps"] == 12  # a setting's own max_steps wins over --max-steps
    assert (tmp_path / "runs" / "sweep-sst2-a" / "metrics.json").stat().st_mtime_ns == stamp


def test_sweep_keeps_recorded_rows_and_refuses_runs_of_another_teacher(
    tmp_path, monkeypatch, tiny_teacher, synthetic_glue, capsys
):
    import json
    import shutil

    import research._common as common
    from research import sweep

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(sweep, "GRID", {"a": {"ratio": 2.0}, "b": {"ratio": 2.0, "embedding_scale": 0.5}})
    argv = ["--teacher", str(tiny_teacher), "--runs-dir", str(tmp_path / "runs")]
    argv += ["--data-dir", str(synthetic_glue), "--max-length", "32", "--max-steps", "8", "--eval-steps", "4"]
    assert sweep.main([*argv, "--only", "a"]) == 0
    recorded = json.loads((tmp_path / "results" / "sweep_sst2.json").read_text())
    # A fresh clone has the JSON but not the run directories: running another setting keeps row a.
    shutil.rmtree(tmp_path / "runs" / "sweep-sst2-a")
    assert sweep.main([*argv, "--only", "b"]) == 0
    rows = json.loads((tmp_path / "results" / "sweep_sst2.json").read_text())["rows"]
    assert [r["id"] for r in rows] == ["a", "b"] and rows[0] == recorded["rows"][0]
    assert not (tmp_path / "runs" / "sweep-sst2-a").exists()  # read from the JSON, not run again

    # Another teacher (here: the same weights with another recorded score) is refused for this file ...
    other = tmp_path / "other-teacher"
    shutil.copytree(tiny_teacher, other)
    m = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps(m | {"value": m["value"] / 2}))
    capsys.readouterr()
    before = (tmp_path / "results" / "sweep_sst2.json").read_bytes()
    other_argv = [*argv, "--teacher", str(other)]
    assert sweep.main([*other_argv, "--only", "a"]) == 2
    err = capsys.readouterr().err
    assert "holds runs distilled from a teacher scoring" in err and "--results sweep_sst2_<name>.json" in err
    assert (tmp_path / "results" / "sweep_sst2.json").read_bytes() == before
    # ... and goes to its own file and run directories.
    assert sweep.main([*other_argv, "--only", "a", "--results", "sweep_sst2_other.json"]) == 0
    d = json.loads((tmp_path / "results" / "sweep_sst2_other.json").read_text())
    assert [r["id"] for r in d["rows"]] == ["a"] and d["teacher_value"] == m["value"] / 2
    assert (tmp_path / "runs" / "sweep_sst2_other-a" / "metrics.json").is_file()
    with pytest.raises(SystemExit, match="2"):
        sweep.main([*argv, "--results", "../x.json"])
    assert "--results must be a file name sweep_<something>.json" in capsys.readouterr().err
    assert sweep.main(["--teacher", str(tmp_path / "none"), "--only", "a"]) == 2
    assert "not found; train the teacher first" in capsys.readouterr().err


def test_agreement_scores_students_against_their_teacher(tmp_path, monkeypatch, tiny_teacher, synthetic_glue):
    import json

    import research._common as common
    from ladabert.pipeline.compress import CompressConfig, compress
    from research import agreement

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    cfg = CompressConfig(
        ratio=3.0, max_steps=40, batch_size=16, learning_rate=2e-3, max_length=32, eval_steps=0
    )
    compress(cfg, tiny_teacher, tmp_path / "s", data_dir=synthetic_glue)
    argv = [
        "--teacher",
        str(tiny_teacher),
        "--students",
        str(tmp_path / "s"),
        "--data-dir",
        str(synthetic_glue),
    ]
    assert agreement.main([*argv, "--train-samples", "100"]) == 0
    res = json.loads((tmp_path / "results" / "agreement_sst2.json").read_text())
    teacher, student = res["rows"]
    assert res["train_examples"] == 100 and teacher["is_teacher"] and not student["is_teacher"]
    assert teacher["train_agreement"] == 1.0 and teacher["dev_agreement"] == 1.0
    assert student["dev_accuracy"] >= 0.9 and 0.85 <= student["dev_agreement"] <= 1.0  # chance is 0.5
    # Dev accuracy by length: the buckets split every dev example once and average back to the whole.
    for row in res["rows"]:
        buckets = row["dev_by_length"]
        assert [b["words"] for b in buckets] == [[1, 12], [12, 20], [20, 28], [28, None]]
        assert sum(b["n"] for b in buckets) == res["dev_examples"]
        whole = sum(b["n"] * b["accuracy"] for b in buckets if b["n"]) / res["dev_examples"]
        assert abs(whole - row["dev_accuracy"]) < 1e-9
    # Another file and other buckets; bad buckets are refused before any model is loaded.
    edges = ["--length-buckets", "3", "6", "--results", "agreement_sst2_b.json"]
    assert agreement.main([*argv, "--train-samples", "20", *edges]) == 0
    res = json.loads((tmp_path / "results" / "agreement_sst2_b.json").read_text())
    assert [b["words"] for b in res["rows"][1]["dev_by_length"]] == [[1, 3], [3, 6], [6, None]]
    for bad in (["--length-buckets", "20", "12"], ["--length-buckets", "1"], ["--results", "x.json"]):
        with pytest.raises(SystemExit) as e:
            agreement.main([*argv, *bad])
        assert e.value.code == 2


def test_report_averages_the_seeds_of_one_recipe_whatever_the_sweep_id():
    from dataclasses import asdict

    from ladabert.pipeline.compress import CompressConfig
    from research.report import seed_means

    today = asdict(CompressConfig())

    def row(rid, value, **cfg):
        return {"id": rid, "overrides": {}, "value": value, "teacher_value": 0.9, "config": today | cfg}

    rows = [
        # Two sweep ids of the default recipe (one sets the defaults explicitly), a third seed, another recipe
        # with one seed, and another ratio with one seed: only the default 5x recipe has several seeds.
        row("5x-aware", 0.88, ratio=5.0, seed=42),
        row("5x-base-seed7", 0.87, ratio=5.0, seed=7, eval_steps=250),
        row("5x-base-seed11", 0.86, ratio=5.0, seed=11),
        row("5x-t1", 0.89, ratio=5.0, seed=42, temperature=1.0),
        row("10x", 0.85, ratio=10.0, seed=42),
    ]
    lines = [x for x in seed_means(rows).splitlines() if x.startswith("| hybrid")]
    assert lines == [
        "| hybrid unstructured 5x | default recipe | 3 | 42: 88.00%, 7: 87.00%, 11: 86.00% | **87.00%** | 96.7% |"
    ]
    rows.append(row("5x-t1-seed7", 0.87, ratio=5.0, seed=7, temperature=1.0))
    lines = [x for x in seed_means(rows).splitlines() if x.startswith("| hybrid")]
    assert (
        lines[1]
        == "| hybrid unstructured 5x | temperature 1 | 2 | 42: 89.00%, 7: 87.00% | **88.00%** | 97.8% |"
    )
    assert seed_means(rows[:1]) == ""
