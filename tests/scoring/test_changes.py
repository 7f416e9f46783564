"""Incremental scoring on inputs that change as Databricks tables do: after each change and an incremental run,
the output equals a full scoring of the input's current rows (keys and predictions; run columns aside).

Inputs with deletion vectors or without the Change Data Feed, vacuumed or re-created inputs and streaming runs:
test_changes_tables.py.
"""
from __future__ import annotations

import pytest

from sparkship import scoring
from tests.helpers.changes import apply_change, assert_output_is_full_scoring, initial_scoring, make_input
from tests.helpers.scoring import MODEL

pytestmark = pytest.mark.seconds(220)

CHANGES = ["append", "delete", "update", "merge", "optimize", "add_column", "overwrite", "restore"]


@pytest.fixture(scope="module")
def initial(spark, fitted):
    """The full scoring of make_input's rows: where every case of the change matrix starts."""
    return initial_scoring(spark, fitted)


@pytest.mark.parametrize("change", CHANGES)
def test_each_change_to_an_input_with_the_change_feed_is_followed_incrementally(spark, fitted, settings, engine,
                                                                                  initial, tmp_path, change):
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    first = make_input(spark, src, engine)
    scoring.score(spark, settings, MODEL, src, out, ["id"])
    assert_output_is_full_scoring(spark, fitted, src, out, expected=initial)
    apply_change(spark, src, engine, change, first)
    result = scoring.score(spark, settings, MODEL, src, out, ["id"])
    assert result.mode in ("changes", "nothing") and not result.full
    assert_output_is_full_scoring(spark, fitted, src, out)
    again = scoring.score(spark, settings, MODEL, src, out, ["id"])  # nothing new: nothing written
    assert (again.mode, again.output_version) == ("nothing", result.output_version)
