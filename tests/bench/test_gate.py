"""The throughput gate: its statistics on known distributions, its decision loop on a fake clock, and the
command on real ONNX models (a tiny bundle against itself and against a model many times its size)."""

from __future__ import annotations

import json
import math
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from ladabert.bench import gate as g
from ladabert.bench import stats
from ladabert.cli import main
from ladabert.config import GateConfig
from ladabert.errors import LadaBertError


def test_look_points_grow_by_half_and_end_at_the_cap():
    assert stats.look_points(20, 100) == [20, 30, 45, 68, 100]
    assert stats.z_value(0.95, 1) == pytest.approx(1.96, abs=1e-3)
    assert stats.z_value(0.95, 10) > stats.z_value(0.95, 1)  # every look pays for the others


def test_interval_covers_a_known_ratio_and_shrinks_with_samples():
    rng = np.random.default_rng(0)
    ref = 10 * rng.lognormal(0, 0.2, 1000)
    cand = 12 * rng.lognormal(0, 0.2, 1000)
    small = stats.ratio_interval(cand[:100], ref[:100], 1.96, paired=False)
    large = stats.ratio_interval(cand, ref, 1.96, paired=False)
    assert large.low < 1.2 < large.high
    assert (large.high - large.low) < (small.high - small.low) / 2.5  # ~1/sqrt(10) of the width
    assert stats.decide(large, 1.05) == "regression"
    assert stats.decide(stats.ratio_interval(ref[:500], ref[500:], 1.96, paired=False), 1.05) == "pass"


def test_pairing_cancels_slow_spells_that_hit_both_sides():
    rng = np.random.default_rng(1)
    spell = np.repeat(rng.lognormal(0, 0.4, 40), 10)  # the machine changes speed every 10 rounds
    ref = 5 * spell * rng.lognormal(0, 0.02, 400)
    cand = 5.5 * spell * rng.lognormal(0, 0.02, 400)
    paired = stats.ratio_interval(cand, ref, 1.96, paired=True)
    unpaired = stats.ratio_interval(cand, ref, 1.96, paired=False)
    assert paired.low < 1.1 < paired.high
    assert paired.se_log < unpaired.se_log / 2


def test_rounds_to_decide_follows_the_square_root_law():
    iv = stats.Interval(ratio=1.04, low=1.00, high=1.08, se_log=0.02)
    need = stats.rounds_to_decide(iv, 1.05, 2.0, 100)
    gap = math.log(1.05) - math.log(1.04)
    assert need == math.ceil(100 * (2.0 * 0.02 / gap) ** 2)
    assert stats.rounds_to_decide(stats.Interval(1.05, 1.0, 1.1, 0.02), 1.05, 2.0, 100) is None


class FakeClock:
    """perf_counter for the gate: each fake model call advances it by a lognormal time around its mean."""

    def __init__(self):
        self.now = 0.0
        self.rng = np.random.default_rng(0)

    def model(self, mean_ms: float, sigma: float = 0.15):
        def run(feeds):
            self.now += mean_ms * float(self.rng.lognormal(0, sigma)) / 1e3

        return run


def _decide(monkeypatch, ref_ms: float, cand_ms: float, **kw) -> list[g.Check]:
    clock = FakeClock()
    monkeypatch.setattr(g.time, "perf_counter", lambda: clock.now)
    cfg = GateConfig(reference="ref", candidates=("cand",), **kw)
    ref = g.Timer("reference", "ref", "ort-fp32", (1, 128), [clock.model(ref_ms)])
    cand = g.Timer("candidate", "cand", "ort-fp32", (1, 128), [clock.model(cand_ms)])
    checks = [g.Check(cand, ref)]
    g._run_rounds([ref, cand], checks, cfg, {(1, 128): {}}, progress=False)
    return checks


def test_fake_clock_decisions_pass_regress_and_stay_open_at_the_limit(monkeypatch):
    (same,) = _decide(monkeypatch, 10, 10)
    assert same.outcome == "pass" and same.interval.high <= 1.05
    (slow,) = _decide(monkeypatch, 10, 12)
    assert slow.outcome == "regression" and slow.interval.low > 1.05
    assert len(slow.candidate.times) == len(slow.reference.times) == 20  # decided at the first look
    (edge,) = _decide(monkeypatch, 10, 10.5, budget_s=5)
    assert edge.outcome == "inconclusive" and edge.interval.low <= 1.05 < edge.interval.high
    assert edge.rounds_to_decide is None or edge.rounds_to_decide > len(edge.candidate.times)
    assert sum(edge.candidate.times) + sum(edge.reference.times) == pytest.approx(5e3, rel=0.02)


def test_sessions_in_turn_keep_one_slow_session_from_deciding(monkeypatch):
    """One session of a file that runs 8% slow for its life: alone it is a regression; one of three, not."""
    clock = FakeClock()
    monkeypatch.setattr(g.time, "perf_counter", lambda: clock.now)
    outcomes = []
    for sessions in (1, 3):
        cfg = GateConfig(reference="a", candidates=("a",), sessions=sessions)
        ref = g.Timer("reference", "a", "ort-fp32", (1, 8), [clock.model(10, 0.02) for _ in range(sessions)])
        slow = [clock.model(10.8, 0.02)] + [clock.model(10, 0.02) for _ in range(sessions - 1)]
        cand = g.Timer("candidate", "a", "ort-fp32", (1, 8), slow)
        checks = [g.Check(cand, ref)]
        g._run_rounds([ref, cand], checks, cfg, {(1, 8): {}}, progress=False)
        outcomes.append(checks[0].outcome)
    assert outcomes == ["regression", "pass"]


def test_min_speedup_sets_the_limit(monkeypatch):
    (check,) = _decide(monkeypatch, 10, 4, min_speedup=2.0)
    assert check.outcome == "pass"
    (check,) = _decide(monkeypatch, 10, 6, min_speedup=2.0)
    assert check.outcome == "regression"


def test_stopping_early_keeps_false_alarms_rare(monkeypatch):
    """A-vs-A on the fake clock with the gate's looks: false alarms stay below 1 - confidence."""
    alarms = 0
    for seed in range(60):
        clock = FakeClock()
        clock.rng = np.random.default_rng(seed)
        monkeypatch.setattr(g.time, "perf_counter", lambda c=clock: c.now)
        cfg = GateConfig(reference="a", candidates=("a",), max_slowdown=0.01, max_rounds=200, seed=seed)
        ref = g.Timer("reference", "a", "ort-fp32", (1, 8), [clock.model(1, sigma=0.3)])
        cand = g.Timer("candidate", "a", "ort-fp32", (1, 8), [clock.model(1, sigma=0.3)])
        checks = [g.Check(cand, ref)]
        g._run_rounds([ref, cand], checks, cfg, {(1, 8): {}}, progress=False)
        alarms += checks[0].outcome == "regression"
    assert alarms <= 1  # at most 1.7%; each look at the usual z = 1.96 instead alarms far more often


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="exactly one of reference"):
        GateConfig(candidates=("x",))
    with pytest.raises(ValueError, match="candidates needs"):
        GateConfig(reference="x")
    with pytest.raises(ValueError, match="backends must be one of"):
        GateConfig(reference="x", candidates=("x",), backends=("pytorch-fp32",))
    assert GateConfig(reference="x", candidates=("x",), min_speedup=4).limit == 0.25


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, tiny_teacher, synthetic_glue):
    from ladabert.export.bundle import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("gate") / "bundle"
    export_bundle(tiny_teacher, out, ExportConfig(max_length=32), data_dir=synthetic_glue)
    return out


@pytest.fixture(scope="module")
def big_config(tmp_path_factory, tiny_teacher):
    """A BERT config many times the tiny teacher's size, with its vocabulary (random weights)."""
    cfg = json.loads((tiny_teacher / "config.json").read_text())
    cfg.update(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    path = tmp_path_factory.mktemp("gate") / "big.json"
    path.write_text(json.dumps(cfg))
    return path


def test_a_bundle_against_itself_passes_and_writes_every_report(tiny_bundle, tmp_path, capsys):
    files = {k: tmp_path / f"gate.{k}" for k in ("json", "xml", "md")}
    code = main(
        ["gate", "--reference", str(tiny_bundle), "--candidate", str(tiny_bundle), "--seqs", "32"]
        + ["--backends", "ort-fp32", "ort-int8", "--max-slowdown", "0.5", "--budget-s", "30"]
        + ["--json", str(files["json"]), "--junit", str(files["xml"]), "--markdown", str(files["md"])]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "gate PASS: 2 passed, 0 regressed, 0 inconclusive" in out
    res = json.loads(files["json"].read_text())
    assert [c["backend"] for c in res["checks"]] == ["ort-fp32", "ort-int8"]
    assert all(c["outcome"] == "pass" and c["limit"] == 1.5 for c in res["checks"])
    assert res["fingerprint"]["threads"] == 2 and res["fingerprint"]["onnxruntime"]
    suite = ET.parse(files["xml"]).getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "0"
    assert files["md"].read_text().count("| PASS |") == 2


def test_openvino_int8_calibrates_within_the_models_positions(tiny_bundle, tmp_path, capsys):
    """NNCF calibrates on 128-token sequences, or on as many as a model's position embeddings take (the
    tiny bundle has 64): longer ones fail inside OpenVINO."""
    from ladabert.bench.latency import calibration_feeds

    assert {f["input_ids"].shape for f in calibration_feeds(50, 64)} == {(1, 64)}
    assert {f["input_ids"].shape for f in calibration_feeds(50)} == {(1, 128)}
    out = tmp_path / "gate.json"
    code = main(
        ["gate", "--reference", str(tiny_bundle), "--candidate", str(tiny_bundle), "--seqs", "32"]
        + ["--backends", "openvino-int8", "--max-slowdown", "0.5", "--budget-s", "30", "--json", str(out)]
    )
    assert code == 0, capsys.readouterr().out
    assert [c["outcome"] for c in json.loads(out.read_text())["checks"]] == ["pass"]


def test_a_much_larger_candidate_is_a_regression_with_exit_1(tiny_bundle, big_config, tmp_path, capsys):
    junit = tmp_path / "gate.xml"
    code = main(
        ["gate", "--reference", str(tiny_bundle), "--candidate", str(big_config), "--seqs", "32"]
        + ["--budget-s", "30", "--junit", str(junit)]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    assert "REGRESSION" in out
    failure = ET.parse(junit).getroot().find("testsuite/testcase/failure")
    assert failure is not None and failure.get("type") == "regression"


def test_a_stored_baseline_is_used_on_its_machine_and_refused_elsewhere(tiny_bundle, tmp_path, capsys):
    base = tmp_path / "baseline.json"
    common = ["--seqs", "32", "--max-slowdown", "0.5", "--budget-s", "20"]
    assert main(["gate", "--reference", str(tiny_bundle), "--save-baseline", str(base)] + common) == 0
    stored = json.loads(base.read_text())
    assert GateConfig.baseline_rounds <= len(stored["samples"]["ort-fp32 b1 s32"]) <= GateConfig.max_rounds
    assert main(["gate", "--baseline", str(base), "--candidate", str(tiny_bundle)] + common) == 0
    capsys.readouterr()

    stored["fingerprint"]["cpu"] = "Some Other CPU"
    base.write_text(json.dumps(stored))
    assert main(["gate", "--baseline", str(base), "--candidate", str(tiny_bundle)] + common) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cpu 'Some Other CPU' there" in err and f"--save-baseline {base}" in err
    with pytest.raises(LadaBertError, match="has no samples for ort-int8"):
        stored["fingerprint"] = g.machine_fingerprint(2)
        base.write_text(json.dumps(stored))
        g.load_baseline(GateConfig(baseline=str(base), candidates=("x",), backends=("ort-int8",), seqs=(32,)))


@pytest.mark.parametrize(
    "args, match",
    [
        (["--candidate", "x"], "exactly one of reference"),
        (["--reference", "no/such/bundle", "--candidate", "x"], "no/such/bundle does not exist"),
        (["--reference", "studnet-5x", "--candidate", "x"], "studnet-5x does not exist"),
        (
            ["--reference", "bert-base", "--candidate", "student-0.5x"],
            "student-0.5x: a student's ratio is above 1",
        ),
        (["--baseline", "no/such.json", "--candidate", "bert-base"], "baseline no/such.json does not exist"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args, match, capsys):
    assert main(["gate"] + args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err


def test_a_backend_the_bundle_lacks_is_named(tiny_teacher, synthetic_glue, tmp_path, capsys):
    from ladabert.export.bundle import ExportConfig, export_bundle

    fp32_only = tmp_path / "fp32"
    export_bundle(
        tiny_teacher, fp32_only, ExportConfig(max_length=32, precisions=("fp32",)), data_dir=synthetic_glue
    )
    code = main(
        ["gate", "--reference", str(fp32_only), "--candidate", str(fp32_only), "--backends", "ort-int8"]
        + ["--seqs", "32"]
    )
    assert code == 2
    assert "has no int8 ONNX file; leave out ort-int8" in capsys.readouterr().err


def test_an_output_inside_an_input_or_unwritable_is_refused_before_timing(tiny_bundle, tmp_path, capsys):
    code = main(
        ["gate", "--reference", str(tiny_bundle), "--candidate", "x", "--json", str(tiny_bundle / "g.json")]
    )
    assert code == 2 and "--json" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    code = main(["gate", "--reference", "x", "--candidate", "x", "--junit", str(tmp_path / "file" / "g.xml")])
    assert code == 2 and "is not a directory" in capsys.readouterr().err
    assert not (tiny_bundle / "g.json").exists()
