"""GLUE tasks from GLUE-format TSV directories, tokenized for BERT with dynamic padding.

Where the data comes from, first match wins:

1. ``--data-dir`` (a GLUE root holding ``SST-2/`` etc., or a task directory holding ``train.tsv``);
2. the ``LADABERT_DATA_DIR`` environment variable (same two forms);
3. for SST-2, the copy shipped inside the package (``ladabert/data/SST-2``, see its ``SOURCE.md``);
4. Hugging Face ``datasets`` (``nyu-mll/glue``) when it is installed and a network is reachable.

A user's own labelled files (csv, tsv, json/jsonl, parquet) are read by :mod:`ladabert.pipeline.files`
into the same :class:`GlueSplit` form.

An explicit ``--data-dir`` is authoritative: when the task is not there, the error says so instead of
silently reading another copy. When nothing is found the error lists every place tried.

Example::

    from ladabert.pipeline.data import load_glue
    train = load_glue("sst2", "train", max_samples=1000)
"""

from __future__ import annotations

import csv
import io
import lzma
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ladabert.errors import LadaBertError
from ladabert.pipeline.metrics import METRIC_FUNCTIONS

DATA_DIR_ENV = "LADABERT_DATA_DIR"
# GLUE task directories shipped inside the package (xz-compressed TSV files).
EMBEDDED_ROOT = Path(__file__).resolve().parents[1] / "data"
EMBEDDED_TASKS = ("sst2",)


@dataclass(frozen=True)
class GlueTask:
    """How one GLUE task is laid out on disk and scored."""

    name: str
    dirname: str
    text_columns: tuple[str, ...]
    label_column: str
    labels: tuple[str, ...] | None  # the label values as written in the files; None: regression (STS-B)
    metrics: tuple[str, ...]  # the first one is the task's headline metric
    # What each label means (id2label of the models trained on the task); default: the values themselves.
    label_names: tuple[str, ...] | None = None
    dev_file: str = "dev.tsv"
    # Tasks whose TSV has no header (CoLA) give column positions instead of names.
    column_index: dict[str, int] | None = None
    hf_config: str = ""
    hf_columns: tuple[str, ...] = ()
    hf_dev_split: str = "validation"

    @property
    def metric(self) -> str:
        return self.metrics[0]

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def names(self) -> tuple[str, ...]:
        """Label names in id order (empty for regression)."""
        return self.label_names or self.labels or ()

    def label_maps(self) -> tuple[dict[int, str], dict[str, int]]:
        """``id2label`` and ``label2id`` for a model config (``LABEL_0`` for a regression output)."""
        names = self.names or ("LABEL_0",)
        return dict(enumerate(names)), {n: i for i, n in enumerate(names)}

    def compute_metrics(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Score raw model outputs (logits, or scores for regression) against gold labels."""
        predictions = np.asarray(predictions)
        if self.is_regression:
            preds = predictions.reshape(-1)
        else:
            preds = predictions.argmax(-1) if predictions.ndim > 1 else predictions
        return {m: METRIC_FUNCTIONS[m](preds, np.asarray(labels)) for m in self.metrics}


_NLI2 = ("entailment", "not_entailment")
_MNLI = dict(
    dirname="MNLI",
    text_columns=("sentence1", "sentence2"),
    label_column="gold_label",
    labels=("entailment", "neutral", "contradiction"),
    metrics=("accuracy",),
    hf_config="mnli",
    hf_columns=("premise", "hypothesis"),
)

TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in [
        GlueTask(
            "sst2",
            "SST-2",
            ("sentence",),
            "label",
            ("0", "1"),
            ("accuracy",),
            label_names=("negative", "positive"),
            hf_config="sst2",
            hf_columns=("sentence",),
        ),
        GlueTask(
            "mrpc",
            "MRPC",
            ("#1 String", "#2 String"),
            "Quality",
            ("0", "1"),
            ("f1", "accuracy"),
            label_names=("not_equivalent", "equivalent"),
            hf_config="mrpc",
            hf_columns=("sentence1", "sentence2"),
        ),
        GlueTask(
            "qnli",
            "QNLI",
            ("question", "sentence"),
            "label",
            _NLI2,
            ("accuracy",),
            hf_config="qnli",
            hf_columns=("question", "sentence"),
        ),
        GlueTask(
            "rte",
            "RTE",
            ("sentence1", "sentence2"),
            "label",
            _NLI2,
            ("accuracy",),
            hf_config="rte",
            hf_columns=("sentence1", "sentence2"),
        ),
        GlueTask(
            "qqp",
            "QQP",
            ("question1", "question2"),
            "is_duplicate",
            ("0", "1"),
            ("f1", "accuracy"),
            label_names=("not_duplicate", "duplicate"),
            hf_config="qqp",
            hf_columns=("question1", "question2"),
        ),
        GlueTask("mnli", dev_file="dev_matched.tsv", hf_dev_split="validation_matched", **_MNLI),
        GlueTask("mnli-mm", dev_file="dev_mismatched.tsv", hf_dev_split="validation_mismatched", **_MNLI),
        GlueTask(
            "cola",
            "CoLA",
            ("sentence",),
            "label",
            ("0", "1"),
            ("matthews_correlation",),
            label_names=("unacceptable", "acceptable"),
            column_index={"sentence": 3, "label": 1},
            hf_config="cola",
            hf_columns=("sentence",),
        ),
        GlueTask(
            "stsb",
            "STS-B",
            ("sentence1", "sentence2"),
            "score",
            None,
            ("pearson", "spearmanr"),
            hf_config="stsb",
            hf_columns=("sentence1", "sentence2"),
        ),
    ]
}
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli_mismatched": "mnli-mm"}


def get_task(name: str) -> GlueTask:
    """Look a task up by name (case-insensitive; GLUE directory names such as ``SST-2`` work too)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise LadaBertError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[key]


@dataclass
class GlueSplit:
    """Raw examples of one split: text tuples (one or two segments) and labels."""

    task: GlueTask
    split: str
    texts: list[tuple[str, ...]]
    labels: np.ndarray
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int | None, seed: int | None = None) -> GlueSplit:
        """The first ``n`` examples, or ``n`` drawn at random with ``seed`` (for training subsets)."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise LadaBertError(f"sample limit must be positive, got {n}; pass a number >= 1")
        idx = (
            np.arange(n) if seed is None else np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        )
        return GlueSplit(self.task, self.split, [self.texts[i] for i in idx], self.labels[idx], self.source)


def _candidate_roots(data_dir: str | os.PathLike | None, task: GlueTask) -> list[tuple[str, Path]]:
    if data_dir is not None:
        return [("--data-dir", Path(data_dir).expanduser())]
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return [(DATA_DIR_ENV, Path(env).expanduser())]
    return [("shipped with ladabert", EMBEDDED_ROOT)] if task.name in EMBEDDED_TASKS else []


def _data_file(d: Path, name: str) -> Path | None:
    """``d/name``, or its xz-compressed form ``d/name.xz``."""
    for cand in (d / name, d / f"{name}.xz"):
        if cand.is_file():
            return cand
    return None


def _task_dir(root: Path, task: GlueTask) -> Path | None:
    """``root/SST-2`` when ``root`` is a GLUE root, or ``root`` itself when it is the task directory."""
    for d in (root / task.dirname, root):
        if _data_file(d, "train.tsv") or _data_file(d, task.dev_file):
            return d
    return None


def resolve_task_dir(task: str | GlueTask, data_dir: str | os.PathLike | None = None) -> Path | None:
    """Find the directory with ``task``'s TSV files, or None when only ``datasets`` could provide it.

    Raises:
        LadaBertError: when no source has the task, listing every place tried and how to fix it.
    """
    task = get_task(task) if isinstance(task, str) else task
    tried = []
    for how, root in _candidate_roots(data_dir, task):
        found = _task_dir(root, task)
        if found is not None:
            return found
        tried.append(f"{how}: {root / task.dirname} (no train.tsv or {task.dev_file})")
    if data_dir is None and not os.environ.get(DATA_DIR_ENV):
        reason = _hf_available()
        if reason is None:
            return None
        tried.append(f"Hugging Face datasets nyu-mll/glue: {reason}")
    raise LadaBertError(
        f"GLUE data for {task.name} not found; tried "
        + "; ".join(tried)
        + f". Fix: pass --data-dir pointing at a GLUE root with {task.dirname}/train.tsv, set {DATA_DIR_ENV},"
        " pip install 'ladabert[datasets]' with network access, or use your own files with --train-file "
        "and --validation-file"
    )


def not_utf8(path: Path, exc: UnicodeDecodeError) -> LadaBertError:
    """The one-line error for a file whose bytes are not UTF-8 text."""
    return LadaBertError(
        f"{path}: byte {exc.object[exc.start : exc.start + 1]!r} at offset {exc.start} is not UTF-8; save the "
        f"file as UTF-8 (e.g. iconv -f cp1252 -t utf-8 {path.name} > {path.stem}-utf8{path.suffix})"
    )


def _hf_available() -> str | None:
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return "offline mode is set (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE)"
    try:
        import datasets  # noqa: F401
    except ImportError:
        return "the datasets package is not installed"
    return None


def _split_file(task: GlueTask, split: str) -> str:
    if split == "train":
        return "train.tsv"
    if split in ("dev", "validation"):
        return task.dev_file
    raise LadaBertError(f"unknown split {split!r}; use 'train' or 'dev'")


def _read_glue_rows(fh: Any, path: Path, task: GlueTask, fix: str) -> tuple[list, list]:
    reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
    if task.column_index is not None:
        cols = dict(task.column_index)
        start_line = 1
    else:
        header = next(reader, None)
        if header is None:
            raise LadaBertError(f"{path} is empty; {fix} with a header row")
        missing = [c for c in (*task.text_columns, task.label_column) if c not in header]
        if missing:
            raise LadaBertError(
                f"{path}: header {header[:6]} lacks column(s) {missing}; {fix} "
                f"(columns {list(task.text_columns) + [task.label_column]})"
            )
        cols = {c: header.index(c) for c in (*task.text_columns, task.label_column)}
        start_line = 2
    text_idx = [cols[c] for c in task.text_columns]
    label_idx = cols[task.label_column]
    need = max(text_idx + [label_idx]) + 1
    label_map = None if task.labels is None else {v: i for i, v in enumerate(task.labels)}
    texts, labels = [], []
    for lineno, row in enumerate(reader, start=start_line):
        if not row:
            continue
        if len(row) < need:
            raise LadaBertError(
                f"{path}:{lineno}: {len(row)} tab-separated field(s), need at least {need}; {fix} "
                "(one example per line, fields separated by tabs)"
            )
        raw = row[label_idx].strip()
        if label_map is None:
            try:
                label = float(raw)
            except ValueError:
                raise LadaBertError(f"{path}:{lineno}: score {raw!r} is not a number; {fix}") from None
        else:
            if raw not in label_map:
                raise LadaBertError(
                    f"{path}:{lineno}: label {raw!r} is not one of {list(task.labels)}; {fix}"
                )
            label = label_map[raw]
        texts.append(tuple(row[i] for i in text_idx))
        labels.append(label)
    return texts, labels


def read_glue_tsv(path: Path, task: GlueTask, split: str = "train") -> GlueSplit:
    """Parse one GLUE TSV file, checking its columns and labels.

    Raises:
        LadaBertError: naming the file, the line and what is wrong when the file is not GLUE TSV.
    """
    fix = f"expected GLUE {task.dirname} TSV format"
    try:
        if path.suffix == ".xz":
            fh = io.TextIOWrapper(lzma.open(path), encoding="utf-8-sig", newline="")
        else:  # utf-8-sig: a byte-order mark (files saved by Windows tools) is not part of the header
            fh = open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise LadaBertError(f"cannot read {path}: {exc.strerror}; check the path and permissions") from None
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with fh:
            texts, labels = _read_glue_rows(fh, path, task, fix)
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    if not texts:
        raise LadaBertError(f"{path} has no examples; {fix}")
    dtype = np.float32 if task.is_regression else np.int64
    return GlueSplit(task, split, texts, np.asarray(labels, dtype=dtype), source=str(path))


def _load_hf(task: GlueTask, split: str) -> GlueSplit:
    import datasets

    hf_split = "train" if split == "train" else task.hf_dev_split
    try:
        ds = datasets.load_dataset("nyu-mll/glue", task.hf_config, split=hf_split)
    except Exception as exc:  # network, hub or cache errors all mean the same to the user
        raise LadaBertError(
            f"could not load nyu-mll/glue/{task.hf_config} from the Hugging Face hub ({exc.__class__.__name__}:"
            f" {str(exc).splitlines()[0] if str(exc) else ''}); pass --data-dir with GLUE TSV files"
        ) from None
    texts = list(zip(*[ds[c] for c in task.hf_columns]))
    dtype = np.float32 if task.is_regression else np.int64
    return GlueSplit(
        task, split, texts, np.asarray(ds["label"], dtype=dtype), source=f"hf:nyu-mll/glue/{hf_split}"
    )


def load_glue(
    task: str | GlueTask,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    max_samples: int | None = None,
    seed: int | None = None,
) -> GlueSplit:
    """Load one split (``train`` or ``dev``) of a GLUE task.

    Args:
        task: task name (``sst2``, ``mrpc``, ``qnli``, ``rte``, ``qqp``, ``mnli``, ``mnli-mm``, ``cola``,
            ``stsb``) or a :class:`GlueTask`.
        split: ``train`` or ``dev`` (``validation`` is accepted).
        data_dir: GLUE root or task directory; see the module docstring for the search order.
        max_samples: keep at most this many examples (a seeded random subset when ``seed`` is given).
        seed: seed for the random subset.
    """
    task = get_task(task) if isinstance(task, str) else task
    fname = _split_file(task, split)
    tdir = resolve_task_dir(task, data_dir)
    if tdir is None:
        data = _load_hf(task, split)
    else:
        path = _data_file(tdir, fname)
        if path is None:
            raise LadaBertError(f"{tdir / fname} not found; the {task.dirname} directory needs {fname}")
        data = read_glue_tsv(path, task, split)
    return data.subset(max_samples, seed)


class TokenizedDataset:
    """A torch-style map dataset of tokenized examples (lists of ids, padded later by the collator)."""

    def __init__(self, data: GlueSplit, tokenizer: Any, max_length: int):
        segments = list(zip(*data.texts))
        enc = tokenizer(*[list(s) for s in segments], truncation=True, max_length=max_length)
        self.features = [dict(zip(enc.keys(), vals)) for vals in zip(*enc.values())]
        for feat, label in zip(self.features, data.labels.tolist()):
            feat["labels"] = label
        self.task = data.task

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]


def tokenize(data: GlueSplit, tokenizer: Any, max_length: int) -> TokenizedDataset:
    """Tokenize a split with truncation to ``max_length``; padding happens per batch (dynamic)."""
    return TokenizedDataset(data, tokenizer, max_length)


def make_collator(tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
    """Dynamic padding to the longest example of each batch."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
