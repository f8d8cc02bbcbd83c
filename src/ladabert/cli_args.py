"""Command-line flags generated from the config dataclasses, so that a setting lives in one place.

Every field of a config becomes ``--field-name`` with the field's type, choices and help (from its
metadata) and the default shown; the parsed value is ``None`` unless given, so that a preset's values
stand wherever the user gave no flag. Booleans get ``--x`` / ``--no-x``; tuples take several values.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def _base_type(hint: Any) -> tuple[Any, bool]:
    """``(element type, takes several values)`` of a field's type hint, ``None`` stripped."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _base_type(args[0])
    if origin in (tuple, list):
        return typing.get_args(hint)[0], True
    return hint, False


def _default_text(f: dataclasses.Field) -> str:
    if isinstance(f.default, tuple):
        return " ".join(str(v) for v in f.default) or "none"
    return "unset" if f.default is None else str(f.default)


def add_config_args(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    prefix: str = "",
    skip: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
) -> None:
    """Add one flag per field of ``cls`` (``--<prefix><field>``); ``skip``/``only`` select fields."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        meta = f.metadata
        names = [f"--{prefix}{f.name}".replace("_", "-")]
        if not prefix:
            names += list(meta.get("aliases", ()))
        kind, many = _base_type(hints[f.name])
        text = meta.get("help", "")
        # A help that says its own default (what an unset field resolves to) keeps only that one.
        if "(default:" not in text:
            text = f"{text} (default: {_default_text(f)})"
        kw: dict[str, Any] = {
            "dest": (prefix + f.name).replace("-", "_"),
            "default": None,
            # argparse %-formats help strings: a literal percent sign in a field's help is escaped here.
            "help": text.replace("%", "%%"),
        }
        if kind is bool:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **kw)
            continue
        kw["type"] = kind
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        if many:
            kw["nargs"] = "+"
        parser.add_argument(*names, **kw)


def config_overrides(args: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line (``--<prefix><field>``)."""
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, (prefix + f.name).replace("-", "_"), None)
        if value is not None:
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out
