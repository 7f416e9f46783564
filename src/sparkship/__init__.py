"""sparkship: Spark MLlib models from a Delta training table to production on Databricks.

The Python API for notebooks and jobs (:mod:`sparkship.api`): :func:`session`, :func:`register_model`,
:func:`load_model`, :func:`score`, :func:`scorer`.
"""
from sparkship._version import __version__
from sparkship.api import load_model, register_model, score, scorer, session

__all__ = ["__version__", "load_model", "register_model", "score", "scorer", "session"]
