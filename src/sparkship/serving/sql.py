"""SQLTransformer for a documented subset of Spark SQL, parsed with sqlglot and evaluated with numpy.

Supported statement: ``SELECT <items> FROM __THIS__ [WHERE <predicate>]`` where an item is ``*``, a column, or
``<expression> AS <name>``, over ``int``, ``bigint``, ``double``, ``boolean`` and ``string`` columns, with Spark
4.0's default semantics (ANSI mode on: where Spark fails the job, the row fails with :class:`InvalidRecordError`).
Anything else is refused when the model is loaded, naming the construct. The supported expressions and their
semantics: docs/DESIGN.md.

    >>> t = SQLTransformer.from_statement("SELECT *, x / 2 AS half FROM __THIS__ WHERE x IS NOT NULL")
    >>> t.plan({"x": ("bigint", None)})
    >>> r = {"x": 3}; t.row(r), r["half"]
    (True, 1.5)
"""
from __future__ import annotations

import decimal
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from sparkship.serving.batch import Batch
from sparkship.serving.reader import StageMetadata
from sparkship.serving.signature import InvalidRecordError, java_double_str
from sparkship.serving.stages import Schema, Stage, UnsupportedModelError

_EMPTY = np.empty(0, dtype=np.int64)
NUMERIC = ("int", "bigint", "double")
_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}
_COLUMN_TYPES = {"int": "int", "integer": "int", "bigint": "bigint", "long": "bigint", "double": "double",
                 "boolean": "boolean", "string": "string"}
_CAST_TYPES = {"double": "double", "int": "int", "bigint": "bigint", "string": "string", "boolean": "boolean"}


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


def _null_col(n: int, t: str = "null") -> Col:
    return Col(np.zeros(n, dtype=np.float64), np.ones(n, dtype=bool), t)


def _fail(mask: np.ndarray, message: str) -> None:
    if mask.any():
        raise SqlError(message, int(np.flatnonzero(mask)[0]))


def _widen(a: str, b: str, what: str) -> str:
    """The common type of two branches/operands (Spark's implicit widening, decimals and mixes refused)."""
    if a == "null":
        return b
    if b == "null" or a == b:
        return a
    pair = {a, b}
    if pair <= {"int", "bigint"}:
        return "bigint"
    if pair <= {"int", "bigint", "double"} or pair == {"decimal", "double"}:
        return "double"
    raise UnsupportedModelError(f"{what} mixes {a} and {b} (only numeric widening is supported)")


def _as(c: Col, t: str) -> Col:
    """Widen a column to ``t`` (int -> bigint -> double; a decimal literal -> double)."""
    if c.type == t or t in ("null",):
        return c
    if c.type == "null":
        n = len(c.values)
        fill = (np.empty(n, dtype=object) if t == "string" else np.zeros(n, dtype=bool) if t == "boolean"
                else np.zeros(n, dtype=np.int64) if t in ("int", "bigint") else np.full(n, np.nan))
        return Col(fill, c.nulls, t)
    if t == "double":
        return Col(c.values.astype(np.float64), c.nulls, t)
    if t == "bigint" and c.type in ("int", "null"):
        return Col(c.values.astype(np.int64), c.nulls, t)
    raise UnsupportedModelError(f"cannot use a {c.type} as {t}")


class Evaluator:
    """Type-checks a sqlglot expression against a schema (at load) and evaluates it over columns."""

    def __init__(self, types: dict[str, str]) -> None:
        self.types = types

    # -- typing (load time) -------------------------------------------------------------------------
    def type_of(self, e: Any) -> str:
        m = getattr(self, "_t_" + type(e).__name__, None)
        if m is None:
            raise UnsupportedModelError(f"SQL construct {_name(e)} is not supported")
        return m(e)

    def _t_Paren(self, e: Any) -> str:
        return self.type_of(e.this)

    def _t_Column(self, e: Any) -> str:
        if e.table:
            raise UnsupportedModelError(f"qualified column {e.sql('spark')} is not supported")
        name = e.name
        if name not in self.types:
            raise UnsupportedModelError(f"SQL reads column '{name}', which no input or earlier stage provides")
        t = self.types[name]
        if t not in _COLUMN_TYPES:
            raise UnsupportedModelError(f"SQL over column '{name}' of type {t} is not supported")
        return _COLUMN_TYPES[t]

    def _t_Literal(self, e: Any) -> str:
        if e.is_string:
            return "string"
        text = e.this
        if any(ch in text for ch in "eE"):
            return "double"
        if "." in text:
            return "decimal"
        return "int" if -(2**31) <= int(text) < 2**31 else "bigint"

    def _t_Null(self, e: Any) -> str:
        return "null"

    def _t_Boolean(self, e: Any) -> str:
        return "boolean"

    def _arith(self, e: Any, op: str) -> str:
        a, b = self.type_of(e.this), self.type_of(e.expression)
        for t in (a, b):
            if t not in NUMERIC + ("decimal", "null"):
                raise UnsupportedModelError(f"arithmetic '{op}' on a {t}")
        if op == "/":
            if "decimal" in (a, b) and "double" not in (a, b):
                raise UnsupportedModelError("decimal arithmetic (use a double literal such as 2.5D) is not supported")
            return "double"
        if op == "div":
            if not {a, b} <= {"int", "bigint", "null"}:
                raise UnsupportedModelError("'div' on non-integral operands is not supported")
            return "bigint"
        t = _widen(a, b, f"'{op}'")
        if t == "decimal":
            raise UnsupportedModelError("decimal arithmetic (use a double literal such as 2.5D) is not supported")
        return "int" if t == "null" else t

    def _t_Add(self, e: Any) -> str:
        return self._arith(e, "+")

    def _t_Sub(self, e: Any) -> str:
        return self._arith(e, "-")

    def _t_Mul(self, e: Any) -> str:
        return self._arith(e, "*")

    def _t_Div(self, e: Any) -> str:
        return self._arith(e, "/")

    def _t_Mod(self, e: Any) -> str:
        return self._arith(e, "%")

    def _t_IntDiv(self, e: Any) -> str:
        return self._arith(e, "div")

    def _t_Neg(self, e: Any) -> str:
        t = self.type_of(e.this)
        if t not in NUMERIC:
            raise UnsupportedModelError(f"unary minus on a {t}")
        return t

    def _compare_types(self, e: Any) -> str:
        _widen(self.type_of(e.this), self.type_of(e.expression), f"comparison {e.sql('spark')}")
        return "boolean"

    _t_EQ = _t_NEQ = _t_GT = _t_GTE = _t_LT = _t_LTE = _t_NullSafeEQ = _compare_types

    def _bool_args(self, *args: Any) -> str:
        for a in args:
            t = self.type_of(a)
            if t not in ("boolean", "null"):
                raise UnsupportedModelError(f"a {t} where a boolean is needed")
        return "boolean"

    def _t_And(self, e: Any) -> str:
        return self._bool_args(e.this, e.expression)

    _t_Or = _t_And

    def _t_Not(self, e: Any) -> str:
        return self._bool_args(e.this)

    def _t_Is(self, e: Any) -> str:
        from sqlglot import exp

        if not isinstance(e.expression, exp.Null):
            raise UnsupportedModelError(f"SQL construct {e.sql('spark')} is not supported")
        self.type_of(e.this)
        return "boolean"

    def _t_In(self, e: Any) -> str:
        from sqlglot import exp

        if e.args.get("query") or not all(isinstance(x, (exp.Literal, exp.Null, exp.Neg)) for x in e.expressions):
            raise UnsupportedModelError("IN over anything but a list of literals (subquery?) is not supported")
        t = self.type_of(e.this)
        for x in e.expressions:
            t = _widen(t, self.type_of(x), "IN")
        return "boolean"

    def _t_Between(self, e: Any) -> str:
        t = self.type_of(e.this)
        for x in (e.args["low"], e.args["high"]):
            _widen(t, self.type_of(x), "BETWEEN")
        return "boolean"

    def _branches(self, values: list[Any], what: str) -> str:
        t = "null"
        for v in values:
            t = _widen(t, self.type_of(v), what)
        if t == "decimal":
            raise UnsupportedModelError(f"{what} yielding a decimal is not supported")
        return t

    def _t_Case(self, e: Any) -> str:
        if e.this is not None:
            raise UnsupportedModelError("CASE <expr> WHEN (simple CASE) is not supported; use CASE WHEN <cond>")
        for w in e.args["ifs"]:
            self._bool_args(w.this)
        default = [e.args["default"]] if e.args.get("default") else []
        return self._branches([w.args["true"] for w in e.args["ifs"]] + default, "CASE")

    def _t_If(self, e: Any) -> str:
        self._bool_args(e.this)
        return self._branches([e.args["true"]] + ([e.args["false"]] if e.args.get("false") else []), "IF")

    def _t_Coalesce(self, e: Any) -> str:
        return self._branches([e.this] + list(e.expressions), "COALESCE")

    def _t_Nullif(self, e: Any) -> str:
        _widen(self.type_of(e.this), self.type_of(e.expression), "NULLIF")
        return self.type_of(e.this)

    def _t_TryCast(self, e: Any) -> str:
        target = e.to.sql("spark").lower()
        if target not in _CAST_TYPES:
            raise UnsupportedModelError(f"CAST to {target} is not supported")
        src = self.type_of(e.this)
        if src == "string" and target != "string":
            raise UnsupportedModelError(f"CAST from string to {target} is not supported")
        return _CAST_TYPES[target]

    _t_Cast = _t_TryCast

    def _numeric_fn(self, e: Any, *args: Any) -> str:
        for a in args:
            t = self.type_of(a)
            if t not in NUMERIC + ("decimal", "null"):
                raise UnsupportedModelError(f"{_name(e)} of a {t}")
        return "double"

    def _t_Sqrt(self, e: Any) -> str:
        return self._numeric_fn(e, e.this)

    _t_Exp = _t_Ln = _t_Sqrt

    def _t_Log(self, e: Any) -> str:
        return self._numeric_fn(e, e.this, *([e.expression] if e.expression else []))

    def _t_Pow(self, e: Any) -> str:
        return self._numeric_fn(e, e.this, e.expression)

    def _t_Abs(self, e: Any) -> str:
        t = self.type_of(e.this)
        if t not in NUMERIC:
            raise UnsupportedModelError(f"abs of a {t}")
        return t

    def _t_Round(self, e: Any) -> str:
        from sqlglot import exp

        if self.type_of(e.this) != "double":
            raise UnsupportedModelError("round of a non-double (Spark keeps its integral or decimal type)")
        d = e.args.get("decimals")
        if d is not None and not (isinstance(d, exp.Literal) and not d.is_string):
            raise UnsupportedModelError("round with a non-literal scale")
        return "double"

    def _t_IsNan(self, e: Any) -> str:
        self._numeric_fn(e, e.this)
        return "boolean"

    def _t_Nanvl(self, e: Any) -> str:
        return self._numeric_fn(e, e.this, e.expression)

    def _t_Greatest(self, e: Any) -> str:
        t = self._branches([e.this] + list(e.expressions), _name(e))
        if t not in NUMERIC:
            raise UnsupportedModelError(f"{_name(e)} of {t} values")
        return t

    _t_Least = _t_Greatest

    def _string_fn(self, e: Any, *args: Any) -> str:
        for a in args:
            if self.type_of(a) not in ("string", "null"):
                raise UnsupportedModelError(f"{_name(e)} of a non-string")
        return "string"

    def _t_Upper(self, e: Any) -> str:
        return self._string_fn(e, e.this)

    def _t_Lower(self, e: Any) -> str:
        return self._string_fn(e, e.this)

    def _t_Trim(self, e: Any) -> str:
        if e.args.get("expression") is not None or e.args.get("position"):
            raise UnsupportedModelError("TRIM with characters or a position is not supported")
        return self._string_fn(e, e.this)

    def _t_Length(self, e: Any) -> str:
        self._string_fn(e, e.this)
        return "int"

    def _t_Concat(self, e: Any) -> str:
        return self._string_fn(e, *e.expressions)

    # -- evaluation (score time) ----------------------------------------------------------------------
    def ev(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return getattr(self, "_e_" + type(e).__name__)(e, cols, active)

    def _e_Paren(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self.ev(e.this, cols, active)

    def _e_Column(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return cols[e.name]

    def _e_Literal(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        n, t = len(active), self.type_of(e)
        if t == "string":
            v: np.ndarray = np.full(n, e.this, dtype=object)
        elif t in ("int", "bigint"):
            v = np.full(n, int(e.this), dtype=np.int64)
        else:
            v = np.full(n, float(e.this), dtype=np.float64)
        return Col(v, np.zeros(n, dtype=bool), t)

    def _e_Null(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return _null_col(len(active))

    def _e_Boolean(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return Col(np.full(len(active), bool(e.this)), np.zeros(len(active), dtype=bool), "boolean")

    def _operands(self, e: Any, cols: dict[str, Col], active: np.ndarray, t: str) -> tuple[Col, Col, np.ndarray]:
        a, b = self.ev(e.this, cols, active), self.ev(e.expression, cols, active)
        nulls = a.nulls | b.nulls
        return _as(a, t), _as(b, t), nulls

    def _arith_ev(self, e: Any, cols: dict[str, Col], active: np.ndarray, op: Callable, name: str) -> Col:
        t = self.type_of(e)
        a, b, nulls = self._operands(e, cols, active, t)
        live = active & ~nulls
        if t == "double":
            with np.errstate(all="ignore"):
                return Col(op(a.values, b.values), nulls, t)
        lo, hi = _INT_RANGE[t]
        exact = [op(int(x), int(y)) for x, y in zip(a.values[live].tolist(), b.values[live].tolist())]
        out = np.zeros(len(active), dtype=np.int64)
        over = np.zeros(len(active), dtype=bool)
        over[np.flatnonzero(live)] = [not lo <= v <= hi for v in exact]
        _fail(over, f"[ARITHMETIC_OVERFLOW] {t} overflow in '{name}'")
        out[live] = exact
        return Col(out, nulls, t)

    def _e_Add(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._arith_ev(e, cols, active, lambda x, y: x + y, "+")

    def _e_Sub(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._arith_ev(e, cols, active, lambda x, y: x - y, "-")

    def _e_Mul(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._arith_ev(e, cols, active, lambda x, y: x * y, "*")

    def _divisor_check(self, b: Col, nulls: np.ndarray, active: np.ndarray) -> None:
        _fail(active & ~nulls & (b.values == 0), "[DIVIDE_BY_ZERO] Division by zero")

    def _e_Div(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
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
            _fail(active & ~a.nulls & (a.values == _INT_RANGE[a.type][0]), f"[ARITHMETIC_OVERFLOW] {a.type} overflow")
        return Col(-a.values, a.nulls, a.type)

    def _cmp(self, e: Any, cols: dict[str, Col], active: np.ndarray, op: str) -> Col:
        a0, b0 = self.ev(e.this, cols, active), self.ev(e.expression, cols, active)
        t = _widen(a0.type, b0.type, "comparison")
        t = "double" if t == "decimal" else t
        a, b = _as(a0, t), _as(b0, t)
        nulls = a.nulls | b.nulls
        out = _compare(a.values, b.values, a.nulls | b.nulls, t, op)
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
            t = _widen(a0.type, b0.type, "IN")
            t = "double" if t == "decimal" else t
            a, b = _as(a0, t), _as(b0, t)
            found |= _compare(a.values, b.values, a.nulls | b.nulls, t, "=") & ~b.nulls
            some_null |= b.nulls
        return Col(found, a0.nulls | (~found & some_null), "boolean")

    def _e_Between(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        from sqlglot import exp

        both = exp.And(this=exp.GTE(this=e.this, expression=e.args["low"]),
                       expression=exp.LTE(this=e.this, expression=e.args["high"]))
        return self.ev(both, cols, active)

    def _choose(self, conds: list[tuple[Any, Any]], default: Any, t: str, cols: dict[str, Col],
                active: np.ndarray) -> Col:
        n = len(active)
        out = _as(_null_col(n), t)
        values, nulls = out.values.copy(), out.nulls.copy()
        left = active.copy()
        for cond, value in conds:
            c = self.ev(cond, cols, left) if cond is not None else None
            hit = left & (np.ones(n, dtype=bool) if c is None else (~c.nulls & c.values.astype(bool)))
            if value is not None and hit.any():
                v = _as(self.ev(value, cols, hit), t)
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
        out = _as(_null_col(n), t)
        values, nulls = out.values.copy(), out.nulls.copy()
        left = active.copy()
        for x in [e.this] + list(e.expressions):
            if not left.any():
                break
            v = _as(self.ev(x, cols, left), t)
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
        t = _CAST_TYPES[e.to.sql("spark").lower()]
        values, bad = _cast(a, t)
        live_bad = bad & active & ~a.nulls
        if not e.args.get("safe"):
            _fail(live_bad, f"[CAST_OVERFLOW] the value cannot be cast to {t} (ANSI mode)")
        return Col(values, a.nulls | bad, t)

    _e_Cast = _e_TryCast

    def _double_args(self, e: Any, cols: dict[str, Col], active: np.ndarray,
                     *args: Any) -> tuple[list[Col], np.ndarray]:
        got = [_as(self.ev(a, cols, active), "double") for a in args]
        nulls = np.zeros(len(active), dtype=bool)
        for g in got:
            nulls = nulls | g.nulls
        return got, nulls

    def _unary_math(self, e: Any, cols: dict[str, Col], active: np.ndarray, fn: Callable) -> Col:
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
            _fail(active & ~a.nulls & (a.values == _INT_RANGE[a.type][0]), f"[ARITHMETIC_OVERFLOW] abs of {a.type}")
        return Col(np.abs(a.values), a.nulls, a.type)

    def _e_Round(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a = self.ev(e.this, cols, active)
        d = e.args.get("decimals")
        scale = int(d.this) if d is not None else 0
        out = np.array([_round_half_up(v, scale) for v in a.values.tolist()], dtype=np.float64)
        return Col(out.reshape(-1), a.nulls, "double")

    def _e_IsNan(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a = _as(self.ev(e.this, cols, active), "double")
        return Col(np.isnan(a.values) & ~a.nulls, np.zeros(len(active), dtype=bool), "boolean")

    def _e_Nanvl(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        a = _as(self.ev(e.this, cols, active), "double")
        nan = np.isnan(a.values) & ~a.nulls
        b = _as(self.ev(e.expression, cols, active & nan), "double")
        return Col(np.where(nan, b.values, a.values), np.where(nan, b.nulls, a.nulls), "double")

    def _extreme(self, e: Any, cols: dict[str, Col], active: np.ndarray, greatest: bool) -> Col:
        t = self.type_of(e)
        got = [_as(self.ev(x, cols, active), t) for x in [e.this] + list(e.expressions)]
        values, nulls = got[0].values.copy(), got[0].nulls.copy()
        for g in got[1:]:  # nulls are skipped; NaN counts as the largest value
            better = _compare(g.values, values, g.nulls | nulls, t, ">" if greatest else "<")
            take = ~g.nulls & (nulls | better)
            values[take], nulls[take] = g.values[take], False
        return Col(values, nulls, t)

    def _e_Greatest(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._extreme(e, cols, active, True)

    def _e_Least(self, e: Any, cols: dict[str, Col], active: np.ndarray) -> Col:
        return self._extreme(e, cols, active, False)

    def _string_map(self, e: Any, cols: dict[str, Col], active: np.ndarray, fn: Callable, t: str = "string") -> Col:
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


def _compare(a: np.ndarray, b: np.ndarray, nulls: np.ndarray, t: str, op: str) -> np.ndarray:
    """Spark's comparison on non-null slots (NaN = NaN, NaN above every number); False where null."""
    if t == "string" or t == "null":
        a = np.where(nulls, "", a).astype(object)
        b = np.where(nulls, "", b).astype(object)
        a_nan = b_nan = np.zeros(len(a), dtype=bool)
    elif t == "double":
        a_nan, b_nan = np.isnan(a), np.isnan(b)
        a, b = np.where(a_nan, 0.0, a), np.where(b_nan, 0.0, b)
    else:
        a_nan = b_nan = np.zeros(len(a), dtype=bool)
    eq = (a_nan & b_nan) | (~a_nan & ~b_nan & (a == b))
    lt = (~a_nan & b_nan) | (~a_nan & ~b_nan & (a < b))
    out = {"=": eq, "<=>": eq, "<>": ~eq, "<": lt, "<=": lt | eq, ">": ~(lt | eq), ">=": ~lt}[op]
    return np.asarray(out, dtype=bool) & ~nulls


def _cast(a: Col, t: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, failed) of CAST(a AS t) under ANSI rules."""
    n = len(a.values)
    ok = np.zeros(n, dtype=bool)
    src = a.type
    if t == src or src == "null":
        return _as(a, t).values, ok
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
    lo, hi = _INT_RANGE[t]
    if src == "double":
        x = a.values
        bad = ~np.isfinite(x) | (np.trunc(np.nan_to_num(x)) < lo) | (np.trunc(np.nan_to_num(x)) > hi)
        return np.where(bad, 0, np.trunc(np.where(bad, 0.0, x))).astype(np.int64), bad
    x = a.values.astype(np.int64)
    bad = (x < lo) | (x > hi)
    return np.where(bad, 0, x), bad


def _round_half_up(v: float, scale: int) -> float:
    """Spark's round(double): BigDecimal(Double.toString(v)).setScale(scale, HALF_UP)."""
    if not math.isfinite(v):
        return v
    q = decimal.Decimal(1).scaleb(-scale)
    return float(decimal.Decimal(repr(v)).quantize(q, rounding=decimal.ROUND_HALF_UP))


def _name(e: Any) -> str:
    from sqlglot import exp

    if isinstance(e, exp.Anonymous):
        return f"function {e.name.upper()}()"
    if isinstance(e, exp.Func):
        return f"function {e.sql_name()}()"
    return f"'{type(e).__name__}' ({e.sql('spark')[:60]})"


_ALLOWED_SELECT_ARGS = {"expressions", "from", "from_", "where", "kind", "hint", "operation_modifiers", "exclude"}


def parse_statement(statement: str) -> Any:
    """The parsed SELECT, or :class:`UnsupportedModelError` naming the first construct outside the subset."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(statement, read="spark")
    except sqlglot.errors.ParseError as exc:
        raise UnsupportedModelError(f"SQL statement does not parse: {str(exc).splitlines()[0]}") from None
    if not isinstance(tree, exp.Select):
        raise UnsupportedModelError(f"SQL statement {type(tree).__name__.upper()} is not supported (only SELECT)")
    for key, value in tree.args.items():
        if value and key not in _ALLOWED_SELECT_ARGS:
            raise UnsupportedModelError(f"SQL clause {key.upper()} is not supported")
    if tree.args.get("distinct"):
        raise UnsupportedModelError("SQL clause DISTINCT is not supported")
    source = tree.args.get("from_") or tree.args.get("from")
    table = source.this if source is not None else None
    if not isinstance(table, exp.Table) or table.name != "__THIS__" or table.args.get("joins"):
        raise UnsupportedModelError("SQL must read FROM __THIS__ only (no subquery or other table)")
    for node in tree.walk():
        if isinstance(node, exp.Window):
            raise UnsupportedModelError(f"SQL window function {node.sql('spark')[:60]} is not supported")
        if isinstance(node, exp.AggFunc):
            raise UnsupportedModelError(f"SQL aggregate {_name(node)} is not supported")
        if isinstance(node, (exp.Subquery, exp.Exists)) or (isinstance(node, exp.Select) and node is not tree):
            raise UnsupportedModelError("SQL subqueries are not supported")
        if isinstance(node, exp.Join):
            raise UnsupportedModelError("SQL JOIN is not supported")
    return tree


class SQLTransformer(Stage):
    __doc__ = __doc__

    spark_class = "org.apache.spark.ml.feature.SQLTransformer"
    known_params = frozenset({"statement"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.statement = str(self.p("statement") or "")
        self.tree = parse_statement(self.statement)
        self.input_cols = sorted({c.name for c in self.tree.find_all(_column_class())})
        # The aliased columns are known from the statement alone (a derived signature must not ask for them as
        # inputs); plan() settles the full list and the types.
        self.output_cols = [e.alias for e in self.tree.expressions if getattr(e, "alias", "") and
                            type(e).__name__ == "Alias"]

    @classmethod
    def from_statement(cls, statement: str) -> "SQLTransformer":
        meta = StageMetadata(path="", class_name=cls.spark_class, uid="SQLTransformer", spark_version="",
                             params={"statement": statement}, set_params=frozenset({"statement"}))
        return cls(meta)

    def input_type(self, col: str) -> str:
        return "double"

    def _refuse(self, exc: UnsupportedModelError) -> UnsupportedModelError:
        return UnsupportedModelError(f"stage {self.uid} (SQLTransformer) {self.statement!r}: {exc}")

    def plan(self, schema: Schema) -> None:
        from sqlglot import exp

        self.ev = Evaluator({k: v[0] for k, v in schema.items()})
        items: list[tuple[str, Any, str]] = []
        try:
            for item in self.tree.expressions:
                if isinstance(item, exp.Star):
                    items += [(c, exp.column(c), _COLUMN_TYPES.get(t, t)) for c, (t, _) in schema.items()]
                elif isinstance(item, exp.Column):
                    items.append((item.name, item, self.ev.type_of(item)))
                elif isinstance(item, exp.Alias):
                    t = self.ev.type_of(item.this)
                    if t in ("null", "decimal"):
                        raise UnsupportedModelError(f"an output column '{item.alias}' of type {t}")
                    items.append((item.alias, item.this, t))
                else:
                    raise UnsupportedModelError(f"an expression without an alias ({item.sql('spark')[:60]})")
            where = self.tree.args.get("where")
            self.where = where.this if where is not None else None
            if self.where is not None:
                self.ev._bool_args(self.where)
        except UnsupportedModelError as exc:
            raise self._refuse(exc) from None
        self.items = [(name, e) for name, e, _ in items if not (isinstance(e, exp.Column) and e.name == name)]
        self.item_types = {name: t for name, _, t in items}
        kept = {name: (schema[name] if name in schema and isinstance(e, exp.Column) and e.name == name
                       else (t, None)) for name, e, t in items}
        schema.clear()
        schema.update(kept)
        self.output_cols = [name for name, _ in self.items]

    def _evaluate(self, cols: dict[str, Col], n: int) -> tuple[dict[str, Col], np.ndarray]:
        active = np.ones(n, dtype=bool)
        keep = active
        if self.where is not None:
            w = self.ev.ev(self.where, cols, active)
            keep = ~w.nulls & w.values.astype(bool)
        out = {}
        for name, e in self.items:
            try:
                out[name] = self.ev.ev(e, cols, keep)
            except SqlError as exc:
                exc.column = name
                raise
        return out, keep

    def row(self, r: dict[str, Any]) -> bool:
        cols = {c: _col_from_value(r.get(c), self.ev.types[c]) for c in self.input_cols if c in self.ev.types}
        try:
            out, keep = self._evaluate(cols, 1)
        except SqlError as exc:
            raise InvalidRecordError(exc.column, str(exc)) from None
        if not keep[0]:
            return False
        for name, c in out.items():
            r[name] = None if c.nulls[0] else _py(c.values[0], c.type)
        return True

    def batch(self, b: Batch) -> np.ndarray:
        cols = {}
        for c in self.input_cols:
            if c in self.ev.types:
                nm = b.null_mask(c)
                t = _COLUMN_TYPES.get(self.ev.types[c], self.ev.types[c])
                cols[c] = Col(b.cols[c], np.zeros(b.n, dtype=bool) if nm is None else nm, t)
        try:
            out, keep = self._evaluate(cols, b.n)
        except SqlError as exc:
            raise InvalidRecordError(exc.column, str(exc), int(b.rows[exc.row])) from None
        for name, c in out.items():
            b.set(name, c.values, c.type, c.nulls)
        return b.filter(keep) if not keep.all() else _EMPTY


def _column_class() -> type:
    from sqlglot import exp

    return exp.Column


def _col_from_value(v: Any, spark_type: str) -> Col:
    t = _COLUMN_TYPES.get(spark_type, spark_type)
    null = np.array([v is None])
    if t == "double":
        return Col(np.array([math.nan if v is None else float(v)]), null, t)
    if t in ("int", "bigint"):
        return Col(np.array([0 if v is None else int(v)], dtype=np.int64), null, t)
    if t == "boolean":
        return Col(np.array([bool(v)]), null, t)
    arr = np.empty(1, dtype=object)
    arr[0] = v
    return Col(arr, null, t)


def _py(v: Any, t: str) -> Any:
    if t == "double":
        return float(v)
    if t in ("int", "bigint"):
        return int(v)
    if t == "boolean":
        return bool(v)
    return v
