"""The scoring job: plan, then under the output's lease append a ``pending`` state row, write the output and the
quarantine (one commit each), check the counts and append the ``committed`` state row (see docs/DESIGN.md)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sparkship import killpoints, tables
from sparkship.config import Settings
from sparkship.errors import ConcurrentWriteError, IntegrityError, NotFoundError, SchemaMismatchError, UsageError
from sparkship.refs import ModelRef, TableRef, to_model_ref, to_table_ref
from sparkship.scoring.frames import OP_COLUMN, Frames, build_frames, without_ops
from sparkship.scoring.plan import CHANGES, GONE, ScoringPlan, plan_run
from sparkship.scoring.request import (
    BATCH_COLUMN,
    ScoringModel,
    ScoringRequest,
    load_scoring_model,
    log,
    make_request,
)
from sparkship.scoring.rules import check_input
from sparkship.scoring_lease import RunLease
from sparkship.scoring_state import COMMITTED, PENDING, ScoringState, StateRow

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession



@dataclass(frozen=True, kw_only=True)
class ScoreResult:
    """What one scoring run did. ``from_version`` is exclusive (-1: the whole snapshot)."""

    model: str
    model_version: int
    run_id: str
    input: str
    input_version: int
    from_version: int
    output: str
    output_version: int | None
    quarantine: str
    quarantine_version: int | None
    rows_in: int
    scored: int
    quarantined: int
    deleted: int
    mode: str
    full: bool
    scoring_batch: int | None
    model_version_changed: bool
    previous_model_version: int | None
    healed: bool
    scorer: str  # what scored the rows: "spark" (PipelineModel.transform) or "jvm-free" (mapInArrow)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class Written:
    """What the writes committed; every count is read from its own table's commit."""

    output_version: int | None
    quarantine_version: int | None
    rows_in: int
    scored: int
    quarantined: int


def check_targets(spark: SparkSession, request: ScoringRequest, plan: ScoringPlan, frames: Frames) -> None:
    """The output and quarantine must keep their columns, unless ``replace_output``: checked before any write."""
    if request.replace_output:
        return
    targets = [(frames.scored, request.output_path, plan.output_exists),
               (frames.quarantined, request.quarantine_path, plan.quarantine_exists)]
    for df, path, exists in targets:
        if not exists:
            continue
        try:
            tables.check_schema(df.drop(OP_COLUMN).schema, tables.schema(spark, path), path)
        except SchemaMismatchError as exc:
            raise SchemaMismatchError(f"{exc}. Pass --replace-output to replace {path} with these columns") from None


def _merged_rows(spark: SparkSession, path: str, version: int, frame: DataFrame) -> int:
    """Rows a MERGE commit inserted or updated, from its metrics (either engine's spelling), else counted."""
    for commit in tables.history(spark, path, limit=10):
        if commit["version"] == version:
            metrics = {k.replace("_", "").lower(): v for k, v in commit["metrics"].items()}
            if "numtargetrowsinserted" in metrics:
                return int(metrics["numtargetrowsinserted"]) + int(metrics.get("numtargetrowsupdated", 0))
    return without_ops(frame).count()


def _committed(spark: SparkSession, path: str, version: int, written: DataFrame) -> int:
    """Rows the commit of ``version`` added: from its metrics, else (no metrics in the log) counted."""
    rows = tables.rows_committed(spark, path, version)
    return rows if rows is not None else written.count()


def write_changes(spark: SparkSession, path: str, frame: DataFrame, keys: Sequence[str], start: int,
                  *, delete_unmatched: str | None = None, skip_if_empty: bool = False) -> tuple[int | None, int]:
    """Upsert a change run's frame into ``path`` (created from its upserts when missing): (version, rows kept)."""
    if start < 0:
        if skip_if_empty:
            return None, 0
        kept = without_ops(frame)
        version = tables.write(kept, path, "overwrite", partition_by=[BATCH_COLUMN], expected_version=-1)
        return version, _committed(spark, path, version, kept)
    version = tables.merge(frame, path, keys, op_column=OP_COLUMN, expected_version=start,
                           delete_unmatched=delete_unmatched)
    return version, _merged_rows(spark, path, version, frame)


def _write_appended(spark: SparkSession, request: ScoringRequest, plan: ScoringPlan, frames: Frames,
                    rows_in: int) -> Written:
    write_args: dict[str, Any] = {"mode": "overwrite", "partition_by": [BATCH_COLUMN]}
    write_args.update({"overwrite_schema": True} if plan.whole
                      else {"replace_partitions": {BATCH_COLUMN: plan.batch}})
    # Compare-and-set against the versions the plan read: a commit that a killed run's orphaned worker lands late
    # makes this run fail (re-run it) instead of being overwritten or overwriting.
    output_version = tables.write(frames.scored, request.output_path, **write_args, expected_version=plan.output_start)
    scored = _committed(spark, request.output_path, output_version, frames.scored)
    log.info("wrote %d scored rows to %s (version %d)", scored, request.output_path, output_version)
    killpoints.reached("score:output")
    path = request.quarantine_path
    stale = plan.quarantine_exists and (plan.whole or plan.healed)
    if rows_in == scored and not stale:  # nothing to quarantine, nothing stale to replace: left alone
        return Written(output_version=output_version, rows_in=rows_in, scored=scored, quarantined=0,
                       quarantine_version=plan.quarantine_start if plan.quarantine_exists else None)
    version = tables.write(frames.quarantined, path, **write_args, expected_version=plan.quarantine_start)
    quarantined = _committed(spark, path, version, frames.quarantined)
    log.info("wrote %d rows to %s (version %d)", quarantined, path, version)
    return Written(output_version=output_version, quarantine_version=version, rows_in=rows_in, scored=scored,
                   quarantined=quarantined)


def write_changed(spark: SparkSession, request: ScoringRequest, plan: ScoringPlan, frames: Frames) -> Written:
    output_version, scored = write_changes(spark, request.output_path, frames.scored, request.keys,
                                           plan.output_start)
    log.info("upserted %d scored rows into %s (version %d)", scored, request.output_path, output_version)
    killpoints.reached("score:output")
    # The quarantine keeps the latest bad row per key. Rows with a null key match no key: a redone range (the same
    # scoring_batch) first deletes the ones the dead run may have put there.
    null_key = " OR ".join(f"t.`{k}` IS NULL" for k in request.keys)
    quarantine_version, quarantined = write_changes(
        spark, request.quarantine_path, frames.quarantined, request.keys, plan.quarantine_start,
        delete_unmatched=f"({null_key}) AND t.`{BATCH_COLUMN}` = {plan.batch}",
        skip_if_empty=(plan.rows_in or 0) == scored,
    )
    quarantine_version = quarantine_version if quarantine_version is not None else (
        plan.quarantine_start if plan.quarantine_exists else None)
    return Written(output_version=output_version, quarantine_version=quarantine_version, rows_in=plan.rows_in or 0,
                   scored=scored, quarantined=quarantined)


def pending_row(request: ScoringRequest, model: ScoringModel, plan: ScoringPlan, seq: int) -> StateRow:
    return StateRow(
        seq=seq, model_name=model.version.name, input_path=request.input_path, output_path=request.output_path,
        status=PENDING, full=plan.whole, from_version=plan.from_version, input_version=plan.input_version,
        scoring_batch=plan.batch, model_version=model.version.version, run_id=request.run_id,
        input_table_id=plan.input_id, mode=plan.mode, deleted=plan.deleted,
    )


def execute(spark: SparkSession, request: ScoringRequest, model: ScoringModel, plan: ScoringPlan,
            frames: Frames, state: ScoringState, lease: RunLease) -> tuple[StateRow, int, Written]:
    """Append the ``pending`` row (compare-and-set), then write the output and the quarantine (one commit each).

    Returns the pending row, the state version its append made, and what was written.
    """
    pending = pending_row(request, model, plan, plan.next_seq)
    try:
        pending_version = state.append(pending, expected_version=plan.state_version)
    except ConcurrentWriteError:
        raise ConcurrentWriteError(
            f"another scoring run changed {state.path} while this one started: one run at a time per output"
        ) from None
    killpoints.reached("score:pending")
    rows_in = plan.rows_in if plan.rows_in is not None else tables.count_rows(spark, request.input_path,
                                                                             plan.input_version)
    log.info(
        "scoring %s versions %d..%d into %s (%s, batch %d): %d rows%s", request.input_path, plan.from_version + 1,
        plan.input_version, request.output_path, plan.mode, plan.batch, rows_in,
        f", {plan.deleted} keys deleted" if plan.deleted else "",
    )
    lease.check()
    if not plan.whole and rows_in == 0 and plan.deleted == 0:  # only commits that changed no row: nothing to write
        written = Written(output_version=plan.output_start, rows_in=0, scored=0, quarantined=0,
                          quarantine_version=plan.quarantine_start if plan.quarantine_exists else None)
    elif plan.mode == CHANGES:
        written = write_changed(spark, request, plan, frames)
    else:
        written = _write_appended(spark, request, plan, frames, rows_in)
    return pending, pending_version, written


def check_counts(pending: StateRow, written: Written) -> None:
    """Every input row of the range landed exactly once: scored or quarantined."""
    if written.rows_in != written.scored + written.quarantined:
        raise IntegrityError(
            f"{pending.input_path}: {written.rows_in} rows in, but {written.scored} scored and "
            f"{written.quarantined} quarantined; the state was not committed, so the next run scores this range "
            "again"
        )


def record_committed(state: ScoringState, pending: StateRow, pending_version: int, written: Written) -> int:
    """Append the ``committed`` row: a compare-and-set against the version the ``pending`` append made, so that a
    run that took over in between makes this one fail instead of both recording the range."""
    committed = replace(pending, seq=pending.seq + 1, status=COMMITTED, output_version=written.output_version,
                        rows_in=written.rows_in, scored=written.scored, quarantined=written.quarantined)
    try:
        return state.append(committed, expected_version=pending_version)
    except ConcurrentWriteError:
        raise ConcurrentWriteError(
            f"{state.path} changed after this run's pending row (another run took over its lease): its work is not "
            "recorded, and the next run scores the range again"
        ) from None


def commit(state: ScoringState, pending: StateRow, pending_version: int, written: Written, lease: RunLease) -> None:
    """Check the counts, then record the ``committed`` row, which also ends the lease (no release commit)."""
    check_counts(pending, written)
    lease.end_with(lambda: record_committed(state, pending, pending_version, written))


def _result(request: ScoringRequest, model: ScoringModel, plan: ScoringPlan, written: Written) -> ScoreResult:
    mv = model.version
    return ScoreResult(
        model=mv.name, model_version=mv.version, run_id=request.run_id, input=request.input_path,
        input_version=plan.input_version, from_version=plan.from_version, output=request.output_path,
        output_version=written.output_version, quarantine=request.quarantine_path,
        quarantine_version=written.quarantine_version, rows_in=written.rows_in, scored=written.scored,
        quarantined=written.quarantined, deleted=plan.deleted if not plan.nothing_new else 0, mode=plan.mode,
        full=plan.whole, scoring_batch=None if plan.nothing_new else plan.batch,
        model_version_changed=plan.previous_model_version not in (None, mv.version),
        previous_model_version=plan.previous_model_version, healed=plan.healed, scorer=model.scorer,
    )


def _log_plan(request: ScoringRequest, model: ScoringModel, plan: ScoringPlan) -> None:
    mv = model.version
    if plan.healed:
        log.warning("the previous run %s did not finish: scoring its range again", plan.dead_run)
    if request.replace_output and plan.output_exists:
        log.warning("--replace-output: %s is replaced by the scores of %s", request.output_path, mv.ref)
    if plan.previous_model_version not in (None, mv.version) and not plan.whole:
        log.warning(
            "%s: the previous run scored with version %d, this one with %d: the new rows get version %d and "
            "older rows keep theirs; pass --full to rescore them all",
            mv.name, plan.previous_model_version, mv.version, mv.version,
        )


def resolve_input(spark: SparkSession, request: ScoringRequest,
                  model: ScoringModel) -> tuple[int, tables.TableIdentity, dict]:
    """(input version, the input's Delta identity, casts): the pinned or latest version, checked against the
    signature; the identity (table id, properties) is read once per run."""
    input_version = request.pinned_version
    if input_version is None:
        input_version = tables.version(spark, request.input_path)
    if input_version is None:
        raise NotFoundError(f"no Delta table at {request.input_path}")
    try:
        schema = tables.schema(spark, request.input_path, input_version)
    except Exception as exc:  # noqa: BLE001 - Delta's errors come through pyspark's converters
        if request.pinned_version is None or not (GONE.search(str(exc)[:4000]) or "TIME_TRAVEL" in str(exc)[:4000]):
            raise
        raise UsageError(f"version {input_version} of {request.input_path} cannot be read (removed by VACUUM or log "
                         "retention, or never written): pin a version that exists") from None
    casts = check_input(schema, model.inputs, request.keys)
    return input_version, tables.identity(spark, request.input_path), casts


def score(spark: SparkSession, settings: Settings, model_ref: str | ModelRef, input: str | TableRef,
          output: str | TableRef, keys: Sequence[str] | str, *, full: bool = False, include_features: bool = False,
          run_id: str | None = None, replace_output: bool = False, wait_s: float = 0.0, auto_full: bool = False,
          scorer: str = "auto") -> ScoreResult:
    """Score the rows of ``input`` (``PATH[@VERSION]``) not scored yet by ``model_ref`` into ``output``.

    The references may be strings (parsed here, errors naming ``--model``, ``--input``, ``--output``) or parsed
    :class:`~sparkship.refs.ModelRef` / :class:`~sparkship.refs.TableRef` values.

    Plan (what to score, every check), execute (pending row, output and quarantine commits), commit (the
    ``committed`` row), all under the output's lease; ``wait_s``: how long to wait for another run's lease.
    ``replace_output`` scores the whole input and replaces the output whatever model wrote it and whatever its
    columns; ``auto_full`` rescores in full an input without a Change Data Feed that changed by more than appends.
    ``scorer``: ``auto`` (the JVM-free scorer in ``mapInArrow`` when it supports every stage, else Spark's
    transform), ``spark`` or ``jvm-free`` (refused, naming the stage, for a model it cannot score).

    >>> r = score(spark, settings, "churn@champion", "/data/events@7", "/data/scores", "customer_id")  # doctest: +SKIP
    >>> (r.model_version, r.input_version, r.rows_in)                                                # doctest: +SKIP
    (3, 7, 1200)
    """
    request = make_request(to_table_ref(input, what="--input"), to_table_ref(output, what="--output"), keys,
                           run_id=run_id, full=full, include_features=include_features,
                           replace_output=replace_output, auto_full=auto_full)
    model = load_scoring_model(settings, to_model_ref(model_ref), scorer)
    input_version, identity, casts = resolve_input(spark, request, model)
    state = ScoringState(request.state_path)
    # A first plan before the lease, so that bad input fails before anything (the lease included) is written;
    # the plan that counts is made again under the lease (reusing the first one's rows when the range is the same).
    scored_at = datetime.now(timezone.utc)
    first = plan_run(spark, request, model, state, input_version, casts, identity)
    frames = None if first.nothing_new else build_frames(spark, request, model, first, scored_at=scored_at)
    if frames is not None:
        check_targets(spark, request, first, frames)
    lease = RunLease(request.lease_path, request.run_id,
                     ended=lambda holder: state.committed_since(holder.run_id, holder.at))  # type: ignore[arg-type]
    with lease.hold(wait_s):
        plan = plan_run(spark, request, model, state, input_version, casts, identity, previous=first)
        if plan.nothing_new:
            log.info("%s has no versions after %d: nothing to score", request.input_path, plan.from_version)
            return _result(request, model, plan, Written(
                output_version=plan.output_start if plan.output_exists else None, rows_in=0, scored=0, quarantined=0,
                quarantine_version=plan.quarantine_start if plan.quarantine_exists else None))
        _log_plan(request, model, plan)
        if frames is None or not plan.same_range(first):
            frames = build_frames(spark, request, model, plan, scored_at=scored_at)
        check_targets(spark, request, plan, frames)
        pending, pending_version, written = execute(spark, request, model, plan, frames, state, lease)
        commit(state, pending, pending_version, written, lease)
    log.info(
        "%s: rows_in %d = scored %d + quarantined %d (%d keys deleted); %s is at version %s (input version %d); "
        "scorer %s", model.version.ref, written.rows_in, written.scored, written.quarantined, plan.deleted,
        request.output_path, written.output_version, plan.input_version, model.scorer,
    )
    return _result(request, model, plan, written)
