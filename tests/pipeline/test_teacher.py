from __future__ import annotations

import json

import pytest

from ladabert.errors import LadaBertError
from ladabert.pipeline.harness import checkpoint_dir_for
from ladabert.pipeline.teacher import FinetuneConfig, evaluate, finetune, finetune_preset


def _config(model_dir, **kw) -> FinetuneConfig:
    base = dict(
        task="sst2",
        model=str(model_dir),
        max_length=32,
        epochs=4,
        min_steps=0,
        batch_size=16,
        learning_rate=2e-3,
        warmup_ratio=0.1,
        eval_steps=0,
        save_steps=50,
        logging_steps=10,
    )
    return FinetuneConfig(**{**base, **kw})


def test_tiny_bert_learns_the_synthetic_task_and_reloads(tmp_path, tiny_bert_dir, synthetic_glue):
    out = tmp_path / "teacher"
    m = finetune(_config(tiny_bert_dir), out, data_dir=synthetic_glue)
    assert m["value"] >= 0.9, m  # chance is 0.5
    assert m["steps"] == 4 * 38  # 600 examples / batch 16 = 38 steps an epoch
    for f in ("config.json", "model.safetensors", "tokenizer.json", "metrics.json"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "metrics.json").read_text())
    assert {"task", "metric", "value", "steps", "wall_s", "device", "versions"} <= set(saved)
    assert not checkpoint_dir_for(out).exists()  # checkpoints are cleaned up after success
    # The saved directory reloads through from_pretrained and scores the same.
    again = evaluate(out, "sst2", data_dir=synthetic_glue, max_length=32)
    assert again["value"] == pytest.approx(m["value"], abs=1e-9)


class _Kill(Exception):
    pass


def test_killed_run_resumes_from_its_checkpoint(tmp_path, tiny_bert_dir, synthetic_glue):
    from transformers import TrainerCallback

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 45:
                raise _Kill()

    out = tmp_path / "teacher"
    cfg = _config(tiny_bert_dir, epochs=2, save_steps=20)
    with pytest.raises(_Kill):
        finetune(cfg, out, data_dir=synthetic_glue, callbacks=[KillAt()])
    assert not out.exists()  # nothing half-written
    assert not list(tmp_path.glob(".teacher.tmp-*"))
    assert (checkpoint_dir_for(out) / "checkpoint-40").is_dir()
    m = finetune(cfg, out, data_dir=synthetic_glue)
    assert m["resumed_from"].endswith("checkpoint-40")
    assert m["steps"] == 2 * 38


def test_bad_models_and_outputs_give_clear_errors(tmp_path, tiny_bert_dir, synthetic_glue):
    from transformers import GPT2Config

    (tmp_path / "noconfig").mkdir()
    with pytest.raises(
        LadaBertError, match="has no config.json; pass a directory written by save_pretrained"
    ):
        finetune(_config(tmp_path / "noconfig"), tmp_path / "o1", data_dir=synthetic_glue)
    GPT2Config(n_layer=1).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(LadaBertError, match="is a 'gpt2' model; ladabert works on BERT models"):
        finetune(_config(tmp_path / "gpt2"), tmp_path / "o2", data_dir=synthetic_glue)
    import shutil

    shutil.copytree(tiny_bert_dir, tmp_path / "noweights")
    (tmp_path / "noweights" / "model.safetensors").unlink()
    with pytest.raises(LadaBertError, match="has no PyTorch weights .*written by save_pretrained"):
        finetune(_config(tmp_path / "noweights"), tmp_path / "o4", data_dir=synthetic_glue)
    (tmp_path / "noweights" / "ladabert.json").write_text("{}")
    with pytest.raises(LadaBertError, match="it is an ONNX bundle written by ladabert export"):
        finetune(_config(tmp_path / "noweights"), tmp_path / "o4", data_dir=synthetic_glue)
    assert not (tmp_path / "o4").exists()
    with pytest.raises(LadaBertError, match="--max-length 128 exceeds .* 64 position embeddings"):
        finetune(_config(tiny_bert_dir, max_length=128), tmp_path / "o3", data_dir=synthetic_glue)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(LadaBertError, match="cannot write --out .*a-file/out"):
        finetune(_config(tiny_bert_dir), blocker / "out", data_dir=synthetic_glue)
    (tmp_path / "exists").mkdir()
    with pytest.raises(LadaBertError, match="already exists; pass --overwrite"):
        finetune(_config(tiny_bert_dir), tmp_path / "exists", data_dir=synthetic_glue)
    with pytest.raises(LadaBertError, match="model directory .*missing does not exist"):
        finetune(_config(tmp_path / "missing"), tmp_path / "o4", data_dir=synthetic_glue)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "exists", "gpt2", "noconfig", "noweights"]


def test_config_validation_and_json_round_trip():
    cfg = FinetuneConfig(task="mrpc", learning_rate=1e-4)
    assert FinetuneConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        FinetuneConfig(learning_rate=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        FinetuneConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"unknown FinetuneConfig field\(s\) \['lr'\]"):
        FinetuneConfig.from_dict({"lr": 1})
    with pytest.raises(LadaBertError, match="unknown task"):
        FinetuneConfig(task="imdb")
    assert finetune_preset("quick").max_train_samples == 4000
    with pytest.raises(LadaBertError, match="unknown preset 'fast'"):
        finetune_preset("fast")
    with pytest.raises(LadaBertError, match="invalid setting: epochs"):
        finetune_preset("default", epochs=0)


def test_mixed_precision_is_resolved_from_the_hardware(tmp_path, monkeypatch):
    import torch

    from ladabert.pipeline import harness

    with pytest.raises(ValueError, match="mixed_precision must be one of auto, no, bf16"):
        FinetuneConfig(mixed_precision="fp16")
    args = harness.training_arguments(tmp_path, FinetuneConfig(mixed_precision="no"))
    assert args.bf16 is False and args.optim.value == "adamw_torch_fused"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(harness, "cpu_has_bf16_matmul", lambda: True)
    args = harness.training_arguments(tmp_path, FinetuneConfig(mixed_precision="auto"))
    assert args.bf16 is True and args.use_cpu is True
    monkeypatch.setattr(harness, "cpu_has_bf16_matmul", lambda: False)
    assert harness.training_arguments(tmp_path, FinetuneConfig()).bf16 is False
    with pytest.raises(LadaBertError, match="needs a bf16-capable GPU .* pass --mixed-precision no"):
        harness.training_arguments(tmp_path, FinetuneConfig(mixed_precision="bf16"))


def test_weight_average_is_the_mean_and_survives_a_resume(tmp_path, tiny_bert_dir, synthetic_glue):
    import torch
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from ladabert.pipeline.harness import WeightAverage

    # The running mean of three snapshots is their arithmetic mean, and apply() loads it.
    lin = torch.nn.Linear(3, 2)
    avg = WeightAverage(0.5, 1, None)
    snaps = []
    for v in (1.0, 2.0, 6.0):
        with torch.no_grad():
            lin.weight.fill_(v)
        snaps.append(v)
        avg.update(lin)
    avg.apply(lin)
    assert avg.count == 3 and torch.allclose(lin.weight, torch.full((2, 3), 3.0))

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 65:
                raise _Kill()

    # 76 steps, average over the last 38 every 4 steps: samples at 42, 46, ..., 74 = 9.
    cfg = _config(tiny_bert_dir, epochs=2, save_steps=20, average_last=0.5, average_every=4)
    whole = finetune(cfg, tmp_path / "whole", data_dir=synthetic_glue)
    assert whole["weights_averaged"] == 9
    out = tmp_path / "resumed"
    with pytest.raises(_Kill):
        finetune(cfg, out, data_dir=synthetic_glue, callbacks=[KillAt()])
    # checkpoint-60 carries the 5 samples taken so far (42 ... 58).
    assert (checkpoint_dir_for(out) / "checkpoint-60" / WeightAverage.FILE).is_file()
    m = finetune(cfg, out, data_dir=synthetic_glue)
    assert m["resumed_from"].endswith("checkpoint-60") and m["weights_averaged"] == 9
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(out / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    assert m["value"] >= 0.9


def test_the_reported_metric_is_the_fp32_models_not_the_autocast_one(
    tmp_path, tiny_bert_dir, synthetic_glue, monkeypatch
):
    # Accelerate wraps forward in an autocast context when training in bf16; the final evaluation and the
    # saved model must be the plain fp32 model, or the metric differs from `ladabert eval` by a few examples.
    import ladabert.pipeline.teacher as T
    from tests.conftest import spy_on_evaluated_models

    seen = spy_on_evaluated_models(monkeypatch, T)
    # bf16 autocast runs (emulated) on any CPU; the hardware check is tested on its own.
    monkeypatch.setattr("ladabert.pipeline.harness.cpu_has_bf16_matmul", lambda: True)
    m = finetune(
        _config(tiny_bert_dir, max_steps=4, mixed_precision="bf16"), tmp_path / "t", data_dir=synthetic_glue
    )
    assert m["bf16_autocast"] and seen == [False]
    assert evaluate(tmp_path / "t", "sst2", data_dir=synthetic_glue, max_length=32)["value"] == m["value"]


def test_small_data_trains_at_least_min_steps(tmp_path, tiny_bert_dir, synthetic_glue):
    from ladabert.pipeline.teacher import training_steps

    # 600 examples at batch 16 are 38 steps an epoch: one epoch is raised to 50 steps, three are not.
    assert training_steps(FinetuneConfig(epochs=1, min_steps=50, batch_size=16), 600) == 50
    assert training_steps(FinetuneConfig(epochs=3, min_steps=50, batch_size=16), 600) == 114
    assert training_steps(FinetuneConfig(epochs=3, min_steps=50, max_steps=7), 600) == 7
    # The defaults: SST-2's 67,349 examples keep their 2 epochs; 3.7k examples get 1,000 steps, not 232.
    assert training_steps(FinetuneConfig(), 67349) == 4210
    assert training_steps(FinetuneConfig(), 3700) == 1000
    assert training_steps(FinetuneConfig(), 3700, processes=4) == 1000
    m = finetune(_config(tiny_bert_dir, epochs=1, min_steps=50), tmp_path / "t", data_dir=synthetic_glue)
    assert m["steps"] == 50 and m["epochs"] > 1
    assert 0.3 < m["majority_value"] < 0.7 and m["value"] > m["majority_value"] + 0.2
