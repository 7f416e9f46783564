"""Types of the JVM-free SQLTransformer's expressions, as Spark 4.0 types them (checked when a model loads).

Column types are ``int``, ``bigint``, ``double``, ``boolean``, ``string``; literals with a point are decimals
(:mod:`sparkship.serving.sql_decimal`). A construct outside the supported subset raises
:class:`UnsupportedModelError` naming it.

    >>> TypeChecker({"x": "double", "n": "int"}).type_of(parse_expression("n * 2.5"))
    'decimal(13,1)'
"""
from __future__ import annotations

from typing import Any

# sqlglot is needed only by a model with a SQLTransformer; an exported MLflow pyfunc runs with numpy, pandas and
# pyarrow (sparkship.interop.mlflow_export) and imports the scorer whatever its stages.
try:
    import sqlglot as sqlglot  # re-exported (with exp) to the SQL modules
    from sqlglot import exp as exp
except ImportError:  # parse_statement says what is missing
    sqlglot = exp = None  # type: ignore[assignment]

from sparkship.serving.base import UnsupportedModelError
from sparkship.serving.sql_decimal import arithmetic_type, integer_literal_type, is_decimal, literal_type, wider_type

NUMERIC = ("int", "bigint", "double")
INT_RANGE = {"int": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}
COLUMN_TYPES = {"int": "int", "integer": "int", "bigint": "bigint", "long": "bigint", "double": "double",
                "boolean": "boolean", "string": "string"}
CAST_TYPES = {"double": "double", "int": "int", "bigint": "bigint", "string": "string", "boolean": "boolean"}


def is_numeric(t: str) -> bool:
    return t in NUMERIC or is_decimal(t)


def widen(a: str, b: str, what: str) -> str:
    """The common type of two branches/operands (Spark's implicit widening; other mixes refused)."""
    if a == "null":
        return b
    if b == "null" or a == b:
        return a
    pair = {a, b}
    if pair <= {"int", "bigint"}:
        return "bigint"
    if "double" in pair and all(is_numeric(t) for t in pair):
        return "double"
    if all(is_numeric(t) for t in pair):  # decimals with decimals or integers
        return wider_type(a, b)
    raise UnsupportedModelError(f"{what} mixes {a} and {b} (only numeric widening is supported)")


def parse_expression(text: str) -> Any:
    """A Spark SQL expression parsed by sqlglot (for the examples and tests)."""
    return sqlglot.parse_one(text, read="spark")


def name_of(e: Any) -> str:
    if isinstance(e, exp.Anonymous):
        return f"function {e.name.upper()}()"
    if isinstance(e, exp.Func):
        return f"function {e.sql_name()}()"
    return f"'{type(e).__name__}' ({e.sql('spark')[:60]})"



class TypeChecker:
    """Types a sqlglot expression against a schema (at load), as Spark 4.0 types it."""

    def __init__(self, types: dict[str, str]) -> None:
        self.types = types

    # -- typing (load time) -------------------------------------------------------------------------
    def type_of(self, e: Any) -> str:
        m = getattr(self, "_t_" + type(e).__name__, None)
        if m is None:
            raise UnsupportedModelError(f"SQL construct {name_of(e)} is not supported")
        t: str = m(e)
        return t

    def _t_Paren(self, e: Any) -> str:
        return self.type_of(e.this)

    def _t_Column(self, e: Any) -> str:
        if e.table:
            raise UnsupportedModelError(f"qualified column {e.sql('spark')} is not supported")
        name = e.name
        if name not in self.types:
            raise UnsupportedModelError(f"SQL reads column '{name}', which no input or earlier stage provides")
        t = self.types[name]
        if t not in COLUMN_TYPES:
            raise UnsupportedModelError(f"SQL over column '{name}' of type {t} is not supported")
        return COLUMN_TYPES[t]

    def _t_Literal(self, e: Any) -> str:
        if e.is_string:
            return "string"
        text = e.this
        if any(ch in text for ch in "eE"):
            return "double"
        if "." in text:
            return literal_type(text)
        return "int" if -(2**31) <= int(text) < 2**31 else "bigint"

    def _t_Null(self, e: Any) -> str:
        return "null"

    def _t_Boolean(self, e: Any) -> str:
        return "boolean"

    def _arith(self, e: Any, op: str) -> str:
        a, b = self.type_of(e.this), self.type_of(e.expression)
        for t in (a, b):
            if not (is_numeric(t) or t == "null"):
                raise UnsupportedModelError(f"arithmetic '{op}' on a {t}")
        if (is_decimal(a) or is_decimal(b)) and "double" not in (a, b):
            if op not in "+-*/":
                raise UnsupportedModelError(f"'{op}' on a decimal is not supported")
            da, db = self.decimal_operand(e.this, a, b), self.decimal_operand(e.expression, b, a)
            return arithmetic_type(op, da, db)
        if op == "/":
            return "double"
        if op == "div":
            if not {a, b} <= {"int", "bigint", "null"}:
                raise UnsupportedModelError("'div' on non-integral operands is not supported")
            return "bigint"
        t = widen(a, b, f"'{op}'")
        return "int" if t == "null" else t

    def decimal_operand(self, e: Any, t: str, other: str) -> str:
        """The decimal type Spark gives an operand of decimal arithmetic (``other``: the other side's type)."""
        if t == "null":
            return other
        literal = e.this if isinstance(e, exp.Neg) else e
        if t in ("int", "bigint") and isinstance(literal, exp.Literal) and not literal.is_string:
            return integer_literal_type(literal.this)
        return t

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
        if not is_numeric(t):
            raise UnsupportedModelError(f"unary minus on a {t}")
        return t

    def _compare_types(self, e: Any) -> str:
        widen(self.type_of(e.this), self.type_of(e.expression), f"comparison {e.sql('spark')}")
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
        if not isinstance(e.expression, exp.Null):
            raise UnsupportedModelError(f"SQL construct {e.sql('spark')} is not supported")
        self.type_of(e.this)
        return "boolean"

    def _t_In(self, e: Any) -> str:
        if e.args.get("query") or not all(isinstance(x, (exp.Literal, exp.Null, exp.Neg)) for x in e.expressions):
            raise UnsupportedModelError("IN over anything but a list of literals (subquery?) is not supported")
        t = self.type_of(e.this)
        for x in e.expressions:
            t = widen(t, self.type_of(x), "IN")
        return "boolean"

    def _t_Between(self, e: Any) -> str:
        t = self.type_of(e.this)
        for x in (e.args["low"], e.args["high"]):
            widen(t, self.type_of(x), "BETWEEN")
        return "boolean"

    def _branches(self, values: list[Any], what: str) -> str:
        t = "null"
        for v in values:
            t = widen(t, self.type_of(v), what)
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
        widen(self.type_of(e.this), self.type_of(e.expression), "NULLIF")
        return self.type_of(e.this)

    def _t_TryCast(self, e: Any) -> str:
        target = e.to.sql("spark").lower()
        if target not in CAST_TYPES:
            raise UnsupportedModelError(f"CAST to {target} is not supported")
        src = self.type_of(e.this)
        if src == "string" and target != "string":
            raise UnsupportedModelError(f"CAST from string to {target} is not supported")
        if is_decimal(src) and target == "string":
            raise UnsupportedModelError("CAST from decimal to string is not supported")
        return CAST_TYPES[target]

    _t_Cast = _t_TryCast

    def _numeric_fn(self, e: Any, *args: Any) -> str:
        for a in args:
            t = self.type_of(a)
            if not (is_numeric(t) or t == "null"):
                raise UnsupportedModelError(f"{name_of(e)} of a {t}")
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
        if not is_numeric(t):
            raise UnsupportedModelError(f"abs of a {t}")
        return t

    def _t_Round(self, e: Any) -> str:
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
        t = self._branches([e.this] + list(e.expressions), name_of(e))
        if t not in NUMERIC:
            raise UnsupportedModelError(f"{name_of(e)} of {t} values")
        return t

    _t_Least = _t_Greatest

    def _string_fn(self, e: Any, *args: Any) -> str:
        for a in args:
            if self.type_of(a) not in ("string", "null"):
                raise UnsupportedModelError(f"{name_of(e)} of a non-string")
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
