"""ONNX export, graph rewrites, runtimes and the bundle format.

``ladabert.export`` is also the public verb: calling the package, ``ladabert.export(model_dir, out,
config)``, is :func:`ladabert.export.bundle.export_bundle`. The package is made callable (rather than
shadowed by a function of the same name) because importing any of its modules binds the name
``ladabert.export`` to the package.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from ladabert.export.bundle import export_bundle

        return export_bundle(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
