"""A scoring run's request (tables and keys, parsed once) and its model (resolved once, verified)."""
from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sparkship import artifacts
from sparkship.config import Settings
from sparkship.errors import IntegrityError, UsageError
from sparkship.refs import ModelRef, TableRef
from sparkship.registry import ModelVersion, Registry
from sparkship.scoring.arrow_scorer import AUTO, ArrowScoring, check_choice, choose_scorer
from sparkship.scoring.rules import prediction_cols
from sparkship.tables.names import check_writable_location, sibling

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel

log = logging.getLogger("sparkship.scoring")

BATCH_COLUMN = "scoring_batch"
REASON_COLUMN = "reason"
OUTPUT_COLUMNS = ("prediction", "probability", "model_name", "model_version", "scored_at", "run_id", "input_version")


@dataclass(frozen=True, kw_only=True)
class ScoringRequest:
    """What the caller asked for, parsed and checked; no table is read yet."""

    input_path: str
    pinned_version: int | None
    output_path: str
    keys: list[str]
    run_id: str
    full: bool
    include_features: bool
    replace_output: bool
    auto_full: bool = False  # an input changed by more than appends, without a Change Data Feed: rescore in full

    @property
    def quarantine_path(self) -> str:
        return sibling(self.output_path, "_quarantine")

    @property
    def state_path(self) -> str:
        return sibling(self.output_path, "_state")

    @property
    def lease_path(self) -> str:
        # A sibling of the output, like the state: every writer of the output resolves the same table (a path
        # next to it, or a name in its schema: with Unity Catalog, in the catalog and schema that govern it).
        return sibling(self.output_path, "_lease")


@dataclass(frozen=True, kw_only=True)
class ScoringModel:
    """The model version a run scores with, resolved once, and what its manifest says."""

    version: ModelVersion
    pipeline: PipelineModel
    inputs: list[dict[str, str]]
    classification: bool
    scorer: str = "spark"  # what scores the rows: "spark" (PipelineModel.transform) or "jvm-free" (mapInArrow)
    manifest_sha256: str = ""

    def arrow_scoring(self) -> ArrowScoring:
        """The ``mapInArrow`` function of the JVM-free path (see :mod:`sparkship.scoring.arrow_scorer`)."""
        prediction_col, probability_col = prediction_cols(self.pipeline)
        return ArrowScoring.of(self.version.artifact, self.manifest_sha256, self.inputs, prediction_col,
                               probability_col if self.classification else None)


def _parse_keys(keys: Sequence[str] | str) -> list[str]:
    listed = [k.strip() for k in (keys.split(",") if isinstance(keys, str) else keys)]
    if not listed or any(not k for k in listed):
        raise UsageError(f"--keys: expected one or more comma-separated column names, got {keys!r}")
    dupes = sorted({k for k in listed if listed.count(k) > 1})
    if dupes:
        raise UsageError(f"--keys: columns listed twice: {dupes}")
    clash = [k for k in listed if k in OUTPUT_COLUMNS or k in (BATCH_COLUMN, REASON_COLUMN)]
    if clash:
        raise UsageError(f"--keys: {clash} clash with the output's own columns")
    return listed


def make_request(input: TableRef, output: TableRef, keys: Sequence[str] | str, *, run_id: str | None, full: bool,
                 include_features: bool, replace_output: bool, auto_full: bool = False) -> ScoringRequest:
    """Check the tables and parse the keys; raise :class:`UsageError` on anything malformed."""
    if output.version is not None:
        raise UsageError(f"--output {str(output)!r}: an output table cannot be pinned to a version")
    if output.location == input.location:
        raise UsageError("--output must be another table than --input")
    check_writable_location(output.location, "--output")
    return ScoringRequest(
        input_path=input.location, pinned_version=input.version, output_path=output.location, keys=_parse_keys(keys),
        run_id=run_id or uuid.uuid4().hex[:16], full=full, include_features=include_features,
        replace_output=replace_output, auto_full=auto_full,
    )


def load_scoring_model(settings: Settings, model_ref: ModelRef, scorer: str = AUTO) -> ScoringModel:
    """Resolve ``model_ref`` once (an alias moving later changes nothing in this run) and load it, verified.

    ``scorer`` (``auto``, ``spark`` or ``jvm-free``) picks what scores the rows (see
    :func:`sparkship.scoring.arrow_scorer.choose_scorer`); a ``jvm-free`` the model cannot take is refused here,
    before anything is written.
    """
    check_choice(scorer)
    mv = Registry(settings).get(model_ref)
    # Once, against the registry's record of the manifest: the checksums are the largest cost outside Spark.
    manifest, digest = artifacts.verified(mv.artifact, mv.manifest_sha256)
    pipeline = artifacts.load_verified(mv.artifact, digest)  # classic- or Connect-saved alike
    inputs = (manifest.get("signature") or {}).get("inputs")
    if not inputs:
        raise IntegrityError(f"model {mv.ref}: its manifest has no signature inputs")
    # A classifier writes a probability where its signature lists one (LinearSVC and OneVsRest have none).
    outputs = [o.get("name") for o in (manifest.get("signature") or {}).get("outputs") or []]
    classification = manifest.get("task") == "classification" and (not outputs or "probability" in outputs)
    prediction_col, probability_col = prediction_cols(pipeline)
    chosen = choose_scorer(scorer, mv.ref, mv.artifact, digest, inputs, prediction_col,
                           probability_col if classification else None, verified=True)
    log.info("scoring with %s (from %s), scorer %s", mv.ref, model_ref, chosen)
    return ScoringModel(version=mv, pipeline=pipeline, inputs=list(inputs), classification=classification,
                        scorer=chosen, manifest_sha256=digest)


