"""Java's and Spark's text forms of numbers: ``String.valueOf(double)``, ``String.valueOf(float)`` and
``CAST(value AS STRING)``, which StringIndexer, the hashing stages and SQL reproduce.

    >>> java_double_str(1e7), spark_string(True, "boolean"), is_java_double("1.0E7")
    ('1.0E7', 'true', True)
"""
from __future__ import annotations

import decimal
import math
from typing import Any

import numpy as np

from sparkship.errors import SchemaMismatchError
from sparkship.serving.signature import INTEGRAL

# The column types :func:`spark_string` casts; it refuses any other.
CASTABLE = frozenset({"string", "boolean", "double", "float", *INTEGRAL})


def _java_digits(digits: tuple[int, ...], exponent: int, negative: bool) -> str:
    """Java's Double/Float.toString layout for the shortest decimal digits ``digits`` x 10^exponent."""
    while len(digits) > 1 and digits[-1] == 0:
        digits, exponent = digits[:-1], exponent + 1
    sci = len(digits) - 1 + exponent  # value = d.ddd x 10^sci
    s = "".join(map(str, digits))
    sign = "-" if negative else ""
    if -3 <= sci < 7:
        if sci >= 0:
            whole = s[: sci + 1].ljust(sci + 1, "0")
            frac = s[sci + 1:] or "0"
        else:
            whole, frac = "0", "0" * (-sci - 1) + s
        return f"{sign}{whole}.{frac}"
    return f"{sign}{s[0]}.{s[1:] or '0'}E{sci}"


def java_double_str(d: float) -> str:
    """``String.valueOf(double)`` as Spark's cast to string writes it: ``1.0``, ``0.001``, ``1.0E7``, ``NaN``.

    >>> [java_double_str(x) for x in (1.0, 1e7, 1.5e-4, -0.0, float("nan"))]
    ['1.0', '1.0E7', '1.5E-4', '-0.0', 'NaN']
    """
    if d != d:
        return "NaN"
    if math.isinf(d):
        return "Infinity" if d > 0 else "-Infinity"
    if d == 0:
        return "-0.0" if math.copysign(1.0, d) < 0 else "0.0"
    t = decimal.Decimal(repr(float(d))).as_tuple()
    return _java_digits(tuple(t.digits), int(t.exponent), bool(t.sign))


def java_float_str(f: float) -> str:
    """``String.valueOf(float)``: the shortest digits that identify the float32 value."""
    v = np.float32(f)
    if v != v or np.isinf(v) or v == 0:
        return java_double_str(float(v))
    mant, exp = np.format_float_scientific(v, unique=True, trim="-").split("e")
    t = decimal.Decimal(f"{mant}e{exp}").as_tuple()
    return _java_digits(tuple(t.digits), int(t.exponent), bool(t.sign))


def spark_string(value: Any, spark_type: str) -> str | None:
    """``CAST(value AS STRING)`` for a value held in a column of ``spark_type``."""
    if value is None:
        return None
    if spark_type == "string":
        return str(value)
    if spark_type == "boolean":
        return "true" if value else "false"
    if spark_type == "double":
        return java_double_str(value)
    if spark_type == "float":
        return java_float_str(value)
    if spark_type in INTEGRAL:
        return str(int(value))
    raise SchemaMismatchError(f"cannot cast a {spark_type} to string")


def is_java_double(s: str) -> bool:
    """True if ``s`` is exactly how Spark casts some double to string."""
    try:
        return java_double_str(float(s)) == s
    except ValueError:
        return False
