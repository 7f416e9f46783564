"""Model names and references (REF): parsed and checked in one place, so no path escapes the roots.

    >>> parse_ref("churn@champion")
    ModelRef(name='churn', version=None, alias='champion', run_id=None)
    >>> parse_ref("churn/3").version
    3
"""
from __future__ import annotations

import re
from dataclasses import dataclass

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


@dataclass(frozen=True)
class ModelRef:
    """One of ``NAME``, ``NAME/VERSION``, ``NAME@ALIAS``, ``NAME/run:RUN_ID``."""

    name: str
    version: int | None = None
    alias: str | None = None
    run_id: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}/{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        if self.run_id is not None:
            return f"{self.name}/{RUN_PREFIX}{self.run_id}"
        return self.name


def parse_ref(ref: str) -> ModelRef:
    """Parse a model reference; raise :class:`UsageError` naming what is wrong."""
    if not isinstance(ref, str) or not ref:
        raise UsageError("model reference is empty: use NAME, NAME/VERSION, NAME@ALIAS or NAME/run:RUN_ID")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return ModelRef(validate_name(name), alias=validate_alias(alias))
    if "/" in ref:
        name, rest = ref.split("/", 1)
        validate_name(name)
        if rest.startswith(RUN_PREFIX) and rest[len(RUN_PREFIX):]:
            return ModelRef(name, run_id=rest[len(RUN_PREFIX):])
        if re.fullmatch(r"[0-9]+", rest) and int(rest) > 0:  # not str.isdigit: it takes "²" and "٣"
            return ModelRef(name, version=int(rest))
        raise UsageError(f"model reference {ref!r}: '{rest}' is not a version number (1, 2, ...) or run:RUN_ID")
    return ModelRef(validate_name(ref))
