"""Scoring Delta tables with a registered model: batch (incremental, exactly once) and streaming.

The package re-exports its public names; see :mod:`sparkship.scoring.job` (batch runs),
:mod:`sparkship.scoring.stream` (Structured Streaming), :mod:`sparkship.scoring.plan` (what a run scores) and
docs/DESIGN.md for the state, the lease and the output's layout.
"""
from sparkship.scoring.job import ScoreResult, score
from sparkship.scoring.plan import VacuumedInputError
from sparkship.scoring.request import BATCH_COLUMN, OUTPUT_COLUMNS, REASON_COLUMN
from sparkship.scoring.rules import check_input, quarantine_rules
from sparkship.scoring.stream import StreamResult, score_stream

__all__ = [
    "score", "score_stream", "ScoreResult", "StreamResult", "check_input", "quarantine_rules", "BATCH_COLUMN",
    "OUTPUT_COLUMNS", "REASON_COLUMN", "VacuumedInputError",
]
