"""LadaBERT: lightweight adaptation of BERT through hybrid model compression.

Public API (imports are lazy so that ``import ladabert`` is cheap)::

    from ladabert import finetune, FinetuneConfig, load_glue
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "finetune": "ladabert.pipeline.teacher",
    "evaluate": "ladabert.pipeline.teacher",
    "FinetuneConfig": "ladabert.pipeline.teacher",
    "load_glue": "ladabert.pipeline.data",
    "get_task": "ladabert.pipeline.data",
    "LadaBertError": "ladabert.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ladabert' has no attribute {name!r}")
