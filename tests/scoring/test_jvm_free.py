"""The scoring job's JVM-free path (the serving scorer in ``mapInArrow``) against Spark's ``transform``.

Every model class the JVM-free scorer supports (the estimator matrix of test_serving_models, plus logistic and
linear regression and the tree models it leaves out) is saved as a sparkship artifact and scored both ways on the
same rows (nulls and NaN included): predictions that are labels or cluster indices must be identical, other numbers
within 1e-9 (summation order differs). Then whole ``sparkship score`` runs (in-process CLI on the shared session)
with ``--scorer jvm-free`` and ``--scorer spark``, output and quarantine tables compared, on both Delta engines;
and the refusal of ``--scorer jvm-free`` for a model with a stage the scorer lacks.
"""
from __future__ import annotations

import json
import math
import os

import pytest
from chispa import assert_approx_df_equality, assert_df_equality

from sparkship import artifacts, tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.registry import Registry
from sparkship.scoring.arrow_scorer import ArrowScoring, score_frame
from sparkship.scoring.rules import prediction_cols
from tests.helpers.model_cases import CASES, Models, data, estimators, preps, signature  # noqa: F401 - fixtures
from tests.helpers.scoring import INPUT_SCHEMA, MODEL, make_rows, manifest_for, write_input

pytestmark = [pytest.mark.timeout(900), pytest.mark.seconds(140)]

TOL = 1e-9
# Predictions that are labels or cluster indices: identical. (Regressions, GLRs, AFT: within TOL.)
LABELS = ("nb_", "linear_svc", "mlp", "fm_classifier", "one_vs_rest", "kmeans", "bisecting", "gaussian", "cross",
          "logistic", "tree_classifier", "forest_classifier", "gbt_classifier")


def _linear_and_trees() -> dict[str, tuple[str, object]]:
    """The supported model classes that test_serving_models covers elsewhere: case -> (prep, estimator)."""
    from pyspark.ml.classification import (
        DecisionTreeClassifier,
        GBTClassifier,
        LogisticRegression,
        RandomForestClassifier,
    )
    from pyspark.ml.regression import DecisionTreeRegressor, GBTRegressor, LinearRegression, RandomForestRegressor

    return {
        "logistic_binomial": ("num", LogisticRegression(featuresCol="f", labelCol="label", maxIter=5)),
        "logistic_multinomial": ("num", LogisticRegression(featuresCol="f", labelCol="label3", maxIter=5)),
        "linear_regression": ("num", LinearRegression(featuresCol="f", labelCol="ypos", maxIter=5)),
        "tree_classifier": ("pos", DecisionTreeClassifier(featuresCol="f", labelCol="label3", maxDepth=4)),
        "forest_classifier": ("pos", RandomForestClassifier(featuresCol="f", labelCol="label", numTrees=8,
                                                            maxDepth=4, seed=1)),
        "gbt_classifier": ("pos", GBTClassifier(featuresCol="f", labelCol="label", maxIter=8, maxDepth=3, seed=1)),
        "tree_regressor": ("pos", DecisionTreeRegressor(featuresCol="f", labelCol="ypos", maxDepth=4)),
        "forest_regressor": ("pos", RandomForestRegressor(featuresCol="f", labelCol="ypos", numTrees=8, seed=1)),
        "gbt_regressor": ("pos", GBTRegressor(featuresCol="f", labelCol="ypos", maxIter=8, seed=1)),
    }


EXTRA = ["logistic_binomial", "logistic_multinomial", "linear_regression", "tree_classifier", "forest_classifier",
         "gbt_classifier", "tree_regressor", "forest_regressor", "gbt_regressor"]


class _Artifacts(Models):
    """test_serving_models' fitted cases (plus :func:`_linear_and_trees`), each saved as a sealed artifact whose
    manifest's signature is ``inputs``."""

    def __init__(self, preparations, root, inputs: list[dict[str, str]]) -> None:
        super().__init__(preparations, root)
        self.inputs = inputs

    def _estimator(self, name: str) -> tuple[str, object]:
        return _linear_and_trees()[name] if name in EXTRA else super()._estimator(name)

    def _save(self, name: str, prep_model, model) -> tuple[str, object]:
        folder = str(self.root / name)
        pipeline = self._write(name, prep_model, model, os.path.join(folder, artifacts.MODEL_DIR))
        artifacts.seal(folder, {"name": name, "signature": {"inputs": self.inputs}})
        return folder, pipeline


@pytest.fixture(scope="module")
def saved_artifacts(preps, signature, tmp_path_factory):  # noqa: F811 - pytest fixtures imported above
    return _Artifacts(preps, tmp_path_factory.mktemp("artifacts"), signature)


def test_extra_cases_are_listed(spark):
    assert list(_linear_and_trees()) == EXTRA and not set(EXTRA) & set(estimators())


ARROW_TYPES = {"bigint": "int64", "int": "int32", "double": "float64", "string": "string", "boolean": "bool"}


def _local(df, spark):
    """``df`` collected once and rebuilt from Arrow as a local DataFrame ordered by id, each array or vector
    element in a double column of its own (chispa compares arrays exactly; a local frame is compared without
    running ``df``'s plan again; Arrow keeps NaN and null apart)."""
    import pyarrow as pa
    from pyspark.ml.linalg import Vector

    rows = sorted(df.collect(), key=lambda r: (r["id"] is None, r["id"]))
    columns: dict[str, pa.Array] = {}
    for c, t in df.dtypes:
        if t not in ("vector", "array<double>"):
            columns[c] = pa.array([r[c] for r in rows], type=ARROW_TYPES[t])
            continue
        lists = [None if r[c] is None else (r[c].toArray().tolist() if isinstance(r[c], Vector) else list(r[c]))
                 for r in rows]
        for i in range(max((len(v) for v in lists if v is not None), default=0)):
            columns[f"{c}_{i}"] = pa.array([None if v is None or i >= len(v) else v[i] for v in lists], pa.float64())
    return spark.createDataFrame(pa.table(columns))


@pytest.mark.parametrize("name", CASES + EXTRA)
def test_arrow_scoring_matches_transform(name, spark, data, signature, saved_artifacts):  # noqa: F811 - fixtures
    """The job's mapInArrow function on a saved model gives transform's prediction (and probability)."""
    from pyspark.sql import functions as F

    folder, pipeline = saved_artifacts[name]
    prediction_col, probability_col = prediction_cols(pipeline)
    theirs = pipeline.transform(data)
    probability = probability_col if probability_col in theirs.columns else None
    fn = ArrowScoring.of(folder, artifacts.manifest_digest(folder), signature, prediction_col, probability)
    ours = score_frame(data.coalesce(1), fn)  # one Python worker loads the model (the rows keep their order)
    carried = [prediction_col] + ([probability] if probability else [])
    assert ours.columns == data.columns + carried  # the input's columns kept, as transform keeps them
    assert dict(ours.dtypes)[prediction_col] in ("double", dict(theirs.dtypes)[prediction_col])

    def carried_cols(df):
        return df.select("id", F.col(prediction_col).cast("double").alias(prediction_col),
                         *([F.col(probability)] if probability else []))

    got, expected = _local(carried_cols(ours), spark), _local(carried_cols(theirs), spark)
    assert got.count() == expected.count() == data.count()
    if name.startswith(LABELS):
        assert_df_equality(got.select("id", prediction_col), expected.select("id", prediction_col),
                           allow_nan_equality=True)
    assert_approx_df_equality(got, expected, TOL, allow_nan_equality=True)


# --- whole `sparkship score` runs --------------------------------------------------------------------------------


def _register(spark, model, home: str, name: str = MODEL) -> Settings:
    settings = Settings.resolve(home=home)
    staged = artifacts.stage(model, {**manifest_for(spark), "name": name}, settings.models_root)
    Registry(settings).register(name, staged)
    return settings


def _score(capsys, src: str, out: str, *flags: str, model: str = MODEL) -> dict:
    code = main(["score", "--model", model, "--input", src, "--output", out, "--keys", "id", "--run-id", "r",
                 "--json", *flags])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0, payload
    return payload


def _assert_same_tables(spark, path_a: str, path_b: str) -> None:
    """Two scoring outputs (or quarantines) hold the same rows; probabilities compared element-wise to 1e-9."""
    a, b = (tables.read(spark, p).drop("scored_at") for p in (path_a, path_b))
    assert a.dtypes == b.dtypes
    assert_approx_df_equality(_local(a, spark), _local(b, spark), TOL, allow_nan_equality=True)


BAD = [(None, 40.0, 10.0, "basic", "north"), (901, math.inf, 10.0, "basic", "north"),
       (902, 40.0, None, "basic", "north"), (903, 40.0, 10.0, "basic", "west")]
IMPUTED = [(904, None, 10.0, "basic", "north"), (905, math.nan, 10.0, "platinum", "south")]


def _run_both(spark, capsys, src: str, outs: dict[str, str], *flags: str) -> dict[str, dict]:
    runs = {scorer: _score(capsys, src, out, "--scorer", scorer, *flags) for scorer, out in outs.items()}
    assert {s: r["scorer"] for s, r in runs.items()} == {s: s for s in outs}
    counts = ("model_version", "mode", "full", "rows_in", "scored", "quarantined", "deleted", "input_version",
              "scoring_batch")
    assert {k: runs["spark"][k] for k in counts} == {k: runs["jvm-free"][k] for k in counts}
    _assert_same_tables(spark, *outs.values())
    if tables.exists(spark, outs["spark"] + "_quarantine"):
        _assert_same_tables(spark, *(o + "_quarantine" for o in outs.values()))
    return runs


def _outputs(tmp_path) -> dict[str, str]:
    return {"spark": str(tmp_path / "by_spark"), "jvm-free": str(tmp_path / "jvm_free")}


def test_score_runs_match_spark_whole_incremental_changes_and_full(spark, settings, tmp_path, capsys):
    src, outs = str(tmp_path / "events"), _outputs(tmp_path)
    write_input(spark, src, make_rows(60, 1))
    first = _run_both(spark, capsys, src, outs)
    assert (first["spark"]["mode"], first["spark"]["scored"]) == ("whole", 60)

    write_input(spark, src, make_rows(30, 2, first_id=100) + BAD + IMPUTED)  # an append: incremental
    second = _run_both(spark, capsys, src, outs)
    assert (second["spark"]["scored"], second["spark"]["quarantined"]) == (32, 4)

    write_input(spark, src, make_rows(50, 3) + BAD, mode="overwrite")  # rows changed: a change run
    third = _run_both(spark, capsys, src, outs)
    assert third["spark"]["mode"] == "changes" and third["spark"]["deleted"] > 0

    full = _run_both(spark, capsys, src, outs, "--full")
    assert full["spark"]["full"] is True and full["jvm-free"]["scored"] == 50

    auto = _score(capsys, src, str(tmp_path / "auto"))  # the default picks the JVM-free scorer for this model
    assert auto["scorer"] == "jvm-free"


def test_score_runs_match_spark_on_deltars(spark, settings, tmp_path, capsys, monkeypatch):
    before = tables.engine_for(spark)
    tables.use_engine(spark, "deltars")
    monkeypatch.setenv("SPARKSHIP_DELTA_ENGINE", "deltars")
    try:
        src, outs = str(tmp_path / "events"), _outputs(tmp_path)
        write_input(spark, src, make_rows(40, 5) + BAD)
        _run_both(spark, capsys, src, outs)
        # No bad row this time: the quarantine's MERGE changes nothing and still commits the run's write.
        write_input(spark, src, make_rows(20, 6, first_id=100) + IMPUTED)
        runs = _run_both(spark, capsys, src, outs)
        assert (runs["jvm-free"]["mode"], runs["jvm-free"]["scored"], runs["jvm-free"]["quarantined"]) == (
            "changes", 22, 0)
    finally:
        tables.use_engine(spark, before)


@pytest.fixture(scope="module")
def with_lsh(spark, fitted):
    """The churn pipeline with a stage the JVM-free scorer does not support (an LSH model) before its LR."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import BucketedRandomProjectionLSH

    stages = fitted.stages
    assembled = stages[-2].transform(PipelineModel(stages=stages[:-2]).transform(
        spark.createDataFrame(make_rows(50, 9), INPUT_SCHEMA)))
    lsh = BucketedRandomProjectionLSH(inputCol="features", outputCol="hashes", bucketLength=2.0, seed=1).fit(assembled)
    return PipelineModel(stages=[*stages[:-1], lsh, stages[-1]])


def test_jvm_free_refuses_a_model_it_cannot_score_and_auto_falls_back(spark, with_lsh, tmp_path, capsys,
                                                                      monkeypatch):
    home = str(tmp_path / "home")
    monkeypatch.setenv("SPARKSHIP_HOME", home)
    _register(spark, with_lsh, home, name="lsh")
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    write_input(spark, src, make_rows(20, 4))

    code = main(["score", "--model", "lsh", "--input", src, "--output", out, "--keys", "id", "--scorer", "jvm-free",
                 "--json"])
    error = json.loads(capsys.readouterr().out)
    assert code == 2 and error["type"] == "UsageError"
    assert "BucketedRandomProjectionLSHModel" in error["error"] and "--scorer spark" in error["error"]
    assert "\n" not in error["error"]
    assert not any(os.path.exists(out + s) for s in ("", "_state", "_quarantine", "_lease"))

    fallback = _score(capsys, src, out, model="lsh")
    assert fallback["scorer"] == "spark" and fallback["scored"] == 20
    spark_run = _score(capsys, src, str(tmp_path / "by_spark"), "--scorer", "spark", model="lsh")
    assert spark_run["scorer"] == "spark"
    _assert_same_tables(spark, out, str(tmp_path / "by_spark"))
