"""RFormulaModel (with the helper stages its saved pipeline holds) and TargetEncoderModel.

A saved RFormulaModel keeps ``data/`` (resolved formula: label, terms, hasIntercept) and ``pipelineModel/``, a
PipelineModel of StringIndexer, OneHotEncoder, VectorAssembler, VectorAttributeRewriter and ColumnPruner stages
(several share one uid, so its stage folders are read by their index prefix). The scorer loads those inner
stages and runs them in order; the formula's label is not a scoring input: a StringIndexer over the label
column (string labels, ``forceIndexLabel``) is left out, as Spark skips it when the label column is absent, and
no label column is produced. ``Interaction`` terms (``a:b``) are refused at load.
"""
from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np

from sparkship.serving import reader
from sparkship.serving.base import Schema, Stage, StageBuilder, register_stage
from sparkship.serving.batch import Batch
from sparkship.serving.numeric import EMPTY
from sparkship.serving.reader import StageMetadata, read_metadata, to_double
from sparkship.serving.signature import InvalidRecordError
from sparkship.serving.stages import StringIndexerModel


@register_stage
class ColumnPruner(Stage):
    """Drops RFormula's intermediate columns (from the schema: a later stage reading them is refused)."""

    spark_class = "org.apache.spark.ml.feature.ColumnPruner"

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.prune = list(reader.read_data(meta.path)[0]["columnsToPrune"])

    def plan(self, schema: Schema) -> None:
        for c in self.prune:
            schema.pop(c, None)

    def row(self, r: dict[str, Any]) -> bool:
        return True

    def batch(self, b: Batch) -> np.ndarray:
        return EMPTY


@register_stage
class VectorAttributeRewriter(Stage):
    """Renames ML attributes in a vector column's metadata: no change to the values."""

    spark_class = "org.apache.spark.ml.feature.VectorAttributeRewriter"

    def plan(self, schema: Schema) -> None:
        return None

    def row(self, r: dict[str, Any]) -> bool:
        return True

    def batch(self, b: Batch) -> np.ndarray:
        return EMPTY


def _inner_stage_dirs(pipeline_dir: str) -> list[str]:
    """Stage folders of RFormula's inner PipelineModel in order (``<index>_<uid>``; uids repeat there)."""
    found = [d for d in glob.glob(os.path.join(pipeline_dir, "stages", "*")) if os.path.isdir(d)]
    return sorted(found, key=lambda d: int(os.path.basename(d).split("_", 1)[0]))


@register_stage
class RFormulaModel(Stage):
    __doc__ = __doc__

    spark_class = "org.apache.spark.ml.feature.RFormulaModel"
    known_params = frozenset({"formula", "featuresCol", "labelCol", "handleInvalid", "forceIndexLabel",
                              "stringIndexerOrderType"})

    def __init__(self, meta: StageMetadata, build: StageBuilder) -> None:
        super().__init__(meta)
        formula = reader.read_data(meta.path)[0]
        self.label = formula.get("label")
        inner = os.path.join(meta.path, "pipelineModel")
        stages = [build(read_metadata(d)) for d in _inner_stage_dirs(inner)]
        # The label's StringIndexer: Spark skips it when the label column is absent, as it is when scoring.
        self.stages = [st for st in stages
                       if not (isinstance(st, StringIndexerModel) and st.input_cols == [self.label])]
        produced: set[str] = set()
        self.input_cols = []
        for st in self.stages:
            self.input_cols += [c for c in st.input_cols if c not in produced and c not in self.input_cols]
            produced.update(st.output_cols)
        self.output_cols = [self.p("featuresCol", "features")]

    @classmethod
    def load(cls, meta: StageMetadata, build: StageBuilder) -> Stage:
        return cls(meta, build)

    def input_type(self, col: str) -> str:
        for st in self.stages:
            if col in st.input_cols:
                return st.input_type(col)
        return self.preferred_input_type

    def plan(self, schema: Schema) -> None:
        for st in self.stages:
            st.plan(schema)

    def row(self, r: dict[str, Any]) -> bool:
        return all(st.row(r) for st in self.stages)

    def batch(self, b: Batch) -> np.ndarray:
        dropped = [d for d in (st.batch(b) for st in self.stages) if len(d)]
        return np.sort(np.concatenate(dropped)) if dropped else EMPTY


# Spark's TargetEncoder keys: the unseen category (global statistics) and the null category.
UNSEEN_CATEGORY = float(2**31 - 1)
NULL_CATEGORY = -1.0


@register_stage
class TargetEncoderModel(Stage):
    """Category index -> blended target statistic (Spark 4.0): ``weight * category stat + (1 - weight) * global
    stat`` with ``weight = count / (count + smoothing)``; for ``binary`` targets a stat is the share of
    positives, for ``continuous`` the mean. A null input takes the null category's encoding when fitting saw
    nulls; an unseen, NaN or non-index value (and a null otherwise) takes the global encoding with
    ``handleInvalid='keep'`` and fails with ``'error'``."""

    spark_class = "org.apache.spark.ml.feature.TargetEncoderModel"
    known_params = frozenset({"inputCol", "outputCol", "inputCols", "outputCols", "labelCol", "targetType",
                              "handleInvalid", "smoothing"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = self._in_out()
        self.keep = self.p("handleInvalid", "error") == "keep"
        if self.p("handleInvalid", "error") not in ("keep", "error"):
            raise self.refuse(f"handleInvalid={self.p('handleInvalid')!r}")
        target = self.p("targetType", "binary")
        if target not in ("binary", "continuous"):
            raise self.refuse(f"targetType={target!r}")
        smoothing = to_double(self.p("smoothing", 0.0))
        rows = sorted(reader.read_data(meta.path), key=lambda r: r["index"])
        if len(rows) != len(self.input_cols):
            raise self.refuse(f"{len(rows)} saved encodings for {len(self.input_cols)} input columns")
        self.encodings = [self._encodings(r, target, smoothing) for r in rows]

    def _encodings(self, row: dict[str, Any], target: str, smoothing: float) -> dict[float, float]:
        stats = {float(c): (float(n), float(s)) for c, n, s in zip(row["categories"], row["counts"], row["stats"])}
        if UNSEEN_CATEGORY not in stats:
            raise self.refuse("saved statistics without the global (unseen) category")
        g_count, g_stat = stats[UNSEEN_CATEGORY]
        out = {}
        for cat, (count, stat) in stats.items():
            weight = count / (count + smoothing)
            if target == "binary":
                out[cat] = weight * (stat / count) + (1 - weight) * (g_stat / g_count)
            else:
                out[cat] = weight * stat + (1 - weight) * g_stat
        return out

    def plan(self, schema: Schema) -> None:
        self.types = [self._need(schema, c, ("numeric",))[0] for c in self.input_cols]
        for o in self.output_cols:
            schema[o] = ("double", None)

    def _encode(self, c: str, enc: dict[float, float], v: Any) -> float:
        if v is None:
            if NULL_CATEGORY in enc:
                return enc[NULL_CATEGORY]
        else:
            x = float(v)
            if x != UNSEEN_CATEGORY and x != NULL_CATEGORY and x in enc:
                return enc[x]
        if self.keep:
            return enc[UNSEEN_CATEGORY]
        raise InvalidRecordError(c, f"TargetEncoder got unseen value {v!r} (handleInvalid='error')")

    def row(self, r: dict[str, Any]) -> bool:
        for c, o, enc in zip(self.input_cols, self.output_cols, self.encodings):
            r[o] = self._encode(c, enc, r[c])
        return True

    def batch(self, b: Batch) -> np.ndarray:
        for c, o, enc in zip(self.input_cols, self.output_cols, self.encodings):
            x = b.cols[c].astype(np.float64)
            nm = b.null_mask(c)
            nulls = np.zeros(b.n, dtype=bool) if nm is None else nm
            keys = np.array([k for k in enc if k not in (UNSEEN_CATEGORY, NULL_CATEGORY)], dtype=np.float64)
            vals = np.array([enc[k] for k in keys.tolist()], dtype=np.float64)
            order = np.argsort(keys)
            keys, vals = keys[order], vals[order]
            pos = np.clip(np.searchsorted(keys, x), 0, max(len(keys) - 1, 0))
            hit = (len(keys) > 0) & ~nulls & (keys[pos] == x) if len(keys) else np.zeros(b.n, dtype=bool)
            out = np.where(hit, vals[pos] if len(vals) else 0.0, enc[UNSEEN_CATEGORY])
            missing = ~hit & ~nulls
            if nm is not None and NULL_CATEGORY in enc:
                out[nulls] = enc[NULL_CATEGORY]
            else:
                missing |= nulls
            if missing.any() and not self.keep:
                b.fail(missing, c, "TargetEncoder got unseen value {value} (handleInvalid='error')")
            b.set(o, out, "double")
        return EMPTY
