"""Scoring inside Spark without Spark ML: the JVM-free scorer (:mod:`sparkship.serving`) in ``mapInArrow``.

A scoring run picks its scorer once (:func:`choose_scorer`): ``jvm-free`` when every stage of the model is one the
JVM-free scorer reproduces, else Spark's ``PipelineModel.transform``; ``--scorer spark`` or ``jvm-free`` forces
the choice (``jvm-free`` refuses a model with a stage it lacks, naming the stage). The JVM-free path appends the
prediction (double) and, for classifiers, the probability (array<double>) to each Arrow batch Spark hands the
Python worker (``spark.sql.execution.arrow.maxRecordsPerBatch`` rows at most) and drops the rows Spark's
transform would drop. Each Python worker loads the model once, from the artifact folder the driver reads too
(a /Volumes or dbfs path on Databricks), checked against the registered manifest.

    >>> fn = ArrowScoring.of("/models/churn/3", sha256, signature_inputs, "prediction", "probability")  # doctest: +SKIP
    >>> scored = score_frame(frame, fn)  # frame.mapInArrow(fn, fn.schema(frame.schema))          # doctest: +SKIP
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from sparkship import artifacts, serving
from sparkship.errors import UsageError
from sparkship.serving import PipelineScorer, UnsupportedModelError

# pyspark is an optional dependency (the `local` extra; Databricks ships its own): functions import it where used.
if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

log = logging.getLogger("sparkship.scoring")

AUTO, SPARK, JVM_FREE = "auto", "spark", "jvm-free"
SCORERS = (AUTO, SPARK, JVM_FREE)

# One scorer per (artifact folder, manifest sha256) per Python process: a worker loads a model once.
_LOADED: dict[tuple[str, str], PipelineScorer] = {}
_LOCK = threading.Lock()


def load_checked(artifact: str, manifest_sha256: str, inputs: Sequence[dict[str, str]],
                 verified: bool = False) -> PipelineScorer:
    """The JVM-free scorer of ``artifact`` (cached per process), its files checked against the manifest whose
    sha256 is ``manifest_sha256`` (the driver's): :class:`IntegrityError` if a worker sees other files.
    ``verified``: the caller has just checked them against that manifest (the driver), so they are not hashed
    again."""
    key = (artifact, manifest_sha256)
    with _LOCK:
        scorer = _LOADED.get(key)
        if scorer is None:
            if not verified:
                artifacts.verify(artifact, manifest_sha256)
            scorer = _LOADED[key] = serving.load(artifact, signature=list(inputs), verify=False)
        return scorer


def _check_outputs(scorer: PipelineScorer, prediction_col: str, probability_col: str | None) -> None:
    missing = [c for c in (prediction_col, probability_col) if c is not None and c not in scorer.schema]
    if missing:
        raise UnsupportedModelError(f"the JVM-free scorer does not produce the column(s) {missing} the job writes")


def check_choice(choice: str) -> None:
    """:class:`UsageError` unless ``choice`` is one of :data:`SCORERS`."""
    if choice not in SCORERS:
        raise UsageError(f"--scorer {choice!r}: expected one of {', '.join(SCORERS)}")


def choose_scorer(choice: str, ref: str, artifact: str, manifest_sha256: str, inputs: Sequence[dict[str, str]],
                  prediction_col: str, probability_col: str | None, verified: bool = False) -> str:
    """The scorer a run uses, :data:`SPARK` or :data:`JVM_FREE`, for the user's ``choice`` (one of :data:`SCORERS`).

    ``auto`` takes the JVM-free scorer when it loads the model, else Spark; ``jvm-free`` on a model it cannot load
    raises :class:`UsageError` naming the stage, before anything is written. ``verified``: see
    :func:`load_checked`.
    """
    check_choice(choice)
    if choice == SPARK:
        return SPARK
    try:
        scorer = load_checked(artifact, manifest_sha256, inputs, verified=verified)
        _check_outputs(scorer, prediction_col, probability_col)
    except UnsupportedModelError as exc:
        if choice == JVM_FREE:
            raise UsageError(f"--scorer jvm-free: model {ref} cannot be scored without Spark ML: {exc}. "
                             "Use --scorer spark (or auto)") from None
        log.info("%s: scoring with Spark's transform (the JVM-free scorer cannot: %s)", ref, exc)
        return SPARK
    return JVM_FREE


def _list_array(matrix: np.ndarray) -> pa.Array:
    """A 2-D float array as ``list<double>`` (non-null items), one list per row, without copying per row."""
    rows, width = matrix.shape
    offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix, dtype=np.float64).ravel()),
                                    type=pa.list_(pa.field("element", pa.float64(), nullable=False)))


@dataclass(frozen=True)
class ArrowScoring:
    """The ``mapInArrow`` function: each batch's scored rows with the prediction (and probability) appended.

    Picklable (a plain dataclass of strings), so that Spark and Spark Connect ship it to the Python workers.
    """

    artifact: str
    manifest_sha256: str
    inputs: tuple[tuple[tuple[str, str], ...], ...]  # the signature, as hashable (key, value) pairs
    prediction_col: str
    probability_col: str | None

    @classmethod
    def of(cls, artifact: str, manifest_sha256: str, inputs: Sequence[dict[str, str]], prediction_col: str,
           probability_col: str | None) -> ArrowScoring:
        return cls(artifact, manifest_sha256, tuple(tuple(sorted(i.items())) for i in inputs), prediction_col,
                   probability_col)

    def schema(self, incoming: StructType) -> StructType:
        """The output schema: ``incoming`` plus the prediction (and probability), typed as Spark's path writes."""
        from pyspark.sql.types import ArrayType, DoubleType, StructField, StructType

        fields = [f for f in incoming.fields if f.name not in (self.prediction_col, self.probability_col)]
        fields.append(StructField(self.prediction_col, DoubleType(), True))
        if self.probability_col is not None:
            fields.append(StructField(self.probability_col, ArrayType(DoubleType(), False), True))
        return StructType(fields)

    def score_batch(self, scorer: PipelineScorer, batch: pa.RecordBatch) -> pa.RecordBatch:
        wanted = [self.prediction_col] + ([self.probability_col] if self.probability_col else [])
        result = scorer.score(batch, columns=wanted)
        keep = [n for n in batch.schema.names if n not in wanted]
        kept = batch.select(keep)
        if len(result.rows) != batch.num_rows:  # rows Spark's transform drops (a "skip" mode)
            kept = kept.take(pa.array(result.rows, type=pa.int64()))
        prediction = np.asarray(result.columns[self.prediction_col], dtype=np.float64)
        # A null input makes some models' prediction null in Spark (a UDF over a null double): the scorer says where.
        arrays = list(kept.columns) + [pa.array(prediction, mask=result.nulls.get(self.prediction_col))]
        if self.probability_col is not None:
            arrays.append(_list_array(np.asarray(result.columns[self.probability_col], dtype=np.float64)))
        return pa.RecordBatch.from_arrays(arrays, names=keep + wanted)

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = load_checked(self.artifact, self.manifest_sha256, [dict(i) for i in self.inputs])
        for batch in batches:
            if batch.num_rows:
                yield self.score_batch(scorer, batch)


def score_frame(frame: DataFrame, fn: ArrowScoring) -> DataFrame:
    """``frame`` scored by the JVM-free scorer in the Python workers, like ``PipelineModel.transform(frame)``
    restricted to its own columns plus the prediction (and probability, as an array)."""
    return frame.mapInArrow(fn, fn.schema(frame.schema))


__all__ = ["AUTO", "SPARK", "JVM_FREE", "SCORERS", "ArrowScoring", "check_choice", "choose_scorer", "load_checked",
           "score_frame"]

