"""Your own labelled data: csv, tsv, json/jsonl and parquet files, with the conventions of transformers'
``run_glue.py``.

    ladabert finetune --train-file train.csv --validation-file dev.csv \\
        --text-column review --label-column sentiment --out runs/teacher

- ``--text-column``: one column, or two for sentence pairs. Default: ``sentence1`` + ``sentence2`` when
  both exist, else ``text``, else ``sentence``.
- ``--label-column`` (default ``label``): string or integer labels make a classifier whose ``id2label``
  lists them in sorted order (numeric order for integers); labels with a fractional number make a
  regression model (one output). Every validation label must occur in the training file.
- Files are read locally (no network): UTF-8 with or without a byte-order mark, LF or CRLF line ends,
  quoted csv fields (with commas or line breaks inside), extra columns ignored. A ``.tsv`` is read like
  GLUE's (tab-separated, quotes are text). ``.json`` is a JSON array of objects or JSON lines, ``.jsonl``
  JSON lines; ``.parquet`` needs ``pyarrow``.
- Metrics: accuracy and F1 (of the second label for two classes, macro-averaged for more), Pearson and
  Spearman correlation for regression; the first one is the headline metric.

Every problem is one :class:`~ladabert.errors.LadaBertError` naming the file, the line or column, and the
fix. Example::

    from ladabert.pipeline.files import DataFiles, load_files
    task, train, dev = load_files(DataFiles("train.csv", "dev.csv", ("review",), "sentiment"))
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ladabert.errors import LadaBertError
from ladabert.pipeline.data import GlueSplit, GlueTask, not_utf8

FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}
DEFAULT_TEXT_COLUMNS = (("sentence1", "sentence2"), ("text",), ("sentence",))
DEFAULT_LABEL_COLUMN = "label"
_INT = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class DataFiles:
    """Where a user's data is and which columns hold the text and the label."""

    train_file: str | None
    validation_file: str | None
    text_columns: tuple[str, ...] = ()
    label_column: str | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> DataFiles | None:
        """The files named by a config (``train_file``/``validation_file``/...), or None for a GLUE task."""
        train, dev = getattr(cfg, "train_file", None), getattr(cfg, "validation_file", None)
        if train is None and dev is None:
            return None
        return cls(train, dev, tuple(cfg.text_columns or ()), cfg.label_column)

    def record(self) -> dict[str, Any]:
        """What a model config stores (absolute paths) so that export and eval find the data again."""
        return {
            "train_file": None if self.train_file is None else str(Path(self.train_file).resolve()),
            "validation_file": None
            if self.validation_file is None
            else str(Path(self.validation_file).resolve()),
            "text_columns": list(self.text_columns),
            "label_column": self.label_column,
        }


Record = tuple[int, dict[str, Any]]  # (line or record number, the fields)


def _format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise LadaBertError(
            f"{path}: unknown data file type {path.suffix or '(no extension)'!r}; use one of "
            f"{', '.join(FORMATS)} (rename the file if its content is one of them)"
        )
    return fmt


def _text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LadaBertError(f"{path} does not exist; check the path") from None
    except IsADirectoryError:
        raise LadaBertError(f"{path} is a directory; pass the data file itself") from None
    except OSError as exc:
        raise LadaBertError(f"cannot read {path}: {exc.strerror}; check the path and permissions") from None
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark is not part of the first column's name
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise LadaBertError(f"line {line} of {not_utf8(path, exc)}") from None


def _delimited(path: Path, text: str, fmt: str) -> tuple[list[str], Iterator[Record]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    # strict: an unclosed quote is an error naming its line, not one field that swallows the rest of the file
    kw = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {"strict": True}
    reader = csv.reader(io.StringIO(text, newline=""), **kw)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise LadaBertError(f"{path}:1: {exc}; check the header row") from None
    if not header:
        raise LadaBertError(
            f"{path} is empty; write a header row with the column names, then one example per line"
        )
    header = [h.strip() for h in header]

    def rows() -> Iterator[Record]:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise LadaBertError(
                    f'{path}:{reader.line_num}: {exc}; close the quote or escape it by doubling it ("")'
                ) from None
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < len(header):
                raise LadaBertError(
                    f"{path}:{reader.line_num}: {len(row)} field(s) but the header has {len(header)}; "
                    f"give every row a value for each column ({', '.join(header)})"
                )
            yield reader.line_num, dict(zip(header, row))

    return header, rows()


def _json_records(path: Path, text: str, fmt: str) -> list[Record]:
    stripped = text.lstrip()
    if fmt == "json" and stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LadaBertError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); fix the file") from None
        records = list(enumerate(items, start=1))
    else:
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise LadaBertError(
                    f"{path}:{lineno}: invalid JSON ({exc.msg}); write one JSON object per line"
                ) from None
    for lineno, rec in records:
        if not isinstance(rec, dict):
            raise LadaBertError(
                f"{path}:{lineno}: a JSON {type(rec).__name__}, not an object; write objects such as "
                '{"text": "...", "label": "..."}'
            )
    return records


def _parquet_records(path: Path) -> list[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LadaBertError(
            f"reading {path} needs pyarrow; pip install pyarrow, or convert it to csv or jsonl"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        raise LadaBertError(f"{path} is not a readable parquet file ({exc}); check the file") from None
    return list(enumerate(table.to_pylist(), start=1))


def read_records(path: str | os.PathLike) -> tuple[list[str], list[Record]]:
    """The column names and the records of one data file."""
    path = Path(path).expanduser()
    fmt = _format(path)
    if fmt == "parquet":
        if not path.is_file():
            _text(path)  # the same not-found / directory errors as the text formats
        records = _parquet_records(path)
    else:
        text = _text(path)
        if fmt in ("csv", "tsv"):
            header, rows = _delimited(path, text, fmt)
            records = list(rows)
            if not records:
                raise LadaBertError(f"{path} has no examples; write one example per line after the header")
            return header, records
        records = _json_records(path, text, fmt)
    if not records:
        raise LadaBertError(f"{path} has no examples; write one example per record")
    columns: list[str] = []
    for _, rec in records[:100]:
        columns += [k for k in rec if k not in columns]
    return columns, records


def _resolve_columns(path: Path, columns: list[str], files: DataFiles) -> tuple[tuple[str, ...], str]:
    label = files.label_column or DEFAULT_LABEL_COLUMN
    if files.text_columns:
        text_cols = tuple(files.text_columns)
        if len(text_cols) > 2:
            raise LadaBertError(
                f"--text-column takes one column, or two for sentence pairs, got {len(text_cols)}"
            )
    else:
        text_cols = next((c for c in DEFAULT_TEXT_COLUMNS if all(x in columns for x in c)), ())
        if not text_cols:
            raise LadaBertError(
                f"{path}: no text column found (columns: {', '.join(columns)}); pass --text-column NAME "
                "(two names for sentence pairs)"
            )
    missing = [c for c in (*text_cols, label) if c not in columns]
    if missing:
        flag = "--label-column" if missing == [label] else "--text-column / --label-column"
        raise LadaBertError(
            f"{path}: column(s) {', '.join(missing)} not found (columns: {', '.join(columns)}); "
            f"pass {flag} with one of those"
        )
    if label in text_cols:
        raise LadaBertError(
            f"column {label!r} is both a text and the label column; pass a different --label-column"
        )
    return text_cols, label


def _label_value(path: Path, lineno: int, raw: Any, column: str) -> Any:
    """A label as read: ``int`` for whole numbers, ``float`` for other numbers, else the stripped string."""
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        if math.isnan(raw):
            raw = None
        else:
            return int(raw) if raw.is_integer() else raw
    value = "" if raw is None else str(raw).strip()
    if not value:
        raise LadaBertError(
            f"{path}:{lineno}: empty label in column {column!r}; every example needs a label "
            "(remove unlabelled rows)"
        )
    if _INT.match(value):
        return int(value)
    try:
        number = float(value)
    except ValueError:
        return value
    return value if math.isnan(number) or math.isinf(number) else number


def _read_split(
    path: Path, files: DataFiles
) -> tuple[tuple[str, ...], str, list[tuple[str, ...]], list[Record]]:
    columns, records = read_records(path)
    text_cols, label = _resolve_columns(path, columns, files)
    texts, labels = [], []
    for lineno, rec in records:
        missing = [c for c in (*text_cols, label) if c not in rec]
        if missing:
            raise LadaBertError(
                f"{path}:{lineno}: no {', '.join(missing)} field; give every record each column"
            )
        texts.append(tuple("" if rec[c] is None else str(rec[c]) for c in text_cols))
        labels.append((lineno, _label_value(path, lineno, rec[label], label)))
    return text_cols, label, texts, labels


def _label_kind(values: list[Any]) -> str:
    if all(isinstance(v, int) for v in values):
        return "int"
    if all(isinstance(v, int | float) for v in values):
        return "float"
    return "str"


def _task(name: str, text_cols: tuple[str, ...], label: str, names: tuple[str, ...] | None) -> GlueTask:
    if names is None:
        metrics: tuple[str, ...] = ("pearson", "spearmanr")
    else:
        metrics = ("accuracy", "f1") if len(names) == 2 else ("accuracy", "f1_macro")
    return GlueTask(name, "", text_cols, label, names, metrics, label_names=names)


def _encode(
    path: Path, labels: list[tuple[int, Any]], names: tuple[str, ...] | None, known_from: str
) -> np.ndarray:
    if names is None:
        for lineno, v in labels:
            if not isinstance(v, int | float):
                raise LadaBertError(
                    f"{path}:{lineno}: label {v!r} is not a number but the model is a regression model "
                    f"({known_from}); give numeric labels"
                )
        return np.asarray([float(v) for _, v in labels], dtype=np.float32)
    index = {n: i for i, n in enumerate(names)}
    out = []
    for lineno, v in labels:
        if str(v) not in index:
            raise LadaBertError(
                f"{path}:{lineno}: label {str(v)!r} does not occur in {known_from} (labels: "
                f"{', '.join(names)}); fix the label or add training examples of it"
            )
        out.append(index[str(v)])
    return np.asarray(out, dtype=np.int64)


def label_names_from(values: list[Any], path: Path) -> tuple[str, ...] | None:
    """The label names a training file defines, in id order (None: regression)."""
    kind = _label_kind(values)
    if kind == "float":
        return None
    # Integers sort as numbers (2 before 10); anything else as text.
    distinct = [str(v) for v in sorted(set(values))] if kind == "int" else sorted({str(v) for v in values})
    if len(distinct) < 2:
        raise LadaBertError(
            f"{path}: every example has the label {distinct[0]!r}; a classifier needs at least two "
            "labels (for a numeric target use fractional values, which make a regression model)"
        )
    return tuple(distinct)


def load_files(
    files: DataFiles,
    label_names: tuple[str, ...] | None | bool = False,
    splits: tuple[str, ...] = ("train", "dev"),
    name: str | None = None,
) -> tuple[GlueTask, GlueSplit | None, GlueSplit | None]:
    """Read a user's training and validation files into a task and its splits.

    Args:
        files: the files and columns.
        label_names: the label names of an existing model in id order (``None`` for a regression model);
            ``False`` (default) derives them from the training file.
        splits: which splits to read (``train``, ``dev``); the others come back as None.
        name: the task's name (default: the training file's name without its extension).

    Raises:
        LadaBertError: naming the file, the line or column and the fix.
    """
    need = {"train": files.train_file, "dev": files.validation_file}
    for split in splits:
        if need[split] is None:
            flag = "--train-file" if split == "train" else "--validation-file"
            raise LadaBertError(
                f"no {flag} given; pass {flag} with a labelled csv, tsv, json/jsonl or parquet file"
            )
    read = {s: (Path(need[s]).expanduser(), *_read_split(Path(need[s]).expanduser(), files)) for s in splits}
    first = read[splits[0]]
    text_cols, label = first[1], first[2]
    for s in splits[1:]:
        if read[s][1] != text_cols:
            raise LadaBertError(
                f"{read[s][0]} has text column(s) {list(read[s][1])} but {first[0]} has {list(text_cols)}; "
                "pass --text-column so both files use the same"
            )
    if label_names is False:
        if "train" not in read:
            raise LadaBertError("the label names come from the training file; pass --train-file too")
        train_path, _, _, _, train_labels = read["train"]
        names = label_names_from([v for _, v in train_labels], train_path)
        known_from = f"the training file {train_path}"
    else:
        names = label_names
        known_from = "the model's labels"
    name = name or Path(files.train_file or files.validation_file).stem
    task = _task(name, text_cols, label, names)
    out: dict[str, GlueSplit | None] = {"train": None, "dev": None}
    for s, (path, _, _, texts, labels) in read.items():
        out[s] = GlueSplit(task, s, texts, _encode(path, labels, names, known_from), source=str(path))
    return task, out["train"], out["dev"]


def load_task_data(
    cfg: Any,
    data_dir: str | os.PathLike | None = None,
    label_names: tuple[str, ...] | None | bool = False,
    splits: tuple[str, ...] = ("train", "dev"),
    name: str | None = None,
) -> tuple[GlueTask, GlueSplit | None, GlueSplit | None]:
    """The task and splits a config names: its data files when it has ``train_file``/``validation_file``,
    else its GLUE ``task`` (see :func:`ladabert.pipeline.data.load_glue`). ``max_train_samples`` (a subset
    drawn with ``seed``) and ``max_eval_samples`` (the first examples) apply to both."""
    from ladabert.pipeline.data import get_task, load_glue

    files = DataFiles.from_config(cfg)
    max_train, max_eval = getattr(cfg, "max_train_samples", None), getattr(cfg, "max_eval_samples", None)
    seed = getattr(cfg, "seed", None)
    if files is None:
        task = get_task(cfg.task)
        train = load_glue(task, "train", data_dir, max_train, seed=seed) if "train" in splits else None
        dev = load_glue(task, "dev", data_dir, max_eval) if "dev" in splits else None
        return task, train, dev
    task, train, dev = load_files(files, label_names, splits, name)
    train = None if train is None else train.subset(max_train, seed)
    return task, train, None if dev is None else dev.subset(max_eval)


def model_label_names(model_config: Any) -> tuple[str, ...] | None:
    """A model's label names in id order (None for a one-output regression model)."""
    if model_config.num_labels == 1 or getattr(model_config, "problem_type", None) == "regression":
        return None
    id2label = {int(k): v for k, v in model_config.id2label.items()}
    return tuple(id2label[i] for i in range(model_config.num_labels))
