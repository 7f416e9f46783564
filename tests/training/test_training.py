"""Training on real Delta tables: every algorithm, metrics, lineage, registration, reload, and bad input."""
from __future__ import annotations

import json
import math
import os
import random

import pytest
import yaml
from chispa import assert_df_equality

from sparkship import artifacts, tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.errors import NotFoundError, SchemaMismatchError, UsageError
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from sparkship.spec import parse_spec
from sparkship.training import (
    TrainingResult,
    build_pipeline,
    evaluate,
    manifest_for,
    register_result,
    train,
    train_and_register,
)

pytestmark = pytest.mark.seconds(63)

SCHEMA = (
    "id long, age double, tenure int, plan string, region int, churned int, churned_s string, churned_b boolean, "
    "segment int, segment_s string, spend double, constant int, empty double"
)
FEATURES = {"numeric": ["age", "tenure"], "categorical": ["plan", "region"]}
SMALL = {
    "logistic_regression": {"maxIter": 20},
    "linear_regression": {"maxIter": 20},
    "decision_tree": {"maxDepth": 5},
    "random_forest": {"numTrees": 8, "maxDepth": 5},
    "gbt": {"maxIter": 10, "maxDepth": 3, "stepSize": 0.3},
}


def make_rows(n: int, seed: int, start: int = 0) -> list[tuple]:
    """Learnable data with NaN and nulls in a numeric feature, nulls in a categorical one, some null labels."""
    rnd = random.Random(seed)
    rows = []
    for i in range(start, start + n):
        age = rnd.gauss(0, 1)
        tenure = rnd.randint(0, 24)
        plan = rnd.choice(["basic", "pro", "max"])
        region = rnd.randint(0, 3)
        churn = int(age + (plan == "pro") * 1.5 - tenure * 0.08 + rnd.gauss(0, 0.4) > 0)
        segment = 0 if age < -0.45 else (1 if age < 0.45 else 2)
        spend = 3.0 * age + 2.0 * tenure + (plan == "max") * 5.0 + rnd.gauss(0, 0.5)
        rows.append((
            i,
            math.nan if i % 17 == 0 else (None if i % 19 == 0 else age),
            tenure,
            None if i % 11 == 0 else plan,
            region,
            churn,
            "yes" if churn else "no",
            bool(churn),
            segment,
            ["red", "green", "blue"][segment],
            None if i % 23 == 0 else spend,
            1,
            None,
        ))
    return rows


@pytest.fixture(scope="module")
def churn(spark, tmp_path_factory):
    """A Delta table with two versions: v0 has 300 rows, v1 appends 100 more."""
    path = str(tmp_path_factory.mktemp("tables") / "churn")
    v0 = tables.write(spark.createDataFrame(make_rows(300, 1), SCHEMA), path, mode="overwrite")
    v1 = tables.write(spark.createDataFrame(make_rows(100, 2, start=300), SCHEMA), path, mode="append")
    assert (v0, v1) == (0, 1)
    return path


def make_spec(table: str, task: str = "classification", algorithm: str = "random_forest", label: str = "churned",
              name: str = "churn", **extra) -> dict:
    return {
        "name": name,
        "task": task,
        "table": table,
        "label": label,
        "features": FEATURES,
        "model": {"algorithm": algorithm, "params": SMALL[algorithm]},
        "split": {"test_fraction": 0.25, "seed": 7},
        **extra,
    }


def labelled_rows(spark, path: str, label: str, version: int | None = None) -> int:
    from pyspark.sql import functions as F

    return tables.read(spark, path, version=version).where(F.col(label).isNotNull()).count()


CASES = [
    # task, algorithm, label, number of classes (0: regression)
    ("classification", "logistic_regression", "churned", 2),
    ("classification", "logistic_regression", "segment_s", 3),  # multinomial, string labels
    ("classification", "decision_tree", "segment", 3),
    ("classification", "random_forest", "churned_s", 2),  # string labels
    ("classification", "gbt", "churned_b", 2),  # boolean label
    ("regression", "linear_regression", "spend", 0),
    ("regression", "decision_tree", "spend", 0),
    ("regression", "random_forest", "spend", 0),
    ("regression", "gbt", "spend", 0),
]


@pytest.fixture(scope="module")
def trained(spark, churn):
    """Train each (task, algorithm, label) once per module: several tests look at the same result."""
    results: dict[tuple[str, str, str], TrainingResult] = {}

    def get(task: str, algorithm: str, label: str) -> TrainingResult:
        key = (task, algorithm, label)
        if key not in results:
            results[key] = train(spark, parse_spec(make_spec(churn, task, algorithm, label)))
        return results[key]

    return get


@pytest.mark.parametrize("task, algorithm, label, classes", CASES, ids=[f"{c[1]}-{c[2]}" for c in CASES])
def test_every_algorithm_trains_with_plausible_metrics(spark, churn, trained, task, algorithm, label, classes):
    result = trained(task, algorithm, label)

    # lineage: the latest version, every labelled row in exactly one split
    assert result.table == churn and result.table_version == tables.version(spark, churn) == 1
    assert result.rows_train + result.rows_test == labelled_rows(spark, churn, label)
    assert 0.6 < result.rows_train / (result.rows_train + result.rows_test) < 0.9

    m = result.metrics
    if task == "regression":
        assert set(m) == {"rmse", "mae", "r2"}
        assert 0 <= m["mae"] <= m["rmse"] and m["r2"] > 0.5
    else:
        expected = {"accuracy", "f1", "logLoss"} | ({"areaUnderROC", "areaUnderPR"} if classes == 2 else
                                                    {"weightedPrecision", "weightedRecall"})
        assert set(m) == expected
        assert 1 / classes < m["accuracy"] <= 1 and 0 < m["f1"] <= 1 and m["logLoss"] >= 0
        if classes == 2:
            assert 0.75 < m["areaUnderROC"] <= 1 and 0 < m["areaUnderPR"] <= 1

    # string labels are indexed alphabetically and recorded; numeric and boolean ones are not
    distinct = sorted(r[0] for r in tables.read(spark, churn).select(label).distinct().collect() if r[0] is not None)
    assert result.labels == (distinct if isinstance(distinct[0], str) else None)

    # the Pipeline's stages, the feature columns' names, and Spark's default outputs
    stage_names = [type(s).__name__ for s in result.model.stages]
    assert stage_names[:4] == ["ImputerModel", "StringIndexerModel", "OneHotEncoderModel", "VectorAssembler"]
    assert ("StandardScalerModel" in stage_names) == (algorithm in ("logistic_regression", "linear_regression"))
    # the model scores rows without a label column
    scored = result.model.transform(tables.read(spark, churn).drop(label))
    for col in ("age__imputed", "plan__idx", "plan__ohe", "features", "prediction"):
        assert col in scored.columns
    if task == "classification":
        assert {"probability", "rawPrediction"} <= set(scored.columns)
        predicted = {r[0] for r in scored.select("prediction").distinct().collect()}
        assert predicted <= {float(k) for k in range(classes)}

    # signature: the inputs' table types, the outputs
    assert result.signature["inputs"] == [
        {"name": "age", "type": "double"}, {"name": "tenure", "type": "int"},
        {"name": "plan", "type": "string"}, {"name": "region", "type": "int"},
    ]
    assert [o["name"] for o in result.signature["outputs"]] == (
        ["prediction", "probability"] if task == "classification" else ["prediction"]
    )


def test_reference_profile_describes_the_training_split(trained):
    result = trained("classification", "logistic_regression", "churned")
    profile = result.reference_profile
    assert profile["rows"] == result.rows_train
    age, plan, region = profile["features"]["age"], profile["features"]["plan"], profile["features"]["region"]
    assert age["kind"] == "numeric" and len(age["edges"]) == 11 and len(age["fractions"]) == 10
    assert age["edges"] == sorted(age["edges"])
    assert math.isclose(sum(age["fractions"]), 1.0)
    # ages are NaN every 17th id and null every 19th: about 11% missing
    assert 0.05 < age["null_rate"] < 0.2 and age["count"] == round(result.rows_train * (1 - age["null_rate"]))
    # deciles: each bin holds about a tenth of the values
    assert all(0.05 < f < 0.15 for f in age["fractions"])
    assert plan["kind"] == "categorical" and set(plan["categories"]) == {"basic", "pro", "max"}
    assert math.isclose(sum(plan["categories"].values()), 1.0) and 0.03 < plan["null_rate"] < 0.15
    assert set(region["categories"]) == {"0", "1", "2", "3"} and region["null_rate"] == 0
    prediction = profile["prediction"]
    assert prediction["rows"] == result.rows_test and set(prediction["categories"]) <= {"0", "1"}
    assert math.isclose(sum(prediction["categories"].values()), 1.0)
    json.dumps(profile, allow_nan=False)  # storable in the manifest


def test_pinned_version_reads_that_snapshot(spark, churn):
    spec = parse_spec(make_spec(churn + "@0", "regression", "linear_regression", "spend"))
    result = train(spark, spec)
    assert result.table_version == 0
    assert result.rows_train + result.rows_test == labelled_rows(spark, churn, "spend", version=0)
    assert result.rows_train + result.rows_test < labelled_rows(spark, churn, "spend")
    with pytest.raises(NotFoundError, match=r"has no version 9 \(latest is 1\)"):
        train(spark, parse_spec(make_spec(churn + "@9")))


def test_tuning_picks_a_grid_candidate(spark, churn):
    raw = make_spec(churn, "classification", "decision_tree", tuning={"grid": {"maxDepth": [1, 4]}, "folds": 2})
    result = train(spark, parse_spec(raw))
    assert result.tuning is not None and result.tuning["metric"] == "areaUnderROC"
    assert [c["params"] for c in result.tuning["candidates"]] == [{"maxDepth": 1}, {"maxDepth": 4}]
    best = result.tuning["best_params"]["maxDepth"]
    scores = {c["params"]["maxDepth"]: c["areaUnderROC"] for c in result.tuning["candidates"]}
    assert scores[best] == max(scores.values())
    assert result.model.stages[-1].getOrDefault("maxDepth") == best


def test_evaluate_matches_metrics_computed_by_hand(spark, churn, trained):
    import numpy as np

    result = trained("classification", "random_forest", "churned_s")
    spec = result.spec
    newer = tables.read(spark, churn, version=1).where("id >= 300")
    metrics = evaluate(result.model, newer, spec, labels=result.labels)
    rows = result.model.transform(newer).select("churned_s", "prediction").collect()
    by_hand = np.mean([result.labels.index(r["churned_s"]) == r["prediction"] for r in rows])
    assert math.isclose(metrics["accuracy"], by_hand)

    reg = trained("regression", "linear_regression", "spend")
    reg_metrics = evaluate(reg.model, newer, reg.spec)
    pairs = [(r["spend"], r["prediction"]) for r in reg.model.transform(newer).collect() if r["spend"] is not None]
    errors = np.array([p - y for y, p in pairs])
    assert math.isclose(reg_metrics["rmse"], float(np.sqrt(np.mean(errors ** 2))), rel_tol=1e-9)
    assert math.isclose(reg_metrics["mae"], float(np.mean(np.abs(errors))), rel_tol=1e-9)

    # a class the model never saw, and string labels without the mapping, are refused
    from pyspark.sql import functions as F

    odd = newer.withColumn("churned_s", F.when(F.col("id") == 301, "maybe").otherwise(F.col("churned_s")))
    with pytest.raises(SchemaMismatchError, match=r"not trained on: \['maybe'\]"):
        evaluate(result.model, odd, spec, labels=result.labels)
    with pytest.raises(UsageError, match="class labels"):
        evaluate(result.model, newer, spec)


def test_registered_model_reloads_with_identical_predictions(spark, churn, trained, home):
    from pyspark.ml.functions import vector_to_array

    settings = Settings.resolve(home=home)
    result = trained("classification", "random_forest", "churned_s")
    out = register_result(settings, result, run_id="run-7")
    assert out["name"] == "churn" and out["version"] == 1 and out["table_version"] == 1
    assert out["metrics"] == result.metrics

    mv, loaded = Registry(settings).load_model(parse_ref("churn/run:run-7"))
    assert mv.version == 1 and mv.artifact == out["artifact"] == os.path.join(settings.models_root, "churn", "1")
    data = tables.read(spark, churn)

    def scored(model):
        return model.transform(data).select(
            "id", "prediction", vector_to_array("probability").alias("probability"),
            vector_to_array("rawPrediction").alias("rawPrediction"),
        )

    assert_df_equality(scored(loaded), scored(result.model))

    manifest = artifacts.verify(mv.artifact)
    assert manifest["format"] == artifacts.FORMAT and manifest["files"]
    assert manifest["labels"] == ["no", "yes"] and manifest["algorithm"] == "random_forest"
    assert manifest["training"] == {"table": churn, "table_version": 1, "rows_train": result.rows_train,
                                    "rows_test": result.rows_test, "run_id": "run-7"}
    assert manifest["spec"] == result.spec.to_dict()
    assert manifest["signature"] == result.signature
    assert manifest["reference_profile"] == json.loads(json.dumps(result.reference_profile))
    assert set(manifest["versions"]) == {"spark", "sparkship", "python"}
    assert manifest_for(result, "x")["training"]["run_id"] == "x"


def write_spec(folder, raw: dict, filename: str = "spec.yml") -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, filename)
    with open(path, "w") as fh:
        yaml.safe_dump(raw, fh)
    return path


def test_cli_train_registers_versions(spark, churn, home, tmp_path, capsys):
    # a relative table path in the spec resolves against the spec file's folder
    spec_dir = os.path.join(os.path.dirname(churn), "specs")
    spec_file = write_spec(spec_dir, make_spec("../churn", "regression", "linear_regression", "spend", name="spend"))

    assert main(["train", "--spec", spec_file, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert set(first) == {"name", "version", "metrics", "artifact", "table_version"}
    assert (first["name"], first["version"], first["table_version"]) == ("spend", 1, 1)
    assert set(first["metrics"]) == {"rmse", "mae", "r2"}
    assert os.path.isfile(os.path.join(first["artifact"], "manifest.json"))

    assert main(["train", "--spec", spec_file, "--table", churn + "@0", "--run-id", "job-42", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["version"], second["table_version"]) == (2, 0)
    registry = Registry(Settings.resolve(home=home))
    assert registry.get(parse_ref("spend/run:job-42")).version == 2
    assert [v.table_version for v in registry.versions("spend")] == [1, 0]

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--spec" in capsys.readouterr().out


def nothing_written(home: str) -> bool:
    settings = Settings.resolve(home=home)
    return not os.path.exists(settings.registry_root) and not os.path.exists(settings.models_root)


@pytest.fixture(scope="module")
def odd_tables(spark, tmp_path_factory):
    """An empty table, one whose churn label has a single class, and one of 4 rows."""
    folder = tmp_path_factory.mktemp("odd")
    empty = str(folder / "empty")
    tables.write(spark.createDataFrame([], SCHEMA), empty, mode="overwrite")
    single = str(folder / "single")
    rows = [r for r in make_rows(80, 3) if r[5] == 1]
    tables.write(spark.createDataFrame(rows, SCHEMA), single, mode="overwrite")
    tiny = str(folder / "tiny")
    tables.write(spark.createDataFrame(make_rows(4, 3), SCHEMA), tiny, mode="overwrite")
    return {"empty": empty, "single": single, "tiny": tiny}


BAD = [
    # (spec changes, table key, error type, words in the message)
    ({"model": {"algorithm": "boosted_forest"}}, None, UsageError, "spec key 'model.algorithm': unknown algorithm"),
    ({"model": {"algorithm": "random_forest", "params": {"numTres": 3}}}, None, UsageError,
     "spec key 'model.params.numTres': unknown parameter of RandomForestClassifier"),
    ({"name": "../escape"}, None, UsageError, "spec key 'name'"),
    ({"features": {"numeric": ["age", "height"], "categorical": ["plan", "colour"]}}, None, SchemaMismatchError,
     "no column 'height' (features.numeric), 'colour' (features.categorical)"),
    ({"label": "churn_flag"}, None, SchemaMismatchError, "no column 'churn_flag' (label)"),
    ({"task": "regression", "label": "churned_s", "model": {"algorithm": "linear_regression"}}, None,
     SchemaMismatchError, "column 'churned_s' is string; regression needs a numeric label"),
    ({"features": {"numeric": ["plan"]}}, None, SchemaMismatchError, "column 'plan' is string, not numeric"),
    ({"label": "constant"}, None, UsageError, "has one class (1.0)"),
    ({}, "single", UsageError, "has one class"),
    ({}, "empty", UsageError, "is empty"),
    ({"split": {"test_fraction": 0.001, "seed": 1}}, "tiny", UsageError, "too few to split"),
    ({"features": {"numeric": ["age", "empty"]}}, None, UsageError, "columns ['empty'] have no values"),
    ({"label": "segment", "model": {"algorithm": "gbt"}}, None, UsageError,
     "'gbt' supports binary classification only"),
    ({"table": "/no/such/table"}, None, NotFoundError, "no Delta table at /no/such/table"),
]


@pytest.mark.parametrize("changes, table, error, words", BAD, ids=[b[3][:40] for b in BAD])
def test_bad_input_fails_before_anything_is_written(spark, churn, odd_tables, home, changes, table, error, words):
    raw = {**make_spec(odd_tables.get(table, churn)), **changes}
    with pytest.raises(error) as info:
        train_and_register(spark, Settings.resolve(home=home), parse_spec(raw))
    assert words in str(info.value)
    assert nothing_written(home)


def test_cli_bad_input_exits_non_zero_with_the_error(spark, churn, home, tmp_path, capsys):
    spec_file = write_spec(tmp_path, make_spec(churn, label="nope"))
    assert main(["train", "--spec", spec_file, "--json"]) == 1
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert payload["type"] == "SchemaMismatchError" and "'nope' (label)" in payload["error"]
    assert "sparkship: error:" in captured.err
    bad_spec = write_spec(tmp_path, {**make_spec(churn), "model": {"algorithm": "svm"}}, "bad.yml")
    assert main(["train", "--spec", bad_spec]) == 2
    assert "spec key 'model.algorithm'" in capsys.readouterr().err
    assert nothing_written(home)


def test_build_pipeline_uses_the_indexed_label_column_for_string_labels(spark, churn):
    spec = parse_spec(make_spec(churn, "classification", "logistic_regression", "churned_s"))
    estimator = build_pipeline(spec, label_is_string=True).getStages()[-1]
    assert estimator.getLabelCol() == "churned_s__idx" and estimator.getFeaturesCol() == "features"
    assert build_pipeline(spec, label_is_string=False).getStages()[-1].getLabelCol() == "churned_s"


def test_profile_against_a_reference_reuses_its_bins_and_categories(spark):
    from sparkship.profiles import OTHER, compute_profile

    rnd = random.Random(5)
    reference_rows = [(float(i), ["a", "b", "c"][i % 3]) for i in range(200)]
    shifted = [(None if i % 10 == 0 else rnd.uniform(50, 400), rnd.choice(["a", "d", None])) for i in range(150)]
    ref = compute_profile(spark.createDataFrame(reference_rows, "x double, k string"), ["x"], ["k"])
    now = compute_profile(spark.createDataFrame(shifted, "x double, k string"), ["x"], ["k"], reference=ref)

    edges = ref["features"]["x"]["edges"]
    assert now["features"]["x"]["edges"] == edges and len(edges) == 11
    present = [x for x, _ in shifted if x is not None]
    by_hand = [0] * 10
    for x in present:
        by_hand[sum(x > e for e in edges[1:-1])] += 1
    assert now["features"]["x"]["fractions"] == pytest.approx([n / len(present) for n in by_hand])
    assert now["features"]["x"]["null_rate"] == pytest.approx(15 / 150)

    keys = [k for _, k in shifted if k is not None]
    assert set(ref["features"]["k"]["categories"]) == {"a", "b", "c"}
    assert now["features"]["k"]["categories"] == pytest.approx({
        "a": keys.count("a") / len(keys), "b": 0.0, "c": 0.0, OTHER: keys.count("d") / len(keys)
    })
    assert now["features"]["k"]["null_rate"] == pytest.approx(1 - len(keys) / 150)
    assert now["rows"] == 150
