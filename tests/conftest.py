"""Shared fixtures: seeded runs, a tiny BERT saved with save_pretrained, and a learnable GLUE-format task."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
try:  # Triton kernels run in the CPU interpreter where there is no GPU (set before triton is imported).
    import torch as _torch

    if not _torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:
    pass

POSITIVE = ["good", "great", "fine", "nice"]
NEGATIVE = ["bad", "awful", "poor", "dull"]
FILLER = [f"w{i}" for i in range(40)]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(autouse=True)
def _seed_everything():
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def make_tiny_bert(
    path: Path,
    num_labels: int = 2,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int = 64,
    max_positions: int = 64,
    seed: int = 0,
) -> Path:
    """A randomly initialised BERT classifier and its WordPiece tokenizer, saved with save_pretrained.

    The initialisation is seeded: session fixtures are built before the per-test seeding, and an unseeded tiny
    teacher made every test run train a different model (and the loss thresholds flaky)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + POSITIVE + NEGATIVE + FILLER) + "\n")
    tok = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(SPECIAL + POSITIVE + NEGATIVE + FILLER),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        num_labels=num_labels,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def synthetic_sentences(n: int, seed: int) -> list[tuple[str, int]]:
    """Sentences of filler words with one sentiment word; the label is that word's polarity."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(FILLER, k=rng.randint(3, 9))
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        out.append((" ".join(words), label))
    return out


def write_sst2(root: Path, n_train: int = 600, n_dev: int = 200) -> Path:
    """A GLUE root with SST-2/{train,dev}.tsv holding the synthetic sentiment task."""
    d = root / "SST-2"
    d.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train.tsv", n_train, 1), ("dev.tsv", n_dev, 2)):
        rows = ["sentence\tlabel"] + [f"{s}\t{y}" for s, y in synthetic_sentences(n, seed)]
        (d / name).write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def synthetic_glue(tmp_path_factory) -> Path:
    return write_sst2(tmp_path_factory.mktemp("glue"))


def pytest_configure(config):
    # Tiny models gain nothing from threads, and a second thread fights other jobs on a 2-core machine.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, synthetic_glue) -> Path:
    """A tiny BERT fine-tuned on the synthetic task through ladabert.finetune (accuracy ~1.0)."""
    from ladabert.pipeline.teacher import FinetuneConfig, finetune

    root = tmp_path_factory.mktemp("teacher")
    base = make_tiny_bert(root / "base", hidden=48, intermediate=96)
    cfg = FinetuneConfig(
        model=str(base),
        max_length=32,
        epochs=4,
        min_steps=0,
        batch_size=16,
        learning_rate=2e-3,
        eval_steps=0,
        save_steps=1000,
    )
    finetune(cfg, root / "teacher", data_dir=synthetic_glue)
    return root / "teacher"


def spy_on_evaluated_models(monkeypatch, module) -> list[bool]:
    """Wrap ``module.evaluate_module``; the returned list gets, per call, whether the evaluated model still
    carries Accelerate's autocast wrapper around ``forward``."""
    seen: list[bool] = []
    real = module.evaluate_module

    def spy(model, *a, **k):
        seen.append(hasattr(model, "_original_forward"))
        return real(model, *a, **k)

    monkeypatch.setattr(module, "evaluate_module", spy)
    return seen
