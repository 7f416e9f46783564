"""Evaluation of the JVM-free SQLTransformer's expressions over numpy columns, with Spark 4.0's semantics.

ANSI mode (Spark 4.0's default): where Spark fails the job (overflow, division by zero, a bad cast), evaluation
raises :class:`SqlError` naming the row. Decimals are exact (unscaled ints, :mod:`sparkship.serving.sql_decimal`).

    >>> from sparkship.serving.sql_types import parse_expression
    >>> col = Evaluator({}).ev(parse_expression("CASE WHEN 1 > 0 THEN 1.0 ELSE 0.05 END"), {}, np.ones(1, bool))
    >>> col.type, col.values.tolist()
    ('decimal(3,2)', [100])
"""
from __future__ import annotations

import decimal
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparkship.serving.base import UnsupportedModelError
from sparkship.serving.javastr import java_double_str
from sparkship.serving.sql_decimal import (
    combine,
    fits,
    is_decimal,
    literal_unscaled,
    precision_scale,
    rescale,
    to_doubles,
)
from sparkship.serving.sql_types import CAST_TYPES, INT_RANGE, TypeChecker, exp, widen


class SqlError(Exception):
    """A row Spark would fail on (ANSI mode): carries the local row index."""

    def __init__(self, message: str, row: int) -> None:
        super().__init__(message)
        self.row = row
        self.column = "<where>"  # the output column being computed, once known


@dataclass
class Col:
    """A column value during evaluation: values, null mask, Spark type."""

    values: np.ndarray
    nulls: np.ndarray
    type: str


def null_col(n: int, t: str = "null") -> Col:
    return Col(np.zeros(n, dtype=np.float64), np.ones(n, dtype=bool), t)


def fail(mask: np.ndarray, message: str) -> None:
    if mask.any():
        raise SqlError(message, int(np.flatnonzero(mask)[0]))


def as_type(c: Col, t: str) -> Col:
    """Widen a column to ``t`` (int -> bigint -> double; integers and decimals -> a wider decimal or double)."""
    if c.type == t or t in ("null",):
        return c
    n = len(c.values)
    if c.type == "null":
        fill = (np.empty(n, dtype=object) if t == "string" else np.zeros(n, dtype=bool) if t == "boolean"
                else np.zeros(n, dtype=np.int64) if t in ("int", "bigint")
                else np.zeros(n, dtype=object) if is_decimal(t) else np.full(n, np.nan))
        return Col(fill, c.nulls, t)
    if t == "double":
        if is_decimal(c.type):
            return Col(to_doubles(c.values, precision_scale(c.type)[1]), c.nulls, t)
        return Col(c.values.astype(np.float64), c.nulls, t)
    if t == "bigint" and c.type in ("int", "null"):
        return Col(c.values.astype(np.int64), c.nulls, t)
    if is_decimal(t) and (c.type in ("int", "bigint") or is_decimal(c.type)):
        scale, to = (0 if c.type in ("int", "bigint") else precision_scale(c.type)[1]), precision_scale(t)[1]
        values = np.array([rescale(int(u), scale, to) for u in c.values.tolist()] or [], dtype=object)
        return Col(values.reshape(-1), c.nulls, t)
    raise UnsupportedModelError(f"cannot use a {c.type} as {t}")


class Evaluator(TypeChecker):
    """Evaluates a typed sqlglot expression over columns (``active``: the rows it is evaluated for)."""

    def ev(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        col: Col = getattr(self, "_e_" + type(e).__name__)(e, cols, active)
        return col

    def _e_Paren(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self.ev(e.this, cols, active)

    def _e_Column(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return cols[e.name]

    def _e_Literal(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        n, t = len(active), self.type_of(e)
        if t == "string":
            v: np.ndarray = np.full(n, e.this, dtype=object)
        elif is_decimal(t):
            v = np.full(n, literal_unscaled(e.this), dtype=object)
        elif t in ("int", "bigint"):
            v = np.full(n, int(e.this), dtype=np.int64)
        else:
            v = np.full(n, float(e.this), dtype=np.float64)
        return Col(v, np.zeros(n, dtype=bool), t)

    def _e_Null(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return null_col(len(active))

    def _e_Boolean(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return Col(np.full(len(active), bool(e.this)), np.zeros(len(active), dtype=bool), "boolean")

    def _operands(self, e: Any, cols: dict[str, Col], active: np.ndarray, t: str) -> tuple[Col, Col, np.ndarray]:
        a, b = self.ev(e.this, cols, active), self.ev(e.expression, cols, active)
        nulls = a.nulls | b.nulls
        return as_type(a, t), as_type(b, t), nulls

    def _arith_ev(self, e: Any, cols: dict[str, Col], active: np.ndarray, op: Callable[..., Any], name: str) -> Col:
        t = self.type_of(e)
        if is_decimal(t):
            return self._decimal_ev(e, cols, active, name, t)
        a, b, nulls = self._operands(e, cols, active, t)
        live = active & ~nulls
        if t == "double":
            with np.errstate(all="ignore"):
                return Col(op(a.values, b.values), nulls, t)
        lo, hi = INT_RANGE[t]
        exact = [op(int(x), int(y)) for x, y in zip(a.values[live].tolist(), b.values[live].tolist())]
        out = np.zeros(len(active), dtype=np.int64)
        over = np.zeros(len(active), dtype=bool)
        over[np.flatnonzero(live)] = [not lo <= v <= hi for v in exact]
        fail(over, f"[ARITHMETIC_OVERFLOW] {t} overflow in '{name}'")
        out[live] = exact
        return Col(out, nulls, t)

    def _e_Add(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._arith_ev(e, cols, active, lambda x, y: x + y, "+")

    def _e_Sub(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._arith_ev(e, cols, active, lambda x, y: x - y, "-")

    def _e_Mul(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._arith_ev(e, cols, active, lambda x, y: x * y, "*")

    def _divisor_check(self, b: Col, nulls: np.ndarray, active: np.ndarray) -> None:
        fail(active & ~nulls & (b.values == 0), "[DIVIDE_BY_ZERO] Division by zero")

    def _decimal_ev(self, e: Any, cols: dict[str, Col], active: np.ndarray, op: str, t: str) -> Col:
        """Decimal ``+ - * /``: exact, rounded HALF_UP to the result type; overflow and /0 fail (ANSI)."""
        a, b = self.ev(e.this, cols, active), self.ev(e.expression, cols, active)
        ta = self.decimal_operand(e.this, a.type, b.type)
        tb = self.decimal_operand(e.expression, b.type, a.type)
        a, b, nulls = as_type(a, ta), as_type(b, tb), a.nulls | b.nulls
        (_, sa), (_, sb), (precision, scale) = precision_scale(ta), precision_scale(tb), precision_scale(t)
        live = active & ~nulls
        if op == "/":
            fail(live & (b.values == 0).astype(bool), "[DIVIDE_BY_ZERO] Division by zero")
        out = np.zeros(len(active), dtype=object)
        for i in np.flatnonzero(live).tolist():
            out[i] = combine(op, int(a.values[i]), sa, int(b.values[i]), sb, scale)
        fail(live & np.array([not fits(int(u), precision) for u in out.tolist()], dtype=bool),
             f"[NUMERIC_VALUE_OUT_OF_RANGE] the value of '{op}' cannot be represented as {t}")
        return Col(out, nulls, t)

    def _e_Div(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        if is_decimal(self.type_of(e)):
            return self._decimal_ev(e, cols, active, "/", self.type_of(e))
        a, b, nulls = self._operands(e, cols, active, "double")
        self._divisor_check(b, nulls, active)
        with np.errstate(all="ignore"):
            return Col(a.values / np.where(b.values == 0, 1.0, b.values), nulls, "double")

    def _e_Mod(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        t = self.type_of(e)
        a, b, nulls = self._operands(e, cols, active, t)
        self._divisor_check(b, nulls, active)
        safe = np.where(b.values == 0, 1, b.values)
        with np.errstate(all="ignore"):
            return Col(np.fmod(a.values, safe), nulls, t)  # Java's remainder takes the dividend's sign

    def _e_IntDiv(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a, b, nulls = self._operands(e, cols, active, "bigint")
        self._divisor_check(b, nulls, active)
        q = [int(x / y) if abs(x) < 2**52 else (abs(x) // abs(y)) * (1 if (x < 0) == (y < 0) else -1)
             for x, y in zip(a.values.tolist(), np.where(b.values == 0, 1, b.values).tolist())]
        return Col(np.asarray(q, dtype=np.int64), nulls, "bigint")

    def _e_Neg(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a = self.ev(e.this, cols, active)
        if a.type in ("int", "bigint"):
            fail(active & ~a.nulls & (a.values == INT_RANGE[a.type][0]), f"[ARITHMETIC_OVERFLOW] {a.type} overflow")
        return Col(-a.values, a.nulls, a.type)

    def _cmp(self, e: Any, cols: dict[str, Col], active: np.ndarray, op: str) -> Col:
        a0, b0 = self.ev(e.this, cols, active), self.ev(e.expression, cols, active)
        t = widen(a0.type, b0.type, "comparison")
        a, b = as_type(a0, t), as_type(b0, t)
        nulls = a.nulls | b.nulls
        out = compare(a.values, b.values, a.nulls | b.nulls, t, op)
        if op == "<=>":
            out = np.where(nulls, a.nulls & b.nulls, out)
            nulls = np.zeros(len(active), dtype=bool)
        return Col(out, nulls, "boolean")

    def _e_EQ(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._cmp(e, cols, active, "=")

    def _e_NullSafeEQ(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._cmp(e, cols, active, "<=>")

    def _e_NEQ(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._cmp(e, cols, active, "<>")

    def _e_GT(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._cmp(e, cols, active, ">")

    def _e_GTE(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._cmp(e, cols, active, ">=")

    def _e_LT(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._cmp(e, cols, active, "<")

    def _e_LTE(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._cmp(e, cols, active, "<=")

    def _e_And(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a = self.ev(e.this, cols, active)
        a_false = ~a.nulls & ~a.values.astype(bool)
        b = self.ev(e.expression, cols, active & ~a_false)  # Spark skips the right side when the left is false
        b_false = ~b.nulls & ~b.values.astype(bool)
        false = a_false | b_false
        return Col(~false & ~a.nulls & ~b.nulls, ~false & (a.nulls | b.nulls), "boolean")

    def _e_Or(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a = self.ev(e.this, cols, active)
        a_true = ~a.nulls & a.values.astype(bool)
        b = self.ev(e.expression, cols, active & ~a_true)
        b_true = ~b.nulls & b.values.astype(bool)
        true = a_true | b_true
        return Col(true, ~true & (a.nulls | b.nulls), "boolean")

    def _e_Not(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a = self.ev(e.this, cols, active)
        return Col(~a.values.astype(bool), a.nulls, "boolean")

    def _e_Is(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a = self.ev(e.this, cols, active)
        return Col(a.nulls.copy(), np.zeros(len(active), dtype=bool), "boolean")

    def _e_In(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a0 = self.ev(e.this, cols, active)
        found = np.zeros(len(active), dtype=bool)
        some_null = np.zeros(len(active), dtype=bool)
        for x in e.expressions:
            b0 = self.ev(x, cols, active)
            t = widen(a0.type, b0.type, "IN")
            a, b = as_type(a0, t), as_type(b0, t)
            found |= compare(a.values, b.values, a.nulls | b.nulls, t, "=") & ~b.nulls
            some_null |= b.nulls
        return Col(found, a0.nulls | (~found & some_null), "boolean")

    def _e_Between(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        both = exp.And(this=exp.GTE(this=e.this, expression=e.args["low"]),
                       expression=exp.LTE(this=e.this, expression=e.args["high"]))
        return self.ev(both, cols, active)

    def _choose(self, conds: list[tuple[Any, Any]], default: Any, t: str, cols: dict[str, Col],
                active: np.ndarray) -> Col:
        n = len(active)
        out = as_type(null_col(n), t)
        values, nulls = out.values.copy(), out.nulls.copy()
        left = active.copy()
        for cond, value in conds:
            c = self.ev(cond, cols, left) if cond is not None else None
            hit = left & (np.ones(n, dtype=bool) if c is None else (~c.nulls & c.values.astype(bool)))
            if value is not None and hit.any():
                v = as_type(self.ev(value, cols, hit), t)
                values[hit], nulls[hit] = v.values[hit], v.nulls[hit]
            left &= ~hit
        return Col(values, nulls, t)

    def _e_Case(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        conds = [(w.this, w.args["true"]) for w in e.args["ifs"]] + [(None, e.args.get("default"))]
        return self._choose(conds, None, self.type_of(e), cols, active)

    def _e_If(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        branches = [(e.this, e.args["true"]), (None, e.args.get("false"))]
        return self._choose(branches, None, self.type_of(e), cols, active)

    def _e_Coalesce(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        t = self.type_of(e)
        n = len(active)
        out = as_type(null_col(n), t)
        values, nulls = out.values.copy(), out.nulls.copy()
        left = active.copy()
        for x in [e.this] + list(e.expressions):
            if not left.any():
                break
            v = as_type(self.ev(x, cols, left), t)
            take = left & ~v.nulls
            values[take], nulls[take] = v.values[take], False
            left &= ~take
        return Col(values, nulls, t)

    def _e_Nullif(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a = self.ev(e.this, cols, active)
        eq = self._cmp(e, cols, active, "=")
        return Col(a.values, a.nulls | (~eq.nulls & eq.values), a.type)

    def _e_TryCast(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a = self.ev(e.this, cols, active)
        t = CAST_TYPES[e.to.sql("spark").lower()]
        values, bad = cast_values(a, t)
        live_bad = bad & active & ~a.nulls
        if not e.args.get("safe"):
            fail(live_bad, f"[CAST_OVERFLOW] the value cannot be cast to {t} (ANSI mode)")
        return Col(values, a.nulls | bad, t)

    _e_Cast = _e_TryCast

    def _double_args(self, e: Any, cols: dict[str, Col], active: np.ndarray,
                     *args: Any) -> tuple[list[Col], np.ndarray]:
        got = [as_type(self.ev(a, cols, active), "double") for a in args]
        nulls = np.zeros(len(active), dtype=bool)
        for g in got:
            nulls = nulls | g.nulls
        return got, nulls

    def _unary_math(self, e: Any, cols: dict[str, Col], active: np.ndarray, fn: Callable[..., Any]) -> Col:
        (a,), nulls = self._double_args(e, cols, active, e.this)
        with np.errstate(all="ignore"):
            return Col(fn(a.values), nulls, "double")

    def _e_Sqrt(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._unary_math(e, cols, active, np.sqrt)

    def _e_Exp(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._unary_math(e, cols, active, np.exp)

    def _e_Ln(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        (a,), nulls = self._double_args(e, cols, active, e.this)
        with np.errstate(all="ignore"):
            return Col(np.log(a.values), nulls | (a.values <= 0), "double")  # Spark: null for x <= 0

    def _e_Log(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        if e.expression is None:
            return self._e_Ln(e, cols, active)
        (base, x), nulls = self._double_args(e, cols, active, e.this, e.expression)
        with np.errstate(all="ignore"):
            if base.type == "double" and np.all(base.values == 10.0):
                out = np.log10(x.values)
            elif np.all(base.values == 2.0):
                out = np.log2(x.values)
            else:
                out = np.log(x.values) / np.log(base.values)
        return Col(out, nulls | (x.values <= 0) | (base.values <= 0), "double")

    def _e_Pow(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        (a, b), nulls = self._double_args(e, cols, active, e.this, e.expression)
        with np.errstate(all="ignore"):
            return Col(np.power(a.values, b.values), nulls, "double")

    def _e_Abs(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a = self.ev(e.this, cols, active)
        if a.type in ("int", "bigint"):
            fail(active & ~a.nulls & (a.values == INT_RANGE[a.type][0]), f"[ARITHMETIC_OVERFLOW] abs of {a.type}")
        return Col(np.abs(a.values), a.nulls, a.type)  # a decimal keeps its type (object array of ints)

    def _e_Round(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a = self.ev(e.this, cols, active)
        d = e.args.get("decimals")
        scale = int(d.this) if d is not None else 0
        out = np.array([round_half_up(v, scale) for v in a.values.tolist()], dtype=np.float64)
        return Col(out.reshape(-1), a.nulls, "double")

    def _e_IsNan(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a = as_type(self.ev(e.this, cols, active), "double")
        return Col(np.isnan(a.values) & ~a.nulls, np.zeros(len(active), dtype=bool), "boolean")

    def _e_Nanvl(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a = as_type(self.ev(e.this, cols, active), "double")
        nan = np.isnan(a.values) & ~a.nulls
        b = as_type(self.ev(e.expression, cols, active & nan), "double")
        return Col(np.where(nan, b.values, a.values), np.where(nan, b.nulls, a.nulls), "double")

    def _extreme(self, e: Any, cols: dict[str, Col], active: np.ndarray, greatest: bool) -> Col:
        t = self.type_of(e)
        got = [as_type(self.ev(x, cols, active), t) for x in [e.this] + list(e.expressions)]
        values, nulls = got[0].values.copy(), got[0].nulls.copy()
        for g in got[1:]:  # nulls are skipped; NaN counts as the largest value
            better = compare(g.values, values, g.nulls | nulls, t, ">" if greatest else "<")
            take = ~g.nulls & (nulls | better)
            values[take], nulls[take] = g.values[take], False
        return Col(values, nulls, t)

    def _e_Greatest(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._extreme(e, cols, active, True)

    def _e_Least(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._extreme(e, cols, active, False)

    def _string_map(self, e: Any, cols: dict[str, Col], active: np.ndarray, fn: Callable[..., Any],
                    t: str = "string") -> Col:
        a = self.ev(e.this, cols, active)
        out = np.array([None if nl else fn(v) for v, nl in zip(a.values.tolist(), a.nulls.tolist())], dtype=object)
        if t == "int":
            out = np.array([0 if v is None else v for v in out.tolist()], dtype=np.int64)
        return Col(out.reshape(-1), a.nulls, t)

    def _e_Upper(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._string_map(e, cols, active, str.upper)

    def _e_Lower(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._string_map(e, cols, active, str.lower)

    def _e_Trim(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._string_map(e, cols, active, lambda s: s.strip(" "))  # Spark trims spaces only

    def _e_Length(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._string_map(e, cols, active, len, "int")  # characters (code points), as Spark counts

    def _e_Concat(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        parts = [self.ev(x, cols, active) for x in e.expressions]
        n = len(active)
        nulls = np.zeros(n, dtype=bool)
        for p in parts:
            nulls = nulls | p.nulls
        out = np.empty(n, dtype=object)
        for i in range(n):
            out[i] = None if nulls[i] else "".join(p.values[i] for p in parts)
        return Col(out, nulls, "string")


def compare(a: np.ndarray, b: np.ndarray, nulls: np.ndarray, t: str, op: str) -> np.ndarray:
    """Spark's comparison on non-null slots (NaN = NaN, NaN above every number); False where null."""
    if t == "string" or t == "null":
        a = np.where(nulls, "", a).astype(object)
        b = np.where(nulls, "", b).astype(object)
        a_nan = b_nan = np.zeros(len(a), dtype=bool)
    elif t == "double":
        a_nan, b_nan = np.isnan(a), np.isnan(b)
        a, b = np.where(a_nan, 0.0, a), np.where(b_nan, 0.0, b)
    else:  # integers, and decimals as unscaled ints at one scale: exact
        a_nan = b_nan = np.zeros(len(a), dtype=bool)
    eq = (a_nan & b_nan) | (~a_nan & ~b_nan & (a == b))
    lt = (~a_nan & b_nan) | (~a_nan & ~b_nan & (a < b))
    out = {"=": eq, "<=>": eq, "<>": ~eq, "<": lt, "<=": lt | eq, ">": ~(lt | eq), ">=": ~lt}[op]
    mask: np.ndarray = np.asarray(out, dtype=bool) & ~nulls
    return mask


def cast_values(a: Col, t: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, failed) of CAST(a AS t) under ANSI rules."""
    n = len(a.values)
    ok = np.zeros(n, dtype=bool)
    src = a.type
    if t == src or src == "null":
        return as_type(a, t).values, ok
    if is_decimal(src):
        return _cast_decimal(a, t)
    if t == "string":
        if src == "double":
            return np.array([java_double_str(v) for v in a.values.tolist()], dtype=object).reshape(-1), ok
        if src == "boolean":
            return np.where(a.values.astype(bool), "true", "false").astype(object), ok
        return np.array([str(int(v)) for v in a.values.tolist()], dtype=object).reshape(-1), ok
    if t == "boolean":
        return a.values != 0, ok
    if t == "double":
        return a.values.astype(np.float64), ok
    lo, hi = INT_RANGE[t]
    if src == "double":
        x = a.values
        bad = ~np.isfinite(x) | (np.trunc(np.nan_to_num(x)) < lo) | (np.trunc(np.nan_to_num(x)) > hi)
        return np.where(bad, 0, np.trunc(np.where(bad, 0.0, x))).astype(np.int64), bad
    x = a.values.astype(np.int64)
    bad = (x < lo) | (x > hi)
    return np.where(bad, 0, x), bad


def round_half_up(v: float, scale: int) -> float:
    """Spark's round(double): BigDecimal(Double.toString(v)).setScale(scale, HALF_UP)."""
    if not math.isfinite(v):
        return v
    q = decimal.Decimal(1).scaleb(-scale)
    return float(decimal.Decimal(repr(v)).quantize(q, rounding=decimal.ROUND_HALF_UP))


def _cast_decimal(a: Col, t: str) -> tuple[np.ndarray, np.ndarray]:
    """CAST of a decimal to double, boolean, int or bigint (truncated toward zero; overflow fails under ANSI)."""
    n = len(a.values)
    ok = np.zeros(n, dtype=bool)
    _, scale = precision_scale(a.type)
    if t == "double":
        return to_doubles(a.values, scale), ok
    if t == "boolean":
        return np.array([u != 0 for u in a.values.tolist()], dtype=bool).reshape(-1), ok
    lo, hi = INT_RANGE[t]
    whole = [abs(int(u)) // 10**scale * (1 if u >= 0 else -1) for u in a.values.tolist()]
    bad = np.array([not lo <= w <= hi for w in whole], dtype=bool).reshape(-1)
    return np.array([0 if b else w for w, b in zip(whole, bad.tolist())], dtype=np.int64).reshape(-1), bad
