"""Models fitted with xgboost's Spark estimators (``xgboost.spark``, the ``xgboost`` extra): registered through the
CLI and the API, scored by `sparkship score` (equal to the loaded model's transform), and served without a JVM
through xgboost's Booster (equal to transform: labels exactly, probabilities within float32's reach).

xgboost.spark trains in a barrier stage: one worker on the local session, a few hundred rows, ten trees."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from chispa import assert_approx_df_equality

import sparkship
from sparkship import tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from tests.helpers.registering import BINARY, MULTICLASS, SCHEMA, loose, make_rows

pytestmark = pytest.mark.seconds(200)

pytest.importorskip("xgboost.spark", reason="the xgboost extra: pip install 'sparkship[xgboost]'")

REGRESSION = ["mae", "r2", "rmse"]
# xgboost predicts in float32 and xgboost.spark widens its float32 outputs to double, as the JVM-free scorer does
# with the same booster call and the same float32 functions: the outputs agree bit for bit (measured: 0.0). The
# bound leaves room for a float32 ulp should a future xgboost order its float32 sums differently.
FLOAT32_TOLERANCE = 1e-6
XGB = {"num_workers": 1, "n_estimators": 10, "max_depth": 3}


@pytest.fixture(scope="module")
def data(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("xgboost")
    table = str(root / "table")
    tables.write(spark.createDataFrame(make_rows(200, 3), SCHEMA), table, mode="overwrite")
    df = tables.read(spark, table).cache()  # fitted on and transformed by every test
    yield {"root": root, "table": table, "df": df}
    df.unpersist()


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return Settings.resolve(home=str(tmp_path_factory.mktemp("xgboost-home")))


@pytest.fixture(scope="module")
def classifier(data):
    """A binary classifier over two scalar columns (``features_cols``), saved with ``write().save()``."""
    from xgboost.spark import SparkXGBClassifier

    model = SparkXGBClassifier(features_col=["x1", "x2"], label_col="y", **XGB).fit(data["df"])
    folder = str(data["root"] / "classifier")
    model.write().save(folder)
    return model, folder


def _cli(settings: Settings, *args: str) -> int:
    return main(["--home", settings.home, *args])


def _cli_json(settings: Settings, capsys, *args: str) -> dict:
    capsys.readouterr()
    assert _cli(settings, *args, "--json") == 0
    return json.loads(capsys.readouterr().out)


def _outputs(df, task: str):
    """The outputs scoring writes, by id: prediction, and a classifier's probability as an array."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    cols = [F.col("id"), F.col("prediction").cast("double").alias("prediction")]
    if task == "classification":
        cols.append(vector_to_array("probability").alias("probability"))
    return df.select(*cols).orderBy("id")


def _scored_equals_transform(spark, settings: Settings, ref: str, transformed, data, name: str, task: str,
                             scorer: str = "spark") -> None:
    """`sparkship score --scorer SCORER` of the table equals the model's own transform of it (``transformed``)."""
    scores = str(data["root"] / f"scores_{name}_{scorer}")
    assert _cli(settings, "score", "--model", ref, "--input", data["table"], "--output", scores, "--keys", "id",
                "--scorer", scorer) == 0
    expected = _outputs(transformed, task)
    got = tables.read(spark, scores).select(*expected.columns).orderBy("id")
    assert got.count() == 200
    assert_approx_df_equality(loose(got), loose(expected), 1e-12)


def _jvm_free_matches_transform(settings: Settings, ref: str, transformed, inputs: list[str]) -> float:
    """The JVM-free scorer's outputs for every row against transform's: labels equal, the largest difference of
    the real-valued outputs returned."""
    from pyspark.ml.functions import vector_to_array

    outs = [c for c in ("prediction", "probability", "rawPrediction") if c in transformed.columns]
    want = transformed.orderBy("id").select(
        "id", *inputs, *[vector_to_array(c).alias(c) if c != "prediction" else c for c in outs]).collect()
    records = [{c: r[c] for c in inputs} for r in want]
    scorer = sparkship.scorer(ref, settings=settings)
    got = scorer.score(records, columns=outs).records()
    assert len(got) == len(want) == 200
    assert [scorer.score_one(r, columns=outs) for r in records[:5]] == got[:5]  # the row path: the same values
    worst = 0.0
    for g, w in zip(got, want):
        assert g is not None and g["prediction"] == w["prediction"]
        for c in outs[1:]:
            assert len(g[c]) == len(w[c])
            worst = max(worst, *(abs(a - b) for a, b in zip(g[c], w[c])))
    return worst


def test_a_classifier_on_scalar_columns_registers_through_the_cli_scores_and_serves(spark, data, settings,
                                                                                      classifier, capsys):
    from xgboost.spark import SparkXGBClassifierModel

    _, folder = classifier
    out = _cli_json(settings, capsys, "register", "--name", "xgb_binary", "--path", folder, "--table",
                    data["table"], "--label", "y", "--run-id", "nb-7")
    assert (out["version"], out["task"], sorted(out["metrics"])) == (1, "classification", BINARY)
    assert out["metrics"]["areaUnderROC"] > 0.8
    mv, manifest = Registry(settings).manifest(parse_ref("xgb_binary/1"))
    assert manifest["algorithm"] == "SparkXGBClassifierModel" and manifest["servable"] is True
    assert manifest["registered"]["kind"] == "SparkXGBClassifierModel"
    assert manifest["signature"]["inputs"] == [{"name": "x1", "type": "double"}, {"name": "x2", "type": "double"}]

    loaded = SparkXGBClassifierModel.load(folder)
    transformed = loaded.transform(data["df"]).cache()  # one transform (a Python UDF) for both comparisons
    _scored_equals_transform(spark, settings, mv.ref, transformed, data, "binary", "classification")
    assert _jvm_free_matches_transform(settings, mv.ref, transformed, ["x1", "x2"]) <= FLOAT32_TOLERANCE
    transformed.unpersist()


def test_a_null_feature_is_a_missing_value_on_both_paths(spark, classifier):
    """xgboost.spark hands a null of a features column to xgboost as NaN, its missing value; so does the scorer
    (here on the saved folder, no registry)."""
    from pyspark.ml.functions import vector_to_array

    from sparkship.serving import load

    model, folder = classifier
    rows = [(1, None, 0.5), (2, 0.7, None), (3, None, None)]
    want = model.transform(spark.createDataFrame(rows, "id long, x1 double, x2 double")).orderBy("id").select(
        "prediction", vector_to_array("probability").alias("p")).collect()
    scorer = load(folder)
    assert scorer.signature.to_list() == [{"name": "x1", "type": "double"}, {"name": "x2", "type": "double"}]
    for (_, x1, x2), w in zip(rows, want):
        got = scorer.score_one({"x1": x1, "x2": x2})
        assert got["prediction"] == w["prediction"]
        assert max(abs(a - b) for a, b in zip(got["probability"], w["p"])) <= FLOAT32_TOLERANCE


def test_a_pipeline_with_a_vector_assembler_and_a_regressor_registers_through_the_api(spark, data, settings):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler
    from xgboost.spark import SparkXGBRegressor

    model = Pipeline(stages=[
        VectorAssembler(inputCols=["x1", "x2"], outputCol="features"),
        SparkXGBRegressor(features_col="features", label_col="r", **XGB),
    ]).fit(data["df"])
    mv = sparkship.register_model(model, "xgb_regressor", table=data["table"], label="r", run_id="job-1",
                                  settings=settings)
    assert (mv.version, mv.task, sorted(mv.metrics)) == (1, "regression", REGRESSION)
    manifest = Registry(settings).manifest(parse_ref(mv.ref))[1]
    assert manifest["registered"]["stages"] == ["VectorAssembler", "SparkXGBRegressorModel"]
    assert manifest["servable"] is True

    loaded = sparkship.load_model(mv.ref, settings=settings)
    _scored_equals_transform(spark, settings, mv.ref, loaded.transform(data["df"]), data, "regressor", "regression")
    assert _jvm_free_matches_transform(settings, mv.ref, model.transform(data["df"]), ["x1", "x2"]) <= \
        FLOAT32_TOLERANCE


def test_a_multiclass_pipeline_saved_to_a_folder_registers_through_the_api(spark, data, settings):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import VectorAssembler
    from xgboost.spark import SparkXGBClassifier

    folder = str(data["root"] / "multiclass")
    Pipeline(stages=[
        VectorAssembler(inputCols=["x1", "x2"], outputCol="features"),
        SparkXGBClassifier(features_col="features", label_col="k", **XGB),
    ]).fit(data["df"]).write().save(folder)
    mv = sparkship.register_model(folder, "xgb_multiclass", table=data["table"], label="k", settings=settings)
    assert (mv.task, sorted(mv.metrics)) == ("classification", MULTICLASS)

    loaded = PipelineModel.load(folder)
    transformed = loaded.transform(data["df"]).cache()  # one transform (a Python UDF) for both comparisons
    _scored_equals_transform(spark, settings, mv.ref, transformed, data, "multiclass", "classification", "auto")
    assert _jvm_free_matches_transform(settings, mv.ref, transformed, ["x1", "x2"]) <= FLOAT32_TOLERANCE
    transformed.unpersist()


def test_an_output_the_booster_path_cannot_write_registers_as_not_servable(data, settings, classifier, capsys):
    """SHAP contributions (pred_contrib_col) are not reproduced: the model registers (scoring then goes through
    transform), and `predict` refuses it in one line naming the param."""
    model, _ = classifier
    contrib = model.copy()
    contrib.set(contrib.pred_contrib_col, "contrib")
    mv = sparkship.register_model(contrib, "xgb_contrib", table=data["table"], label="y", settings=settings)
    manifest = Registry(settings).manifest(parse_ref(mv.ref))[1]
    assert manifest["servable"] is False and "pred_contrib_col" in manifest["unservable_reason"]

    rows = str(data["root"] / "rows.csv")
    data["df"].select("x1", "x2").toPandas().to_csv(rows, index=False)
    capsys.readouterr()
    assert _cli(settings, "predict", "--model", mv.ref, "--input", rows, "--output", rows + ".out.csv") != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sparkship: error:")]
    assert len(errors) == 1 and "pred_contrib_col" in errors[0], errors
    assert not os.path.exists(rows + ".out.csv")


def test_serving_without_the_xgboost_package_names_the_extra(data, settings, classifier):
    """`sparkship predict` in a process where xgboost cannot be imported: one line naming the extra."""
    _, folder = classifier
    rows = str(data["root"] / "no_extra.csv")
    with open(rows, "w") as fh:
        fh.write("x1,x2\n0.5,-1.0\n")
    blocked = ("import sys; sys.modules['xgboost'] = None; from sparkship.cli import main; "
               "sys.exit(main(sys.argv[1:]))")
    out = subprocess.run([sys.executable, "-c", blocked, "--home", settings.home, "predict", "--path", folder,
                          "--input", rows, "--output", rows + ".out.csv"], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("sparkship: error:")]
    assert len(errors) == 1 and "pip install 'sparkship[xgboost]'" in errors[0], out.stderr[-3000:]
