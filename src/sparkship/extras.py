"""Optional dependencies: a command that needs an extra imports it through :func:`require`.

The wheel's ``install_requires`` is what jobs need at run time; tools for deploying (``build``, which builds the
bundle's wheel) live in extras. A command that needs one and does not find it fails with one line naming the
extra.

    >>> require("json", extra="bundle", command="sparkship bundle check").__name__
    'json'
"""
from __future__ import annotations

import importlib
from types import ModuleType

from sparkship.errors import SparkshipError


class MissingExtraError(SparkshipError):
    """A command needs a package from one of sparkship's extras that is not installed."""


def require(module: str, extra: str, command: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` saying which extra ``command`` needs.

    >>> try:
    ...     require("no_such_module_x", extra="bundle", command="sparkship bundle check")
    ... except MissingExtraError as exc:
    ...     print(exc)
    sparkship bundle check needs the 'bundle' extra (no module no_such_module_x): pip install 'sparkship[bundle]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        raise MissingExtraError(
            f"{command} needs the {extra!r} extra (no module {missing}): pip install 'sparkship[{extra}]'"
        ) from None
