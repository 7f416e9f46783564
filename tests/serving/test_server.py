"""The REST server (real uvicorn on 127.0.0.1) and the offline `predict` command.

Two tiny PipelineModels are trained with Spark, staged with sparkship.artifacts and registered as versions 1
and 2 of one model; `champion` points at version 1. Scores are checked against Spark's transform().
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from sparkship.cli import main as cli_main
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from sparkship.serving import load
from sparkship.serving.server import ModelHolder, create_app
from sparkship.serving.source import resolve, resolve_folder
from tests.helpers.ports import free_port
from tests.helpers.server import GOOD, NAME, SIGNATURE, serve_in_thread

pytestmark = [pytest.mark.timeout(300), pytest.mark.seconds(19), pytest.mark.quick]


def _spark_scores(spark, model, records: list[dict]) -> list[dict]:
    from pyspark.ml.functions import vector_to_array

    df = spark.createDataFrame(records, "age double, plan string, income double")
    out = model.transform(df).select("prediction", vector_to_array("probability").alias("probability"))
    return [r.asDict() for r in out.collect()]


def _as_spark_row(record: dict) -> dict:
    """The same record as a Spark row: a double column holds 23.0, and NaN is the Imputer's null."""
    age = record["age"]
    return {**record, "age": None if age is None or age != age else float(age)}


@pytest.fixture(scope="module")
def server(registry_setup):
    """uvicorn in a thread, serving version 1 by NAME/VERSION."""
    settings, _ = registry_setup
    with serve_in_thread(create_app(ModelHolder(resolve(parse_ref(f"{NAME}/1"), settings)))) as client:
        yield client


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


def _keep_predicting(base: str, stop: threading.Event, results: list[tuple[int, list[dict]]],
                     failures: list[str]) -> None:
    """POST two good records until ``stop``: each answer's (version, predictions) to ``results``, else a failure."""
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


def _await_health(proc: subprocess.Popen, base: str, timeout_s: float = 60.0) -> None:
    """Return once the server answers /health; fail with its stderr if it exits or does not answer in time."""
    deadline = time.time() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "server did not start"
        time.sleep(0.2)


def test_alias_move_swaps_models_without_a_failed_request(registry_setup):
    """`sparkship serve --model churn@champion` follows the alias while a client keeps sending requests."""
    settings, models = registry_setup
    (v1, _), (v2, _) = models
    port = free_port()
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
    try:
        _await_health(proc, base)
        worker = threading.Thread(target=_keep_predicting, args=(base, stop, results, failures))
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
    scorer = resolve(parse_ref(f"{NAME}@champion"), settings).scorer
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


# --- access: registry or folder, paths, tokens ------------------------------------------------------------------


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_metadata_shows_no_filesystem_path(server, registry_setup):
    settings, models = registry_setup
    folder = resolve_folder(models[0][0].artifact)
    with serve_in_thread(create_app(ModelHolder(folder))) as by_folder:
        for client in (server, by_folder):
            meta = client.get("/metadata").json()
            assert meta["name"] == NAME
            leaked = [s for s in _strings(meta) if os.path.isabs(s) or settings.home in s or os.sep + "tmp" in s]
            assert leaked == [], f"/metadata shows filesystem paths: {leaked}"
        assert by_folder.get("/metadata").json()["source"] == "folder"
    assert server.get("/metadata").json()["source"] == "registry"


def test_a_token_guards_everything_but_health(registry_setup):
    settings, _ = registry_setup
    token = "t0ken-" + "x" * 40
    app = create_app(ModelHolder(resolve(parse_ref(f"{NAME}/1"), settings)), token=token)
    with serve_in_thread(app) as client:
        good = {"Authorization": f"Bearer {token}"}
        for headers in ({}, {"Authorization": f"Bearer {token[:-1]}"}, {"Authorization": f"Bearer {token}x"},
                        {"Authorization": token}, {"Authorization": f"Basic {token}"}, {"Authorization": "Bearer"}):
            assert client.post("/predict", json=GOOD[0], headers=headers).status_code == 401, headers
            meta = client.get("/metadata", headers=headers)
            assert meta.status_code == 401 and meta.headers["www-authenticate"].startswith("Bearer")
            assert "bearer token" in meta.json()["detail"][0]["msg"]
            assert client.get("/openapi.json", headers=headers).status_code == 401
        assert client.get("/health").json()["status"] == "ok"
        assert client.post("/predict", json=GOOD[0], headers=good).status_code == 200
        assert client.get("/metadata", headers=good).json()["version"] == 1
        assert client.post("/predict", json=GOOD[0], headers={"authorization": f"bearer {token}"}).status_code == 200


def _start(args: list[str], env: dict[str, str], port: int, log) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "sparkship.cli", *args, "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while True:
        assert proc.poll() is None, open(log.name).read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert time.time() < deadline, "server did not start"
        time.sleep(0.2)


def test_serve_command_token_from_a_file_or_the_environment(registry_setup, tmp_path):
    settings, _ = registry_setup
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file\n")
    env = {**os.environ, "SPARKSHIP_HOME": settings.home, "SPARKSHIP_SERVE_TOKEN": "from-the-env"}
    for extra, token in ((["--token-file", str(token_file)], "from-the-file"), ([], "from-the-env")):
        port = free_port()
        with open(tmp_path / "serve.log", "w") as log:
            proc = _start(["serve", "--model", f"{NAME}/1", *extra], env, port, log)
        try:
            url = f"http://127.0.0.1:{port}"
            assert httpx.post(f"{url}/predict", json=GOOD[0]).status_code == 401
            assert httpx.post(f"{url}/predict", json=GOOD[0],
                              headers={"Authorization": f"Bearer {token}"}).status_code == 200
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_a_reachable_address_needs_a_token_or_an_explicit_flag(registry_setup, tmp_path, capsys):
    settings, _ = registry_setup
    env = {k: v for k, v in os.environ.items() if k != "SPARKSHIP_SERVE_TOKEN"}
    code = subprocess.run([sys.executable, "-m", "sparkship.cli", "--home", settings.home, "serve", "--model",
                           f"{NAME}/1", "--host", "0.0.0.0", "--port", str(free_port())],
                          env=env, capture_output=True, text=True, timeout=60)
    assert code.returncode == 2
    assert "--token-file" in code.stderr and "--allow-unauthenticated" in code.stderr
    assert "Traceback" not in code.stderr
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert cli_main(["--home", settings.home, "serve", "--model", f"{NAME}/1", "--token-file", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err
    # With the flag it serves (reached here on loopback) and says it runs without a token.
    port = free_port()
    with open(tmp_path / "open.log", "w") as log:
        proc = _start(["--home", settings.home, "serve", "--model", f"{NAME}/1", "--host", "0.0.0.0",
                       "--allow-unauthenticated"], env, port, log)
    try:
        assert httpx.post(f"http://127.0.0.1:{port}/predict", json=GOOD[0]).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "WITHOUT a token" in (tmp_path / "open.log").read_text()


def test_registry_reference_and_folder_are_told_apart(registry_setup, tmp_path, capsys, monkeypatch):
    """`--model churn` is the registered model even when ./churn is a model folder; `--path churn` is the folder;
    a folder given to --model, or an unregistered name that is a folder, is refused saying to use --path."""
    import shutil

    settings, models = registry_setup
    monkeypatch.chdir(tmp_path)
    shutil.copytree(models[0][0].artifact, tmp_path / NAME)
    shutil.copytree(models[0][0].artifact, tmp_path / "local_only")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(_as_spark_row(r)) + "\n" for r in GOOD))
    base = ["--home", settings.home, "--json", "predict", "--input", "in.jsonl", "--output", "out.jsonl"]

    def run(*flags: str) -> tuple[int, dict]:
        code = cli_main([*base, *flags])
        captured = capsys.readouterr()
        lines = (captured.out or captured.err).strip().splitlines()
        return code, json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {"error": captured.err}

    code, out = run("--model", NAME)
    assert code == 0 and (out["model"], out["version"]) == (NAME, models[1][0].version)  # the latest version
    code, out = run("--path", NAME)
    assert code == 0 and (out["model"], out["version"]) == (NAME, None)
    code, out = run("--model", f"./{NAME}")
    assert code == 2 and f"--path ./{NAME}" in out["error"]
    code, out = run("--model", "local_only")
    assert code == 1 and "--path local_only" in out["error"]
    code, out = run("--path", "in.jsonl")
    assert code == 2 and "not a model folder" in out["error"]
    with pytest.raises(SystemExit):
        cli_main([*base, "--model", NAME, "--path", NAME])
