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

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from sparkship import artifacts
from sparkship.errors import IntegrityError, NotFoundError, SparkshipError
from sparkship.serving import batch as batches
from sparkship.serving.base import Schema, Stage, StageBuilder, UnsupportedModelError
from sparkship.serving.batch import Batch
from sparkship.serving.catalog import build_stage, inner_model_dir
from sparkship.serving.fused import FusedLinear
from sparkship.serving.predictors import Model
from sparkship.serving.reader import StageMetadata, read_metadata
from sparkship.serving.signature import ANY, Field, InvalidRecordError, Signature, normalise_type, types_from_data
from sparkship.serving.stages import VectorAssembler, VectorSizeHint

log = logging.getLogger(__name__)

# Spark's writer, or pyspark's when a PipelineModel was built in Python from fitted stages.
PIPELINE_CLASSES = frozenset({"org.apache.spark.ml.PipelineModel", "pyspark.ml.pipeline.PipelineModel"})


def _stage_dirs(pipeline_dir: str, meta: StageMetadata) -> list[str]:
    stages_dir = os.path.join(pipeline_dir, "stages")
    entries = sorted(os.listdir(stages_dir)) if os.path.isdir(stages_dir) else []
    return [_stage_dir(pipeline_dir, stages_dir, entries, uid) for uid in meta.params.get("stageUids", [])]


def _stage_dir(pipeline_dir: str, stages_dir: str, entries: list[str], uid: Any) -> str:
    """The folder of stage ``uid``: the one entry of ``stages/`` named ``<index>_<uid>``, resolved inside it.

    The uid comes from the model's own metadata, never from a glob: one that names a path (``..``, a separator),
    or a folder that resolves outside ``stages/`` (a link), is a corrupt model: :class:`IntegrityError`.
    """
    if not isinstance(uid, str) or uid in ("", ".", "..") or any(c in uid for c in ("/", "\\", "\x00", os.sep)):
        raise IntegrityError(f"{pipeline_dir}: its metadata names stage uid {uid!r}, which is not a plain name: "
                             "the model is corrupt, refused")
    # Spark names stage folders "<index>_<uid>", zero-padding the index when there are 10+ stages.
    found = [e for e in entries if e.endswith(f"_{uid}") and e[:-len(uid) - 1].isascii()
             and e[:-len(uid) - 1].isdigit()]
    if len(found) != 1:
        raise NotFoundError(f"{pipeline_dir}: stage {uid} has no single folder under stages/")
    path = os.path.join(stages_dir, found[0])
    root = os.path.realpath(stages_dir)
    resolved = os.path.realpath(path)
    if resolved == root or os.path.commonpath([resolved, root]) != root:
        raise IntegrityError(f"{pipeline_dir}: the folder of stage {uid} resolves to {resolved}, outside the model: "
                             "the model is corrupt, refused")
    return path


def load_stages(path: str, build: StageBuilder = build_stage) -> list[Stage]:
    """Every stage of the saved model at ``path``, nested PipelineModels flattened, in transform order; ``build``
    makes each stage from its saved metadata (the catalog's by default)."""
    meta = read_metadata(path)
    if meta.class_name in PIPELINE_CLASSES:
        out: list[Stage] = []
        for d in _stage_dirs(path, meta):
            out.extend(load_stages(d, build))
        return out
    inner = inner_model_dir(meta)
    if inner is not None:  # CrossValidatorModel, TrainValidationSplitModel: score their bestModel
        return load_stages(inner, build)
    return [build(meta)]


def derive_signature(stages: Sequence[Stage]) -> Signature:
    """Inputs = columns read by a stage and produced by no earlier one, typed from what reads them.

    A saved model does not record its input schema, so types are inferred: vectors for scalers, models and
    VectorSizeHint, double for numeric stages, and for StringIndexer inputs the look of the fitted labels ("1.0"
    and "NaN" mean a double column; "3" a string or an integer column - an integer one if a numeric stage reads
    it too). A VectorAssembler input is a vector when the sizes add up only that way: the stage consuming the
    assembled vector was fitted on more features than the other inputs give (one such input per assembler).
    A manifest's ``signature.inputs`` (sparkship artifacts) replaces these guesses.
    """
    produced: set[str] = set()
    hints: dict[str, set[str]] = {}
    other_readers: set[str] = set()  # inputs some stage other than an assembler reads: their type is settled
    for st in stages:
        for c in st.input_cols:
            if c not in produced:
                hints.setdefault(c, set()).add(st.input_type(c))
                if not isinstance(st, VectorAssembler):
                    other_readers.add(c)
        produced.update(st.produced_cols())
    sig = Signature([Field(c, _merge_hints(h)) for c, h in hints.items()])
    vectors = vector_input_sizes(stages, sig, retype=frozenset(hints) - other_readers)
    if not any(sig.types[c] != "vector" for c in vectors):
        return sig
    return Signature([Field(f.name, "vector" if f.name in vectors else f.type) for f in sig.inputs])


def vector_input_sizes(stages: Sequence[Stage], signature: Signature,
                       retype: frozenset[str] = frozenset()) -> dict[str, int]:
    """Sizes of the vector inputs that the fitted stages pin down (VectorSizeHint, VectorAssembler sums).

    A double input named in ``retype`` may turn out to be a vector (see :func:`derive_signature`).
    The stages are planned along the way; :class:`PipelineScorer` plans them again with the final schema.
    """
    inputs = set(signature.types)
    schema: Schema = {f.name: (signature.types[f.name], None) for f in signature.inputs}
    found: dict[str, int] = {}
    try:
        for i, st in enumerate(stages):
            if isinstance(st, VectorSizeHint) and st.input_cols[0] in inputs:
                found[st.input_cols[0]] = st.size
            elif isinstance(st, VectorAssembler):
                found.update(_assembled_input_sizes(st, stages[i + 1:], schema, inputs, retype))
            schema.update({c: ("vector", n) for c, n in found.items()})
            st.plan(schema)
    except SparkshipError:  # a stage the schema does not fit: the real plan reports it
        pass
    return found


def _assembled_input_sizes(va: VectorAssembler, later: Sequence[Stage], schema: Schema, inputs: set[str],
                           retype: frozenset[str]) -> dict[str, int]:
    """The one pipeline input of ``va`` whose width is open, sized so the assembled vector fits its consumer."""
    need = next((n for st in later if (n := st.expected_size(va.output_cols[0])) is not None), None)
    if need is None:
        return {}
    open_cols, known = [], 0
    for c in va.input_cols:
        t, size = schema.get(c, ("double", None))
        if c in inputs and ((t == "vector" and size is None) or (c in retype and t in ("double", "float"))):
            open_cols.append(c)
        elif t == "vector" and size is None:
            return {}
        else:
            known += (size or 0) if t == "vector" else 1
    if len(open_cols) != 1:
        return {}
    width = need - known
    t = schema.get(open_cols[0], ("double", None))[0]
    # width 1 fits a double as well: only a wider gap says "vector" (a typed vector keeps its type)
    if width >= 2 or (t == "vector" and width >= 0):
        return {open_cols[0]: width}
    return {}


def _merge_hints(hints: set[str]) -> str:
    if hints == {ANY}:
        return ANY
    hints = hints - {ANY}
    if "vector" in hints:
        return "vector"
    if "array<string>" in hints:
        return "array<string>"
    if "integral" in hints:
        return "bigint" if "double" in hints else "string"
    if "string" in hints:
        return "string"
    return "double"


@dataclass
class ScoreResult:
    """Outputs of a batch: ``columns`` (one array per output, rows in input order, dropped rows removed),
    ``rows`` (input position of each scored row), ``dropped`` (input positions Spark would drop)."""

    columns: dict[str, np.ndarray]
    rows: np.ndarray
    dropped: np.ndarray
    num_input_rows: int
    dropped_by: dict[int, str] = field(default_factory=dict)
    # Null masks of scalar output columns that hold nulls (an int, boolean or string slot cannot say so itself).
    nulls: dict[str, np.ndarray] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any] | None]:
        """One dict per input row (vectors as lists), None for a dropped row; None for a null value."""
        out: list[dict[str, Any] | None] = [None] * self.num_input_rows
        lists = {k: v.tolist() for k, v in self.columns.items()}
        for k, mask in self.nulls.items():
            lists[k] = [None if m else v for v, m in zip(lists[k], mask.tolist())]
        for j, i in enumerate(self.rows.tolist()):
            out[i] = {k: v[j] for k, v in lists.items()}
        return out

    def to_arrow(self) -> Any:
        """The scored rows as a ``pyarrow.Table`` with a ``row`` column (vectors as ``list<double>``)."""
        cols: dict[str, Any] = {"row": pa.array(self.rows, type=pa.int64())}
        for k, v in self.columns.items():
            if v.ndim == 2:
                cols[k] = pa.array(list(v), type=pa.list_(pa.float64()))
            elif k in self.nulls:
                cols[k] = pa.array(v, mask=self.nulls[k], from_pandas=v.dtype == object)
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
        # Inputs typed by each request's data (ANY); the stages are planned with a stand-in type for the
        # outputs' sake and scoring goes to a scorer planned for the data's types (see :meth:`_typed`).
        self.late = [f.name for f in signature.inputs if signature.types[f.name] == ANY]
        self._typed_scorers: dict[tuple[str, ...], PipelineScorer] = {}
        planned = Signature([Field(f.name, "string" if f.name in self.late else f.type) for f in signature.inputs])
        sizes = vector_input_sizes(self.stages, planned)
        self.schema: Schema = {f.name: (planned.types[f.name], sizes.get(f.name)) for f in planned.inputs}
        for i, st in enumerate(self.stages):
            st.upstream = self.stages[:i]  # stages needing ML attributes re-derive them (serving.attributes)
            st.plan(self.schema)
        default_outputs = self._default_outputs()
        wanted = [o for o in (outputs or []) if o in self.schema]
        self.outputs = wanted or default_outputs
        self._row_stages = [st.row for st in self.stages]
        self._uids = [st.uid for st in self.stages]
        self._fused = FusedLinear.find(self.stages, self.outputs)

    def _fused_for(self, columns: Sequence[str]) -> bool:
        """The fused linear tail can serve a request for ``columns`` (none of them is a vector it skips)."""
        f = self._fused
        return f is not None and not (set(f.assembler.output_cols) | set(self.stages[f.start + 1].output_cols)) & set(
            columns)

    def _default_outputs(self) -> list[str]:
        for st in reversed(self.stages):
            if isinstance(st, Model):
                return st.produced_cols()
        return self.stages[-1].produced_cols() if self.stages else []

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.signature.inputs]

    def score_one(self, record: Mapping[str, Any], columns: Sequence[str] | None = None,
                  checked: bool = False) -> dict[str, Any] | None:
        """Score one record; None if Spark would drop it (a ``skip`` mode).

        ``checked=True`` skips the signature check for a record already coerced by
        :meth:`Signature.coerce_record`. Raises :class:`InvalidRecordError` where Spark's transform would fail.
        """
        if self.late:
            return self._typed(record).score_one(record, columns or self.outputs, checked)
        r = dict(record) if checked else self.signature.coerce_record(record)
        for step in self._row_stages:
            if not step(r):
                return None
        return {c: r[c] for c in (columns or self.outputs)}

    def dropped_by_one(self, record: Mapping[str, Any]) -> str | None:
        """The uid of the stage that drops ``record``, or None if it is scored."""
        if self.late:
            return self._typed(record).dropped_by_one(record)
        r = self.signature.coerce_record(record)
        for step, uid in zip(self._row_stages, self._uids):
            if not step(r):
                return uid
        return None

    def score(self, data: Any, columns: Sequence[str] | None = None) -> ScoreResult:
        """Score a list of dicts, a pandas DataFrame or a pyarrow Table/RecordBatch column-wise."""
        if self.late and not isinstance(data, Batch):
            return self._typed(data).score(data, columns or self.outputs)
        b = self.to_batch(data)
        n = b.n
        dropped_parts: list[np.ndarray] = []
        dropped_by: dict[int, str] = {}
        fused = self._fused if columns is None or self._fused_for(columns) else None  # see serving.fused
        skip_to = -1
        for i, st in enumerate(self.stages):
            if i < skip_to:
                continue
            if fused is not None and i == fused.start and fused.batch(b):
                skip_to = fused.stop
                continue
            d = st.batch(b)
            if len(d):
                dropped_parts.append(d)
                dropped_by.update(dict.fromkeys(d.tolist(), st.uid))
        dropped = np.sort(np.concatenate(dropped_parts)) if dropped_parts else np.empty(0, dtype=np.int64)
        cols = {c: b.cols[c] for c in (columns or self.outputs)}
        nulls = {c: b.nulls[c] for c in cols if c in b.nulls and b.cols[c].ndim == 1}
        return ScoreResult(cols, b.rows, dropped, n, dropped_by, nulls)

    def _typed(self, data: Any) -> PipelineScorer:
        """This pipeline planned for the types ``data`` gives its ANY inputs (one scorer per combination)."""
        types = types_from_data(data, self.late)
        if types not in self._typed_scorers:
            given = dict(zip(self.late, types))
            sig = Signature([Field(f.name, given.get(f.name, f.type)) for f in self.signature.inputs])
            if self.path is None:
                raise UnsupportedModelError("a scorer with inputs typed by the data needs the path it was loaded from")
            stages = load_stages(os.path.join(self.path, "model") if self.manifest is not None else self.path)
            self._typed_scorers[types] = PipelineScorer(stages, sig, self.outputs, self.path, self.manifest)
        return self._typed_scorers[types]

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


__all__ = ["PipelineScorer", "ScoreResult", "load", "load_stages", "derive_signature", "normalise_type",
           "vector_input_sizes"]
