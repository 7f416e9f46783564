"""Model names and aliases, checked in one place so that no path escapes the roots (see also :mod:`sparkship.refs`).

    >>> validate_name("churn_v2")
    'churn_v2'
    >>> validate_name("../up")
    Traceback (most recent call last):
    ...
    sparkship.errors.UsageError: model name '../up' is invalid: use lowercase letters, digits, '_' and '-' only
"""
from __future__ import annotations

import re

from sparkship.errors import UsageError

# fullmatch, not match with ^...$: "$" also matches before a trailing newline ("churn\n").
NAME_PATTERN = re.compile(r"[a-z0-9_-]+")
ALIAS_PATTERN = re.compile(r"[a-z][a-z0-9_-]*")
RUN_PREFIX = "run:"


def validate_name(name: str, what: str = "model name") -> str:
    """Return ``name`` if it matches ``[a-z0-9_-]+``; refuse anything else (``..``, ``/``, absolute paths)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise UsageError(f"{what} {name!r} is invalid: use lowercase letters, digits, '_' and '-' only")
    return name


def validate_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_PATTERN.fullmatch(alias):
        raise UsageError(
            f"alias {alias!r} is invalid: use lowercase letters, digits, '_' and '-', starting with a letter")
    return alias
