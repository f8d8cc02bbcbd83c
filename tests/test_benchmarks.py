from __future__ import annotations

import json
from dataclasses import fields

import pytest
from benchmarks.accuracy import ROWS, ratio_lines, row_id, steps_to_reach, training_cost

from ladabert.pipeline.compress import CompressConfig


def test_row_ids_are_unique_and_readable():
    ids = [row_id(*r) for r in ROWS]
    assert len(set(ids)) == len(ids)
    assert row_id("hybrid", "n:m", 5.0, 1.0) == "hybrid-nm-5x"
    assert row_id("distill-only", "unstructured", 10.0, 0.1) == "distill-only-none-10x-10pct"
    assert row_id("distill-only", "none", 10.0, 1.0, 24000) == "distill-only-none-10x-24000steps"
    assert (
        row_id("hybrid", "unstructured", 10.0, 1.0, None, {"augment": 0.0})
        == "hybrid-unstructured-10x-augment0"
    )
    # Every recipe override names a real setting (a typo would silently train the default recipe).
    names = {f.name for f in fields(CompressConfig)}
    for spec in ROWS:
        if len(spec) > 5:
            assert set(spec[5]) <= names, spec


def test_ratio_plot_keeps_one_recipe_per_line():
    def row(method, ratio, value, changes, fraction=1.0):
        return {
            "method": method,
            "pattern": "unstructured",
            "ratio": ratio,
            "value": value,
            "train_fraction": fraction,
            "recipe_changes": changes,
        }

    lines = ratio_lines(
        [
            row("hybrid", 10.0, 0.85, {}),
            row("hybrid", 5.0, 0.87, {}),
            row("hybrid", 10.0, 0.83, {"augment": {"run": 0.0, "default": 0.3}}),
            row("hybrid", 10.0, 0.81, {}, fraction=0.1),
            row("svd", 10.0, 0.84, {}),
        ]
    )
    assert lines == {
        "hybrid (unstructured)": [(5.0, 87.0), (10.0, 85.0)],
        "svd (unstructured)": [(10.0, 84.0)],
    }


def test_training_cost_counts_steps_to_come_within_a_point():
    assert steps_to_reach([[250, 0.80], [500, 0.86], [750, 0.87]], 0.855) == 500
    assert steps_to_reach([[250, 0.80]], 0.9) is None
    assert steps_to_reach([[250, 0.86], [500, 0.80], [750, 0.87]], 0.855, from_step=500) == 750
    lada = {
        "id": "hybrid-unstructured-10x",
        "method": "hybrid",
        "pattern": "unstructured",
        "ratio_target": 10.0,
        "train_fraction": 1.0,
        "value": 0.88,
        # 0.875 at step 250 is before the schedule reached 10x (step 500): it must not count.
        "curve": [[250, 0.875], [500, 0.85], [750, 0.875]],
        "schedule": [[100, 4.0], [500, 10.0]],
        "steps": 3000,
    }

    def dist(rid, steps, curve):
        return {
            "id": rid,
            "method": "distill-only",
            "pattern": "none",
            "ratio_target": 10.0,
            "train_fraction": 1.0,
            "value": curve[-1][1],
            "curve": curve,
            "steps": steps,
        }

    (c,) = training_cost([lada, dist("short", 3000, [[250, 0.6], [3000, 0.80]])])
    assert c["ladabert_steps"] == 750 and c["ladabert_schedule_end"] == 500
    assert c["distill_only_steps"] is None and c["distill_only_max_steps"] == 3000
    assert c["step_ratio"] is None and c["step_ratio_at_least"] == 4.0
    # The longest distill-only run is the one compared.
    rows = [lada, dist("short", 3000, [[3000, 0.80]]), dist("long", 9000, [[3000, 0.80], [9000, 0.871]])]
    (c,) = training_cost(rows)
    assert c["distill_only_row"] == "long" and c["distill_only_steps"] == 9000 and c["step_ratio"] == 12.0
    # ... among those of the same recipe: an augmented LadaBERT run is not compared with a plain baseline.
    augmented = {"augment": 0.3, "recipe_changes": {"augment": {"run": 0.3, "default": 0.0}}}
    aug = dist("long-aug", 6000, [[6000, 0.871]]) | augmented
    (c,) = training_cost([*rows, aug])
    assert c["distill_only_row"] == "long"
    baselines = rows[1:]
    (c,) = training_cost([lada | augmented, *baselines, aug])
    assert c["distill_only_row"] == "long-aug" and c["step_ratio"] == 8.0
    assert training_cost([lada | augmented, *baselines]) == []
    # Two LadaBERT rows of two recipes: each is paired with the baseline of its own recipe.
    lada_aug = lada | {"id": "hybrid-unstructured-10x-aug"} | augmented
    pairs = training_cost([lada_aug, *rows, aug])
    assert [(c["ladabert_row"], c["distill_only_row"]) for c in pairs] == [
        ("hybrid-unstructured-10x-aug", "long-aug"),
        ("hybrid-unstructured-10x", "long"),
    ]
    assert [c["augment"] for c in pairs] == [0.3, 0.0]
    # A setting distill-only does not have (the schedule) does not split a pair; one of the loss does.
    late = {"recipe_changes": {"schedule_fraction": {"run": 0.5, "default": 0.25}}}
    (c,) = training_cost([lada | late, *baselines])
    assert c["distill_only_row"] == "long"
    no_att = {"recipe_changes": {"w_attention": {"run": 0.0, "default": 1.0}}}
    assert training_cost([lada | no_att, *baselines]) == []
    (c,) = training_cost([lada | no_att, dist("long-noatt", 4500, [[4500, 0.9]]) | no_att, *baselines])
    assert c["distill_only_row"] == "long-noatt" and c["step_ratio"] == 6.0


def test_accuracy_table_refuses_a_teacher_other_than_its_own(tmp_path, monkeypatch, tiny_teacher, capsys):
    import json

    import benchmarks._common as common
    from benchmarks import accuracy

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    table = {"task": "sst2", "metric": "accuracy", "teacher_value": 0.123, "rows": []}
    (tmp_path / "results" / "accuracy_sst2.json").write_text(json.dumps(table))
    assert accuracy.main(["--teacher", str(tiny_teacher), "--only", "none"]) == 2
    err = capsys.readouterr().err
    assert "was made with a teacher scoring 12.30%" in err and "move accuracy_sst2.json aside" in err
    assert json.loads((tmp_path / "results" / "accuracy_sst2.json").read_text()) == table
    assert accuracy.main(["--teacher", str(tmp_path / "none")]) == 2
    assert "not found; train the teacher first" in capsys.readouterr().err


def test_latency_benchmark_exits_2_with_one_line_on_a_bad_bundle(tmp_path, capsys):
    from benchmarks import latency

    assert latency.main(["--quick", "--bundle", str(tmp_path), "--out", str(tmp_path / "l.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"benchmarks.latency: error: {tmp_path} has no ladabert.json; pass a directory written by ladabert export"
    )
    assert not (tmp_path / "l.json").exists()


def test_teacher_benchmark_marks_the_runs_of_the_default_recipe(
    tmp_path, monkeypatch, tiny_teacher, synthetic_glue
):
    import json

    import benchmarks._common as common
    from benchmarks import report, teacher

    from ladabert.pipeline.teacher import FinetuneConfig, training_steps

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    import shutil

    from ladabert.pipeline.teacher import evaluate

    m = json.loads((tiny_teacher / "metrics.json").read_text())
    runs = []
    for name, changes in (("a", {"eval_steps": 7}), ("b", {"learning_rate": 1e-4})):
        d = tmp_path / name
        shutil.copytree(tiny_teacher, d)
        cfg = FinetuneConfig(task=m["task"]).to_dict() | changes | {"max_length": 32}
        cfg.pop("min_steps")  # recorded before the setting existed: judged by the steps it made
        steps = training_steps(FinetuneConfig(), m["train_examples"])
        # A bf16 run whose recorded value is not its fp32 model's: the benchmark scores the saved model.
        rec = {"value": 0.5, "bf16_autocast": True, "config": cfg, "steps": steps}
        (d / "metrics.json").write_text(json.dumps(m | rec))
        runs.append(str(d))
    argv = ["--teacher", runs[0], "--sweep", runs[1], str(tiny_teacher), "--data-dir", str(synthetic_glue)]
    assert teacher.main(argv) == 0
    out = json.loads((tmp_path / "results" / f"teacher_{m['task']}.json").read_text())
    assert [r["default_recipe"] for r in out["sweep"]] == [True, False, False]
    fp32 = evaluate(tiny_teacher, "sst2", data_dir=synthetic_glue, max_length=32)["value"]
    assert out["value"] == fp32 and out["default_recipe_values"] == [fp32] and fp32 > 0.9
    assert out["sweep"][0]["value_recorded_by_the_run"] == 0.5
    # A clone that lacks run b records a new run beside it: b stays as recorded, a (given
    # again) is scored again rather than listed twice.
    shutil.rmtree(runs[1])
    assert (
        teacher.main(["--teacher", runs[0], "--sweep", str(tiny_teacher), "--data-dir", str(synthetic_glue)])
        == 0
    )
    again = json.loads((tmp_path / "results" / f"teacher_{m['task']}.json").read_text())
    assert [r["dir"] for r in again["sweep"]] == [runs[0], str(tiny_teacher), runs[1]]
    assert again["sweep"][2] == out["sweep"][1] and again["default_recipe_values"] == [fp32]


def test_recipe_changes_name_what_differs_from_todays_defaults():
    from dataclasses import asdict

    from benchmarks._common import describe_changes, recipe_changes

    from ladabert.pipeline.compress import CompressConfig

    today = asdict(CompressConfig())
    # Only what is compressed and how it is logged differ: still the default recipe.
    assert recipe_changes(today | {"ratio": 10.0, "pattern": "n:m", "eval_steps": 250, "save_steps": 1}) == {}
    assert describe_changes({}) == "default"
    # A run recorded before `augment` existed trained without augmentation.
    old = {k: v for k, v in today.items() if k not in ("augment", "average_last")}
    assert recipe_changes(old) == {"augment": {"run": 0.0, "default": today["augment"]}}
    # What a replaced token becomes matters only when tokens are replaced.
    assert recipe_changes(today | {"augment_swap": "neighbors"}) == {
        "augment_swap": {"run": "neighbors", "default": "batch"}
    }
    assert "augment_swap" not in recipe_changes(today | {"augment": 0.0, "augment_swap": "neighbors"})
    changed = recipe_changes(today | {"max_steps": 24000, "temperature": 4.0})
    assert describe_changes(changed) == (
        f"max_steps 24000 (now {today['max_steps']}), temperature 4 (now {today['temperature']:g})"
    )
    # Settings the method does not use are not differences.
    assert recipe_changes(today | {"method": "svd", "hybrid": 0.5}) == {}
    assert (
        recipe_changes(today | {"method": "distill-only", "initial_ratio": 3.0, "schedule": "linear"}) == {}
    )
    assert recipe_changes(today | {"hybrid": 0.5}) == {"hybrid": {"run": 0.5, "default": 0.75}}
    # average_every matters only when weights are averaged.
    assert recipe_changes(today | {"average_every": 10}) == {}
    assert set(recipe_changes(today | {"average_every": 10, "average_last": 0.2})) == {
        "average_every",
        "average_last",
    }


def test_steps_plot_has_one_panel_per_recipe_with_its_own_baselines():
    from benchmarks.accuracy import steps_panels

    old = {"recipe_changes": {"w_attention": {"run": 0.0, "default": 1.0}}}

    def row(rid, method, **kw):
        base = {"id": rid, "method": method, "pattern": "unstructured", "ratio_target": 10.0}
        return base | {"train_fraction": 1.0, "curve": [[250, 0.8]], "recipe_changes": {}} | kw

    rows = [
        row("lada", "hybrid"),
        row("dist", "distill-only"),
        row("lada-old", "hybrid", **old),
        row("dist-old", "distill-only", **old),
        row("dist-10pct", "distill-only", train_fraction=0.1),
    ]
    costs = [{"ladabert_row": "lada", "target": 0.8}, {"ladabert_row": "lada-old", "target": 0.8}]
    panels = steps_panels(rows, costs)
    assert [(t, [r["id"] for r in rs]) for t, rs in panels] == [
        ("today's recipe", ["lada", "dist"]),
        ("w_attention 0 (now 1)", ["lada-old", "dist-old"]),
    ]


def test_gate_power_rates_and_table_come_from_the_decisions():
    from benchmarks.gate_power import render, summarize, wilson

    lo, hi = wilson(0, 60)
    assert lo == 0 and 0.05 < hi < 0.07  # no false alarm in 60 still allows about 6%
    trials = [
        {"outcome": o, "ratio": 1.1, "low": 1.06, "high": 1.14, "rounds": 30, "decision_s": s}
        for o, s in [("regression", 2.0), ("regression", 4.0), ("inconclusive", 120.0), ("pass", 3.0)]
    ]
    row = summarize("~10% slower (FFN 1856)", 0.102, trials)
    assert (row["pass"], row["regression"], row["inconclusive"]) == (1, 2, 1)
    assert row["regression_rate"] == 0.5 and row["median_decision_s"] == 3.5 and row["max_decision_s"] == 120
    d = {
        "machine": {"cpu": "Some CPU", "cores": 2, "flags": ["avx2"]},
        "settings": {"threads": 2, "max_slowdown": 0.05, "confidence": 0.95, "budget_s": 120, "sessions": 3},
        "model_a_ms": 20.0,
        "conditions": [row],
        "verify_seconds": 120,
        "chosen_widths": [1664, 1856, 2176],
    }
    table = render(d)
    assert "| ~10% slower (FFN 1856) | +10.2% | 4 | 1 | 2 | 1 | 50.0% (" in table
    assert "3.5 / 120.0" in table and "Some CPU" in table


def _frontier_row(name, value, ms, **extra):
    return {
        "model": name,
        "value": value,
        "of_teacher": value / 0.9,
        "int8_value": value,
        "ratio": 3.0,
        "num_layers": 2,
        "steps": 100,
        "latency": {"ort-int8/b1": ms},
        "fastest_b1": {"backend": "ort-int8", "ms": ms},
        "speedup_b1": 6.0 / ms,
        "fastest_b8": {"backend": "ort-int8", "ms": 8 * ms},
        "speedup_b8": 6.0 / ms,
        **extra,
    }


def test_frontier_table_and_plot_come_from_the_json(tmp_path):
    from benchmarks.frontier import _spearman, render

    shape = {"layers": 2, "heads": 6, "ffn": 768, "ratio_factor": 1.0}
    rows = [
        _frontier_row("teacher", 0.9, 6.0),
        _frontier_row(
            "budget-3x",
            0.88,
            1.7,
            budget_ms=2.0,
            backend="ort-int8",
            shape=shape,
            proxy=0.7,
            measured_ms=1.8,
            blocks_ms=[1.75, 1.8, 1.8, 1.9, 2.2],
            within_budget=True,
        ),
    ]
    d = {
        "rows": rows,
        "teacher_fastest": {"backend": "ort-int8", "ms": 6.0, "batch": 1, "seq": 128},
        "settings": {"max_steps": 100},
        "proxy_vs_accuracy_spearman": None,
        "machine": {"cpu": "X", "cores": 2},
    }
    path = tmp_path / "frontier_t.json"

    def rendered() -> str:
        path.write_text(json.dumps(d))
        render(path)
        return path.with_suffix(".md").read_text()

    md = rendered()
    assert (
        "| budget-3x | 2 | 2/6/768/1 | 3.00x | 88.00% | 97.8% | 2.00 (ort-int8) | 1.80 (within) 1.75-2.20 |"
        in md
    )
    assert "3.53x" in md and path.with_suffix(".png").stat().st_size > 1000
    assert _spearman([1, 2, 3], [0.1, 0.3, 0.2]) == pytest.approx(0.5) and _spearman([1], [2]) is None
    assert "dev accuracy there" not in md  # results without served accuracies have no served table
    rows[0]["served"] = {"backend": "ort-int8", "value": 0.89, "of_teacher": 1.0}
    rows[1]["served"] = {"backend": "openvino-bf16", "value": 0.876, "of_teacher": 0.876 / 0.89}
    md = rendered()
    assert "| budget-3x | openvino-bf16 | 87.60% | 98.4% | 3.53x |" in md
    rows[0]["alone"] = {"backend": "ort-int8", "ms": 5.0, "speedup": 1.0}
    rows[1]["alone"] = {"backend": "ort-int8", "ms": 1.25, "speedup": 4.0}
    md = rendered()
    assert "| budget-3x | openvino-bf16 | 87.60% | 98.4% | 3.53x | 1.25 ms, 4.00x |" in md
    assert "budget protocol" not in md.splitlines()[-1]  # no teacher reading when the budgets were set
    rows[1].update(measured_ms=2.4, within_budget=False, at_budget_speed_ms=1.9)
    rows[1]["within_budget_at_budget_speed"] = True
    d["teacher_fastest"].update(protocol_ms=5.0, protocol_ms_at_end=6.3)
    md = rendered()
    assert "| 2.40 (ABOVE) 1.75-2.20; 1.90 at the budget's speed (within) |" in md
    assert "5.00 ms when the budgets were set, 6.30 ms in the final check" in md
    d["teacher_fastest"].update(protocol_blocks_ms=[4.9, 5.0, 5.1], protocol_blocks_ms_at_end=[5.0, 6.3, 6.4])
    md = rendered()
    assert (
        "5.00 ms (4.90-5.10) when the budgets were set, 6.30 ms (5.00-6.40) in the final check (the range of its"
        in md
    )
    assert "Budgets: the teacher's fastest as timed before training, ort-int8 6.00 ms at batch 1" in md
    d["teacher_fastest"]["budgets_divide_ms"] = 5.0
    md = rendered()
    assert "ort-int8 (6.00 ms interleaved at batch 1 x seq 128), the teacher alone there" in md
    assert "by the budget protocol before training, 5.00 ms, divided by the budget's divisor" in md
    # Students searched and served on another backend than the teacher's fastest: the note says so.
    d["settings"].update(speedups=True, student_backend="openvino-bf16")
    rows[1]["alone"]["backend"] = "openvino-bf16"
    md = rendered()
    assert "Targets: speedups over the teacher on its fastest backend, ort-int8" in md
    assert "x seq 128); the students searched and served on openvino-bf16; each search" in md
    rows[1].update(speedup_target=3.0, within_target=True)
    rows[1]["alone"]["speedup_blocks"] = [3.8, 4.0, 4.1]
    md = rendered()
    assert "; 4.00x the teacher alone, 3.80-4.10x over its 3 blocks (within target) |" in md
    d["settings"].update(speedups=False, student_backend=None)
    d["refused"] = {"budget-3x-L4": "latency budget 2 ms is out of reach on ort-int8"}
    md = rendered()
    assert (
        md.splitlines()[-1] == "- budget-3x-L4: not trained: latency budget 2 ms is out of reach on ort-int8"
    )


def test_budgets_divide_the_teacher_alone_where_it_was_read_so():
    from benchmarks.frontier import _budget_base

    assert _budget_base({"median_ms": 4.9, "protocol_ms": 3.4}) == 3.4
    assert _budget_base({"median_ms": 4.9}) == 4.9  # a work folder timed before the protocol reading


def test_frontier_refuses_a_missing_teacher_in_one_line(tmp_path, capsys):
    from benchmarks.frontier import main

    assert main(["--teacher", str(tmp_path / "none"), "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ladabert finetune" in err and not (tmp_path / "w").exists()


def test_searched_shapes_carry_over_to_bert_base_as_shares_at_the_ratio():
    import torch
    from benchmarks.budget_bert_base import carried_over
    from transformers import BertConfig, BertForSequenceClassification

    from ladabert.pipeline import budget as B

    with torch.device("meta"):
        bert_base = B.Teacher.of(BertForSequenceClassification(BertConfig(num_labels=2)))
    source = {"num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536}
    c = carried_over({"layers": 3, "heads": 6, "ffn": 384}, source, bert_base, 10.0)
    assert (c.layers, c.heads, c.ffn) == (6, 6, 768) and c.ratio_factor > 1
    structural = bert_base.params / B.structure_params(bert_base, B.Candidate(6, 6, 768, 1.0))
    assert structural * c.ratio_factor == pytest.approx(10.0, rel=1e-5)
    # A shape that alone exceeds the ratio keeps every weight of its structure.
    assert carried_over({"layers": 1, "heads": 1, "ffn": 96}, source, bert_base, 2.0).ratio_factor == 1.0


def test_bert_base_carry_over_reads_the_shapes_of_a_search_or_of_a_frontier():
    from benchmarks.budget_bert_base import searched_shapes

    a, b = {"layers": 5, "heads": 1, "ffn": 384, "ratio_factor": 1.0}, {"layers": 3, "heads": 6, "ffn": 96}
    search = {"rows": [{"model": "budget-3x", "chosen": a}, {"model": "budget-2x", "chosen": b}]}
    assert searched_shapes(search) == {"budget-3x": a, "budget-2x": b}
    frontier = {
        "rows": [
            {"model": "teacher"},
            {"model": "budget-3x", "shape": a},
            {"model": "distill-only-3x", "shape": "hidden 96"},
            {"model": "default", "shape": None},
        ]
    }
    assert searched_shapes(frontier) == {"budget-3x": a}


def test_bert_base_carry_over_refuses_a_teacher_that_is_not_there(tmp_path, capsys):
    from benchmarks import budget_bert_base

    searches = tmp_path / "search.json"
    searches.write_text(json.dumps({"teacher": str(tmp_path / "gone"), "rows": []}))
    assert budget_bert_base.main(["--searches", str(searches)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gone has no config.json" in err and "--teacher" in err
    # --teacher overrides the recorded path, and is checked the same way.
    assert budget_bert_base.main(["--searches", str(searches), "--teacher", str(tmp_path / "x")]) == 2
    assert "x has no config.json" in capsys.readouterr().err


def test_distill_only_match_is_the_widest_within_the_target_and_is_kept(tmp_path, tiny_bert_dir, monkeypatch):
    import argparse

    from benchmarks import frontier

    from ladabert.bench import latency
    from ladabert.errors import LadaBertError

    args = argparse.Namespace(batch=1, seq=16)
    # Real exports and runners; the clock reads the hidden size, so that the bisection's answer is known.
    widths: list[int] = []
    real_export = latency.export_graphs

    def export(model, *a, **k):
        widths.append(model.config.hidden_size)
        return real_export(model, *a, **k)

    monkeypatch.setattr(latency, "export_graphs", export)
    monkeypatch.setattr(latency, "median_ms", lambda run, feeds, *a, **k: float(widths[-1]))
    out = tmp_path / "distill-only-3x"
    match = frontier._distill_only_match(tiny_bert_dir, 20.0, 0.1, "ort-fp32", args, out)
    step = json.loads((tiny_bert_dir / "config.json").read_text())["num_attention_heads"]
    assert match["hidden_size"] == 18 and match["hidden_size"] % step == 0
    assert match["target_ms"] == pytest.approx(18) and len(match["timed"]) < 8  # bisection over 16 widths
    # The recorded ratio builds that width.
    from transformers import BertForSequenceClassification

    from ladabert.pipeline.build import build_student

    student = build_student(
        BertForSequenceClassification.from_pretrained(tiny_bert_dir),
        CompressConfig(method="distill-only", ratio=match["ratio"]),
    )
    assert student.config.hidden_size == match["hidden_size"]
    # Kept for a resumed run: nothing is timed again.
    monkeypatch.setattr(latency, "export_graphs", None)
    assert frontier._distill_only_match(tiny_bert_dir, 20.0, 0.1, "ort-fp32", args, out) == match
    with pytest.raises(LadaBertError, match="narrowest distill-only student measures"):
        monkeypatch.setattr(latency, "export_graphs", export)
        frontier._distill_only_match(tiny_bert_dir, 1.0, 0.1, "ort-fp32", args, tmp_path / "d-6x")
    assert not (tmp_path / "d-6x.match.json").exists()


def test_students_matched_to_a_budget_read_its_search_on_record(tmp_path):
    from benchmarks.frontier import _recorded_search

    student = tmp_path / "budget-3x"
    assert _recorded_search(student) is None
    ckpt = tmp_path / "budget-3x.checkpoints"
    ckpt.mkdir()
    (ckpt / "latency_search.json").write_text(json.dumps({"budget_ms": 6.71}))
    assert _recorded_search(student)["budget_ms"] == 6.71  # searched, still training
    student.mkdir()
    (student / "metrics.json").write_text(json.dumps({"latency_search": {"budget_ms": 6.5}}))
    assert _recorded_search(student)["budget_ms"] == 6.5


def test_frontier_refuses_a_depth_alternative_without_its_budget(tmp_path, capsys):
    from benchmarks.frontier import main

    argv = ["--teacher", str(tmp_path), "--work", str(tmp_path / "w"), "--divisors", "2", "3"]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--depth-alternative", "4"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and "--depth-alternative 4 is not among --divisors" in err
    assert not (tmp_path / "w").exists()
    with pytest.raises(SystemExit) as e:
        main([*argv, "--depth-alternative", "3", "--alternative-depths", "2", "0"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and "--alternative-depths must be >= 1, got 0" in err
    assert not (tmp_path / "w").exists()
    with pytest.raises(SystemExit) as e:
        main([*argv, "--check-blocks", "0"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and "--check-blocks must be >= 1, got 0" in err
    assert not (tmp_path / "w").exists()


def test_budgets_are_checked_on_the_bundles_timed_alone_in_turn(tmp_path, monkeypatch):
    import torch
    from benchmarks.frontier import _budget_checks
    from transformers import BertConfig, BertForSequenceClassification

    import ladabert.bench.latency as lat

    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    checks = {}
    for name, budget in (("fast", 1e3), ("tight", 1e-3)):
        bundle = tmp_path / f"{name}-onnx"
        bundle.mkdir()
        paths = lat.export_graphs(BertForSequenceClassification(cfg).eval(), bundle, "model", int8=False)
        (bundle / "ladabert.json").write_text(json.dumps({"files": {"fp32": paths["fp32"].name}}))
        (bundle / "config.json").write_text(json.dumps({"vocab_size": 100}))
        checks[name] = (bundle, "ort-fp32", 1, budget)
    monkeypatch.setattr(lat, "BUDGET_BLOCK_S", 0.05)
    out = _budget_checks(checks, 16)
    assert set(out) == {"fast", "tight"}
    fast, tight = out["fast"], out["tight"]
    assert fast["backend"] == "ort-fp32" and 0 < fast["measured_ms"] < 1e3 and fast["within_budget"]
    assert len(fast["blocks_ms"]) == lat.BUDGET_BLOCKS and not tight["within_budget"]
    assert [len(r["blocks_ms"]) for r in _budget_checks(checks, 16, blocks=2).values()] == [2, 2]


def test_budget_check_reads_students_against_the_teacher_block_by_block(tmp_path, monkeypatch):
    """A slowdown over most blocks puts the student's median above its budget; read against the teacher
    in the same blocks, at the teacher's speed when the budgets were set, it is within."""
    from types import SimpleNamespace

    from benchmarks.frontier import _budget_checks

    import ladabert.bench.latency as lat

    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 100}))
    blocks = {"teacher": [10.0, 20.0, 20.0, 20.0, 10.0], "student": [3.0, 6.0, 6.0, 6.0, 3.0]}
    monkeypatch.setattr(lat, "bundle_runners", lambda b, backends, t: [SimpleNamespace(run=b.name)])

    def fake_blocks(runs, feeds, n=None):  # noqa: ANN001, ANN202
        return {n: {"ms": sorted(blocks[r])[2], "blocks": blocks[r]} for n, r in runs.items()}

    monkeypatch.setattr(lat, "block_medians", fake_blocks)
    for n in blocks:
        (tmp_path / n).mkdir()
        (tmp_path / n / "config.json").write_text(json.dumps({"vocab_size": 100}))
    checks = {
        "teacher": (tmp_path / "teacher", "ort-fp32", 1, float("inf")),
        "student": (tmp_path / "student", "ort-fp32", 1, 3.5),
    }
    out = _budget_checks(checks, 16, ("teacher", 10.0))
    s = out["student"]
    assert s["measured_ms"] == 6.0 and not s["within_budget"]
    assert abs(s["vs_reference"] - 0.3) < 1e-9 and abs(s["at_budget_speed_ms"] - 3.0) < 1e-9
    assert s["within_budget_at_budget_speed"] and out["teacher"]["drift"] == 2.0
    assert s["vs_reference_blocks"] == [0.3] * 5
    assert "vs_reference" not in _budget_checks(checks, 16)["student"]
    blocks["student"] = [4.0, 8.0, 8.0, 8.0, 4.0]  # slower than the slowdown accounts for
    assert not _budget_checks(checks, 16, ("teacher", 10.0))["student"]["within_budget_at_budget_speed"]


def test_results_name_the_cpu_kind_the_model_name_hides():
    from benchmarks._common import cpu_name

    assert cpu_name({"cpu": "AMD EPYC", "flags": ["avx2"]}) == "AMD EPYC (AVX2, no AVX-512)"
    assert (
        cpu_name({"cpu": "AMD EPYC", "flags": ["avx2", "avx512f", "avx512_bf16"]})
        == "AMD EPYC (AVX-512, no AMX)"
    )
    assert cpu_name({"cpu": "Xeon", "flags": ["avx2", "avx512f", "amx_tile"]}) == "Xeon (AMX)"
    assert cpu_name({"cpu": "Old", "flags": []}) == "Old" and cpu_name({}) == "?"


def test_a_search_on_every_backend_shows_each_backends_pick(tmp_path):
    from benchmarks.frontier import render_search

    chosen = {"layers": 5, "heads": 3, "ffn": 288, "ratio_factor": 1.0}
    row = {
        "model": "budget-3x",
        "divisor": 3.0,
        "budget_ms": 7.0,
        "backend": "openvino-bf16",
        "chosen": chosen,
        "kept_layers": [0, 1, 2, 3, 5],
        "measured_ms": 5.9,
        "predicted_ms": 6.1,
        "proxy": {"proxy": 0.78},
        "timed": [{}] * 12,
        "candidates": 900,
        "search_s": 400.0,
        "backends": [
            {
                "backend": "ort-int8",
                "chosen": {**chosen, "heads": 1},
                "proxy": 0.75,
                "measured_ms": 6.2,
                "search_s": 100.0,
            },
            {
                "backend": "openvino-bf16",
                "chosen": chosen,
                "proxy": 0.78,
                "measured_ms": 5.9,
                "search_s": 110.0,
            },
            {"backend": "ort-fp32", "error": "even the smallest student misses the target"},
        ],
    }
    d = {
        "teacher_fastest": {"backend": "ort-int8", "median_ms": 21.0, "batch": 1, "seq": 128},
        "machine": {"cpu": "AMD EPYC", "cores": 2, "flags": ["avx2"]},
        "rows": [row],
    }
    path = tmp_path / "frontier_t_search.json"
    path.write_text(json.dumps(d))
    render_search(path)
    md = path.with_suffix(".md").read_text()
    assert "AMD EPYC (AVX2, no AVX-512), 2 cores" in md
    assert "| teacher / 3 | 7.00 | openvino-bf16 | 5/3/288/1 |" in md
    assert "| teacher / 3 | ort-int8 | 5/1/288/1 | 0.750 | 6.20 | 100 |" in md
    assert "| teacher / 3 | ort-fp32 | none: even the smallest student misses the target | - | - | - |" in md
