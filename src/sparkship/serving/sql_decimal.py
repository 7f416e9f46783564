"""Spark SQL's decimal type rules and values, for the JVM-free SQLTransformer.

Spark types a literal such as ``1.0`` as ``decimal(2,1)``, not double. Types follow Spark 4.0 with
``spark.sql.decimalOperations.allowPrecisionLoss`` on (its default): result precision and scale of ``+ - * /``,
the wider type of CASE/COALESCE branches, integral operands as ``decimal(10,0)`` / ``decimal(20,0)`` (an integer
literal next to a decimal takes its own digits), and precision above 38 cut back keeping at least 6 digits of
scale. Values are exact: unscaled Python ints at the type's scale, rounded HALF_UP where Spark rounds.

    >>> literal_type("0.05"), literal_unscaled("0.05")
    ('decimal(2,2)', 5)
    >>> arithmetic_type("/", "decimal(2,1)", "decimal(1,0)")
    'decimal(7,6)'
    >>> to_double(15, 1)
    1.5
"""
from __future__ import annotations

import decimal

import numpy as np

MAX_PRECISION = 38
MIN_ADJUSTED_SCALE = 6
INTEGRAL_PRECISION = {"int": 10, "bigint": 20}
_DIVISION_SCALE = MAX_PRECISION + 1  # Spark divides to 39 digits, then rounds to the result's scale


def decimal_type(precision: int, scale: int) -> str:
    return f"decimal({precision},{scale})"


def is_decimal(t: str) -> bool:
    return t.startswith("decimal(")


def precision_scale(t: str) -> tuple[int, int]:
    """``decimal(p,s)`` -> (p, s); ``int``/``bigint`` as Spark widens them to a decimal."""
    if t in INTEGRAL_PRECISION:
        return INTEGRAL_PRECISION[t], 0
    p, s = t[len("decimal("):-1].split(",")
    return int(p), int(s)


def literal_type(text: str) -> str:
    """The type Spark gives a numeric literal with a point and no exponent (Java's BigDecimal of the text)."""
    digits, exponent = decimal.Decimal(text).as_tuple()[1:]
    scale = max(-int(exponent), 0)
    return decimal_type(max(len(digits), scale, 1), scale)


def literal_unscaled(text: str) -> int:
    value = decimal.Decimal(text)
    return int(value.scaleb(precision_scale(literal_type(text))[1]))


def integer_literal_type(text: str) -> str:
    """An integer literal next to a decimal: as many digits as it has (Spark's minimum-precision literals)."""
    return decimal_type(len(text.lstrip("-")), 0)


def _adjust(precision: int, scale: int) -> str:
    if precision <= MAX_PRECISION:
        return decimal_type(precision, scale)
    int_digits = precision - scale
    return decimal_type(MAX_PRECISION, max(MAX_PRECISION - int_digits, min(scale, MIN_ADJUSTED_SCALE)))


def wider_type(a: str, b: str) -> str:
    """The common type of two decimal/integral types (CASE, COALESCE, IN, comparisons)."""
    (p1, s1), (p2, s2) = precision_scale(a), precision_scale(b)
    scale = max(s1, s2)
    return decimal_type(min(max(p1 - s1, p2 - s2) + scale, MAX_PRECISION), min(scale, MAX_PRECISION))


def arithmetic_type(op: str, a: str, b: str) -> str:
    """The result type of ``a op b`` for op in ``+ - * /``, both decimal or integral."""
    (p1, s1), (p2, s2) = precision_scale(a), precision_scale(b)
    if op in "+-":
        scale = max(s1, s2)
        return _adjust(max(p1 - s1, p2 - s2) + scale + 1, scale)
    if op == "*":
        return _adjust(p1 + p2 + 1, s1 + s2)
    scale = max(MIN_ADJUSTED_SCALE, s1 + p2 + 1)
    return _adjust(p1 - s1 + s2 + scale, scale)


def _round_div(num: int, den: int) -> int:
    """num / den rounded HALF_UP (away from zero on a tie)."""
    q, r = divmod(abs(num), abs(den))
    if 2 * r >= abs(den):
        q += 1
    return q if (num < 0) == (den < 0) else -q


def rescale(u: int, scale: int, to: int) -> int:
    """An unscaled value at ``scale`` moved to scale ``to`` (HALF_UP when digits are dropped)."""
    return u * 10 ** (to - scale) if to >= scale else _round_div(u, 10 ** (scale - to))


def combine(op: str, a: int, sa: int, b: int, sb: int, result_scale: int) -> int:
    """``a op b`` (unscaled at scales sa, sb) as an unscaled value at ``result_scale``; b != 0 for ``/``."""
    if op in "+-":
        common = max(sa, sb)
        x, y = a * 10 ** (common - sa), b * 10 ** (common - sb)
        return rescale(x + y if op == "+" else x - y, common, result_scale)
    if op == "*":
        return rescale(a * b, sa + sb, result_scale)
    q = _round_div(a * 10 ** (sb + _DIVISION_SCALE), b * 10 ** sa)
    return rescale(q, _DIVISION_SCALE, result_scale)


def to_double(u: int, scale: int) -> float:
    """Spark's ``Decimal.toDouble``: the nearest double (one division when both parts are exact doubles)."""
    if abs(u) < 2**53 and scale <= 22:
        return float(u) / 10.0**scale
    return float(decimal.Decimal(u).scaleb(-scale))


def to_doubles(values: np.ndarray, scale: int) -> np.ndarray:
    return np.array([to_double(int(u), scale) for u in values.tolist()], dtype=np.float64).reshape(-1)


def fits(u: int, precision: int) -> bool:
    return bool(abs(u) < 10**precision)
