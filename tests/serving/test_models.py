"""Parity of the JVM-free scorer with Spark's transform() for the classifiers, regressors, clustering models and
tuning wrappers beyond logistic/linear regression and trees.

Every case fits a small Pipeline ending with the model on rows with nulls (an Imputer in front) and, for models
that accept them, NaN features (a raw column assembled with handleInvalid='keep'), saves it as
PipelineModel([prep PipelineModel, model]) (so nested), loads it with ``sparkship.serving.load`` and compares every
output column with Spark's transform() of the same rows: numbers within 1e-9, identical predictions, on the
batch path (Arrow and pandas) and the row path (score_one).
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from sparkship.serving import InvalidRecordError, UnsupportedModelError, load
from tests.helpers import model_cases
from tests.helpers.model_cases import CASES, GLR_LINKS, Models, N, estimators

pytestmark = pytest.mark.timeout(900)

# The cases' rows for the folder's data fixture, and their prep pipelines.
rows, SCHEMA, preps = model_cases.rows, model_cases.SCHEMA, model_cases.preps

TOL = 1e-9


# GLR links scored from the family's fitted model with the link param changed (transform() reads only the link).
LINK_CASES = [f"{base}_{param}_{value}" for base, links in GLR_LINKS.items() for param, value in links]

# Cases loaded as saved rather than fitted. Spark's EM fit of a GaussianMixture on these rows hung a CI worker
# (LAPACK's eigen-decomposition looping on a degenerate covariance) in a few full runs, never on a developer's
# host; Spark's transform() of the loaded model stays the reference.

# Names only: the estimators need a running SparkSession, which collection does not have.


@pytest.fixture(scope="module")
def saved(preps, tmp_path_factory):
    """name -> (saved path, the fitted PipelineModel), fitted when a test first asks."""
    return Models(preps, tmp_path_factory.mktemp("models"))


def test_cases_are_listed(spark):
    """CASES (collected without a SparkSession) names exactly the estimators built with one."""
    assert list(estimators()) == CASES


def _spark_columns(spark_model, data, columns: list[str]) -> dict[str, np.ndarray]:
    """Spark's transform() output per column, rows by id; vectors as 2-D arrays, null as NaN."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    out = spark_model.transform(data)
    types = dict(out.dtypes)
    sel = [F.col("id")] + [vector_to_array(c).alias(c) if types[c] == "vector" else F.col(c).cast("double").alias(c)
                           for c in columns]
    pdf = out.select(*sel).toPandas().sort_values("id", ignore_index=True)
    res = {"id": pdf["id"].to_numpy()}
    for c in columns:
        if types[c] == "vector":
            res[c] = np.array([[np.nan] if v is None else list(v) for v in pdf[c]], dtype=np.float64)
        else:
            res[c] = pdf[c].to_numpy(dtype=np.float64, na_value=np.nan)
    return res


def _assert_same(ours: np.ndarray, theirs: np.ndarray, what: str, exact: bool) -> None:
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs Spark {theirs.shape}"
    both_nan = np.isnan(ours) & np.isnan(theirs)
    ok = both_nan | ((ours == theirs) if exact else (np.abs(ours - theirs) <= TOL))
    if not ok.all():
        i = np.argwhere(~ok)[0]
        raise AssertionError(f"{what}: {int((~ok).sum())} values differ, e.g. at {tuple(i)}: "
                             f"{ours[tuple(i)]!r} vs Spark {theirs[tuple(i)]!r}")


def _row_path(scorer, records, columns) -> dict[str, np.ndarray]:
    outs = [scorer.score_one(r, columns=columns) for r in records]
    res = {}
    for c in columns:
        vals = [o[c] for o in outs]
        if any(isinstance(v, list) for v in vals):
            res[c] = np.array(vals, dtype=np.float64)
        else:
            res[c] = np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
    return res


# Predictions that are labels or cluster indices must be identical; regression predictions within 1e-9.
EXACT = ("nb_", "linear_svc", "mlp", "fm_classifier", "one_vs_rest", "kmeans", "bisecting", "gaussian", "cross")


@pytest.mark.parametrize("name", CASES + LINK_CASES)
def test_model_matches_spark(name, data, arrow_data, signature, saved):
    path, spark_model = saved[name]
    scorer = load(path, signature=signature)
    columns = scorer.outputs
    assert columns, "no outputs"
    theirs = _spark_columns(spark_model, data, columns)
    ids = arrow_data["id"].to_numpy()
    order = np.argsort(ids)
    assert (ids[order] == theirs["id"]).all()
    exact = {c for c in columns if c in ("prediction", "cls")} if name.startswith(EXACT) else set()
    # pandas holds NaN and null alike (both become null): compare it where the raw input c is not NaN.
    c_raw = arrow_data["c"].to_numpy(zero_copy_only=False)[order]
    not_nan = ~np.isnan(np.asarray(c_raw, dtype=np.float64))
    for via, batch_input, keep in (("arrow", arrow_data, slice(None)), ("pandas", arrow_data.to_pandas(), not_nan)):
        result = scorer.score(batch_input)
        assert len(result.dropped) == 0 and result.num_input_rows == N
        for c in columns:
            _assert_same(result.columns[c][order][keep], theirs[c][keep], f"{name} {via} {c}", c in exact)
    rows = _row_path(scorer, arrow_data.to_pylist(), columns)
    for c in columns:
        _assert_same(rows[c][order], theirs[c], f"{name} score_one {c}", c in exact)
    if name.startswith(("kmeans", "bisecting", "gaussian")):
        assert scorer.schema["prediction"][0] == "int"
        assert isinstance(scorer.score_one(arrow_data.slice(0, 1).to_pylist()[0])["prediction"], int)


def test_cases_cover_nan_and_null_outputs(data, arrow_data, signature, saved):
    """The data reaches the interesting paths: NaN features, a null offset (null prediction), and a null
    double input to isotonic regression (null prediction) - each the same as Spark (checked above)."""
    scorer = load(saved["glr_poisson_offset"][0], signature=signature)
    recs = arrow_data.to_pylist()
    nan_rows = [r for r in recs if r["c"] is None or (r["c"] != r["c"])]
    null_off = [r for r in recs if r["off"] is None and r["c"] is not None and r["c"] == r["c"]]
    assert nan_rows and null_off
    assert math.isnan(scorer.score_one(nan_rows[0])["prediction"])
    assert scorer.score_one(null_off[0]) == {"eta": None, "prediction": None}
    iso = load(saved["isotonic_double_antitonic"][0], signature=signature)
    assert iso.score_one({**null_off[0], "c": None}) == {"prediction": None}


def test_wrappers_score_their_best_model(saved, signature, arrow_data):
    """CrossValidatorModel / TrainValidationSplitModel load as their bestModel's stages; the saved sub-models
    (persistSubModels) are on disk and change nothing."""

    cv = load(saved["cross_validator"][0], signature=signature)
    assert [s.meta.short_class for s in cv.stages] == ["ImputerModel", "VectorAssembler", "LogisticRegressionModel"]
    cv_dir = [d for d in os.listdir(os.path.join(saved["cross_validator"][0], "stages")) if "CrossValidator" in d][0]
    assert os.path.isdir(os.path.join(saved["cross_validator"][0], "stages", cv_dir, "subModels"))
    tvs = load(saved["train_validation_split_pipeline"][0], signature=signature)
    assert [s.meta.short_class for s in tvs.stages][-2:] == ["StandardScalerModel", "LinearRegressionModel"]


def _spark_fails(spark_model, spark, record: dict) -> bool:
    df = spark.createDataFrame([tuple(record.get(c) for c in FEATURE_INPUTS)],
                               ", ".join(f"{c} double" for c in FEATURE_INPUTS))
    try:
        spark_model.transform(df).collect()
    except Exception:  # noqa: BLE001 - Spark wraps the model's require() failure in a JVM exception
        return True
    return False


FEATURE_INPUTS = ("a", "b", "c", "p1", "p2", "p3", "z1", "z2", "z3", "off")


@pytest.mark.parametrize("name, record", [
    ("nb_multinomial", {"p1": -1.0, "p2": 1.0, "p3": 1.0}),
    ("nb_complement", {"p1": 1.0, "p2": -0.5, "p3": 1.0}),
    ("nb_bernoulli", {"z1": 0.5, "z2": 1.0, "z3": 0.0}),
    ("kmeans_cosine", {"p1": 0.0, "p2": 0.0, "p3": 0.0}),
    ("bisecting_kmeans_cosine", {"p1": 0.0, "p2": 0.0, "p3": 0.0}),
    ("kmeans", {"p1": math.nan, "p2": 1.0, "p3": 1.0}),
    ("bisecting_kmeans", {"p1": math.nan, "p2": 1.0, "p3": 1.0}),
])
def test_inputs_spark_refuses_are_refused(name, record, spark, saved, tmp_path):
    """Negative features for multinomial/complement naive Bayes, non-0/1 for Bernoulli, a zero vector for cosine
    distance, a NaN for euclidean k-means: Spark's transform fails, so score_one and score raise
    InvalidRecordError naming the features column. (NaN reaches the model through an assembler that keeps it.)"""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import VectorAssembler

    model = saved[name][1].stages[-1]
    pipeline = PipelineModel(stages=[VectorAssembler(inputCols=sorted(record), outputCol="f",
                                                     handleInvalid="keep"), model])
    path = str(tmp_path / name)
    pipeline.write().save(path)
    assert _spark_fails(pipeline, spark, record)
    scorer = load(path)
    with pytest.raises(InvalidRecordError) as err:
        scorer.score_one(record)
    assert err.value.field == "f"
    with pytest.raises(InvalidRecordError) as err:
        scorer.score([record, record])
    assert err.value.field == "f" and err.value.row == 0


def test_one_vs_rest_without_raw_prediction_is_refused(saved, tmp_path):
    """Spark (Scala) then predicts through a Map's max, whose tie order is not reproduced: refused at load.
    pyspark's OneVsRestModel does not pass rawPredictionCol to its Java writer, so the saved metadata is edited
    as a Scala-saved model would have it."""
    import glob
    import json
    import shutil

    path = str(tmp_path / "ovr")
    shutil.copytree(saved["one_vs_rest_lr"][0], path)
    meta_file = [f for f in glob.glob(f"{path}/stages/*OneVsRest*/metadata/part-*") if not f.endswith(".crc")][0]
    with open(meta_file) as fh:
        meta = json.loads(fh.readline())
    meta["paramMap"]["rawPredictionCol"] = ""
    with open(meta_file, "w") as fh:
        fh.write(json.dumps(meta) + "\n")
    with pytest.raises(UnsupportedModelError, match="rawPredictionCol"):
        load(path)
