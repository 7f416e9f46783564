"""MLflow interop: `sparkship export --format mlflow` and `sparkship publish --to mlflow`.

Two small pipelines (StringIndexer + VectorAssembler + StandardScaler + LogisticRegression) are trained with
Spark and registered as versions 1 and 2 of one model, `champion` on version 1. The exported pyfunc is checked
against Spark's transform() computed here, both in-process and - the point of the format - in a fresh
virtualenv holding MLflow but no pyspark, with no java on PATH: `mlflow.pyfunc.load_model` and MLflow's
scoring server (`mlflow models serve --env-manager local`). Publishing goes to a real `mlflow server`.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata as importlib_metadata

import httpx
import pandas as pd
import pytest
import yaml

from sparkship import artifacts
from sparkship.config import Settings
from sparkship.registry import Registry
from tests.helpers.cli import CliRun, run_cli
from tests.helpers.ports import free_port

pytestmark = [pytest.mark.timeout(600), pytest.mark.seconds(83)]

NAME = "tumour"
FEATURES = ["f0", "f1", "f2", "f3"]
SIGNATURE = {
    "inputs": [*({"name": f, "type": "double"} for f in FEATURES), {"name": "site", "type": "string"}],
    "outputs": [{"name": "prediction", "type": "double"}, {"name": "probability", "type": "array<double>"}],
}
# The JVM-free venv gets MLflow's serving closure (and pandas, numpy, pyarrow) at the versions installed here.
VENV_ROOTS = ["mlflow-skinny", "pandas", "pyarrow", "numpy", "fastapi", "uvicorn"]
TOL = 1e-9


def _rows(n: int, seed: int) -> list[tuple]:
    import random

    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        x = [rnd.gauss(0, 1) * (k + 1) + k for k in range(len(FEATURES))]
        site = rnd.choice(["a", "b", "c"])
        label = int(x[0] - 0.5 * x[1] + (site == "b") + rnd.gauss(0, 0.5) > 0)
        out.append((*x, site, label))
    return out


def _schema() -> str:
    return ", ".join(f"{f} double" for f in FEATURES) + ", site string, label int"


@pytest.fixture(scope="module")
def setup(spark, tmp_path_factory):
    """Two registered versions (champion = 1), and Spark's predictions for a scoring set."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler
    from pyspark.ml.functions import vector_to_array

    settings = Settings.resolve(home=str(tmp_path_factory.mktemp("mlflow-home")))
    reg = Registry(settings)
    train = spark.createDataFrame(_rows(200, 1), _schema())
    versions = []
    for reg_param in (0.01, 0.3):
        model = Pipeline(stages=[
            StringIndexer(inputCol="site", outputCol="site_ix", handleInvalid="keep"),
            VectorAssembler(inputCols=[*FEATURES, "site_ix"], outputCol="raw"),
            StandardScaler(inputCol="raw", outputCol="features", withMean=True),
            LogisticRegression(maxIter=50, regParam=reg_param),
        ]).fit(train)
        manifest = {
            "name": NAME, "task": "classification", "label": "label", "algorithm": "logistic_regression",
            "signature": SIGNATURE, "metrics": {"areaUnderROC": 0.9 - reg_param},
            "spec": {"name": NAME, "model": {"algorithm": "logistic_regression", "params": {"regParam": reg_param}},
                     "features": {"columns": [*FEATURES, "site"]}},
            "training": {"table": "/data/tumour", "table_version": 7, "run_id": "job-run-42"},
            "versions": {"spark": spark.version},
        }
        staged = artifacts.stage(model, manifest, settings.models_root)
        versions.append((reg.register(NAME, staged, artifacts.read_manifest(staged)), model))
    reg.set_alias(NAME, "champion", versions[0][0].version)
    rows = _rows(60, 2) + [(0.5, 1.0, 2.0, 3.0, "never-seen", 0)]  # an unseen site: the 'keep' bucket
    scoring = spark.createDataFrame(rows, _schema()).drop("label")
    expected = {}
    for mv, model in versions:
        out = model.transform(scoring).select("prediction", vector_to_array("probability").alias("probability"))
        expected[mv.version] = [(r["prediction"], list(r["probability"])) for r in out.collect()]
    frame = scoring.toPandas()
    return settings, versions, frame, expected


# What `publish` sets process-wide in MLflow (its tracking and registry URIs, the active experiment), each as a
# module global and as an environment variable for subprocesses: restored after each in-process run.
_MLFLOW_GLOBALS = [("mlflow.tracking._tracking_service.utils", "_tracking_uri"),
                   ("mlflow.tracking._model_registry.utils", "_registry_uri"),
                   ("mlflow.tracking.fluent", "_active_experiment_id")]
_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")


@pytest.fixture
def mlflow_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's process-wide tracking state as it was before the test, once the test ends."""
    for module_name, name in _MLFLOW_GLOBALS:
        module = importlib.import_module(module_name)  # mlflow: an optional dependency, loaded by the tests only
        monkeypatch.setattr(module, name, getattr(module, name))


def _cli(settings: Settings, *args: str, **env: str) -> CliRun:
    """``sparkship --json ARGS`` in this process (the suite's session), with ``settings``' home."""
    keep = {key: os.environ.get(key) for key in _MLFLOW_ENV}  # restored by run_cli after the run
    return run_cli("--json", *args, env={**keep, **env, "SPARKSHIP_HOME": settings.home})


def _src() -> str:
    import sparkship

    return os.path.dirname(os.path.dirname(os.path.abspath(sparkship.__file__)))


@pytest.fixture(scope="module")
def exported(setup, tmp_path_factory) -> str:
    settings = setup[0]
    out = str(tmp_path_factory.mktemp("export") / "tumour-mlflow")
    proc = _cli(settings, "export", "--model", f"{NAME}@champion", "--format", "mlflow", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ref"] == f"{NAME}/1"
    return out


def _assert_matches(predictions: list[dict], expected: list[tuple]) -> None:
    assert len(predictions) == len(expected)
    for i, (got, (pred, prob)) in enumerate(zip(predictions, expected)):
        assert got["prediction"] == pred, f"row {i}"
        assert len(got["probability"]) == len(prob)
        assert max(abs(a - b) for a, b in zip(got["probability"], prob)) <= TOL, f"row {i}"


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{"prediction": float(p), "probability": [float(x) for x in q]}
            for p, q in zip(frame["prediction"], frame["probability"])]


# --- the exported directory -----------------------------------------------------------------------------------


def test_export_has_jvm_free_pyfunc_and_spark_flavor(exported, setup):
    mlmodel = yaml.safe_load(open(os.path.join(exported, "MLmodel")))
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "sparkship.interop.mlflow_pyfunc"
    assert os.path.isfile(os.path.join(exported, pyfunc["data"], "manifest.json"))
    spark_flavor = mlmodel["flavors"]["spark"]
    assert os.path.isfile(os.path.join(exported, spark_flavor["model_data"], "metadata", "_SUCCESS"))
    # the shipped Spark files are the registered artifact's, byte for byte
    registered = artifacts.read_manifest(setup[1][0][0].artifact)["files"]
    assert artifacts.verify(os.path.join(exported, pyfunc["data"]))["files"] == registered
    # the loader never imports pyspark (nor does anything it imports: checked in the JVM-free venv below)
    loader = open(os.path.join(exported, "code", "sparkship", "interop", "mlflow_pyfunc.py")).read()
    assert "pyspark" not in loader.replace("imports neither pyspark", "")
    reqs = open(os.path.join(exported, "requirements.txt")).read().lower()
    assert "pyspark" not in reqs and "java" not in reqs and "sparkship" not in reqs
    assert {r.split("==")[0] for r in reqs.split()} == {"mlflow", "numpy", "pandas", "pyarrow"}
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert [(c["name"], c["type"]) for c in inputs] == [(f["name"], f["type"]) for f in SIGNATURE["inputs"]]
    example = json.load(open(os.path.join(exported, mlmodel["saved_input_example_info"]["artifact_path"])))
    assert example["columns"] == [f["name"] for f in SIGNATURE["inputs"]]
    assert mlmodel["metadata"]["sparkship"]["training_table_version"] == 7


def test_spark_flavor_loads_the_pipeline_model(exported, setup, spark):
    import mlflow
    from chispa import assert_df_equality
    from pyspark.ml.functions import vector_to_array

    _, versions, frame, _ = setup
    loaded = mlflow.spark.load_model(exported)
    df = spark.createDataFrame(frame)

    def scored(model):
        return model.transform(df).select("prediction", vector_to_array("probability").alias("probability"))

    assert_df_equality(scored(loaded), scored(versions[0][1]), ignore_row_order=False)


def test_pyfunc_in_process_matches_spark(exported, setup):
    import mlflow

    _, _, frame, expected = setup
    model = mlflow.pyfunc.load_model(exported)
    _assert_matches(_records(model.predict(frame)), expected[1])
    single = model.predict(frame.iloc[[3]])
    _assert_matches(_records(single), expected[1][3:4])


def test_tampered_spark_file_is_refused_by_name(exported, tmp_path):
    import mlflow

    copy = str(tmp_path / "tampered")
    shutil.copytree(exported, copy)
    data = os.path.join(copy, "data", "sparkship")
    target = sorted(artifacts.read_manifest(data)["files"])[-1]
    with open(os.path.join(data, target), "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(Exception, match=f"{target}.*changed"):
        mlflow.pyfunc.load_model(copy)


def test_export_refuses_a_non_empty_out_dir_and_unknown_models(setup, tmp_path):
    settings = setup[0]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    proc = _cli(settings, "export", "--model", NAME, "--out", str(tmp_path / "busy"))
    assert proc.returncode == 2 and "not empty" in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path / "busy") == ["keep.txt"]
    proc = _cli(settings, "export", "--model", f"{NAME}/9", "--out", str(tmp_path / "new"))
    assert proc.returncode == 1 and "no version 9" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "new").exists()


def test_export_of_a_model_with_integer_inputs(spark, tmp_path):
    """int (MLflow "integer", int32) and float inputs: the input example carries their dtypes, so MLflow's schema
    check takes it, and the exported pyfunc scores rows typed as the signature says."""
    import mlflow
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler

    from sparkship.interop.mlflow_export import export_model

    rows = [(float(i % 7), i % 3, float(i % 5) / 2, float(i % 2)) for i in range(60)]
    train = spark.createDataFrame(rows, "x double, n int, f float, label double")
    model = Pipeline(stages=[VectorAssembler(inputCols=["x", "n", "f"], outputCol="features"),
                             LogisticRegression(maxIter=10)]).fit(train)
    signature = {"inputs": [{"name": "x", "type": "double"}, {"name": "n", "type": "int"},
                            {"name": "f", "type": "float"}]}
    staged = artifacts.stage(model, {"name": "ints", "task": "classification", "signature": signature},
                             str(tmp_path / "models"))
    out = str(tmp_path / "ints-mlflow")
    export_model(staged, out)
    frame = train.drop("label").toPandas().astype({"n": "int32", "f": "float32"})
    got = mlflow.pyfunc.load_model(out).predict(frame)
    expected = model.transform(train).select("prediction").toPandas()["prediction"]
    assert list(got["prediction"]) == list(expected)


def test_missing_mlflow_names_the_extra(setup, tmp_path):
    """With mlflow unimportable, both commands say which extra to install - one line, no traceback."""
    settings = setup[0]
    hide = "import sys; sys.modules['mlflow'] = None; from sparkship.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "SPARKSHIP_HOME": settings.home, "PYTHONPATH": _src()}
    for args in (["export", "--model", NAME, "--out", str(tmp_path / "x")], ["publish", "--model", NAME]):
        proc = subprocess.run([sys.executable, "-c", hide, *args], capture_output=True, text=True, env=env)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == "sparkship: error: MLflow is not installed: pip install 'sparkship[mlflow]'"


# --- without a JVM: a fresh virtualenv with MLflow, no pyspark, no java on PATH -------------------------------


def _closure(roots: list[str]) -> dict[str, str]:
    """Pinned versions of ``roots`` and everything they require, as installed in this environment."""
    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in pins:
            continue
        dist = importlib_metadata.distribution(name)
        pins[key] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return pins


def _is_jvm_tool(path: str) -> bool:
    name = os.path.basename(path)
    return name.startswith(("java", "jar", "jshell", "keytool")) or "/jvm/" in os.path.realpath(path)


def _without_java(folder: str, shadow_root: str) -> str:
    """``folder`` itself if it holds no JVM tool, else a shadow folder linking everything in it but those."""
    entries = [os.path.join(folder, e) for e in os.listdir(folder)] if os.path.isdir(folder) else []
    if not any(_is_jvm_tool(e) for e in entries):
        return folder
    shadow = os.path.join(shadow_root, folder.strip("/").replace("/", "_") or "root")
    os.makedirs(shadow, exist_ok=True)
    for entry in entries:
        link = os.path.join(shadow, os.path.basename(entry))
        if not _is_jvm_tool(entry) and not os.path.lexists(link):
            os.symlink(entry, link)
    return shadow


def _no_java_env(venv: str) -> dict[str, str]:
    """The environment with the venv first on PATH and no java reachable (JVM tools masked, JAVA_HOME unset)."""
    shadow_root = os.path.join(os.path.dirname(venv), "path-without-java")
    folders = [_without_java(p, shadow_root) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "SPARK_HOME", "PYTHONPATH")}
    return {**env, "PATH": os.pathsep.join([os.path.join(venv, "bin"), *folders]), "VIRTUAL_ENV": venv}


@pytest.fixture(scope="session")
def jvm_free_venv(tmp_path_factory) -> str:
    """`python -m venv --without-pip`, then MLflow's serving closure from the pip cache (pinned, --no-deps)."""
    venv = str(tmp_path_factory.mktemp("venv") / "jvm-free")
    pins = _closure(VENV_ROOTS)
    assert "pyspark" not in pins
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", os.path.join(venv, "bin", "python"), "install",
                    "-q", "--no-deps", "--no-compile", "--disable-pip-version-check",
                    *(f"{k}=={v}" for k, v in sorted(pins.items()))], check=True, timeout=400)
    print(f"\nJVM-free venv ({len(pins)} packages) built in {time.perf_counter() - started:.1f} s")
    return venv


def _venv_python(venv: str, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(venv, "bin", "python"), "-c", code, *args], capture_output=True,
                          text=True, env=_no_java_env(venv), timeout=300, cwd=venv)


def test_venv_has_no_pyspark_no_java_no_sparkship(jvm_free_venv):
    probe = ("import importlib.util, shutil; "
             "print([importlib.util.find_spec(m) is None for m in ('pyspark', 'sparkship', 'py4j')], "
             "shutil.which('java'), shutil.which('bash') is not None)")
    proc = _venv_python(jvm_free_venv, probe)
    assert proc.stdout.strip() == "[True, True, True] None True", proc.stderr


PYFUNC_PROBE = """
import json, sys
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
frame = pd.read_json(sys.argv[2], orient="split")
out = model.predict(frame)
assert "pyspark" not in sys.modules and "py4j" not in sys.modules
print(json.dumps([{"prediction": float(p), "probability": [float(x) for x in q]}
                  for p, q in zip(out["prediction"], out["probability"])]))
"""


def test_pyfunc_without_jvm_matches_spark(jvm_free_venv, exported, setup, tmp_path):
    _, _, frame, expected = setup
    data = str(tmp_path / "input.json")
    frame.to_json(data, orient="split", index=False)
    proc = _venv_python(jvm_free_venv, PYFUNC_PROBE, exported, data)
    assert proc.returncode == 0, proc.stderr
    _assert_matches(json.loads(proc.stdout), expected[1])


def _wait_http(url: str, proc: subprocess.Popen, log: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{open(log).read()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_mlflow_scoring_server_without_jvm_matches_spark(jvm_free_venv, exported, setup, tmp_path):
    _, _, frame, expected = setup
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [os.path.join(jvm_free_venv, "bin", "mlflow"), "models", "serve", "-m", exported, "--env-manager",
         "local", "-h", "127.0.0.1", "-p", str(port)],
        env=_no_java_env(jvm_free_venv), stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path),
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/ping", proc, log.name)
        body = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
        resp = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        _assert_matches(resp.json()["predictions"], expected[1])
        bad = httpx.post(f"http://127.0.0.1:{port}/invocations",
                         json={"dataframe_split": {"columns": ["f0"], "data": [[1.0]]}}, timeout=60)
        assert bad.status_code == 400 and "f1" in bad.text  # MLflow's schema check names a missing input
    finally:
        _stop(proc)
        log.close()


# --- publishing to a real MLflow tracking server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--host", "127.0.0.1", "--port",
         str(port), "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination",
         str(root / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(root),
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, log.name, seconds=240)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)
        log.close()


def test_publish_logs_run_registers_and_carries_alias(setup, mlflow_server, mlflow_restored, monkeypatch):
    import mlflow

    settings, versions, frame, expected = setup
    first = _cli(settings, "publish", "--model", f"{NAME}/1", "--to", "mlflow", "--tracking-uri", mlflow_server,
                 "--registered-model", "tumour_classifier")
    assert first.returncode == 0, first.stderr
    one = json.loads(first.stdout)
    second = _cli(settings, "publish", "--model", f"{NAME}/2", "--tracking-uri", mlflow_server,
                  "--registered-model", "tumour_classifier", "--alias", "challenger")
    assert second.returncode == 0, second.stderr
    two = json.loads(second.stdout)
    assert (one["aliases"], two["aliases"]) == (["champion"], ["challenger"])

    client = mlflow.MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    assert client.get_model_version_by_alias("tumour_classifier", "champion").version == one["version"]
    assert client.get_model_version_by_alias("tumour_classifier", "challenger").version == two["version"]
    run = client.get_run(one["run_id"])
    assert run.data.params["training.table"] == "/data/tumour"
    assert run.data.params["training.table_version"] == "7"
    assert run.data.params["training.run_id"] == "job-run-42"
    assert run.data.params["spec.model.params.regParam"] == "0.01"
    assert run.data.metrics["areaUnderROC"] == pytest.approx(0.89)
    assert run.data.tags["sparkship.model_version"] == f"{NAME}/1"
    assert run.data.tags["sparkship.training_table_version"] == "7"
    assert client.get_model_version("tumour_classifier", one["version"]).tags["sparkship.job_run_id"] == "job-run-42"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    champion = mlflow.pyfunc.load_model("models:/tumour_classifier@champion")
    _assert_matches(_records(champion.predict(frame)), expected[1])
    challenger = mlflow.pyfunc.load_model("models:/tumour_classifier@challenger")
    _assert_matches(_records(challenger.predict(frame)), expected[2])


def test_publish_bad_alias_and_uc_name_fail_cleanly(setup, mlflow_server, mlflow_restored):
    settings = setup[0]
    proc = _cli(settings, "publish", "--model", f"{NAME}/1", "--tracking-uri", mlflow_server, "--alias", "latest")
    assert proc.returncode == 2 and "not a valid MLflow alias" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli(settings, "publish", "--model", f"{NAME}/1", "--tracking-uri", mlflow_server,
                DATABRICKS_RUNTIME_VERSION="17.3")
    assert proc.returncode == 2 and "catalog.schema.model" in proc.stderr


def test_publish_entry_point_takes_the_cli_parameters():
    code = ("import sys; sys.argv = ['sparkship-publish', '--help']; "
            "from sparkship.entrypoints import publish; publish()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": _src()})
    assert proc.returncode == 0
    for flag in ("--model", "--registered-model", "--alias", "--tracking-uri", "--experiment"):
        assert flag in proc.stdout
