"""Planning a scoring run: which input versions it scores, how, and every check that can refuse it; nothing written.

A run is one of four kinds (:attr:`ScoringPlan.mode`): ``whole``, ``changes`` (from the input's Change Data Feed),
``appends`` (into the run's own ``scoring_batch`` partition) or ``nothing``; when each applies: docs/DESIGN.md
(Scoring). The range's rows are read once here, so that vacuumed versions, a re-created input and keys that do
not identify a row are refused before any state row is written.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sparkship import tables
from sparkship.errors import SparkshipError, UsageError
from sparkship.scoring.request import ScoringModel, ScoringRequest, log
from sparkship.scoring_state import ScoringState, StateRow
from sparkship.tables.changes import DELETED, TIES, net_changes

# pyspark is an optional dependency (the `local` extra; Databricks ships its own): functions import it where used.
if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

WHOLE, CHANGES, APPENDS, NOTHING = "whole", "changes", "appends", "nothing"
ENABLE_CDF = "ALTER TABLE {table} SET TBLPROPERTIES (delta.enableChangeDataFeed = true)"
GONE = re.compile(r"FileNotFound|No such file|FAILED_READ_FILE|DELTA_FILE_NOT_FOUND|DELTA_CHANGE_DATA_FILE_NOT_FOUND|"
                   r"does not exist|VersionNotFound|DELTA_VERSIONS_NOT_CONTIGUOUS|DELTA_NO_COMMITS_FOUND|"
                   r"DELTA_LOG_FILE_NOT_FOUND|DELTA_STATE_RECOVER_ERROR|NotFound")


class VacuumedInputError(UsageError):
    """Input versions a run needs are gone (VACUUM removed their files, or log retention their commits)."""


@dataclass(frozen=True, kw_only=True)
class ScoringPlan:
    """What a run scores and how (see the module docstring); read from the state and the tables."""

    mode: str
    input_version: int
    input_id: str
    from_version: int  # exclusive; -1: the whole snapshot
    casts: dict[str, str]
    healed: bool  # redoes the range of a run that died
    dead_run: str | None
    previous_model_version: int | None
    output_start: int  # the output's version when planned, -1: no output yet
    quarantine_start: int
    state_version: int
    next_seq: int  # of the state table: the pending row's, appended compare-and-set against state_version
    source: DataFrame | None = None  # the range's rows: appended rows, or net changes (with DELETED)
    rows_in: int | None = None  # rows to score (appends, or upserted keys); None for whole runs until counted
    deleted: int = 0  # keys the range deleted (changes)
    stream_batch: int | None = None  # a streaming run's micro-batch id: its scoring_batch

    @property
    def whole(self) -> bool:
        return self.mode == WHOLE

    @property
    def batch(self) -> int:
        """The ``scoring_batch`` of the rows written: the range's first version (a stream's micro-batch id)."""
        return self.from_version + 1 if self.stream_batch is None else self.stream_batch

    @property
    def nothing_new(self) -> bool:
        return self.mode == NOTHING

    @property
    def output_exists(self) -> bool:
        return self.output_start >= 0

    @property
    def quarantine_exists(self) -> bool:
        return self.quarantine_start >= 0

    def same_range(self, other: ScoringPlan) -> bool:
        return (self.mode, self.from_version, self.input_version) == (other.mode, other.from_version,
                                                                      other.input_version)


def check_owner(request: ScoringRequest, model_name: str, owner: StateRow | None, output_exists: bool) -> None:
    """Refuse to replace an output that another model (or another input) wrote, or that no scoring run wrote."""
    if not output_exists:
        return
    if owner is None:
        raise UsageError(
            f"{request.output_path} exists but has no scoring state in {request.state_path}, so it was not "
            "written by `sparkship score`: choose another --output, or pass --replace-output to replace it"
        )
    if (owner.model_name, owner.input_path) != (model_name, request.input_path):
        raise UsageError(
            f"{request.output_path} holds the scores of model '{owner.model_name}' (input {owner.input_path}, "
            f"run {owner.run_id}); scoring '{model_name}' from {request.input_path} into it would replace them: "
            "choose another --output, or pass --replace-output to replace them"
        )


def _check_history(request: ScoringRequest, last: StateRow, input_version: int, input_id: str,
                   output_exists: bool) -> None:
    if last.input_table_id and last.input_table_id != input_id:
        raise UsageError(
            f"{request.input_path} was dropped and re-created since the last run (Delta table id "
            f"{last.input_table_id}, now {input_id}), so its versions no longer continue the scored ones: pass "
            "--full to rescore it in full"
        )
    if last.input_version > input_version:
        raise UsageError(
            f"{request.input_path} was already scored up to version {last.input_version}; version {input_version} "
            "is older: pass --full to rescore the output from that version"
        )
    if not output_exists:
        raise SparkshipError(
            f"the scoring state says {request.input_path} was scored up to version {last.input_version}, but the "
            f"output {request.output_path} is gone: pass --full to rescore the whole input"
        )


def plan_run(spark: SparkSession, request: ScoringRequest, model: ScoringModel, state: ScoringState,
             input_version: int, casts: dict[str, str], identity: tables.TableIdentity,
             previous: ScoringPlan | None = None) -> ScoringPlan:
    """Decide the range and the kind of run from the state table and the tables' versions; write nothing.

    ``previous``: a plan made earlier in this run; its rows are reused when the range is the same.
    """
    name = model.version.name
    latest = state.latest(name, request.input_path, request.output_path)
    output_start = tables.version(spark, request.output_path)
    quarantine_start = tables.version(spark, request.quarantine_path)
    if not request.replace_output:
        check_owner(request, name, latest.owner, output_start is not None)
    last, unfinished = latest.committed, latest.unfinished
    plan = ScoringPlan(
        mode=WHOLE, input_version=input_version, input_id=identity.id, from_version=-1, casts=casts,
        healed=unfinished is not None, dead_run=unfinished.run_id if unfinished is not None else None,
        previous_model_version=last.model_version if last is not None else None,
        output_start=-1 if output_start is None else output_start,
        quarantine_start=-1 if quarantine_start is None else quarantine_start, state_version=latest.table_version,
        next_seq=latest.next_seq,
    )
    if request.full or request.replace_output or last is None or (unfinished is not None and unfinished.full):
        return plan
    if last.input_version < 0:  # an appends-only stream records no input version: nothing to continue from
        log.warning("%s was last written by a stream that records no input version: rescoring in full",
                    request.output_path)
        return plan
    _check_history(request, last, input_version, identity.id, output_start is not None)
    plan = replace(plan, from_version=last.input_version)
    if plan.from_version == input_version and unfinished is None:
        return replace(plan, mode=NOTHING, rows_in=0)
    if previous is not None and previous.same_range(replace(plan, mode=previous.mode)) and previous.mode != WHOLE:
        return replace(plan, mode=previous.mode, source=previous.source, rows_in=previous.rows_in,
                       deleted=previous.deleted)
    return _incremental(spark, request, model, plan, identity.change_feed)


def _incremental(spark: SparkSession, request: ScoringRequest, model: ScoringModel, plan: ScoringPlan,
                 change_feed: bool) -> ScoringPlan:
    """The range's rows: the Change Data Feed where the input has it, else appends judged commit by commit."""
    path, first, last = request.input_path, plan.from_version, plan.input_version
    if change_feed:
        try:
            feed = tables.change_feed(spark, path, first, last)
        except tables.ChangeFeedUnavailableError as exc:
            log.info("%s: reading appends commit by commit (%s)", path, exc)
        else:
            return _counted_changes(request, replace(plan, mode=CHANGES), net_changes(feed, request.keys))
    try:
        rows = tables.added_rows(spark, path, first, last)
    except tables.NotAppendOnlyError as exc:
        if request.auto_full:
            log.warning("%s; --auto-full: rescoring the whole input", exc)
            return replace(plan, mode=WHOLE, from_version=-1)
        raise UsageError(
            f"cannot score {path} incrementally: {exc}, and it has no Change Data Feed. Pass --full to rescore it "
            f"(or --auto-full to do so whenever this happens), or turn the feed on so that such runs stay "
            f"incremental: {ENABLE_CDF.format(table=_sql_name(path))}"
        ) from None
    except SparkshipError:
        raise
    except Exception as exc:  # noqa: BLE001 - Delta's errors come through pyspark's converters
        _raise_if_gone(request, plan, exc)
        raise
    return replace(plan, mode=APPENDS, source=rows, rows_in=_probe(request, plan, rows.count))


def _materialized(frame: DataFrame) -> DataFrame:
    """``frame`` computed once and kept by the executors (the run reads its rows four times), where the session
    allows it; else ``frame`` as it is."""
    try:
        return frame.localCheckpoint(eager=True)
    except Exception as exc:  # noqa: BLE001 - some Spark Connect servers refuse checkpoints
        if _is_gone(exc):
            raise
        log.info("the changes are not materialized (%s): they are read again by each step", str(exc)[:200])
        return frame


def _counted_changes(request: ScoringRequest, plan: ScoringPlan, net: DataFrame) -> ScoringPlan:
    from pyspark.sql import functions as F

    net = _probe(request, plan, lambda: _materialized(net))
    def totals():  # noqa: ANN202 - one Spark job: what the run will upsert and delete, and duplicate keys
        return net.agg(
            F.count(F.when(~F.col(DELETED), 1)).alias("upserts"), F.count(F.when(F.col(DELETED), 1)).alias("deletes"),
            F.count(F.when(~F.col(DELETED) & (F.col(TIES) > 1), 1)).alias("dupes"),
        ).first()

    found = _probe(request, plan, totals)
    if found["dupes"]:
        raise UsageError(
            f"--keys {','.join(request.keys)} do not identify a row of {request.input_path}: {found['dupes']} rows "
            f"changed in versions {plan.from_version + 1}..{plan.input_version} share their key with another row of "
            "the same version. Upserts need unique keys: choose key columns that identify a row"
        )
    return replace(plan, source=net, rows_in=int(found["upserts"]), deleted=int(found["deletes"]))


def _probe(request: ScoringRequest, plan: ScoringPlan, action):  # noqa: ANN001, ANN202
    """Run ``action`` (reads the range's files); a range whose files or commits are gone is refused."""
    try:
        return action()
    except Exception as exc:  # noqa: BLE001 - a missing file reaches Python as a Spark or Python worker error
        _raise_if_gone(request, plan, exc)
        raise


def _is_gone(exc: BaseException) -> bool:
    return not isinstance(exc, SparkshipError) and GONE.search(str(exc)[:4000]) is not None


def _raise_if_gone(request: ScoringRequest, plan: ScoringPlan, exc: BaseException) -> None:
    if not _is_gone(exc):
        return
    raise VacuumedInputError(
        f"cannot score {request.input_path} incrementally: versions {plan.from_version + 1}..{plan.input_version} "
        "are no longer readable (VACUUM removed their files, or log retention their commits). Pass --full to "
        "rescore the current snapshot"
    ) from None


def _sql_name(path: str) -> str:
    return path if tables.is_table_name(path) else f"delta.`{path}`"
