"""Kills: a compression SIGKILLed between checkpoints and inside a checkpoint save resumes when the same
command runs again, and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from ladabert.pipeline.harness import COMPLETE, checkpoint_dir_for

# Compress the tiny teacher; SIGKILL the process at step N ("step") or in the save of checkpoint N ("save":
# after the Trainer wrote it, before the harness marked it complete).
_SCRIPT = """
import os, signal, sys
from transformers import TrainerCallback
from ladabert.pipeline.compress import CompressConfig, compress

teacher, glue, out, point, at = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])


class Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if point == "step" and state.global_step == at:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_save(self, args, state, control, **kw):
        if point == "save" and state.global_step == at:
            os.kill(os.getpid(), signal.SIGKILL)


cfg = CompressConfig(ratio=2, max_steps=24, save_steps=5, batch_size=16, max_length=32, eval_steps=0,
                     schedule_updates=2, calibration_samples=64)
m = compress(cfg, teacher, out, data_dir=glue, callbacks=[Kill()])
print(json.dumps({"steps": m["steps"], "resumed_from": m["resumed_from"], "ratio": m["ratio"]}))
""".replace("import os,", "import json, os,")


def _compress(tiny_teacher, synthetic_glue, out, point="none", at=-1):
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tiny_teacher), str(synthetic_glue), str(out), point, str(at)],
        capture_output=True,
        text=True,
    )


def test_killed_between_and_inside_checkpoint_saves_resumes_to_the_same_end(
    tmp_path, tiny_teacher, synthetic_glue
):
    out = tmp_path / "student"
    work = checkpoint_dir_for(out)
    res = _compress(tiny_teacher, synthetic_glue, out, "step", 7)
    assert res.returncode == -signal.SIGKILL and not out.exists()
    assert (work / "checkpoint-5" / COMPLETE).is_file()
    assert not (work / "checkpoint-5" / "training_args.bin").exists()  # a pickle no resume reads

    res = _compress(tiny_teacher, synthetic_glue, out, "save", 15)
    assert res.returncode == -signal.SIGKILL
    assert (work / "checkpoint-15").is_dir() and not (work / "checkpoint-15" / COMPLETE).exists()

    res = _compress(tiny_teacher, synthetic_glue, out, "step", 18)  # drops checkpoint-15, resumes from 10
    assert res.returncode == -signal.SIGKILL
    assert "removing the incomplete checkpoint" in res.stderr and "checkpoint-15" in res.stderr
    assert (work / "checkpoint-15" / COMPLETE).is_file()

    res = _compress(tiny_teacher, synthetic_glue, out)
    assert res.returncode == 0, res.stderr
    done = json.loads(res.stdout.strip().splitlines()[-1])
    assert done["steps"] == 24 and done["resumed_from"].endswith("checkpoint-15")
    assert done["ratio"] == pytest.approx(2.0, rel=0.01) and not work.exists()
    whole = _compress(tiny_teacher, synthetic_glue, tmp_path / "whole")
    assert json.loads(whole.stdout.strip().splitlines()[-1])["steps"] == done["steps"]

    from ladabert import load_classifier

    student = load_classifier(out)
    assert type(student).__name__ == "LadaBertForSequenceClassification"
    assert json.loads((out / "metrics.json").read_text())["steps"] == 24


def test_a_half_written_checkpoint_is_skipped_not_fatal(tmp_path, tiny_teacher, synthetic_glue):
    out = tmp_path / "k9"
    fake = checkpoint_dir_for(out) / "checkpoint-99"
    fake.mkdir(parents=True)
    (fake / "config.json").write_text((tiny_teacher / "config.json").read_text())
    res = _compress(tiny_teacher, synthetic_glue, out)
    assert res.returncode == 0, res.stderr
    assert "removing the incomplete checkpoint" in res.stderr
    done = json.loads(res.stdout.strip().splitlines()[-1])
    assert done["steps"] == 24 and done["resumed_from"] is None
