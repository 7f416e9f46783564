"""`sparkship export --format onnx`: the whole registered pipeline as one ONNX graph that ONNX Runtime runs, in a
fresh virtualenv holding only onnxruntime and numpy (no pyspark, no Java), with Spark's predictions.

Models go through the real flow (a Delta table, `train_and_register` with sparkship's template pipeline:
Imputer, StringIndexer 'keep', OneHotEncoder, VectorAssembler, StandardScaler for the linear model), one per
class family: a multinomial logistic regression on string labels, a binary random forest, a GBT regressor. The
reference is Spark's transform() of the registered PipelineModel, computed here. Labels must be equal,
probabilities and regression values within the export's float32 tolerance (1e-5).
"""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from sparkship import artifacts, tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.interop.onnx_export import MODEL_FILE, SIDECAR_FILE, TOLERANCE
from sparkship.registry import Registry
from sparkship.spec import parse_spec
from sparkship.training import train_and_register

pytestmark = [pytest.mark.timeout(900), pytest.mark.seconds(160)]

SCHEMA = "age double, tenure int, plan string, region int, churned int, segment_s string, spend double"
FEATURES = {"numeric": ["age", "tenure"], "categorical": ["plan", "region"]}
MODELS = {  # name: (task, algorithm, label, params)
    "lr": ("classification", "logistic_regression", "segment_s", {"maxIter": 20}),  # multinomial: softmax
    "rf": ("classification", "random_forest", "churned", {"numTrees": 10, "maxDepth": 5, "seed": 3}),
    "gbtr": ("regression", "gbt", "spend", {"maxIter": 10, "maxDepth": 3, "seed": 3}),
}
VENV_PACKAGES = ["onnxruntime", "numpy"]
# Runs inside the fresh venv: the sidecar's documented conventions are all it knows about the model.
RUNNER = r"""
import json, sys
import numpy as np
import onnxruntime as ort
model_dir, rows_path, out_path = sys.argv[1:4]
sidecar = json.load(open(f"{model_dir}/sparkship-onnx.json"))
rows = json.load(open(rows_path))
feed = {}
for spec in sidecar["inputs"]:
    values = [r[spec["name"]] for r in rows]
    if spec["onnx_type"] == "string":
        feed[spec["name"]] = np.array(["" if v is None else v for v in values], dtype=object).reshape(-1, 1)
    elif spec["onnx_type"] == "int64":
        feed[spec["name"]] = np.array([np.iinfo(np.int64).min if v is None else v for v in values],
                                      dtype=np.int64).reshape(-1, 1)
    else:
        feed[spec["name"]] = np.array([np.nan if v is None else v for v in values], dtype=np.float32).reshape(-1, 1)
session = ort.InferenceSession(f"{model_dir}/{sidecar['model_file']}", providers=["CPUExecutionProvider"])
names = [o["name"] for o in sidecar["outputs"]]
out = dict(zip(names, session.run(names, feed)))
json.dump({k: np.asarray(v, dtype=np.float64).tolist() for k, v in out.items()}, open(out_path, "w"))
"""


def _rows(n: int, seed: int) -> list[tuple]:
    """Learnable rows with NaN and nulls in a numeric input and nulls in a categorical one."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        age = rnd.gauss(0, 1)
        tenure = rnd.randint(0, 24)
        plan = rnd.choice(["basic", "pro", "max"])
        region = rnd.randint(0, 3)
        churn = int(age + (plan == "pro") * 1.5 - tenure * 0.08 + rnd.gauss(0, 0.4) > 0)
        segment = ["red", "green", "blue"][0 if age < -0.45 else (1 if age < 0.45 else 2)]
        spend = 3.0 * age + 2.0 * tenure + (plan == "max") * 5.0 + region + rnd.gauss(0, 0.5)
        age_value = math.nan if i % 17 == 0 else (None if i % 19 == 0 else age)
        out.append((age_value, tenure, None if i % 11 == 0 else plan, region, churn, segment, spend))
    return out


@pytest.fixture(scope="module")
def onnx_venv(request, tmp_path_factory):
    """A venv with only onnxruntime and numpy (pinned to the versions here), kept in pytest's cache; built in
    the background while Spark trains."""
    from importlib import metadata

    root = request.config.cache.mkdir("onnx-runtime-venv")
    python = os.path.join(root, "bin", "python")
    pins = [f"{p}=={metadata.version(p)}" for p in VENV_PACKAGES]
    marker = os.path.join(root, "sparkship-pins.txt")
    if os.path.exists(marker) and open(marker).read() == "\n".join(pins):
        return python, None
    script = (f"{sys.executable} -m venv --clear {root} && {python} -m pip install -q --disable-pip-version-check "
              + " ".join(pins) + f" && printf '%s' '{chr(10).join(pins)}' > {marker}")
    return python, subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _no_java_env(tmp_path) -> dict[str, str]:
    """PATH holds one empty folder (the venv's python is called by its path): no java, no JAVA_HOME, no
    PYTHONPATH."""
    empty = tmp_path / "empty-path"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty), "HOME": str(tmp_path)}


def _ready(venv) -> str:
    python, build = venv
    if build is not None and build.returncode is None:
        output = build.communicate(timeout=600)[0].decode()
        assert build.returncode == 0, output
    return python


@pytest.fixture(scope="module")
def registered(spark, tmp_path_factory, onnx_venv):
    """Each model of MODELS trained on one Delta table and registered in a fresh home."""
    home = str(tmp_path_factory.mktemp("onnx-home"))
    settings = Settings.resolve(home=home)
    path = str(tmp_path_factory.mktemp("tables") / "customers")
    tables.write(spark.createDataFrame(_rows(240, 1), SCHEMA), path, mode="overwrite")
    refs = {}
    for name, (task, algorithm, label, params) in MODELS.items():
        spec = parse_spec({"name": name, "task": task, "table": path, "label": label, "features": FEATURES,
                           "model": {"algorithm": algorithm, "params": params},
                           "split": {"test_fraction": 0.25, "seed": 7}})
        refs[name] = train_and_register(spark, settings, spec)
    return settings, refs


def _export(settings: Settings, capsys, *args: str) -> tuple[int, dict, str]:
    code = main(["--home", settings.home, "--json", "-q", "export", *args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out.strip().splitlines()[-1]), captured.err


def _spark_predictions(spark, artifact: str, rows: list[tuple]) -> dict[str, np.ndarray]:
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array

    scoring = spark.createDataFrame(rows, SCHEMA).select(*FEATURES["numeric"], *FEATURES["categorical"])
    scored = PipelineModel.load(os.path.join(artifact, artifacts.MODEL_DIR)).transform(scoring)
    cols = ["prediction"] + (["probability"] if "probability" in scored.columns else [])
    got = scored.select(*[vector_to_array(c).alias(c) if c == "probability" else c for c in cols]).collect()
    return {c: np.array([r[c] for r in got], dtype=np.float64) for c in cols}


@pytest.mark.parametrize("name", list(MODELS))
def test_exported_graph_runs_without_spark_with_sparks_predictions(name, spark, registered, onnx_venv, capsys,
                                                                    tmp_path):
    settings, refs = registered
    out = str(tmp_path / f"{name}-onnx")
    code, result, err = _export(settings, capsys, "--model", name, "--format", "onnx", "--out", out)
    assert code == 0, err
    assert result["ref"] == f"{name}/1" and result["format"] == "onnx" and result["path"] == out
    assert sorted(os.listdir(out)) == sorted([MODEL_FILE, SIDECAR_FILE])
    assert result["checked_rows"] > 0 and "rows of" in result["sample"]  # the training table was read
    assert [i["name"] for i in result["inputs"]] == ["age", "tenure", "plan", "region"]
    assert {i["name"]: i["onnx_type"] for i in result["inputs"]} == {
        "age": "float", "tenure": "float", "plan": "string", "region": "int64"}  # region: an indexed int

    # new rows: unseen categories, NaN and null numbers, a null category
    scoring = _rows(80, 2) + [(0.3, 5, "never-seen", 9, 0, "red", 0.0), (None, 30, None, 2, 0, "red", 0.0)]
    expected = _spark_predictions(spark, refs[name]["artifact"], scoring)
    rows_path, out_path = tmp_path / "rows.json", tmp_path / "onnx-out.json"
    keys = [*FEATURES["numeric"], *FEATURES["categorical"]]
    rows_path.write_text(json.dumps([dict(zip(keys, r[:4])) for r in scoring]).replace("NaN", "null"))
    runner = tmp_path / "run_onnx.py"
    runner.write_text(RUNNER)
    python = _ready(onnx_venv)
    proc = subprocess.run([python, str(runner), out, str(rows_path), str(out_path)], capture_output=True, text=True,
                          env=_no_java_env(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = {k: np.array(v) for k, v in json.loads(out_path.read_text()).items()}

    assert set(expected) <= set(got)
    prediction = got["prediction"].reshape(expected["prediction"].shape)
    if MODELS[name][0] == "classification":
        np.testing.assert_array_equal(prediction, expected["prediction"])
        np.testing.assert_allclose(got["probability"], expected["probability"], rtol=0, atol=TOLERANCE)
    else:
        np.testing.assert_allclose(prediction, expected["prediction"], rtol=TOLERANCE, atol=TOLERANCE)


def test_onnx_venv_has_no_pyspark_and_no_java(onnx_venv, tmp_path):
    python = _ready(onnx_venv)
    env = _no_java_env(tmp_path)
    proc = subprocess.run([python, "-c", "import pyspark"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0 and "No module named 'pyspark'" in proc.stderr
    proc = subprocess.run([python, "-c", "import shutil, onnxruntime; print(shutil.which('java'))"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "None", proc.stderr


def test_a_stage_onnx_cannot_express_is_refused_in_one_line(spark, capsys, tmp_path):
    """A SQLTransformer has no ONNX converter: one line naming it and the remedy, exit 2, nothing written."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import SQLTransformer, VectorAssembler

    settings = Settings.resolve(home=str(tmp_path / "home"))
    train = spark.createDataFrame([(float(i), float(i % 3), i % 2) for i in range(40)], "a double, b double, label int")
    sql = SQLTransformer(statement="SELECT *, a * b AS ab FROM __THIS__")
    model = Pipeline(stages=[sql, VectorAssembler(inputCols=["a", "b", "ab"], outputCol="features"),
                             LogisticRegression(maxIter=5)]).fit(train)
    manifest = {"name": "withsql", "task": "classification", "label": "label", "algorithm": "logistic_regression",
                "signature": {"inputs": [{"name": "a", "type": "double"}, {"name": "b", "type": "double"}]},
                "versions": {"spark": spark.version}}
    staged = artifacts.stage(model, manifest, settings.models_root)
    Registry(settings).register("withsql", staged, artifacts.read_manifest(staged))
    out = tmp_path / "withsql-onnx"

    code = main(["--home", settings.home, "-q", "export", "--model", "withsql", "--format", "onnx", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"stage SQLTransformer ({model.stages[0].uid})" in err
    assert "sparkship serve" in err and "--format mlflow" in err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".sparkship-onnx")]


def test_a_graph_that_disagrees_with_spark_is_refused(spark):
    """The check compares with the Spark model in hand: another model's graph is refused, naming a row."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler

    from sparkship.interop.onnx_export import PredictionMismatchError, check, convert

    train = spark.createDataFrame([(float(i % 7), float(i % 5), int(i % 7 > i % 5)) for i in range(60)],
                                  "a double, b double, label int")
    inputs = [{"name": "a", "type": "double"}, {"name": "b", "type": "double"}]
    manifest = {"task": "classification", "signature": {"inputs": inputs}}
    models = [Pipeline(stages=[VectorAssembler(inputCols=["a", "b"], outputCol="features"),
                               LogisticRegression(maxIter=20, regParam=reg)]).fit(train) for reg in (0.0, 5.0)]
    graph = convert(spark, models[0], inputs, "first").SerializeToString()
    rows = [(float(i % 7), float(i % 5)) for i in range(20)]
    assert check(spark, models[0], graph, rows, manifest)["rows"] == 20
    with pytest.raises(PredictionMismatchError, match=r"ONNX Runtime's '\w+' differs from Spark's on \d+ of 20 rows"):
        check(spark, models[1], graph, rows, manifest)


@pytest.mark.parametrize("settings, column_type, why", [
    ({"handleInvalid": "skip"}, "string", "handleInvalid='skip'"),
    ({"handleInvalid": "keep"}, "double", "floating-point column 'plan'"),
])
def test_a_setting_onnx_cannot_reproduce_is_refused_before_converting(spark, settings, column_type, why):
    from pyspark.ml.feature import StringIndexerModel

    from sparkship.errors import UsageError
    from sparkship.interop.onnx_export import check_stages

    indexer = StringIndexerModel.from_labels(["a", "b"], inputCol="plan", outputCol="plan_ix", **settings)
    with pytest.raises(UsageError) as raised:
        check_stages([indexer], {"plan": column_type})
    message = str(raised.value)
    assert f"stage StringIndexerModel ({indexer.uid})" in message and why in message
    assert "\n" not in message and "sparkship serve" in message
