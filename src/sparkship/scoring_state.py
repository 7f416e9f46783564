"""The scoring state table: which input versions a (model, input, output) triple has scored.

A small Delta table (``<output>_state``) read and written with Arrow. Each run appends a ``pending`` row before it
writes anything and a ``committed`` row after its output commit: the latest ``committed`` row says where the next
incremental run starts, and a newer ``pending`` row marks a run that died, which the next run redoes. Read and
written under the output's lease (:mod:`sparkship.scoring_lease`); the rows and the healing: docs/DESIGN.md.

    >>> state = ScoringState("/tmp/scores_state")                            # doctest: +SKIP
    >>> state.latest("churn", "/data/events", "/tmp/scores").committed        # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from sparkship.tables import metadata

PENDING = "pending"
COMMITTED = "committed"

STATE_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("model_name", pa.string()),
        ("input_path", pa.string()),
        ("output_path", pa.string()),
        ("status", pa.string()),
        ("full", pa.bool_()),
        ("from_version", pa.int64()),
        ("input_version", pa.int64()),
        ("scoring_batch", pa.int64()),
        ("model_version", pa.int64()),
        ("run_id", pa.string()),
        ("output_version", pa.int64()),
        ("rows_in", pa.int64()),
        ("scored", pa.int64()),
        ("quarantined", pa.int64()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("input_table_id", pa.string()),
        ("mode", pa.string()),
        ("deleted", pa.int64()),
    ]
)
# Columns a state table written before they existed lacks: rows read from it have None there, and rows appended
# to it leave them out.
_ADDED_COLUMNS = ("input_table_id", "mode", "deleted")


@dataclass(frozen=True)
class StateRow:
    """One row of the state table."""

    seq: int
    model_name: str
    input_path: str
    output_path: str
    status: str
    full: bool
    from_version: int
    input_version: int
    scoring_batch: int
    model_version: int
    run_id: str
    output_version: int | None = None
    rows_in: int | None = None
    scored: int | None = None
    quarantined: int | None = None
    at: datetime | None = None
    input_table_id: str | None = None  # the input's Delta table id: a re-created input gets another
    mode: str | None = None  # whole | changes | appends | stream
    deleted: int | None = None  # keys the run deleted from the output (changes)


@dataclass(frozen=True)
class Latest:
    """The newest committed row and, when the run after it did not finish, its pending row."""

    committed: StateRow | None
    unfinished: StateRow | None
    table_version: int  # -1 when the state table does not exist yet
    owner: StateRow | None = None  # the newest row of the output, whatever its model and input
    next_seq: int = 1  # the ``seq`` of the next row appended to the table


class ScoringState:
    """The state table at ``path`` (one per output table)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._columns: set[str] | None = None  # of the table as latest() read it

    def latest(self, model_name: str, input_path: str, output_path: str) -> Latest:
        version = metadata.table_version(self.path)
        if version is None:
            return Latest(None, None, -1)
        table = metadata.read_arrow(self.path, version=version)
        self._columns = set(table.schema.names)
        every = table.to_pylist()
        of_output = sorted((StateRow(**r) for r in every if r["output_path"] == output_path), key=lambda r: r.seq)
        rows = [r for r in of_output if (r.model_name, r.input_path) == (model_name, input_path)]
        committed = next((r for r in reversed(rows) if r.status == COMMITTED), None)
        newest = rows[-1] if rows else None
        unfinished = newest if newest is not None and newest.status == PENDING else None
        return Latest(committed, unfinished, version, of_output[-1] if of_output else None,
                      max((r["seq"] for r in every), default=0) + 1)

    def append(self, row: StateRow, expected_version: int | None = None) -> int:
        """Append one row (``seq`` is the caller's); compare-and-set on the table when ``expected_version``."""
        record: dict[str, Any] = {**row.__dict__, "at": row.at or datetime.now(timezone.utc)}
        rows = pa.Table.from_pylist([record], schema=STATE_SCHEMA)
        if self._columns is not None and not set(_ADDED_COLUMNS) <= self._columns:
            rows = rows.drop_columns([c for c in _ADDED_COLUMNS if c not in self._columns])
        return metadata.append_arrow(self.path, rows, expected_version=expected_version)

    def committed_since(self, run_id: str, since: datetime) -> bool:
        """True when run ``run_id`` appended a ``committed`` row at or after ``since``: its lease ended with it."""
        if metadata.table_version(self.path) is None:
            return False
        rows = metadata.read_arrow(self.path, columns=["run_id", "status", "at"]).to_pylist()
        return any(r["run_id"] == run_id and r["status"] == COMMITTED and r["at"] >= since for r in rows)

    def next_seq(self) -> int:
        if metadata.table_version(self.path) is None:
            return 1
        seqs = metadata.read_arrow(self.path, columns=["seq"]).column("seq").to_pylist()
        return max(seqs, default=0) + 1
