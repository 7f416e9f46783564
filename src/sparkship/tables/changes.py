"""What changed in a Delta table between two versions, read through Delta's own APIs (never its log by path).

Two sources, both engine-neutral here (the engines supply the reads):

* the **Change Data Feed**, when the table has it over the whole range: every row inserted, deleted or
  updated (``_change_type``), of which :func:`net_changes` keeps the last word per key;
* otherwise the table's **history**, judged commit by commit (:func:`judge`): appends are read from the files
  that consecutive append commits added; commits that change no data (OPTIMIZE, auto-compaction, predictive
  optimization, property and schema changes, VACUUM) are skipped; anything else (DELETE, UPDATE, MERGE that
  matched rows, overwrite, RESTORE, a deletion-vector rewrite) makes the range more than appends, and
  :class:`NotAppendOnlyError` names those commits.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sparkship.tables.engine import Commit, NotAppendOnlyError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

APPEND, NEUTRAL, CHANGE = "append", "neutral", "change"
CHANGE_TYPE, COMMIT_VERSION, COMMIT_TIMESTAMP = "_change_type", "_commit_version", "_commit_timestamp"
CDF_COLUMNS = (CHANGE_TYPE, COMMIT_VERSION, COMMIT_TIMESTAMP)
DELETED = "_sparkship_deleted"  # on net changes: True where the key's last change deleted it
TIES = "_sparkship_ties"  # on net changes: rows of the key's last change (> 1: the key is not unique)

# Operations that rewrite no row (dataChange=false, or metadata only). Matched upper-case.
_NEUTRAL_OPERATIONS = frozenset({
    "OPTIMIZE", "REORG", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES", "UNSET TBLPROPERTIES",
    "ADD COLUMNS", "CHANGE COLUMN", "CHANGE COLUMNS", "RENAME COLUMN", "UPGRADE PROTOCOL", "ADD CONSTRAINT",
    "DROP CONSTRAINT", "ADD FEATURE", "DROP FEATURE", "COMPUTE STATS", "ANALYZE", "CLUSTER BY",
    "ROW TRACKING BACKFILL", "ROW TRACKING UNBACKFILL", "UPDATE SCHEMA", "SET COLUMN COMMENT",
    "DOMAIN METADATA CLEANUP", "CREATE TABLE", "EMPTY COMMIT", "UPDATE COLUMN METADATA",
})
# Metrics (lower-cased, underscores dropped: delta-spark and delta-rs spell them differently) that count rows
# or files a commit took away; a DML commit with all of them 0 removed nothing.
_REMOVING_METRICS = (
    "numremovedfiles", "numdeletedrows", "numupdatedrows", "numtargetrowsupdated", "numtargetrowsdeleted",
    "numtargetrowsmatchedupdated", "numtargetrowsmatcheddeleted", "numtargetrowsnotmatchedbysourceupdated",
    "numtargetrowsnotmatchedbysourcedeleted", "numtargetfilesremoved", "numdeletionvectorsadded",
    "numtargetdeletionvectorsadded",
)
_DML = frozenset({"DELETE", "UPDATE", "MERGE"})
_APPEND_MODES = frozenset({"append"})


@dataclass(frozen=True)
class Judged:
    """One commit and what it did to the rows."""

    version: int
    operation: str
    kind: str  # APPEND | NEUTRAL | CHANGE


def _metrics(commit: Commit) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in commit.metrics.items():
        try:
            out[key.replace("_", "").lower()] = int(value)
        except (TypeError, ValueError):
            continue
    return out


def _mode(commit: Commit) -> str:
    value = commit.parameters.get("mode") or commit.parameters.get("outputMode") or ""
    return str(value).strip('"').lower()


def judge(commit: Commit) -> Judged:
    """Classify one commit from its history entry: an append, a commit that changes no row, or a change.

    >>> judge(Commit(3, 0, "WRITE", {"mode": "Append"}, {}, {})).kind
    'append'
    >>> judge(Commit(4, 0, "OPTIMIZE", {}, {"numRemovedFiles": "9"}, {})).kind
    'neutral'
    >>> judge(Commit(5, 0, "DELETE", {}, {"numDeletedRows": "10", "numDeletionVectorsAdded": "1"}, {})).kind
    'change'
    """
    operation = (commit.operation or "").upper()
    metrics = _metrics(commit)
    removed = any(metrics.get(m, 0) > 0 for m in _REMOVING_METRICS)
    if operation in _NEUTRAL_OPERATIONS:
        kind = NEUTRAL
    elif commit.blind_append or (operation in ("WRITE", "STREAMING UPDATE", "COPY INTO", "CREATE TABLE AS SELECT")
                                 and _mode(commit) in _APPEND_MODES):
        kind = APPEND
    elif operation in _DML and not removed and any(k in metrics for k in _REMOVING_METRICS):
        # A MERGE that only inserted (or a DELETE/UPDATE that matched nothing) took nothing away.
        inserted = metrics.get("numtargetrowsinserted", 0) + metrics.get("numaddedfiles", 0)
        kind = APPEND if operation == "MERGE" and inserted > 0 else NEUTRAL
    else:
        kind = CHANGE
    return Judged(commit.version, operation or "?", kind)


def judge_range(table: str, history: Iterable[Commit], after_version: int, up_to_version: int) -> list[list[int]]:
    """Runs of consecutive append commits in ``(after_version, up_to_version]``, as ``[first, last]`` pairs.

    Raises :class:`NotAppendOnlyError` naming the commits that changed rows otherwise, or when the history does
    not reach back to ``after_version + 1`` (its log was cleaned up).
    """
    judged = sorted((judge(c) for c in history if after_version < c.version <= up_to_version),
                    key=lambda j: j.version)
    found = [j.version for j in judged]
    if found != list(range(after_version + 1, up_to_version + 1)):
        missing = sorted(set(range(after_version + 1, up_to_version + 1)) - set(found))
        raise NotAppendOnlyError(
            f"{table}: the history of versions {missing[:3]}{'...' if len(missing) > 3 else ''} is gone (log "
            "retention), so what changed since the last run cannot be told"
        )
    changes = [j for j in judged if j.kind == CHANGE]
    if changes:
        shown = ", ".join(f"{j.operation} at version {j.version}" for j in changes[:3])
        more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
        raise NotAppendOnlyError(f"{table} changed by more than appends after version {after_version}: {shown}{more}")
    runs: list[list[int]] = []
    for j in judged:
        if j.kind != APPEND:
            continue
        if runs and runs[-1][1] == j.version - 1:
            runs[-1][1] = j.version
        else:
            runs.append([j.version, j.version])
    return runs


def net_changes(feed: DataFrame, keys: Sequence[str]) -> DataFrame:
    """The last change of each key in a Change Data Feed: its newest post-image, or its deletion.

    Pre-images are dropped; within one commit a key's insert or post-image wins over its delete (an overwrite
    deletes and inserts in one commit). Rows with a null key are kept one by one. The result has the table's
    columns, :data:`DELETED` and :data:`TIES`.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # A row with a null key is no key's row: each stays on its own.
    any_null = F.lit(False)
    for k in keys:
        any_null = any_null | F.col(f"`{k}`").isNull()
    key_cols = [F.col(f"`{k}`") for k in keys] + [F.col("_sparkship_row")]
    rows = (feed.where(F.col(CHANGE_TYPE) != "update_preimage").withColumn(DELETED, F.col(CHANGE_TYPE) == "delete")
            .withColumn("_sparkship_row", F.when(any_null, F.monotonically_increasing_id())))
    newest = Window.partitionBy(*key_cols).orderBy(F.col(COMMIT_VERSION).desc(), F.col(DELETED).asc())
    same = Window.partitionBy(*key_cols, F.col(COMMIT_VERSION), F.col(DELETED))
    ranked = rows.withColumn("_sparkship_rank", F.row_number().over(newest)).withColumn(TIES, F.count("*").over(same))
    columns = [c for c in feed.columns if c not in CDF_COLUMNS]
    return ranked.where(F.col("_sparkship_rank") == 1).select(*[f"`{c}`" for c in columns], DELETED, TIES)


__all__ = ["judge", "judge_range", "net_changes", "Judged", "NotAppendOnlyError"]
