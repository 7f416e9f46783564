"""sparkship: Spark MLlib models from a Delta training table to production on Databricks.

The Python API for notebooks and jobs (:mod:`sparkship.api`): :func:`session`, :func:`register_model`,
:func:`load_model`, :func:`score`, :func:`scorer`. They are re-exported lazily (PEP 562): ``import sparkship``,
which every submodule import runs first, must stay light and must not need the table engines, because the
JVM-free server and an exported MLflow pyfunc run it where neither pyspark nor deltalake is installed.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sparkship._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from sparkship.api import load_model, register_model, score, scorer, session

__all__ = ["__version__", "load_model", "register_model", "score", "scorer", "session"]
_API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("sparkship.api"), name)
    raise AttributeError(f"module 'sparkship' has no attribute {name!r}")
