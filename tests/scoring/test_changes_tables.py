"""Incremental scoring on inputs of other kinds than test_changes.py's: with deletion vectors (and outputs that get
them by default), without the Change Data Feed, vacuumed or re-created, and read by streaming runs. After each
incremental run the output equals a full scoring of the input's current rows; what cannot be followed is refused
in one line that names the remedy, before anything is written."""
from __future__ import annotations

import os
import shutil

import pytest
from deltalake import DeltaTable

from sparkship import scoring, tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.errors import UsageError
from sparkship.tables import use_engine
from tests.helpers.changes import apply_change, assert_output_is_full_scoring, initial_scoring, make_input, naming
from tests.helpers.scoring import INPUT_SCHEMA, MODEL, make_rows, register

pytestmark = pytest.mark.seconds(110)


@pytest.fixture(scope="module")
def initial(spark, fitted):
    """The full scoring of make_input's rows."""
    return initial_scoring(spark, fitted)


def test_deletion_vectors_on_the_native_engine(spark, fitted, settings, tmp_path):
    """One input with deletion vectors goes through a DELETE, an UPDATE, a MERGE and an OPTIMIZE: after each, an
    incremental run and an output that equals a full scoring of the input's current rows."""
    use_engine(spark, "native")
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    make_input(spark, src, "native", dv=True)
    scoring.score(spark, settings, MODEL, src, out, ["id"])
    for change in ["delete", "update", "merge", "optimize"]:
        with naming(change, "native"):
            apply_change(spark, src, "native", change)
            assert "deletionVectors" in (tables.engine(spark).name and _reader_features(src))
            result = scoring.score(spark, settings, MODEL, src, out, ["id"])
            assert result.mode in ("changes", "nothing") and not result.full, (result.mode, result.full)
            assert_output_is_full_scoring(spark, fitted, src, out)


def test_with_deletion_vectors_on_by_default_outputs_have_them_and_metadata_tables_do_not(
        spark, fitted, tmp_path, home):
    """As on Databricks, where new tables get deletion vectors: the output's MERGEs mark rows instead of
    rewriting files, while the registry, state and lease tables (read with delta-rs) are created without them."""
    use_engine(spark, "native")
    default = "spark.databricks.delta.properties.defaults.enableDeletionVectors"
    spark.conf.set(default, "true")
    try:
        settings = Settings.resolve(home=home)
        register(spark, fitted, settings)
        src, out = str(tmp_path / "events"), str(tmp_path / "scores")
        make_input(spark, src, "native")
        scoring.score(spark, settings, MODEL, src, out, ["id"])
        apply_change(spark, src, "native", "update")
        assert scoring.score(spark, settings, MODEL, src, out, ["id"]).mode == "changes"
    finally:
        spark.conf.unset(default)
    assert_output_is_full_scoring(spark, fitted, src, out)
    assert "deletionVectors" in _reader_features(out)
    merges = [c["metrics"] for c in tables.history(spark, out) if c["operation"] == "MERGE"]
    assert any(int(v) > 0 for m in merges for k, v in m.items() if "DeletionVectorsAdded" in k), merges
    registry = [e.path for e in os.scandir(settings.registry_root) if os.path.isdir(os.path.join(e.path, "_delta_log"))]
    assert registry
    for meta in (out + "_state", out + "_lease", *registry):
        assert "deletionVectors" not in _reader_features(meta), meta


def _reader_features(path: str) -> list[str]:
    return list(DeltaTable(path).protocol().reader_features or [])


def test_without_the_change_feed_appends_and_compaction_stay_incremental_and_rewrites_are_refused(
        spark, fitted, settings, engine, tmp_path, capsys):
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    make_input(spark, src, engine, cdf=False, dv=engine == "native")
    scoring.score(spark, settings, MODEL, src, out, ["id"])
    apply_change(spark, src, engine, "append")
    apply_change(spark, src, engine, "optimize")  # a DELETE (refused below) then OPTIMIZE
    args = ["score", "--model", MODEL, "--input", src, "--output", out, "--keys", "id"]
    before = tables.version(spark, out)
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert "DELETE at version" in err[0] and "--full" in err[0] and "--auto-full" in err[0]
    assert "delta.enableChangeDataFeed = true" in err[0]
    assert tables.version(spark, out) == before
    assert main([*args, "--auto-full"]) == 0
    assert_output_is_full_scoring(spark, fitted, src, out)
    # Appends and compaction alone: incremental, the compacted rows are not scored again.
    tables.write(spark.createDataFrame(make_rows(20, 12, first_id=5000), INPUT_SCHEMA), src)
    if engine == "native":
        spark.sql(f"OPTIMIZE delta.`{src}`")
    else:
        DeltaTable(src).optimize.compact()
    result = scoring.score(spark, settings, MODEL, src, out, ["id"])
    assert (result.mode, result.rows_in) == ("appends", 20)
    assert_output_is_full_scoring(spark, fitted, src, out)


def test_a_recreated_or_vacuumed_input_is_refused_before_anything_is_written(spark, fitted, settings, tmp_path,
                                                                              capsys):
    use_engine(spark, "native")
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    make_input(spark, src, "native")
    scoring.score(spark, settings, MODEL, src, out, ["id"])
    args = ["score", "--model", MODEL, "--input", src, "--output", out, "--keys", "id"]
    state_before = tables.version(spark, out + "_state")
    # VACUUM after an UPDATE removes the change files that the next run needs.
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        spark.sql(f"UPDATE delta.`{src}` SET age = 1.0 WHERE id < 10")
        spark.sql(f"DELETE FROM delta.`{src}` WHERE id >= 190")
        spark.sql(f"VACUUM delta.`{src}` RETAIN 0 HOURS")
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "VACUUM" in err[0] and "--full" in err[0], err
    assert tables.version(spark, out + "_state") == state_before
    assert main([*args, "--full"]) == 0
    assert_output_is_full_scoring(spark, fitted, src, out)
    # Dropped and re-created: another Delta table id.
    shutil.rmtree(src)
    make_input(spark, src, "native")
    apply_change(spark, src, "native", "append")
    state_before = tables.version(spark, out + "_state")
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "re-created" in err[0] and "--full" in err[0], err
    assert tables.version(spark, out + "_state") == state_before
    with pytest.raises(UsageError, match="re-created"):
        scoring.score(spark, settings, MODEL, src, out, ["id"])


def test_the_deltars_engine_names_deletion_vectors_in_one_line(spark, settings, tmp_path, capsys, monkeypatch):
    use_engine(spark, "native")
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    make_input(spark, src, "native", dv=True)
    spark.sql(f"DELETE FROM delta.`{src}` WHERE id < 5")
    monkeypatch.setenv("SPARKSHIP_DELTA_ENGINE", "deltars")
    use_engine(spark, "deltars")
    try:
        assert main(["score", "--model", MODEL, "--input", src, "--output", out, "--keys", "id"]) != 0
    finally:
        use_engine(spark, "native")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deletionVectors" in err[0] and "deltars engine" in err[0], err
    assert not tables.exists(spark, out)


@pytest.mark.parametrize("cdf", [True, False], ids=["change_feed", "appends"])
def test_streaming_runs_upsert_each_micro_batch(spark, fitted, settings, initial, tmp_path, cdf):
    use_engine(spark, "native")
    src, out, ckpt = str(tmp_path / "events"), str(tmp_path / "scores"), str(tmp_path / "ckpt")
    make_input(spark, src, "native", cdf=cdf)
    first = scoring.score_stream(spark, settings, MODEL, src, out, ["id"], checkpoint=ckpt)
    assert (first.rows_in, first.scored, first.batches) == (200, 200, 1)
    assert_output_is_full_scoring(spark, fitted, src, out, expected=initial)
    changes = ["append", "update", "delete", "merge"] if cdf else ["append"]
    for change in changes:
        apply_change(spark, src, "native", change)
    second = scoring.score_stream(spark, settings, MODEL, src, out, ["id"], checkpoint=ckpt)
    assert second.batches >= 1
    assert_output_is_full_scoring(spark, fitted, src, out)
    third = scoring.score_stream(spark, settings, MODEL, src, out, ["id"], checkpoint=ckpt)  # nothing new
    assert third.batches == 0
