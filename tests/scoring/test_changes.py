"""Incremental scoring on inputs that change as Databricks tables do: after each change and an incremental run,
the output equals a full scoring of the input's current rows (keys and predictions; run columns aside).

Inputs with deletion vectors or without the Change Data Feed, vacuumed or re-created inputs and streaming runs:
test_changes_tables.py.
"""
from __future__ import annotations

import pytest

from sparkship import scoring
from tests.helpers.changes import apply_change, assert_output_is_full_scoring, initial_scoring, make_input, naming
from tests.helpers.scoring import MODEL

pytestmark = pytest.mark.seconds(100)

# One input goes through them in this order. The changes of the table's shape come last: the overwrite replaces
# every row (keys 50..199 with new values), the restore undoes its own DELETE (RESTORE to the version before it),
# and add_column leaves a column that the earlier changes' rows do not have.
CHANGES = ["append", "delete", "update", "merge", "optimize", "overwrite", "restore", "add_column"]


@pytest.fixture(scope="module")
def initial(spark, fitted):
    """The full scoring of make_input's rows: where each engine's chain of changes starts."""
    return initial_scoring(spark, fitted)


def test_each_change_to_an_input_with_the_change_feed_is_followed_incrementally(spark, fitted, settings, engine,
                                                                                  initial, tmp_path):
    """After each change: an incremental run (not a full one), an output that equals a full scoring of the input's
    current rows, and a run right after it that writes nothing."""
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    make_input(spark, src, engine)
    scoring.score(spark, settings, MODEL, src, out, ["id"])
    assert_output_is_full_scoring(spark, fitted, src, out, expected=initial)
    for change in CHANGES:
        with naming(change, engine):
            apply_change(spark, src, engine, change)
            result = scoring.score(spark, settings, MODEL, src, out, ["id"])
            assert result.mode in ("changes", "nothing") and not result.full, (result.mode, result.full)
            assert_output_is_full_scoring(spark, fitted, src, out)
            again = scoring.score(spark, settings, MODEL, src, out, ["id"])  # nothing new: nothing written
            assert (again.mode, again.output_version) == ("nothing", result.output_version)
