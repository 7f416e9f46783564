"""Load a saved Spark ``PipelineModel`` as a JVM-free scorer and score dicts, pandas DataFrames or Arrow tables.

    >>> from sparkship.serving import load
    >>> scorer = load("/models/churn/3")                   # doctest: +SKIP
    >>> scorer.score_one({"age": 41.0, "plan": "pro"})     # doctest: +SKIP
    {'prediction': 1.0, 'probability': [0.21, 0.79], 'rawPrediction': [-1.32, 1.32]}
    >>> result = scorer.score(pandas_df)                   # doctest: +SKIP
    >>> result.dropped                 # input positions of rows Spark would drop (skip modes)  # doctest: +SKIP
    array([2])

``path`` is a PipelineModel folder (or a single saved stage), or a sparkship artifact folder holding ``model/``
and ``manifest.json``; the manifest's ``signature.inputs`` then types the inputs, otherwise they are derived
from the stages (see :func:`derive_signature`).
"""
from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from sparkship.errors import NotFoundError
from sparkship.serving import batch as batches
from sparkship.serving.batch import Batch
from sparkship.serving.reader import StageMetadata, read_metadata
from sparkship.serving.signature import Field, InvalidRecordError, Signature, normalise_type
from sparkship.serving.catalog import build_stage
from sparkship.serving.predictors import ClassificationModel, Model
from sparkship.serving.stages import Schema, Stage, UnsupportedModelError

log = logging.getLogger(__name__)

# Spark's writer, or pyspark's when a PipelineModel was built in Python from fitted stages.
PIPELINE_CLASSES = frozenset({"org.apache.spark.ml.PipelineModel", "pyspark.ml.pipeline.PipelineModel"})


def _stage_dirs(pipeline_dir: str, meta: StageMetadata) -> list[str]:
    dirs = []
    for uid in meta.params.get("stageUids", []):
        # Spark names stage folders "<index>_<uid>", zero-padding the index when there are 10+ stages.
        found = glob.glob(os.path.join(pipeline_dir, "stages", f"*_{uid}"))
        if len(found) != 1:
            raise NotFoundError(f"{pipeline_dir}: stage {uid} has no single folder under stages/")
        dirs.append(found[0])
    return dirs


def load_stages(path: str) -> list[Stage]:
    """Every stage of the saved model at ``path``, nested PipelineModels flattened, in transform order."""
    meta = read_metadata(path)
    if meta.class_name in PIPELINE_CLASSES:
        out: list[Stage] = []
        for d in _stage_dirs(path, meta):
            out.extend(load_stages(d))
        return out
    return [build_stage(meta)]


def derive_signature(stages: Sequence[Stage]) -> Signature:
    """Inputs = columns read by a stage and produced by no earlier one, typed from what reads them.

    A saved model does not record its input schema, so types are inferred: vectors for scalers and models,
    double for numeric stages, and for StringIndexer inputs the look of the fitted labels ("1.0" and "NaN"
    mean a double column; "3" a string or an integer column - an integer one if a numeric stage reads it too).
    A manifest's ``signature.inputs`` (sparkship artifacts) replaces these guesses.
    """
    produced: set[str] = set()
    hints: dict[str, set[str]] = {}
    for st in stages:
        for c in st.input_cols:
            if c not in produced:
                hints.setdefault(c, set()).add(st.input_type(c))
        produced.update(_outputs_of(st))
    return Signature([Field(c, _merge_hints(h)) for c, h in hints.items()])


def _merge_hints(hints: set[str]) -> str:
    if "vector" in hints:
        return "vector"
    if "integral" in hints:
        return "bigint" if "double" in hints else "string"
    if "string" in hints:
        return "string"
    return "double"


def _outputs_of(st: Stage) -> list[str]:
    if isinstance(st, ClassificationModel):
        return [c for c in (st.raw_col, st.prob_col, st.prediction_col) if c]
    if isinstance(st, Model):
        return [st.prediction_col] if st.prediction_col else []
    return list(st.output_cols)


@dataclass
class ScoreResult:
    """Outputs of a batch: ``columns`` (one array per output, rows in input order, dropped rows removed),
    ``rows`` (input position of each scored row), ``dropped`` (input positions Spark would drop)."""

    columns: dict[str, np.ndarray]
    rows: np.ndarray
    dropped: np.ndarray
    num_input_rows: int
    dropped_by: dict[int, str] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any] | None]:
        """One dict per input row (vectors as lists), None for a dropped row."""
        out: list[dict[str, Any] | None] = [None] * self.num_input_rows
        lists = {k: v.tolist() for k, v in self.columns.items()}
        for j, i in enumerate(self.rows.tolist()):
            out[i] = {k: v[j] for k, v in lists.items()}
        return out

    def to_arrow(self) -> Any:
        """The scored rows as a ``pyarrow.Table`` with a ``row`` column (vectors as ``list<double>``)."""
        import pyarrow as pa

        cols: dict[str, Any] = {"row": pa.array(self.rows, type=pa.int64())}
        for k, v in self.columns.items():
            if v.ndim == 2:
                cols[k] = pa.array(list(v), type=pa.list_(pa.float64()))
            else:
                cols[k] = pa.array(v)
        return pa.table(cols)

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()


class PipelineScorer:
    """A loaded pipeline: ``score_one`` for one record (plain Python, no pandas/Arrow), ``score`` for many."""

    def __init__(self, stages: Sequence[Stage], signature: Signature, outputs: Sequence[str] | None = None,
                 path: str | None = None, manifest: dict[str, Any] | None = None) -> None:
        self.stages = list(stages)
        self.signature = signature
        self.path = path
        self.manifest = manifest
        self.schema: Schema = {f.name: (signature.types[f.name], None) for f in signature.inputs}
        for st in self.stages:
            st.plan(self.schema)
        default_outputs = self._default_outputs()
        wanted = [o for o in (outputs or []) if o in self.schema]
        self.outputs = wanted or default_outputs
        self._row_stages = [st.row for st in self.stages]
        self._uids = [st.uid for st in self.stages]

    def _default_outputs(self) -> list[str]:
        for st in reversed(self.stages):
            if isinstance(st, Model):
                return _outputs_of(st)
        return _outputs_of(self.stages[-1]) if self.stages else []

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.signature.inputs]

    def score_one(self, record: Mapping[str, Any], columns: Sequence[str] | None = None,
                  checked: bool = False) -> dict[str, Any] | None:
        """Score one record; None if Spark would drop it (a ``skip`` mode).

        ``checked=True`` skips the signature check for a record already coerced by
        :meth:`Signature.coerce_record`. Raises :class:`InvalidRecordError` where Spark's transform would fail.
        """
        r = dict(record) if checked else self.signature.coerce_record(record)
        for step in self._row_stages:
            if not step(r):
                return None
        return {c: r[c] for c in (columns or self.outputs)}

    def dropped_by_one(self, record: Mapping[str, Any]) -> str | None:
        """The uid of the stage that drops ``record``, or None if it is scored."""
        r = self.signature.coerce_record(record)
        for step, uid in zip(self._row_stages, self._uids):
            if not step(r):
                return uid
        return None

    def score(self, data: Any, columns: Sequence[str] | None = None) -> ScoreResult:
        """Score a list of dicts, a pandas DataFrame or a pyarrow Table/RecordBatch column-wise."""
        b = self.to_batch(data)
        n = b.n
        dropped_parts: list[np.ndarray] = []
        dropped_by: dict[int, str] = {}
        for st in self.stages:
            d = st.batch(b)
            if len(d):
                dropped_parts.append(d)
                dropped_by.update(dict.fromkeys(d.tolist(), st.uid))
        dropped = np.sort(np.concatenate(dropped_parts)) if dropped_parts else np.empty(0, dtype=np.int64)
        cols = {c: b.cols[c] for c in (columns or self.outputs)}
        return ScoreResult(cols, b.rows, dropped, n, dropped_by)

    def to_batch(self, data: Any) -> Batch:
        if isinstance(data, Batch):
            return data
        mod = type(data).__module__
        if mod.startswith("pyarrow"):
            return batches.from_arrow(data, self.signature)
        if mod.startswith("pandas"):
            return batches.from_pandas(data, self.signature)
        if isinstance(data, Mapping):
            data = [data]
        if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
            return batches.from_records(list(data), self.signature)
        raise InvalidRecordError("<input>", f"cannot score a {type(data).__name__}: give dicts, pandas or Arrow")

    def describe(self) -> dict[str, Any]:
        """Stages, inputs and outputs, for /metadata and the CLI."""
        return {
            "stages": [{"uid": st.uid, "class": st.meta.short_class} for st in self.stages],
            "inputs": self.signature.to_list(),
            "outputs": [{"name": o, "type": _type_string(self.schema[o])} for o in self.outputs],
        }


def _type_string(t: tuple[str, int | None]) -> str:
    return "array<double>" if t[0] == "vector" else t[0]


def _signature_from_manifest(manifest: dict[str, Any], derived: Signature) -> Signature:
    inputs = ((manifest.get("signature") or {}).get("inputs")) or []
    if not inputs:
        return derived
    given = Signature.from_dicts(inputs)
    needed = {f.name for f in derived.inputs}
    missing = needed - set(given.types)
    if missing:
        raise UnsupportedModelError(
            f"manifest signature lacks input(s) {', '.join(sorted(missing))} that the pipeline reads"
        )
    # Keep only what the pipeline reads (a signature may list label or key columns too).
    return Signature([f for f in given.inputs if f.name in needed])


def load(path: str, signature: Signature | Sequence[Mapping[str, Any]] | None = None,
         verify: bool = True) -> PipelineScorer:
    """Load a saved PipelineModel (or a sparkship artifact folder) for JVM-free scoring.

    Raises :class:`UnsupportedModelError` naming any stage class or param the scorer cannot reproduce, and
    ``IntegrityError`` for an artifact whose files do not match its manifest (``verify=False`` skips that).
    """
    manifest = None
    model_dir = path
    if os.path.isfile(os.path.join(path, "manifest.json")) and os.path.isdir(os.path.join(path, "model")):
        from sparkship import artifacts

        manifest = artifacts.verify(path) if verify else artifacts.read_manifest(path)
        model_dir = os.path.join(path, "model")
    elif not os.path.isdir(path):
        raise NotFoundError(f"model folder {path} does not exist")
    stages = load_stages(model_dir)
    derived = derive_signature(stages)
    if signature is not None:
        given = signature.to_list() if isinstance(signature, Signature) else list(signature)
        sig = _signature_from_manifest({"signature": {"inputs": given}}, derived)
    elif manifest is not None:
        sig = _signature_from_manifest(manifest, derived)
    else:
        sig = derived
    outputs = [o["name"] for o in ((manifest or {}).get("signature") or {}).get("outputs", [])]
    scorer = PipelineScorer(stages, sig, outputs=outputs, path=path, manifest=manifest)
    log.info("loaded %s: %d stages, inputs %s", path, len(stages), ", ".join(scorer.input_names))
    return scorer


__all__ = ["PipelineScorer", "ScoreResult", "load", "load_stages", "derive_signature", "normalise_type"]
