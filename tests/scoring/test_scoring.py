"""Batch scoring on real Spark models, real Delta tables and the real registry."""
from __future__ import annotations

import json
import math
import os
from typing import Any

import pytest
from chispa import assert_df_equality

from sparkship import artifacts, scoring, tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.errors import SchemaMismatchError, UsageError
from sparkship.registry import Registry
from tests.helpers.reliability import commit_count
from tests.helpers.scoring import (
    INPUT_SCHEMA,
    MODEL,
    assert_same_scores,
    make_rows,
    manifest_for,
    register,
    write_input,
)

pytestmark = [pytest.mark.seconds(253), pytest.mark.quick]


@pytest.fixture(autouse=True)
def _on_both_engines(engine):
    """Every test here runs on delta-spark and on the delta-rs data source (conftest.engine)."""


def expected_scores(spark, model, rows: list[tuple[Any, ...]], version: str, run_id: str, input_version: int,
                    batch: int):
    """What the output must hold, computed straight from PipelineModel.transform."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    return (
        model.transform(spark.createDataFrame(rows, INPUT_SCHEMA))
        .select(
            "id",
            F.col("prediction"),
            vector_to_array("probability").cast("array<double>").alias("probability"),
            F.lit(MODEL).alias("model_name"),
            F.lit(version).alias("model_version"),
            F.lit(run_id).alias("run_id"),
            F.lit(input_version).cast("bigint").alias("input_version"),
            F.lit(batch).cast("bigint").alias("scoring_batch"),
        )
        .orderBy("id")
    )


def read_sorted(spark, path: str, drop: tuple[str, ...] = ("scored_at",)):
    return tables.read(spark, path).drop(*drop).orderBy("id")


def test_output_rows_match_pipeline_model_transform(spark, fitted, settings, tmp_path):
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    rows = make_rows(40, seed=7)
    v0 = write_input(spark, src, rows)

    result = scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="r1")

    assert (result.rows_in, result.scored, result.quarantined) == (40, 40, 0)
    assert (result.model, result.model_version, result.input_version, result.from_version) == (MODEL, 1, v0, -1)
    assert result.output_version == tables.version(spark, out)
    got = tables.read(spark, out)
    assert [f.name for f in got.schema.fields] == [
        "id", "prediction", "probability", "model_name", "model_version", "scored_at", "run_id", "input_version",
        "scoring_batch",
    ]
    assert got.schema["probability"].dataType.simpleString() == "array<double>"
    assert got.schema["scored_at"].dataType.simpleString() == "timestamp"
    assert got.select("scored_at").distinct().count() == 1
    assert_same_scores(read_sorted(spark, out), expected_scores(spark, fitted, rows, "1", "r1", v0, 0))
    assert not tables.exists(spark, out + "_quarantine")  # nothing to quarantine, no empty table either


def test_include_features_and_numeric_widening(spark, fitted, settings, tmp_path):
    """An int `age` is cast to the signature's double; --include-features copies the model's inputs."""
    from pyspark.sql import functions as F

    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    rows = [(i, int(a), t, p, r) for i, a, t, p, r in make_rows(30, seed=3)]
    write_input(spark, src, rows, schema="id long, age int, tenure double, plan string, region string")

    result = scoring.score(spark, settings, f"{MODEL}/1", src, out, "id", include_features=True, run_id="w")

    assert result.scored == 30
    as_double = [(i, float(a), t, p, r) for i, a, t, p, r in rows]
    expected = expected_scores(spark, fitted, as_double, "1", "w", 0, 0)
    features = spark.createDataFrame(as_double, INPUT_SCHEMA)
    expected = expected.join(features, "id").select(
        "id", "age", "tenure", "plan", "region", *[c for c in expected.columns if c != "id"]
    ).orderBy("id")
    got = read_sorted(spark, out)
    assert got.columns[:5] == ["id", "age", "tenure", "plan", "region"]
    assert dict(got.dtypes)["age"] == "double"
    assert_same_scores(got, expected)
    assert got.where(F.col("age").isNull()).count() == 0


def test_schema_mismatch_fails_before_anything_is_written(spark, settings, tmp_path):
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    write_input(
        spark, src, [(1, "forty", "north")], schema="customer long, age string, region string"
    )
    with pytest.raises(SchemaMismatchError) as info:
        scoring.score(spark, settings, MODEL, src, out, ["id"])
    message = str(info.value)
    assert "['id']" in message  # the missing key
    assert "tenure" in message and "plan" in message  # missing features
    assert "'age' is string, the model expects double" in message
    assert "region" not in message  # present, and of the right type
    assert not os.path.exists(out) and not os.path.exists(out + "_state") and not os.path.exists(out + "_quarantine")


@pytest.mark.slow
def test_incremental_rerun_model_change_and_full(spark, fitted, tmp_path):
    """In a home of its own: it registers a second version."""
    from pyspark.sql import functions as F

    settings = Settings.resolve(home=str(tmp_path / "home"))
    register(spark, fitted, settings)
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    first, second, third = make_rows(25, 11), make_rows(15, 12, first_id=100), make_rows(5, 13, first_id=200)
    write_input(spark, src, first)
    r1 = scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="a")

    v1 = write_input(spark, src, second)
    r2 = scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="b")
    assert (r2.rows_in, r2.scored, r2.from_version, r2.input_version, r2.scoring_batch) == (15, 15, 0, v1, 1)
    assert r2.output_version == r1.output_version + 1
    new_rows = read_sorted(spark, out).where(F.col("run_id") == "b")
    assert_same_scores(new_rows, expected_scores(spark, fitted, second, "1", "b", v1, 1))
    before = read_sorted(spark, out, drop=())
    assert before.count() == 40

    r3 = scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="c")  # nothing new
    assert (r3.rows_in, r3.output_version) == (0, r2.output_version)
    assert_df_equality(read_sorted(spark, out, drop=()), before, ignore_nullable=True)

    # A new model version: the new rows are scored by it, nothing is skipped or scored twice.
    assert register(spark, fitted, settings) == 2
    v2 = write_input(spark, src, third)
    r4 = scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="d")
    assert (r4.model_version, r4.model_version_changed, r4.previous_model_version, r4.rows_in) == (2, True, 1, 5)
    scores = tables.read(spark, out)
    assert scores.count() == 45 and scores.select("id").distinct().count() == 45
    by_version = {r["model_version"]: r["count"] for r in scores.groupBy("model_version").count().collect()}
    assert by_version == {"1": 40, "2": 5}

    # An overwrite of the input (it has the Change Data Feed, as every table sparkship creates): the next run
    # follows it incrementally, deleting the keys that are gone and rescoring the rewritten rows.
    v3 = write_input(spark, src, first + second, mode="overwrite")
    r5 = scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="e")
    assert (r5.mode, r5.rows_in, r5.deleted, r5.from_version, r5.scoring_batch) == ("changes", 40, 5, v2, v2 + 1)
    assert_same_scores(read_sorted(spark, out),
                       expected_scores(spark, fitted, first + second, "2", "e", v3, v2 + 1))
    r6 = scoring.score(spark, settings, MODEL, src, out, ["id"], full=True, run_id="f")
    assert (r6.full, r6.rows_in, r6.from_version, r6.scoring_batch) == (True, 40, -1, 0)
    assert_same_scores(
        read_sorted(spark, out),
        expected_scores(spark, fitted, first + second, "2", "f", r6.input_version, 0)
    )


def test_bad_rows_go_to_quarantine_with_reasons(spark, fitted, settings, tmp_path):
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    clean = make_rows(6, 21)
    bad = [
        (None, 40.0, 10.0, "basic", "north"),                      # null key
        (101, math.inf, 10.0, "basic", "north"),                   # infinite value
        (102, 40.0, None, "basic", "north"),                        # tenure is not imputed
        (103, 40.0, math.nan, "basic", "north"),                    # NaN tenure, not imputed either
        (104, 40.0, 10.0, "basic", "west"),                         # unseen region (StringIndexer "error")
        (105, 40.0, 10.0, "basic", None),                           # null region
        (None, -math.inf, None, "basic", "east"),                   # several rules at once
    ]
    scorable = [
        (201, None, 10.0, "basic", "north"),                        # null age is imputed
        (202, math.nan, 10.0, "basic", "south"),                    # NaN age is imputed too
        (203, 40.0, 10.0, "platinum", "north"),                     # unseen plan: StringIndexer "keep"
    ]
    write_input(spark, src, clean + bad + scorable)

    result = scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="q")

    assert (result.rows_in, result.scored, result.quarantined) == (16, 9, 7)
    assert result.rows_in == result.scored + result.quarantined
    scored_ids = sorted(r["id"] for r in tables.read(spark, out).select("id").collect())
    assert scored_ids == sorted([r[0] for r in clean] + [201, 202, 203])
    assert_same_scores(read_sorted(spark, out), expected_scores(spark, fitted, clean + scorable, "1", "q", 0, 0))
    q = tables.read(spark, out + "_quarantine")
    assert {f.name: f.dataType.simpleString() for f in q.schema.fields} == {
        "id": "bigint", "age": "string", "tenure": "string", "plan": "string", "region": "string",
        "reason": "string", "model_name": "string", "model_version": "string", "run_id": "string",
        "input_version": "bigint", "scoring_batch": "bigint",
    }
    reasons = {(r["id"], r["age"], r["region"]): r["reason"] for r in q.collect()}
    assert reasons == {
        (None, "40.0", "north"): "null key 'id'",
        (101, "Infinity", "north"): "infinite value in 'age'",
        (102, "40.0", "north"): "null in 'tenure', which the model does not impute",
        (103, "40.0", "north"): "NaN in 'tenure', which the model does not impute",
        (104, "40.0", "west"): "unseen category in 'region'",
        (105, "40.0", None): "null in 'region', which the model's StringIndexer rejects",
        (None, "-Infinity", "east"): "null key 'id'; infinite value in 'age'; null in 'tenure', which the model "
        "does not impute; unseen category in 'region'",
    }
    assert {r["run_id"] for r in q.collect()} == {"q"}


def test_cli_score_json_and_errors(spark, settings, tmp_path, capsys):
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    write_input(spark, src, make_rows(12, 31) + [(None, 1.0, 1.0, "basic", "north")])

    code = main(["score", "--model", f"{MODEL}/1", "--input", f"{src}@0", "--output", out, "--keys", "id",
                 "--run-id", "job-7", "--json"])

    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert {k: payload[k] for k in ("model", "model_version", "rows_in", "scored", "quarantined",
                                    "output_version", "input_version")} == {
        "model": MODEL, "model_version": 1, "rows_in": 13, "scored": 12, "quarantined": 1,
        "output_version": tables.version(spark, out), "input_version": 0,
    }
    assert tables.read(spark, out).select("run_id").distinct().collect()[0]["run_id"] == "job-7"

    code = main(["score", "--model", MODEL, "--input", src, "--output", str(tmp_path / "o2"), "--keys", "nope",
                 "--json"])
    assert code == 1
    error = json.loads(capsys.readouterr().out)
    assert error["type"] == "SchemaMismatchError" and "nope" in error["error"]
    assert not os.path.exists(str(tmp_path / "o2"))

    with pytest.raises(SystemExit) as help_exit:
        main(["score", "--help"])
    assert help_exit.value.code == 0 and "--include-features" in capsys.readouterr().out


# --- one output, one model ------------------------------------------------------------------------------------


def _register_as(spark, model, settings: Settings, name: str) -> int:
    staged = artifacts.stage(model, {**manifest_for(spark), "name": name}, settings.models_root)
    return Registry(settings).register(name, staged).version


def _untouched(spark, out: str):  # noqa: ANN202 - a snapshot of the three tables a run may write
    return tuple(commit_count(t) for t in (out, out + "_quarantine", out + "_state"))


@pytest.mark.slow
def test_another_models_scores_are_never_replaced_without_the_flag(spark, fitted, settings, tmp_path):
    from pyspark.sql import functions as F

    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    write_input(spark, src, make_rows(10, 41) + [(None, 1.0, 1.0, "basic", "north")])
    scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="mine")
    _register_as(spark, fitted, settings, "rival")
    before, snapshot = _untouched(spark, out), read_sorted(spark, out, drop=())

    for kwargs in ({}, {"full": True}):
        with pytest.raises(UsageError, match=f"holds the scores of model '{MODEL}'.*--replace-output"):
            scoring.score(spark, settings, "rival", src, out, ["id"], run_id="rival-1", **kwargs)
    assert _untouched(spark, out) == before
    assert_df_equality(read_sorted(spark, out, drop=()), snapshot, ignore_nullable=True)

    replaced = scoring.score(spark, settings, "rival", src, out, ["id"], run_id="rival-2", replace_output=True)
    assert (replaced.full, replaced.scored, replaced.quarantined) == (True, 10, 1)
    assert {r["model_name"] for r in tables.read(spark, out).select("model_name").collect()} == {"rival"}
    assert tables.read(spark, out + "_quarantine").where(F.col("model_name") == "rival").count() == 1
    # ...and now the first model is the one refused, its state notwithstanding.
    write_input(spark, src, make_rows(3, 42, first_id=500))
    with pytest.raises(UsageError, match="holds the scores of model 'rival'"):
        scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="mine-2")


def test_an_existing_table_no_scoring_run_wrote_is_not_replaced(spark, settings, tmp_path):
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    write_input(spark, src, make_rows(5, 43))
    write_input(spark, out, [(1, "precious")], schema="id long, note string")
    with pytest.raises(UsageError, match="no scoring state.*--replace-output"):
        scoring.score(spark, settings, MODEL, src, out, ["id"])
    assert tables.read(spark, out).collect()[0]["note"] == "precious"
    assert not os.path.exists(out + "_state") and not os.path.exists(out + "_lease")


@pytest.mark.slow
def test_a_run_whose_columns_differ_from_the_output_is_refused_naming_the_flag(spark, settings, tmp_path):
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    write_input(spark, src, make_rows(8, 44))
    scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="plain")
    before = _untouched(spark, out)
    write_input(spark, src, make_rows(4, 45, first_id=100))
    for kwargs in ({}, {"full": True}):
        with pytest.raises(SchemaMismatchError, match=r"unexpected columns \['age', 'tenure', 'plan', 'region'\]"
                                                      ".*--replace-output"):
            scoring.score(spark, settings, MODEL, src, out, ["id"], include_features=True, **kwargs)
    assert _untouched(spark, out) == before
    wide = scoring.score(spark, settings, MODEL, src, out, ["id"], include_features=True, replace_output=True)
    assert (wide.full, wide.scored) == (True, 12)
    assert {"age", "tenure", "plan", "region"} <= set(tables.read(spark, out).columns)


def test_counts_are_read_from_each_tables_own_commit(spark, settings, tmp_path):
    from pyspark.sql import functions as F

    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    rows = make_rows(20, 46) + [(None, 1.0, 1.0, "basic", "north"), (7000, 1.0, None, "pro", "south")]
    write_input(spark, src, rows)
    first = scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="c1")
    more = make_rows(9, 47, first_id=300) + [(7001, math.inf, 1.0, "plus", "north")]
    write_input(spark, src, more)
    second = scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="c2")
    for result, added in ((first, rows), (second, more)):
        q_rows = tables.read(spark, out + "_quarantine").where(F.col("run_id") == result.run_id).count()
        o_rows = tables.read(spark, out).where(F.col("run_id") == result.run_id).count()
        assert (result.rows_in, result.scored, result.quarantined) == (len(added), o_rows, q_rows)
        assert result.rows_in == result.scored + result.quarantined
    assert (first.quarantined, second.quarantined) == (2, 1)


# --- the run lease --------------------------------------------------------------------------------------------


def test_a_committed_run_ends_its_lease_without_a_release_commit(spark, settings, tmp_path):
    """The committed state row ends a run's lease (one lease commit per finished run, no release): the next run in
    this same process, whose pid is alive, takes the lease at once; a run with nothing to score releases it."""
    from sparkship.tables import metadata

    src, out = str(tmp_path / "events"), str(tmp_path / "scores")

    def actions() -> list[str]:  # renewals (every 20 s) are left out: a slow machine may add one
        rows = sorted(metadata.read_arrow(out + "_lease").to_pylist(), key=lambda r: r["seq"])
        return [(r["run_id"], r["action"]) for r in rows if r["action"] != "renewed"]

    write_input(spark, src, make_rows(10, 3))
    scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="one")
    assert actions() == [("one", "acquired")]
    write_input(spark, src, make_rows(5, 4, first_id=100))
    assert scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="two").rows_in == 5  # wait_s=0
    assert actions() == [("one", "acquired"), ("two", "acquired")]
    assert scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="three").rows_in == 0
    assert actions()[2:] == [("three", "acquired"), ("three", "released")]
