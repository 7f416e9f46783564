"""What a model can score: the input's schema against its signature, and the rows it must not be given.

:func:`check_input` allows numeric widening (an int column where the signature says double) and names every
other mismatch; :func:`quarantine_rules` lists, for a fitted pipeline, the conditions under which a row would
fail the job or vanish from it (a null key, an infinite feature, a null that no Imputer fills, an unseen category
that a strict StringIndexer rejects): such rows go to the quarantine table instead.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from sparkship.errors import SchemaMismatchError

# pyspark is an optional dependency (the `local` extra; Databricks ships its own): functions import it where used.
if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel, Transformer
    from pyspark.sql import Column
    from pyspark.sql.types import StructType

# want -> the narrower input types that are cast to it
WIDENING: dict[str, frozenset[str]] = {
    "double": frozenset({"tinyint", "smallint", "int", "bigint", "float"}),
    "float": frozenset({"tinyint", "smallint", "int", "bigint"}),
    "bigint": frozenset({"tinyint", "smallint", "int"}),
    "int": frozenset({"tinyint", "smallint"}),
    "smallint": frozenset({"tinyint"}),
}
NUMERIC = frozenset({"tinyint", "smallint", "int", "bigint", "float", "double"})
FLOATING = frozenset({"float", "double"})


def check_input(schema: StructType, inputs: Sequence[dict[str, str]], keys: Sequence[str]) -> dict[str, str]:
    """Check an input schema against a model signature; return ``{column: type}`` of the columns to cast.

    Raises :class:`SchemaMismatchError` naming every missing key or feature and every incompatible type.

    >>> from pyspark.sql.types import StructType, StructField, IntegerType, StringType
    >>> s = StructType([StructField("id", StringType()), StructField("age", IntegerType())])
    >>> check_input(s, [{"name": "age", "type": "double"}], ["id"])
    {'age': 'double'}
    """
    have = {f.name: f.dataType.simpleString() for f in schema.fields}
    problems: list[str] = []
    missing_keys = [k for k in keys if k not in have]
    if missing_keys:
        problems.append(f"key columns {missing_keys} are missing")
    missing = [i["name"] for i in inputs if i["name"] not in have]
    if missing:
        problems.append(f"columns {missing} that the model needs are missing")
    casts: dict[str, str] = {}
    for i in inputs:
        name, want = i["name"], i["type"]
        if name not in have or have[name] == want:
            continue
        if have[name] in WIDENING.get(want, ()):
            casts[name] = want
        else:
            problems.append(f"column '{name}' is {have[name]}, the model expects {want}")
    if problems:
        raise SchemaMismatchError("the input does not match the model's signature: " + "; ".join(problems))
    return casts


def _stages(model: PipelineModel) -> Iterator[Transformer]:
    from pyspark.ml import PipelineModel

    for stage in model.stages:
        if isinstance(stage, PipelineModel):
            yield from _stages(stage)
        else:
            yield stage


def _input_cols(stage: Transformer) -> list[str]:
    if stage.hasParam("inputCols") and stage.isDefined("inputCols"):
        return list(stage.getOrDefault("inputCols"))
    if stage.hasParam("inputCol") and stage.isDefined("inputCol"):
        return [stage.getOrDefault("inputCol")]
    return []


def _handle_invalid(stage: Transformer) -> str:
    return stage.getOrDefault("handleInvalid") if stage.hasParam("handleInvalid") else "error"


def quarantine_rules(
    model: PipelineModel, inputs: Sequence[dict[str, str]], keys: Sequence[str]
) -> list[tuple[Column, str]]:
    """(condition, reason) pairs: a row that meets a condition is quarantined (see the module docstring).

    Conditions read the columns as the model sees them (after the signature's casts) and are never null.
    """
    from pyspark.ml.feature import ImputerModel, StringIndexerModel, VectorAssembler
    from pyspark.sql import functions as F

    stages = list(_stages(model))
    imputes_null: set[str] = set()
    imputes_nan: set[str] = set()
    for s in stages:
        if isinstance(s, ImputerModel):
            cols = _input_cols(s)
            imputes_null.update(cols)  # the Imputer always treats null as missing
            if math.isnan(s.getMissingValue()):
                imputes_nan.update(cols)
    strict_assembled = {
        c for s in stages if isinstance(s, VectorAssembler) and _handle_invalid(s) != "keep" for c in _input_cols(s)
    }
    strict_labels: dict[str, set[str]] = {}
    for s in stages:
        if isinstance(s, StringIndexerModel) and _handle_invalid(s) != "keep":
            for col, labels in zip(_input_cols(s), s.labelsArray):
                strict_labels.setdefault(col, set(labels)).intersection_update(labels)

    rules: list[tuple[Column, str]] = [(F.col(k).isNull(), f"null key '{k}'") for k in keys]
    for i in inputs:
        name, want = i["name"], i["type"]
        c = F.col(name)
        if want in FLOATING:
            rules.append((F.coalesce(F.abs(c) == float("inf"), F.lit(False)), f"infinite value in '{name}'"))
        if want in NUMERIC and name in strict_assembled:
            if name not in imputes_null:
                rules.append((c.isNull(), f"null in '{name}', which the model does not impute"))
            if want in FLOATING and name not in imputes_nan:
                rules.append((F.isnan(c), f"NaN in '{name}', which the model does not impute"))
        if name in strict_labels:
            rules.append((c.isNull(), f"null in '{name}', which the model's StringIndexer rejects"))
            labels = sorted(strict_labels[name])
            rules.append((F.coalesce(~c.isin(labels), F.lit(False)), f"unseen category in '{name}'"))
    return rules


def prediction_cols(model: PipelineModel) -> tuple[str, str]:
    last = list(_stages(model))[-1]
    prediction = last.getOrDefault("predictionCol") if last.hasParam("predictionCol") else "prediction"
    probability = last.getOrDefault("probabilityCol") if last.hasParam("probabilityCol") else "probability"
    return prediction, probability


