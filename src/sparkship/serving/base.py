"""The stage contract of the JVM-free scorer: :class:`Stage`, the column :data:`Schema`, the load-time refusal
:class:`UnsupportedModelError`, and the registry that maps a saved Spark class name to its scorer class.

Every stage reproduces its Spark counterpart's ``transform()``: the same outputs, the same rows dropped in
``skip`` modes, and an :class:`~sparkship.serving.signature.InvalidRecordError` where Spark would fail the job.
A stage or an explicitly set param the scorer does not know is refused when the model is loaded. ``row(r)``
updates the dict ``r`` of plain Python values and returns False when Spark would drop the row; ``batch(b)``
updates a :class:`~sparkship.serving.batch.Batch` in place and returns the input positions of dropped rows.

A stage class registers itself under its saved class name:

    >>> @register_stage
    ... class Identity(Stage):
    ...     spark_class = "example.Identity"
    >>> STAGES.pop("example.Identity").__name__
    'Identity'
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from sparkship.errors import SparkshipError
from sparkship.serving.batch import Batch
from sparkship.serving.reader import StageMetadata
from sparkship.serving.signature import FLOATING, INTEGRAL

# Column name -> (Spark type, vector size or None). Built up stage by stage when a pipeline is loaded.
Schema = dict[str, tuple[str, "int | None"]]


class UnsupportedModelError(SparkshipError):
    """The saved model holds a stage or a param setting the JVM-free scorer cannot reproduce exactly."""


class Stage:
    """Base class: params from the saved metadata, input/output columns, row and batch transforms."""

    spark_class: ClassVar[str] = ""
    # Params this class understands (those used by transform() and fit-only ones). An explicitly set param
    # outside this set is refused: it might change what transform() does.
    known_params: ClassVar[frozenset[str]] = frozenset()
    preferred_input_type: ClassVar[str] = "double"
    # The stages before this one in its pipeline (set by the pipeline; stages needing ML attributes use them).
    upstream: Sequence[Stage] = ()

    def __init__(self, meta: StageMetadata) -> None:
        self.meta = meta
        self.uid = meta.uid
        unknown = sorted(p for p in meta.set_params if p not in self.known_params)
        if unknown:
            raise UnsupportedModelError(
                f"stage {meta.uid} ({meta.class_name}) sets param(s) {', '.join(unknown)} that the JVM-free "
                "scorer does not support"
            )
        self.input_cols: list[str] = []
        self.output_cols: list[str] = []

    @classmethod
    def load(cls, meta: StageMetadata, build: StageBuilder) -> Stage:
        """The stage saved as ``meta``; ``build`` makes the stages saved inside it (for nesting stages)."""
        return cls(meta)

    def p(self, name: str, default: Any = None) -> Any:
        """The saved value of param ``name`` (set or default), else ``default``."""
        return self.meta.params.get(name, default)

    def refuse(self, what: str) -> UnsupportedModelError:
        """The load-time refusal naming this stage and ``what`` it cannot reproduce."""
        return UnsupportedModelError(f"stage {self.uid} ({self.meta.class_name}): {what} is not supported")

    def _in_out(self) -> tuple[list[str], list[str]]:
        """inputCols/outputCols when set, else inputCol/outputCol (multi-column stages accept both)."""
        multi = self.meta.is_set("inputCols") or (not self.meta.is_set("inputCol") and bool(self.p("inputCols")))
        if multi:
            return list(self.p("inputCols")), list(self.p("outputCols") or [])
        return [self.p("inputCol")], [self.p("outputCol")]

    def input_type(self, col: str) -> str:
        """The type a pipeline input column consumed by this stage gets in a derived signature."""
        return self.preferred_input_type

    def expected_size(self, col: str) -> int | None:
        """The vector size this fitted stage needs in input ``col``, when it knows one (used to type inputs)."""
        return None

    def produced_cols(self) -> list[str]:
        """The columns transform() adds, known before :meth:`plan` (derived signatures, default outputs)."""
        return list(self.output_cols)

    def plan(self, schema: Schema) -> None:
        """Check the input columns' types and sizes, precompute, and add the outputs to ``schema``."""
        raise NotImplementedError

    def row(self, r: dict[str, Any]) -> bool:
        """Score the record ``r`` in place; False when Spark would drop it."""
        raise NotImplementedError

    def batch(self, b: Batch) -> np.ndarray:
        """Score the batch ``b`` in place; the input positions of the rows dropped."""
        raise NotImplementedError

    def _need(self, schema: Schema, col: str, kinds: tuple[str, ...]) -> tuple[str, int | None]:
        if col not in schema:
            raise UnsupportedModelError(f"stage {self.uid} ({self.meta.short_class}) reads column '{col}', "
                                        "which no input or earlier stage provides")
        t, size = schema[col]
        ok = any(t == k or (k == "numeric" and (t in FLOATING or t in INTEGRAL)) for k in kinds)
        if not ok:
            raise UnsupportedModelError(f"stage {self.uid} ({self.meta.short_class}) reads column '{col}' of "
                                        f"type {t}; expected {' or '.join(kinds)}")
        return t, size


# Makes the scorer stage for saved metadata (the catalog's build_stage, given to stages that nest others).
StageBuilder = Callable[[StageMetadata], Stage]

# Saved stage class name -> the class that scores it; filled by :func:`register_stage`.
STAGES: dict[str, type[Stage]] = {}

S = TypeVar("S", bound=type[Stage])


def register_stage(cls: S) -> S:
    """Class decorator: score saved stages of ``cls.spark_class`` with ``cls``.

    Raises:
        ValueError: the class names no Spark class, or another class already scores it.
    """
    name = cls.spark_class
    if not name or STAGES.get(name, cls) is not cls:
        raise ValueError(f"{cls.__name__}: spark_class {name!r} is empty or already registered")
    STAGES[name] = cls
    return cls
