"""SQLTransformer for a documented subset of Spark SQL, parsed with sqlglot and evaluated with numpy.

Supported statement: ``SELECT <items> FROM __THIS__ [WHERE <predicate>]`` where an item is ``*``, a column, or
``<expression> AS <name>``, over ``int``, ``bigint``, ``double``, ``boolean`` and ``string`` columns, with Spark
4.0's default semantics (ANSI mode on: where Spark fails the job, the row fails with :class:`InvalidRecordError`).
Literals such as ``1.0`` are decimals, as in Spark; a decimal output column reaches later stages as a double
(what VectorAssembler and the numeric stages read of it). Anything else is refused when the model is loaded,
naming the construct. Types: :mod:`~sparkship.serving.sql_types`; evaluation: :mod:`~sparkship.serving.sql_eval`;
the supported expressions and their semantics: docs/DESIGN.md.

    >>> t = SQLTransformer.from_statement("SELECT *, x / 2 AS half FROM __THIS__ WHERE x IS NOT NULL")
    >>> t.plan({"x": ("bigint", None)})
    >>> r = {"x": 3}; t.row(r), r["half"]
    (True, 1.5)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sparkship.serving.base import Schema, Stage, UnsupportedModelError, register_stage
from sparkship.serving.batch import Batch
from sparkship.serving.numeric import EMPTY
from sparkship.serving.reader import StageMetadata
from sparkship.serving.signature import InvalidRecordError
from sparkship.serving.sql_decimal import is_decimal
from sparkship.serving.sql_eval import Col, Evaluator, SqlError, as_type
from sparkship.serving.sql_types import COLUMN_TYPES, exp, name_of, sqlglot

_ALLOWED_SELECT_ARGS = {"expressions", "from", "from_", "where", "kind", "hint", "operation_modifiers", "exclude"}


def parse_statement(statement: str) -> Any:
    """The parsed SELECT, or :class:`UnsupportedModelError` naming the first construct outside the subset."""
    if sqlglot is None:
        raise UnsupportedModelError("a SQLTransformer needs the sqlglot package, which is not installed here: "
                                    "pip install sqlglot")
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
            raise UnsupportedModelError(f"SQL aggregate {name_of(node)} is not supported")
        if isinstance(node, (exp.Subquery, exp.Exists)) or (isinstance(node, exp.Select) and node is not tree):
            raise UnsupportedModelError("SQL subqueries are not supported")
        if isinstance(node, exp.Join):
            raise UnsupportedModelError("SQL JOIN is not supported")
    return tree


@register_stage
class SQLTransformer(Stage):
    __doc__ = __doc__

    spark_class = "org.apache.spark.ml.feature.SQLTransformer"
    known_params = frozenset({"statement"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.statement = str(self.p("statement") or "")
        self.tree = parse_statement(self.statement)
        self.input_cols = sorted({c.name for c in self.tree.find_all(exp.Column)})
        # The aliased columns are known from the statement alone (a derived signature must not ask for them as
        # inputs); plan() settles the full list and the types.
        self.output_cols = [e.alias for e in self.tree.expressions if getattr(e, "alias", "") and
                            type(e).__name__ == "Alias"]

    @classmethod
    def from_statement(cls, statement: str) -> SQLTransformer:
        meta = StageMetadata(path="", class_name=cls.spark_class, uid="SQLTransformer", spark_version="",
                             params={"statement": statement}, set_params=frozenset({"statement"}))
        return cls(meta)

    def input_type(self, col: str) -> str:
        return "double"

    def _refuse(self, exc: UnsupportedModelError) -> UnsupportedModelError:
        return UnsupportedModelError(f"stage {self.uid} (SQLTransformer) {self.statement!r}: {exc}")

    def plan(self, schema: Schema) -> None:
        self.ev = Evaluator({k: v[0] for k, v in schema.items()})
        items: list[tuple[str, Any, str]] = []
        try:
            for item in self.tree.expressions:
                if isinstance(item, exp.Star):
                    items += [(c, exp.column(c), COLUMN_TYPES.get(t, t)) for c, (t, _) in schema.items()]
                elif isinstance(item, exp.Column):
                    items.append((item.name, item, self.ev.type_of(item)))
                elif isinstance(item, exp.Alias):
                    t = self.ev.type_of(item.this)
                    if t == "null":
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
                       else ("double" if is_decimal(t) else t, None)) for name, e, t in items}
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
            c = as_type(c, "double") if is_decimal(c.type) else c
            r[name] = None if c.nulls[0] else _py(c.values[0], c.type)
        return True

    def batch(self, b: Batch) -> np.ndarray:
        cols = {}
        for c in self.input_cols:
            if c in self.ev.types:
                nm = b.null_mask(c)
                t = COLUMN_TYPES.get(self.ev.types[c], self.ev.types[c])
                cols[c] = Col(b.cols[c], np.zeros(b.n, dtype=bool) if nm is None else nm, t)
        try:
            out, keep = self._evaluate(cols, b.n)
        except SqlError as exc:
            raise InvalidRecordError(exc.column, str(exc), int(b.rows[exc.row])) from None
        for name, col in out.items():
            col = as_type(col, "double") if is_decimal(col.type) else col
            b.set(name, col.values, col.type, col.nulls)
        return b.filter(keep) if not keep.all() else EMPTY


def _col_from_value(v: Any, spark_type: str) -> Col:
    t = COLUMN_TYPES.get(spark_type, spark_type)
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
