"""A model's input signature, and turning records, pandas or Arrow data into values of those types.

Types are Spark ``simpleString()``s (``double``, ``float``, ``int``, ``bigint``, ``boolean``, ``string``...), plus
``vector`` for a column that already holds feature vectors (given as lists of numbers). The coercions follow
what Spark would hold in a column of that type, so that casts done by stages (StringIndexer casts its input to
string, Imputer casts the surrogate back to the input type) give Spark's answers.

    >>> sig = Signature([Field("age", "double"), Field("plan", "string")])
    >>> sig.coerce_record({"age": 41, "plan": "pro"})
    {'age': 41.0, 'plan': 'pro'}
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from sparkship.errors import SchemaMismatchError

INTEGRAL = frozenset({"tinyint", "smallint", "int", "bigint", "byte", "short", "integer", "long"})
FLOATING = frozenset({"double", "float"})
# ANY: an input whose type only the data can say (a FeatureHasher column of a model saved without a signature);
# the scorer takes it from each request (:func:`types_from_data`) and plans the pipeline for it.
ANY = "any"
SUPPORTED = INTEGRAL | FLOATING | {"boolean", "string", "vector", "array<string>", ANY}
_INT_BOUNDS = {"tinyint": 2**7, "byte": 2**7, "smallint": 2**15, "short": 2**15, "int": 2**31, "integer": 2**31,
               "bigint": 2**63, "long": 2**63}


class InvalidRecordError(SchemaMismatchError):
    """A record does not fit the model: a field is missing, of the wrong type, or holds a value the pipeline
    refuses (as Spark's ``transform()`` would). ``field`` names the column, ``row`` the record (0-based)."""

    exit_code = 2

    def __init__(self, field: str, message: str, row: int | None = None) -> None:
        self.field = field
        self.row = row
        self.reason = message
        where = f"record {row}: " if row is not None else ""
        super().__init__(f"{where}field '{field}': {message}")


def normalise_type(spark_type: str) -> str:
    """``decimal(10,2)`` and friends count as ``double``; ``array<double>`` as ``vector``."""
    t = spark_type.strip().lower()
    if t.startswith("decimal"):
        return "double"
    if t in ("array<double>", "array<float>", "vector"):
        return "vector"
    if t.replace(" ", "") == "array<string>":
        return "array<string>"
    return t


@dataclass(frozen=True)
class Field:
    """One input column: its name and Spark type."""

    name: str
    type: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type}


class Signature:
    """The input fields a model needs; coerces records (row path) and columns (batch path) to their types."""

    def __init__(self, inputs: Sequence[Field]) -> None:
        self.inputs = list(inputs)
        self.types = {f.name: normalise_type(f.type) for f in self.inputs}
        for f in self.inputs:
            if self.types[f.name] not in SUPPORTED:
                raise SchemaMismatchError(f"input '{f.name}' has type {f.type}, which the scorer does not support")
        self._converters = [(f.name, _CONVERTERS[self.types[f.name]]) for f in self.inputs]

    def to_list(self) -> list[dict[str, str]]:
        return [f.to_dict() for f in self.inputs]

    @classmethod
    def from_dicts(cls, fields: Iterable[Mapping[str, Any]]) -> Signature:
        return cls([Field(str(f["name"]), str(f["type"])) for f in fields])

    def coerce_record(self, record: Mapping[str, Any], row: int | None = None) -> dict[str, Any]:
        """The record's input fields converted to plain Python values of their types (None for null).

        Raises :class:`InvalidRecordError` naming a missing field or one of the wrong type.
        """
        out: dict[str, Any] = {}
        for name, convert in self._converters:
            try:
                value = record[name]
            except KeyError:
                raise InvalidRecordError(name, "is missing", row) from None
            except TypeError:
                raise InvalidRecordError("<record>", "a record must be a JSON object", row) from None
            if value is None:
                out[name] = None
                continue
            try:
                out[name] = convert(value)
            except (TypeError, ValueError, OverflowError) as exc:
                raise InvalidRecordError(
                    name, f"expected {self.types[name]}, got {_describe(value)} ({exc})", row
                ) from None
        return out

    def json_schema(self) -> dict[str, Any]:
        """A JSON schema for one record, for the OpenAPI page."""
        props = {}
        for f in self.inputs:
            t = self.types[f.name]
            if t == "string":
                js: dict[str, Any] = {"type": ["string", "null"]}
            elif t == "boolean":
                js = {"type": ["boolean", "null"]}
            elif t in INTEGRAL:
                js = {"type": ["integer", "null"]}
            elif t == "vector":
                js = {"type": ["array", "null"], "items": {"type": "number"}}
            elif t == "array<string>":
                js = {"type": ["array", "null"], "items": {"type": ["string", "null"]}}
            elif t == ANY:
                js = {"type": ["string", "number", "boolean", "null"]}
            else:
                js = {"type": ["number", "null"]}
            props[f.name] = {**js, "description": f"Spark type {f.type}"}
        return {"type": "object", "properties": props, "required": [f.name for f in self.inputs]}


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    return type(value).__name__ + (f" {value!r}" if isinstance(value, (int, float, bool)) else "")


def _to_double(v: Any) -> float:
    t = type(v)
    if t is float:
        return float(v)
    if t is int:
        return float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError("not a number")
    return float(v)


def _to_float32(v: Any) -> float:
    return float(np.float32(_to_double(v)))


def _integral(kind: str) -> Callable[[Any], int]:
    bound = _INT_BOUNDS[kind]

    def convert(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError("not an integer")
        if isinstance(v, (float, np.floating)):
            if not math.isfinite(v) or v != int(v):
                raise ValueError("not an integer")
        i = int(v)
        if not -bound <= i < bound:
            raise OverflowError(f"out of range for {kind}")
        return i

    return convert


def _to_bool(v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError("not a boolean")
    return bool(v)


def _to_string(v: Any) -> str:
    # JSON integers are accepted for string fields: Spark casts an integer column to the same digits.
    if type(v) is str or isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    raise TypeError("not a string")


def _to_vector(v: Any) -> list[float]:
    if isinstance(v, (str, bytes, Mapping)) or not hasattr(v, "__iter__"):
        raise TypeError("not a list of numbers")
    return [_to_double(x) for x in v]


def _to_string_array(v: Any) -> list[str | None]:
    # Spark arrays may hold null elements; tokens are strings (no number-to-string coercion inside arrays).
    if isinstance(v, (str, bytes, Mapping)) or not hasattr(v, "__iter__"):
        raise TypeError("not a list of strings")
    out = list(v)
    if not all(x is None or isinstance(x, str) for x in out):
        raise TypeError("not a list of strings")
    return out


def _scalar(v: Any) -> Any:
    if isinstance(v, (str, bool, int, float, np.integer, np.floating, np.bool_)):
        return v.item() if isinstance(v, np.generic) else v
    raise TypeError("not a string, number or boolean")


_ARROW_TYPES = (("string", "string"), ("large_string", "string"), ("bool", "boolean"), ("float", "float"),
                ("halffloat", "float"), ("double", "double"), ("null", "double"))


def _arrow_type(name: str, atype: Any) -> str:
    if pa.types.is_integer(atype):
        return "bigint"
    if pa.types.is_decimal(atype):
        return "double"
    for arrow_name, spark_type in _ARROW_TYPES:
        if str(atype) == arrow_name:
            return spark_type
    raise InvalidRecordError(name, f"expected a string, number or boolean column, got {atype}")


def _value_type(name: str, values: Iterable[Any]) -> str:
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, (bool, np.bool_)):
            return "boolean"
        if isinstance(v, (int, np.integer)):
            return "bigint"
        if isinstance(v, (float, np.floating)):
            return "double"
        if isinstance(v, str):
            return "string"
        raise InvalidRecordError(name, f"expected a string, number or boolean, got {_describe(v)}")
    return "double"  # only nulls: a null adds nothing whatever its type


def types_from_data(data: Any, names: Sequence[str]) -> tuple[str, ...]:
    """The Spark types of columns ``names`` as the data holds them: an Arrow table or batch's schema, a pandas
    frame's (through Arrow), or the first non-null value of each field of records (a dict or a list of dicts)."""
    mod = type(data).__module__
    if mod.startswith("pandas"):
        data = pa.Table.from_pandas(data[[n for n in names if n in data.columns]], preserve_index=False)
        mod = "pyarrow"
    if mod.startswith("pyarrow"):
        schema = data.schema
        return tuple(_arrow_type(n, schema.field(n).type) if n in schema.names else "double" for n in names)
    records = [data] if isinstance(data, Mapping) else list(data)
    return tuple(_value_type(n, (r.get(n) if isinstance(r, Mapping) else None for r in records)) for n in names)


_CONVERTERS = {
    ANY: _scalar,
    "double": _to_double,
    "float": _to_float32,
    "boolean": _to_bool,
    "string": _to_string,
    "vector": _to_vector,
    "array<string>": _to_string_array,
    **{k: _integral(k) for k in INTEGRAL},
}
