"""The REST server (real uvicorn on 127.0.0.1) and the offline `predict` command.

Two tiny PipelineModels are trained with Spark, staged with sparkship.artifacts and registered as versions 1
and 2 of one model; `champion` points at version 1. Scores are checked against Spark's transform().
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from sparkship import artifacts
from sparkship.cli import main as cli_main
from sparkship.config import Settings
from sparkship.registry import Registry
from sparkship.serving import load
from sparkship.serving.server import ModelHolder, create_app
from sparkship.serving.source import resolve

pytestmark = pytest.mark.timeout(300)

NAME = "churn"
SIGNATURE = {
    "inputs": [{"name": "age", "type": "double"}, {"name": "plan", "type": "string"},
               {"name": "income", "type": "double"}],
    "outputs": [{"name": "prediction", "type": "double"}, {"name": "probability", "type": "array<double>"}],
}
GOOD = [
    {"age": 41.0, "plan": "pro", "income": 5.5},
    {"age": None, "plan": "basic", "income": 1.0},      # imputed
    {"age": 23, "plan": "never-seen", "income": 2.25},   # unseen label: 'keep' bucket; int for a double
    {"age": float("nan"), "plan": None, "income": 0.0},  # NaN is the Imputer's missing value; null plan: keep
]


def _rows(flip: bool) -> list[tuple]:
    out = []
    for i in range(120):
        age = None if i % 11 == 0 else 20.0 + (i * 7) % 50
        plan = ["basic", "pro", "team"][i % 3]
        income = (i * 13) % 17 / 2.0
        label = int(((age or 40) > 40) ^ (plan == "pro") ^ flip ^ (i % 7 == 0))
        out.append((age, plan, income, label))
    return out


@pytest.fixture(scope="module")
def registry_setup(spark, tmp_path_factory):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import Imputer, StringIndexer, VectorAssembler

    settings = Settings.resolve(home=str(tmp_path_factory.mktemp("serve-home")))
    reg = Registry(settings)
    models = []
    for flip in (False, True):
        df = spark.createDataFrame(_rows(flip), "age double, plan string, income double, label int")
        model = Pipeline(stages=[
            Imputer(inputCols=["age"], outputCols=["age_i"]),
            StringIndexer(inputCol="plan", outputCol="plan_ix", handleInvalid="keep"),
            VectorAssembler(inputCols=["age_i", "plan_ix", "income"], outputCol="features"),
            LogisticRegression(maxIter=30, regParam=0.01),
        ]).fit(df)
        manifest = {"name": NAME, "task": "classification", "label": "label", "algorithm": "logistic_regression",
                    "signature": SIGNATURE}
        staged = artifacts.stage(model, manifest, settings.models_root)
        mv = reg.register(NAME, staged, artifacts.read_manifest(staged))
        models.append((mv, model))
    reg.set_alias(NAME, "champion", models[0][0].version)
    return settings, models


def _spark_scores(spark, model, records: list[dict]) -> list[dict]:
    from pyspark.ml.functions import vector_to_array

    df = spark.createDataFrame(records, "age double, plan string, income double")
    out = model.transform(df).select("prediction", vector_to_array("probability").alias("probability"))
    return [r.asDict() for r in out.collect()]


def _as_spark_row(record: dict) -> dict:
    """The same record as a Spark row: a double column holds 23.0, and NaN is the Imputer's null."""
    age = record["age"]
    return {**record, "age": None if age is None or age != age else float(age)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(registry_setup):
    """uvicorn in a thread, serving version 1 by NAME/VERSION."""
    import uvicorn

    settings, _ = registry_setup
    holder = ModelHolder(resolve(f"{NAME}/1", settings))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(holder), host="127.0.0.1", port=port, log_level="warning",
                                       access_log=False))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield client
    srv.should_exit = True
    thread.join(timeout=10)


def test_predict_matches_spark(spark, server, registry_setup):
    _, models = registry_setup
    expected = _spark_scores(spark, models[0][1], [_as_spark_row(r) for r in GOOD])
    resp = server.post("/predict", content=json.dumps(GOOD))  # json.dumps writes NaN as Python's json reads it
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == NAME and body["version"] == 1
    assert len(body["predictions"]) == len(GOOD)
    for got, want in zip(body["predictions"], expected):
        assert got["prediction"] == want["prediction"]
        assert max(abs(a - b) for a, b in zip(got["probability"], want["probability"])) <= 1e-9
    one = server.post("/predict", json=GOOD[0])
    assert one.status_code == 200 and one.json()["predictions"] == body["predictions"][:1]
    # A list long enough for the batch path gives the same answers as the single-record path.
    many = server.post("/predict", content=json.dumps(GOOD * 100)).json()["predictions"]
    for i, got in enumerate(many):
        want = body["predictions"][i % len(GOOD)]
        assert got["prediction"] == want["prediction"]
        assert max(abs(a - b) for a, b in zip(got["probability"], want["probability"])) <= 1e-12


@pytest.mark.parametrize(
    "body, field, row",
    [
        ({"age": 41.0, "plan": "pro"}, "income", None),                        # missing field
        ({"age": "old", "plan": "pro", "income": 1.0}, "age", None),           # wrong type
        ({"age": 41.0, "plan": 3.5, "income": 1.0}, "plan", None),             # wrong type
        ({"age": True, "plan": "pro", "income": 1.0}, "age", None),            # a boolean is not a number
        ({"age": 41.0, "plan": "pro", "income": math.inf}, "income", None),    # non-finite
        ({"age": 41.0, "plan": "pro", "income": math.nan}, "income", None),    # NaN into VectorAssembler 'error'
        ({"age": 41.0, "plan": "pro", "income": None}, "income", None),        # null into VectorAssembler 'error'
        ([GOOD[0], {"age": 1.0, "plan": "pro"}], "income", 1),                 # the bad record of a list
        ([GOOD[0], ["not", "a", "record"]], "<record>", 1),
        ([], "<body>", None),
        ("just a string", "<body>", None),
    ],
)
def test_bad_input_is_422_naming_the_field(server, body, field, row):
    resp = server.post("/predict", content=json.dumps(body), headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"][0]
    assert detail["field"] == field and field in detail["msg"]
    assert detail.get("row") == row


def test_malformed_json_and_oversized_bodies(server):
    resp = server.post("/predict", content=b'{"age": 41.0, "plan": ', headers={"content-type": "application/json"})
    assert resp.status_code == 422 and "JSON" in resp.json()["detail"][0]["msg"]
    big = json.dumps([GOOD[0]] * 30000).encode()
    assert len(big) > 1 << 20
    assert server.post("/predict", content=big).status_code == 413
    # Without a Content-Length (chunked upload) the limit holds while reading.
    chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))
    assert server.post("/predict", content=chunks).status_code == 413
    assert server.post("/predict", json=GOOD[0]).status_code == 200  # still serving


def test_health_metadata_and_docs(server):
    health = server.get("/health").json()
    assert health == {"status": "ok", "model": NAME, "version": 1}
    meta = server.get("/metadata").json()
    assert meta["name"] == NAME and meta["version"] == 1
    assert meta["signature"]["inputs"] == SIGNATURE["inputs"]
    assert [o["name"] for o in meta["signature"]["outputs"]] == ["prediction", "probability"]
    assert [s["class"] for s in meta["stages"]] == ["ImputerModel", "StringIndexerModel", "VectorAssembler",
                                                     "LogisticRegressionModel"]
    assert server.get("/docs").status_code == 200
    spec = server.get("/openapi.json").json()
    schema = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["oneOf"][0]["required"]) == {"age", "plan", "income"}


def test_alias_move_swaps_models_without_a_failed_request(registry_setup):
    """`sparkship serve --model churn@champion` follows the alias while a client keeps sending requests."""
    settings, models = registry_setup
    (v1, _), (v2, _) = models
    port = _free_port()
    env = {**os.environ, "SPARKSHIP_HOME": settings.home}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparkship.cli", "-q", "serve", "--model", f"{NAME}@champion", "--port", str(port),
         "--poll-seconds", "0.3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    results: list[tuple[int, list[dict]]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=base, timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post("/predict", json=GOOD[:2])
                    if r.status_code != 200:
                        failures.append(f"{r.status_code}: {r.text}")
                    else:
                        results.append((r.json()["version"], r.json()["predictions"]))
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "server did not start"
            time.sleep(0.2)
        worker = threading.Thread(target=client_loop)
        worker.start()
        time.sleep(1.0)
        Registry(settings).set_alias(NAME, "champion", v2.version, expect_version=v1.version)
        deadline = time.time() + 30
        while httpx.get(f"{base}/metadata", timeout=5).json()["version"] != v2.version:
            assert time.time() < deadline, "the server never picked up the alias move"
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        worker.join(timeout=20)
        meta = httpx.get(f"{base}/metadata", timeout=5).json()
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=20)
    assert failures == []
    versions = [v for v, _ in results]
    assert versions[0] == v1.version and versions[-1] == v2.version
    assert versions == sorted(versions), "a request was answered by the old model after the swap"
    assert meta["alias"] == "champion" and meta["swaps"] == 1
    for version, predictions in (results[0], results[-1]):
        scorer = load(models[version - 1][0].artifact)
        assert predictions == [scorer.score_one(r) for r in GOOD[:2]]


@pytest.mark.parametrize("fmt_in, fmt_out", [("csv", "jsonl"), ("jsonl", "parquet"), ("parquet", "csv")])
def test_predict_command_scores_files(registry_setup, tmp_path, capsys, fmt_in, fmt_out):
    import pyarrow as pa
    import pyarrow.parquet as pq

    settings, models = registry_setup
    records = [_as_spark_row(r) for r in GOOD]
    src = tmp_path / f"in.{fmt_in}"
    table = pa.Table.from_pylist(records)
    if fmt_in == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, src)
    elif fmt_in == "parquet":
        pq.write_table(table, src)
    else:
        src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / f"out.{fmt_out}"
    code = cli_main(["--home", settings.home, "--json", "predict", "--model", f"{NAME}@champion",
                     "--input", str(src), "--output", str(out)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows_in"] == len(records) and summary["rows_scored"] == len(records)
    if fmt_out == "parquet":
        rows = pq.read_table(out).to_pylist()
    elif fmt_out == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        import pyarrow.csv as pcsv

        rows = pcsv.read_csv(out, convert_options=pcsv.ConvertOptions(strings_can_be_null=True)).to_pylist()
        for r in rows:
            r["probability"] = json.loads(r["probability"])
    scorer = resolve(f"{NAME}@champion", settings).scorer
    for rec, row in zip(records, rows):
        want = scorer.score_one(rec)
        assert row["plan"] == rec["plan"] and row["prediction"] == want["prediction"]
        assert max(abs(a - b) for a, b in zip(row["probability"], want["probability"])) <= 1e-12


def test_predict_command_refuses_unknown_formats_and_models(registry_setup, tmp_path, capsys):
    settings, _ = registry_setup
    (tmp_path / "in.txt").write_text("x")
    assert cli_main(["--home", settings.home, "predict", "--model", f"{NAME}/1", "--input",
                     str(tmp_path / "in.txt"), "--output", str(tmp_path / "o.csv")]) == 2
    assert "unknown format" in capsys.readouterr().err
    assert cli_main(["--home", settings.home, "predict", "--model", "nosuchmodel/1", "--input",
                     str(tmp_path / "in.csv"), "--output", str(tmp_path / "o.csv")]) != 0
    assert "nosuchmodel" in capsys.readouterr().err
