"""The student's place among the Hugging Face Auto classes.

A student directory's ``config.json`` says ``model_type: ladabert``. Stock transformers does not know that
type, so it refuses the directory with an unknown-model-type error instead of loading a plain BERT with
freshly initialised weights. Once ``ladabert`` is imported, ``AutoConfig`` maps the type to
:class:`~ladabert.student_config.LadaBertConfig` and ``AutoModelForSequenceClassification`` (and so ``pipeline("text-classification",
...)``) to :class:`~ladabert.pipeline.student.LadaBertForSequenceClassification`::

    import ladabert, transformers
    model = transformers.AutoModelForSequenceClassification.from_pretrained("runs/demo/student-5x")

Importing transformers' Auto modules takes seconds (and the model class needs torch), so ``import
ladabert`` does not do it: it registers the student the moment transformers loads its Auto modules
(immediately, when they are loaded already). ``ladabert predict`` therefore stays quick and torch-free.
"""

from __future__ import annotations

import importlib.abc
import sys
import warnings
from collections.abc import Callable
from typing import Any

MODEL_TYPE = "ladabert"
_CONFIG_AUTO = "transformers.models.auto.configuration_auto"
_MODELING_AUTO = "transformers.models.auto.modeling_auto"
# The student class subclasses BERT's; importing BERT's modeling module (or the student's) imports the Auto
# modules on the way, so the model is registered once all of them have loaded, whichever finishes last.
_MODELING_BERT = "transformers.models.bert.modeling_bert"
_STUDENT = "ladabert.pipeline.student"
_state = {"auto_loaded": False, "model_registered": False}


def _register_config(module: Any) -> None:
    from ladabert.student_config import LadaBertConfig

    module.AutoConfig.register(MODEL_TYPE, LadaBertConfig, exist_ok=True)


def _loading(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def register_model(finished: Any = None) -> None:
    """Register the model unless it is registered, the Auto module is still to load, or BERT's or the
    student's modeling module is part way through loading (``finished``, the module whose loading just
    ended, counts as loaded: importlib marks it done only after this call)."""
    done = getattr(finished, "__name__", None)
    pending = any(_loading(m) and m != done for m in (_MODELING_BERT, _STUDENT))
    if _state["model_registered"] or not _state["auto_loaded"] or pending:
        return
    _state["model_registered"] = True
    from transformers.models.auto.modeling_auto import AutoModelForSequenceClassification

    from ladabert.pipeline.student import LadaBertForSequenceClassification
    from ladabert.student_config import LadaBertConfig

    AutoModelForSequenceClassification.register(
        LadaBertConfig, LadaBertForSequenceClassification, exist_ok=True
    )


def _auto_loaded(module: Any) -> None:
    _state["auto_loaded"] = True
    register_model(module)


class _AfterExec(importlib.abc.Loader):
    """A loader that runs the real one, then ``hook(module)``."""

    def __init__(self, loader: Any, hook: Callable[[Any], None]):
        self.loader, self.hook = loader, hook

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        _run(self.hook, module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ... of the real loader
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the Auto modules with the other finders and wraps their loaders in :class:`_AfterExec`."""

    def __init__(self, hooks: dict[str, Callable[[Any], None]]):
        self.hooks = hooks

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.hooks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _AfterExec(spec.loader, self.hooks.pop(name))
                return spec
        return None


def _run(hook: Callable[[Any], None], module: Any) -> None:
    try:
        hook(module)
    except Exception as exc:  # a failed registration must not break the user's import of transformers
        warnings.warn(
            f"ladabert could not register its student with transformers' Auto classes ({exc}); load students "
            "with ladabert.LadaBertForSequenceClassification.from_pretrained",
            stacklevel=2,
        )


def install() -> None:
    """Register now where transformers' Auto modules are loaded, else as soon as they are."""
    pending = {}
    hooks = (
        (_CONFIG_AUTO, _register_config),
        (_MODELING_AUTO, _auto_loaded),
        (_MODELING_BERT, register_model),
    )
    for name, hook in hooks:
        if name in sys.modules:
            _run(hook, sys.modules[name])
        else:
            pending[name] = hook
    if pending and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(pending))
