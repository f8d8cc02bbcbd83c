from __future__ import annotations

import json

import pytest
import torch

from ladabert.errors import LadaBertError
from ladabert.pipeline.compress import CompressConfig, compress, narrow_student_config
from ladabert.pipeline.harness import checkpoint_dir_for
from ladabert.pipeline.layers import COMPRESSED_LAYERS
from ladabert.pipeline.student import LadaBertForSequenceClassification
from ladabert.pipeline.teacher import evaluate


def compress_cfg(**kw) -> CompressConfig:
    base = dict(
        ratio=3.0,
        max_steps=60,
        batch_size=16,
        learning_rate=2e-3,
        max_length=32,
        eval_steps=0,
        save_steps=20,
        schedule_updates=4,
        logging_steps=5,
    )
    return CompressConfig(**{**base, **kw})


def test_hybrid_compression_distils_a_reloadable_student(tmp_path, tiny_teacher, synthetic_glue):
    out = tmp_path / "student"
    m = compress(compress_cfg(), tiny_teacher, out, data_dir=synthetic_glue)
    assert m["ratio"] == pytest.approx(3.0, rel=0.01) and m["steps"] == 60
    assert m["value"] >= 0.9 and m["teacher_value"] >= 0.9  # chance is 0.5
    saved = json.loads((out / "config.json").read_text())
    assert saved["architectures"] == ["LadaBertForSequenceClassification"]
    assert saved["ladabert"]["pattern"] == "unstructured" and saved["ladabert"]["layers"]
    assert {"teacher_value", "ratio", "encoder_ratio", "steps", "wall_s", "bytes"} <= set(m)
    # Reload: same score, masks hold, exact count matches the metrics.
    again = evaluate(out, "sst2", data_dir=synthetic_glue, max_length=32)
    assert again["value"] == pytest.approx(m["value"], abs=1e-12)
    model = LadaBertForSequenceClassification.from_pretrained(out)
    for mod in model.modules():
        if isinstance(mod, COMPRESSED_LAYERS):
            if hasattr(mod, "U"):
                assert not mod.U[~mod.U_mask].any() and not mod.V[~mod.V_mask].any()
            else:
                assert not mod.weight[~mod.weight_mask].any()
    assert not checkpoint_dir_for(out).exists()


def test_masks_survive_optimizer_steps_and_training_changes_weights(tmp_path, tiny_teacher, synthetic_glue):
    from transformers import TrainerCallback

    seen = []

    class Inspect(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            # Runs after the compression callback's on_step_end, i.e. after this step's optimizer update.
            for mod in model.modules():
                if isinstance(mod, COMPRESSED_LAYERS) and hasattr(mod, "U"):
                    seen.append(bool(mod.U[~mod.U_mask].any() or mod.V[~mod.V_mask].any()))
            if state.global_step == 1:
                self.first = model.bert.encoder.layer[0].output.dense.U.detach().clone()
            self.last = model.bert.encoder.layer[0].output.dense.U.detach().clone()

    cb = Inspect()
    compress(
        compress_cfg(max_steps=40, schedule_updates=2),
        tiny_teacher,
        tmp_path / "s",
        data_dir=synthetic_glue,
        callbacks=[cb],
    )
    assert seen and not any(seen)
    assert not torch.equal(cb.first, cb.last)


def _logged(key: str):
    """A callback that keeps, at the end of training, every logged value of ``key`` in ``.values``."""
    from transformers import TrainerCallback

    class Logged(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            self.values = [h[key] for h in state.log_history if key in h]

    return Logged()


def _fixed_batch_loss(teacher_dir, data_dir, loss):
    """A callback that measures ``loss`` (a ``DistillLoss``) of the student against the teacher on the same 64 dev
    examples, in eval mode (no dropout, no augmentation), when training starts and when it ends: ``.before``
    and ``.after``. The logged training loss moves too much from batch to batch to compare a few steps."""
    from transformers import AutoTokenizer, TrainerCallback

    from ladabert.pipeline.data import get_task, load_glue, make_collator, tokenize
    from ladabert.pipeline.student import load_classifier

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = load_classifier(teacher_dir, attn_implementation="eager").eval()
    dev = tokenize(load_glue(get_task("sst2"), "dev", data_dir), tok, 32)
    batch = make_collator(tok)([dev[i] for i in range(64)])
    batch.pop("labels", None)
    att = loss.attention > 0

    def measure(model) -> float:
        was = model.training
        model.eval()
        with torch.no_grad():
            s = model(**batch, output_hidden_states=True, output_attentions=att)
            t = teacher(**batch, output_hidden_states=True, output_attentions=att)
            value, _ = loss(s, t, None, batch["attention_mask"])
        model.train(was)
        return float(value)

    class FixedBatch(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.before = measure(model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.after = measure(model)

    return FixedBatch()


def test_distillation_lowers_the_loss(tmp_path, tiny_teacher, synthetic_glue):
    from ladabert.pipeline.distill import DistillLoss

    cb = _fixed_batch_loss(tiny_teacher, synthetic_glue, DistillLoss())
    # A hard 5x student that reaches its ratio at step 4 and then only trains.
    cfg = compress_cfg(ratio=5.0, initial_ratio=5.0, schedule_updates=1, schedule_fraction=0.05, max_steps=80)
    m = compress(cfg, tiny_teacher, tmp_path / "s", data_dir=synthetic_glue, callbacks=[cb])
    assert cb.after < 0.85 * cb.before, (cb.before, cb.after)
    assert m["value"] >= 0.9


class _Kill(Exception):
    pass


def test_killed_compression_resumes_to_the_same_step_count(tmp_path, tiny_teacher, synthetic_glue):
    from transformers import TrainerCallback

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 30:
                raise _Kill()

    out = tmp_path / "student"
    with pytest.raises(_Kill):
        compress(compress_cfg(), tiny_teacher, out, data_dir=synthetic_glue, callbacks=[KillAt()])
    assert not out.exists() and (checkpoint_dir_for(out) / "checkpoint-20").is_dir()
    m = compress(compress_cfg(), tiny_teacher, out, data_dir=synthetic_glue)
    assert m["resumed_from"].endswith("checkpoint-20") and m["steps"] == 60
    assert m["ratio"] == pytest.approx(3.0, rel=0.01)


@pytest.mark.parametrize("method", ["svd", "prune", "distill-only"])
def test_ablations_run_through_the_same_path(tmp_path, tiny_teacher, synthetic_glue, method):
    m = compress(
        compress_cfg(method=method, max_steps=30), tiny_teacher, tmp_path / method, data_dir=synthetic_glue
    )
    assert m["method"] == method and m["steps"] == 30 and m["config"]["w_attention"] == 1.0
    if method == "distill-only":  # attention distillation keeps the teacher's heads in the narrow student
        saved = json.loads((tmp_path / method / "config.json").read_text())
        teacher = json.loads((tiny_teacher / "config.json").read_text())
        assert saved["num_attention_heads"] == teacher["num_attention_heads"]
        assert saved["hidden_size"] < teacher["hidden_size"]
    tol = 0.2 if method == "distill-only" else 0.06  # width moves in whole heads on a tiny model
    assert m["ratio"] == pytest.approx(3.0, rel=tol)
    again = evaluate(tmp_path / method, "sst2", data_dir=synthetic_glue, max_length=32)
    assert again["value"] == pytest.approx(m["value"], abs=1e-12)


def test_narrow_student_matches_the_parameter_budget():
    from transformers import BertConfig, BertForSequenceClassification

    teacher = BertConfig(hidden_size=384, num_attention_heads=12, intermediate_size=1536, num_hidden_layers=6)
    with torch.device("meta"):
        n_teacher = sum(p.numel() for p in BertForSequenceClassification(teacher).parameters())
    cfg = narrow_student_config(teacher, n_teacher // 10)
    with torch.device("meta"):
        n = sum(p.numel() for p in BertForSequenceClassification(cfg).parameters())
    assert (
        cfg.num_hidden_layers == 6
        and cfg.hidden_size % 32 == 0
        and cfg.intermediate_size == 4 * cfg.hidden_size
    )
    assert n == pytest.approx(n_teacher / 10, rel=0.1)
    # For attention distillation: every head kept, each narrower.
    same = narrow_student_config(teacher, n_teacher // 10, same_heads=True)
    with torch.device("meta"):
        n = sum(p.numel() for p in BertForSequenceClassification(same).parameters())
    assert (
        same.num_attention_heads == 12
        and same.hidden_size % 12 == 0
        and same.hidden_size < cfg.hidden_size + 32
    )
    assert n == pytest.approx(n_teacher / 10, rel=0.1)


def test_the_attention_term_is_on_whatever_heads_the_student_keeps():
    assert CompressConfig().w_attention == 1.0 and CompressConfig(method="distill-only").w_attention == 1.0
    assert CompressConfig(keep_heads=0.5).w_attention == 1.0  # each kept head against its own origin
    assert CompressConfig(w_attention=0.0).w_attention == 0.0


def test_bad_teachers_and_settings(tmp_path, tiny_teacher, tiny_bert_dir, synthetic_glue):
    with pytest.raises(LadaBertError, match="needs 1; fine-tune it first"):
        compress(compress_cfg(task="stsb"), tiny_teacher, tmp_path / "o", data_dir=synthetic_glue)
    with pytest.raises(ValueError, match="method must be one of"):
        compress_cfg(method="distill")
    with pytest.raises(ValueError, match="hybrid must be >= 0"):
        compress_cfg(hybrid=-0.1)
    with pytest.raises(ValueError, match="dropout must be >= 0"):
        compress_cfg(dropout=-0.1)
    with pytest.raises(ValueError, match="dropout must be >= 0 and <= 0.99"):
        compress_cfg(dropout=1.0)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("swap", ["batch", "neighbors"])
def test_compression_with_token_augmentation_still_learns(tmp_path, tiny_teacher, synthetic_glue, swap):
    m = compress(
        compress_cfg(augment=0.2, augment_swap=swap), tiny_teacher, tmp_path / "aug", data_dir=synthetic_glue
    )
    assert m["config"]["augment"] == 0.2 and m["config"]["augment_swap"] == swap and m["steps"] == 60
    assert m["value"] >= 0.9  # chance is 0.5


def test_compression_with_length_weighted_sampling_still_learns(
    tmp_path, tiny_teacher, synthetic_glue, monkeypatch
):
    import ladabert.pipeline.distill as D

    calls = []
    real = D.length_weighted_sampler

    def spy(lengths, power):
        calls.append((list(lengths), power))
        return real(lengths, power)

    monkeypatch.setattr(D, "length_weighted_sampler", spy)
    m = compress(compress_cfg(length_weight=1.5), tiny_teacher, tmp_path / "len", data_dir=synthetic_glue)
    assert m["config"]["length_weight"] == 1.5 and m["steps"] == 60
    ((lengths, power),) = calls  # one training sampler, over every training example's token count
    train = json.loads((tmp_path / "len" / "metrics.json").read_text())["train_examples"]
    assert power == 1.5 and len(lengths) == train and min(lengths) >= 3
    assert m["value"] >= 0.9  # chance is 0.5
    # Without the setting Trainer keeps its own uniform sampler.
    calls.clear()
    compress(compress_cfg(length_weight=0.0), tiny_teacher, tmp_path / "uniform", data_dir=synthetic_glue)
    assert calls == []


def test_student_dropout_setting_reaches_every_dropout_module_while_it_trains(
    tmp_path, tiny_teacher, synthetic_glue
):
    from transformers import TrainerCallback

    class Seen(TrainerCallback):
        def __init__(self) -> None:
            self.p: set[float] = set()

        def on_step_begin(self, args, state, control, model=None, **kwargs):
            self.p |= {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
            # transformers' SDPA attention passes a float to the fused kernel instead of using its module
            self.p |= {m.dropout_prob for m in model.modules() if hasattr(m, "dropout_prob")}
            self.sdpa = any(hasattr(m, "dropout_prob") for m in model.modules())

    off, default = Seen(), Seen()
    m = compress(
        compress_cfg(dropout=0.0, w_attention=0.0),
        tiny_teacher,
        tmp_path / "d0",
        data_dir=synthetic_glue,
        callbacks=[off],
    )
    assert off.p == {0.0} and m["config"]["dropout"] == 0.0 and m["steps"] == 60
    assert off.sdpa  # without the attention term the student keeps SDPA attention: its float was reached too
    saved = json.loads((tmp_path / "d0" / "config.json").read_text())
    assert saved["hidden_dropout_prob"] == saved["attention_probs_dropout_prob"] == 0.1  # the teacher's
    assert m["value"] >= 0.9  # chance is 0.5
    cfg = compress_cfg(max_steps=2, w_attention=0.0)
    compress(cfg, tiny_teacher, tmp_path / "dflt", data_dir=synthetic_glue, callbacks=[default])
    assert default.p == {0.1}  # the teacher's (BERT's hidden and attention dropout)


def test_attention_distillation_starts_near_zero_and_learns(tmp_path, tiny_teacher, synthetic_glue):
    from ladabert.pipeline.distill import DistillLoss

    # Barely compressed and barely trained, the student's attention is the teacher's: the logged term (training
    # mode) stays near 0. With dropout on the returned attention maps it was about 2.7 nats.
    cb = _logged("loss_attention")
    cfg = compress_cfg(w_attention=1.0, ratio=1.01, initial_ratio=1.01, learning_rate=1e-7, max_steps=10)
    compress(cfg, tiny_teacher, tmp_path / "near", data_dir=synthetic_glue, callbacks=[cb])
    assert len(cb.values) == 2 and max(cb.values) < 0.1, cb.values
    # At 5x the term falls with training (measured on fixed dev examples).
    cb = _fixed_batch_loss(tiny_teacher, synthetic_glue, DistillLoss(logits=0, hidden=0, attention=1))
    cfg = compress_cfg(
        w_attention=1.0, ratio=5.0, initial_ratio=5.0, schedule_updates=1, schedule_fraction=0.05
    )
    m = compress(cfg, tiny_teacher, tmp_path / "att", data_dir=synthetic_glue, callbacks=[cb])
    assert m["config"]["w_attention"] == 1.0 and m["steps"] == 60
    assert m["value"] >= 0.9  # chance is 0.5
    assert cb.after < 0.6 * cb.before, (cb.before, cb.after)


def test_weight_averaging_after_the_schedule_keeps_the_masks_and_the_ratio(
    tmp_path, tiny_teacher, synthetic_glue
):
    from transformers import TrainerCallback

    class Last(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.U = model.bert.encoder.layer[0].output.dense.U.detach().clone()

    cb = Last()
    # 60 steps, schedule over the first half; the last 40% (24 steps) sampled every 4 steps: 6 samples.
    cfg = compress_cfg(average_last=0.4, average_every=4, schedule_fraction=0.5)
    m = compress(cfg, tiny_teacher, tmp_path / "avg", data_dir=synthetic_glue, callbacks=[cb])
    assert m["weights_averaged"] == 6 and m["config"]["average_last"] == 0.4
    assert m["ratio"] == pytest.approx(3.0, rel=0.01) and m["value"] >= 0.9
    student = LadaBertForSequenceClassification.from_pretrained(tmp_path / "avg")
    dense = student.bert.encoder.layer[0].output.dense
    assert not torch.equal(dense.U, cb.U.to(dense.U.dtype))  # the saved weights are the mean, not the last
    assert not dense.U[~dense.U_mask].any() and not dense.V[~dense.V_mask].any()
    with pytest.raises(ValueError, match=r"average_last must be >= 0 and <= 1 - schedule_fraction \(0.5\)"):
        compress_cfg(average_last=0.6, schedule_fraction=0.5)


def test_the_students_metric_is_the_fp32_models(tmp_path, tiny_teacher, synthetic_glue, monkeypatch):
    import ladabert.pipeline.compress as C
    from tests.conftest import spy_on_evaluated_models

    seen = spy_on_evaluated_models(monkeypatch, C)
    # bf16 autocast runs (emulated) on any CPU; the hardware check is tested on its own.
    monkeypatch.setattr("ladabert.pipeline.harness.cpu_has_bf16_matmul", lambda: True)
    m = compress(
        compress_cfg(max_steps=10, mixed_precision="bf16"),
        tiny_teacher,
        tmp_path / "s",
        data_dir=synthetic_glue,
    )
    assert m["bf16_autocast"] and m["value_precision"] == "fp32"
    assert seen == [False, False, False]  # teacher, initial student, final student
    assert evaluate(tmp_path / "s", "sst2", data_dir=synthetic_glue, max_length=32)["value"] == m["value"]


@pytest.mark.parametrize("pattern,aware", [("unstructured", True), ("rank", True), ("unstructured", False)])
def test_plain_and_data_aware_compression_learn_and_reload(
    tmp_path, tiny_teacher, synthetic_glue, pattern, aware
):
    out = tmp_path / "student"
    m = compress(
        compress_cfg(data_aware=aware, calibration_samples=100, pattern=pattern),
        tiny_teacher,
        out,
        data_dir=synthetic_glue,
    )
    assert m["config"]["data_aware"] is aware and m["steps"] == 60
    assert m["ratio"] == pytest.approx(3.0, rel=0.02)
    assert m["value"] >= 0.9  # chance is 0.5
    assert json.loads((out / "config.json").read_text())["ladabert"]["data_aware"] is aware
    again = evaluate(out, "sst2", data_dir=synthetic_glue, max_length=32)
    assert again["value"] == pytest.approx(m["value"], abs=1e-12)


def test_data_aware_settings_are_checked():
    with pytest.raises(ValueError, match="calibration_samples must be >= 1"):
        compress_cfg(calibration_samples=0)
    with pytest.raises(ValueError, match="data_aware must be true or false"):
        compress_cfg(data_aware="yes")
