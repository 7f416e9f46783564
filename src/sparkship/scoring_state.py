"""The scoring state table: which input versions a (model, input, output) triple has scored.

A small Delta table (``<output>_state``) read and written with Arrow through delta-rs (no Spark job). Each
scoring run appends two rows for its (model name, input, output):

* ``pending`` before it writes anything: the range it is about to score (``from_version`` exclusive, -1 for the
  whole snapshot, to ``input_version`` inclusive) and whether it replaces the whole output (``full``);
* ``committed`` after the output commit: the same range, the output version and the row counts.

The latest ``committed`` row says where the next incremental run starts. A ``pending`` row newer than it
means the previous run died somewhere between the two: its output commit may or may not have landed. An
incremental run heals that by re-scoring the same range into the same ``scoring_batch`` partition (see
:mod:`sparkship.scoring`); a dead full run is redone in full.

    >>> state = ScoringState("/tmp/scores_state")                            # doctest: +SKIP
    >>> state.latest("churn", "/data/events", "/tmp/scores").committed        # doctest: +SKIP
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from sparkship.tables import metadata

log = logging.getLogger(__name__)

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
    ]
)


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


@dataclass(frozen=True)
class Latest:
    """The newest committed row and, when the run after it did not finish, its pending row."""

    committed: StateRow | None
    unfinished: StateRow | None
    table_version: int  # -1 when the state table does not exist yet


class ScoringState:
    """The state table at ``path`` (one per output table)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def latest(self, model_name: str, input_path: str, output_path: str) -> Latest:
        version = metadata.table_version(self.path)
        if version is None:
            return Latest(None, None, -1)
        rows = [
            StateRow(**r)
            for r in metadata.read_arrow(self.path, version=version).to_pylist()
            if (r["model_name"], r["input_path"], r["output_path"]) == (model_name, input_path, output_path)
        ]
        rows.sort(key=lambda r: r.seq)
        committed = next((r for r in reversed(rows) if r.status == COMMITTED), None)
        newest = rows[-1] if rows else None
        unfinished = newest if newest is not None and newest.status == PENDING else None
        return Latest(committed, unfinished, version)

    def append(self, row: StateRow, expected_version: int | None = None) -> int:
        """Append one row (``seq`` is the caller's); compare-and-set on the table when ``expected_version``."""
        record: dict[str, Any] = {**row.__dict__, "at": row.at or datetime.now(timezone.utc)}
        return metadata.append_arrow(
            self.path, pa.Table.from_pylist([record], schema=STATE_SCHEMA), expected_version=expected_version
        )

    def next_seq(self) -> int:
        if metadata.table_version(self.path) is None:
            return 1
        seqs = metadata.read_arrow(self.path, columns=["seq"]).column("seq").to_pylist()
        return max(seqs, default=0) + 1
