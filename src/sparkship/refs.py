"""References a user writes, parsed once at the edge (the CLI, the Python API, a spec) into typed values.

A model reference is ``NAME``, ``NAME/VERSION``, ``NAME@ALIAS`` or ``NAME/run:RUN_ID``; a table reference is a
path, a URI or a catalog name, optionally pinned as ``TABLE@VERSION``. Below the edge only :class:`ModelRef` and
:class:`TableRef` travel, so nothing parses a string twice or rewrites another parser's message.

    >>> parse_ref("churn@champion")
    ModelRef(name='churn', version=None, alias='champion', run_id=None)
    >>> parse_ref("churn/3").version
    3
    >>> str(parse_ref("churn/run:abc"))
    'churn/run:abc'
    >>> parse_table("data/t@2", base_dir="/specs")
    TableRef(location='/specs/data/t', version=2)
    >>> ref = parse_table("`main`.sales.churn@3")
    >>> (ref.location, ref.version, ref.is_name, str(ref))
    ('main.sales.churn', 3, True, 'main.sales.churn@3')
    >>> parse_table("s3://bucket/t/").location
    's3://bucket/t'
    >>> parse_table("/t@latest", what="--input")
    Traceback (most recent call last):
    ...
    sparkship.errors.UsageError: --input: version after '@' must be a number >= 0, got 'latest'
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from sparkship.config import is_uri
from sparkship.errors import UsageError
from sparkship.names import RUN_PREFIX, validate_alias, validate_name
from sparkship.tables.engine import is_table_name
from sparkship.tables.names import canonical, check_table_argument

__all__ = ["ModelRef", "TableRef", "parse_ref", "parse_table", "to_model_ref", "to_table_ref"]


@dataclass(frozen=True)
class ModelRef:
    """One of ``NAME``, ``NAME/VERSION``, ``NAME@ALIAS``, ``NAME/run:RUN_ID``; ``str()`` writes it back."""

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


@dataclass(frozen=True)
class TableRef:
    """A Delta table: a path or URI, or a catalog name (``catalog.schema.table``), at ``version`` or the latest.

    ``str()`` writes it back as ``TABLE[@VERSION]``, which :func:`parse_table` reads to an equal reference.
    """

    location: str
    version: int | None = None

    @property
    def is_name(self) -> bool:
        """True for a catalog name, resolved by the catalog; False for a path or URI."""
        return is_table_name(self.location)

    def __str__(self) -> str:
        return self.location if self.version is None else f"{self.location}@{self.version}"


def parse_ref(ref: str) -> ModelRef:
    """Parse a model reference; raise :class:`UsageError` naming what is wrong.

    Args:
        ref: ``NAME``, ``NAME/VERSION``, ``NAME@ALIAS`` or ``NAME/run:RUN_ID``.
    Returns:
        The :class:`ModelRef` it names.
    """
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


def parse_table(value: str, *, what: str = "table", base_dir: str | None = None) -> TableRef:
    """Parse ``TABLE[@VERSION]``: a catalog name made canonical, a URI kept, a local path made absolute.

    Args:
        value: a path, a URI (``s3://``, ``dbfs:/``...) or a catalog name, optionally pinned as ``@VERSION``.
        what: what the value is called where the user wrote it (``--input``, ``spec key 'table'``); every
            error starts with it.
        base_dir: the folder a relative path resolves against (default: the current one).
    Returns:
        The :class:`TableRef`; raises :class:`UsageError` in one line naming ``what``.
    """
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{what}: expected a table path, optionally pinned as PATH@VERSION")
    location, version = value.strip(), None
    match = re.fullmatch(r"(.+)@([^@/]*)", location)  # an '@' inside a folder name belongs to the path
    if match:
        location, raw = match.group(1), match.group(2)
        if not re.fullmatch(r"[0-9]+", raw):  # ASCII only: str.isdigit takes "²" and "٣"
            raise UsageError(f"{what}: version after '@' must be a number >= 0, got {raw!r}")
        version = int(raw)
    if is_uri(location):
        return TableRef(location.rstrip("/"), version)
    if is_table_name(location):  # catalog.schema.table: resolved by the catalog, not the file system
        return TableRef(canonical(location), version)
    check_table_argument(location, what=what)
    location = os.path.expanduser(location)
    if not os.path.isabs(location):
        location = os.path.join(base_dir or os.getcwd(), location)
    return TableRef(os.path.normpath(location), version)


def to_model_ref(ref: str | ModelRef) -> ModelRef:
    """``ref`` as a :class:`ModelRef`: for the Python API's functions, which take either (a string parsed here).

    >>> to_model_ref("churn/2") == to_model_ref(ModelRef("churn", version=2))
    True
    """
    return ref if isinstance(ref, ModelRef) else parse_ref(ref)


def to_table_ref(table: str | TableRef, *, what: str = "table", base_dir: str | None = None) -> TableRef:
    """``table`` as a :class:`TableRef`: for the Python API's functions, which take either (as :func:`parse_table`).

    >>> to_table_ref(TableRef("/data/t", 3))
    TableRef(location='/data/t', version=3)
    """
    return table if isinstance(table, TableRef) else parse_table(table, what=what, base_dir=base_dir)
