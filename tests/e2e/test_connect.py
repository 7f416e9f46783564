"""Spark Connect: import -> train -> validate -> promote -> score -> monitor on pyspark's local Connect server
(``--remote local[2]`` / ``SPARK_REMOTE=local[2]``) gives the outputs of the same flow on a classic session.

The Connect side runs the CLI (``sparkship.cli.main``, what the ``sparkship`` script runs) in a subprocess with
``SPARK_REMOTE=local[2]``, the setting that used to end in CANNOT_CONFIGURE_SPARK_CONNECT_MASTER: a classic
session and a local Connect server do not share one process, and this pytest process holds the classic ``spark``
fixture. The classic side runs the same commands through ``main`` in this process, on that fixture, while the
Connect subprocess runs (the two overlap to save wall time). The outputs are then read here with the classic
session and compared with chispa.

Floating-point results are compared to 1e-9: without ``cache`` on Connect, Spark may sum in another order.

Left out of the comparisons, because they legitimately differ between two runs: ``scored_at`` and
``computed_at`` (wall-clock times of the run), and the monitoring windows' ``window_start``/``window_end`` (the
day of ``scored_at``: the two runs could straddle midnight UTC); paths (each mode has its own folders).
Run ids are given (``--run-id``), so they are compared.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.seconds(46)]

SPARKSHIP = os.path.join(os.path.dirname(sys.executable), "sparkship")
REMOTE = "local[2]"
TIMEOUT = 600

# Runs a list of sparkship command lines in one process (one Connect server start for the whole flow) and prints
# one JSON line per command, then one saying what session it ran on.
DRIVER = """
import contextlib, io, json, sys
from sparkship.cli import main
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    print(json.dumps({"argv": argv, "rc": rc, "stdout": out.getvalue()}), flush=True)
    if rc not in (0, 2):
        sys.exit(rc)
from sparkship import tables
from sparkship.spark import active_session, is_connect
spark = active_session()
print(json.dumps({"connect": is_connect(spark), "engine": tables.engine_for(spark)}))
"""


def _env() -> dict[str, str]:
    """This process's environment without any Spark session choice: each test says which it wants."""
    drop = ("SPARK_REMOTE", "SPARK_MASTER", "MASTER", "SPARK_CONNECT_MODE_ENABLED", "SPARK_LOCAL_REMOTE",
            "SPARKSHIP_DELTA_ENGINE", "SPARKSHIP_HOME")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    return env


def _last_json(text: str) -> dict[str, Any]:
    return json.loads(text.strip().splitlines()[-1])


def _check(out: subprocess.CompletedProcess, what: str) -> None:
    assert out.returncode == 0, f"{what}: rc {out.returncode}\n{out.stderr[-4000:]}"
    assert "Traceback" not in out.stderr, out.stderr[-4000:]


class Flow:
    """The folders and command lines of one run of the flow (one per session kind)."""

    def __init__(self, root: Path, train_file: str, batch_file: str) -> None:
        from sparkship import datasets

        root.mkdir()
        self.root = root
        self.home = str(root / "home")
        self.table, self.batch, self.scores = (str(root / n) for n in ("churn", "batch", "scores"))
        self.train_file, self.batch_file = train_file, batch_file
        self.spec = root / "spec.yaml"
        self.spec.write_text(yaml.safe_dump({
            "name": "churn", "task": "classification", "table": self.table, "label": datasets.LABEL,
            "features": {"numeric": datasets.FEATURES_NUMERIC, "categorical": datasets.FEATURES_CATEGORICAL},
            "model": {"algorithm": "logistic_regression", "params": {"maxIter": 10}},
            "split": {"test_fraction": 0.2, "seed": 42},
            "validation": {"thresholds": {"areaUnderROC": {"min": 0.5}}},
        }))

    def commands(self, *global_options: str) -> list[list[str]]:
        from sparkship import datasets

        g = ["--json", "--home", self.home, *global_options]
        return [
            [*g, "tables", "import", "--source", self.train_file, "--table", self.table],
            [*g, "tables", "import", "--source", self.batch_file, "--table", self.batch],
            [*g, "train", "--spec", str(self.spec), "--run-id", "flow"],
            [*g, "validate", "--model", "churn/1", "--table", self.table, "--run-id", "flow",
             "--policy", "areaUnderROC>=0.5"],
            [*g, "promote", "--model", "churn/1", "--run-id", "flow"],
            [*g, "score", "--model", "churn@champion", "--input", self.batch, "--output", self.scores,
             "--keys", datasets.KEY, "--include-features", "--run-id", "flow"],
            [*g, "monitor", "--model", "churn@champion", "--scores", self.scores, "--run-id", "flow"],
        ]


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> tuple[str, str]:
    import pyarrow.parquet as pq

    from sparkship import datasets

    folder = tmp_path_factory.mktemp("connect-data")
    train_file, batch_file = str(folder / "train.parquet"), str(folder / "batch.parquet")
    pq.write_table(datasets.churn_rows(300, seed=7, first_id=1), train_file)
    pq.write_table(datasets.churn_rows(150, seed=8, first_id=10_001), batch_file)
    return train_file, batch_file


def _start_connect(flow: Flow) -> subprocess.Popen:
    # SPARK_REMOTE for the session; the later commands also pass --remote, which must agree with it.
    commands = flow.commands()
    commands = commands[:1] + [c[:3] + ["--remote", REMOTE] + c[3:] for c in commands[1:]]
    return subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(commands)],
                            env={**_env(), "SPARK_REMOTE": REMOTE}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _connect_results(process: subprocess.Popen) -> list[dict[str, Any]]:
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == 0, f"the flow on Spark Connect: rc {process.returncode}\n{stderr[-4000:]}"
    assert "Traceback" not in stderr, stderr[-4000:]
    lines = [json.loads(line) for line in stdout.strip().splitlines()]
    assert lines[-1] == {"connect": True, "engine": "native"}, lines[-1]
    return [_last_json(line["stdout"]) for line in lines[:-1]]


def _run_classic(flow: Flow, capsys) -> list[dict[str, Any]]:
    from sparkship.cli import main

    results = []
    for argv in flow.commands():
        capsys.readouterr()
        rc = main(argv)
        assert rc in (0, 2), (argv, capsys.readouterr().err[-4000:])  # monitor: 2 = drift flagged
        results.append(_last_json(capsys.readouterr().out))
    return results


def _same(a: Any, b: Any) -> None:
    """Equal JSON results, floats to 1e-9."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (a, b)
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), (a, b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
    else:
        assert a == b


def _rounded(df):  # noqa: ANN001, ANN202 - pyspark DataFrames
    """Doubles (and arrays of doubles) rounded to 9 decimals, for chispa's exact comparison."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, DoubleType

    def column(field):  # noqa: ANN001, ANN202
        c = F.col(f"`{field.name}`")
        if isinstance(field.dataType, DoubleType):
            return F.round(c, 9).alias(field.name)
        if isinstance(field.dataType, ArrayType) and isinstance(field.dataType.elementType, DoubleType):
            return F.transform(c, lambda x: F.round(x, 9)).alias(field.name)
        return c

    return df.select(*[column(f) for f in df.schema.fields])


def _without(payload: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in keys}


def test_the_flow_on_spark_connect_equals_classic_mode(spark, tmp_path, data_files, capsys, monkeypatch):
    from sparkship import tables
    from sparkship.spark import is_connect

    assert not is_connect(spark)
    connect, classic = Flow(tmp_path / "connect", *data_files), Flow(tmp_path / "classic", *data_files)
    process = _start_connect(connect)
    try:
        for name in ("SPARK_REMOTE", "SPARK_MASTER", "SPARKSHIP_DELTA_ENGINE"):
            monkeypatch.delenv(name, raising=False)
        before = tables.engine_for(spark)
        tables.use_engine(spark, "native")  # the Connect side detects delta-spark: the same engine here
        try:
            classic_out = _run_classic(classic, capsys)
        finally:
            tables.use_engine(spark, before)
    finally:
        connect_out = _connect_results(process)

    _assert_same_results(connect_out, classic_out)
    _assert_same_tables_and_models(spark, connect, classic)


def _assert_same_results(connect_out, classic_out) -> None:
    """The commands' results: equal but for paths and the times they ran."""
    imported, batch, trained, validated, promoted, scored, monitored = zip(connect_out, classic_out)
    for pair in (imported, batch):
        _same(_without(pair[0], "table"), _without(pair[1], "table"))
    _same(trained[0]["metrics"], trained[1]["metrics"])
    assert trained[0]["version"] == trained[1]["version"] == 1
    assert validated[0]["passed"] and validated[1]["passed"]
    _same(_without(validated[0], "table", "policy"), _without(validated[1], "table", "policy"))
    _same(_without(promoted[0], "validation"), _without(promoted[1], "validation"))
    paths = ("input", "output", "quarantine")
    _same(_without(scored[0], *paths), _without(scored[1], *paths))
    assert scored[0]["scored"] == 150
    assert scored[0]["scorer"] == "jvm-free"  # the JVM-free scorer ran in mapInArrow on Connect's Python workers
    untimed = ("drift_table", "profile_table", "drift", "windows", "flagged")
    _same(_without(monitored[0], *untimed), _without(monitored[1], *untimed))
    _same([_without(f, "window_start", "window_end") for f in monitored[0]["flagged"]],
          [_without(f, "window_start", "window_end") for f in monitored[1]["flagged"]])
    assert len(monitored[0]["windows"]) == len(monitored[1]["windows"]) == 1
    assert not monitored[0]["predictions_only"], monitored[0]  # --include-features: every feature is monitored


def _assert_same_tables_and_models(spark, connect: Flow, classic: Flow) -> None:
    """The tables both flows wrote, read back on the classic session, and the models Connect saved, which load on a
    classic session and predict as the classic ones do."""
    from chispa import assert_df_equality
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from sparkship import tables

    def read(path: str):  # noqa: ANN202
        return _rounded(tables.read(spark, path))

    assert_df_equality(read(connect.table), read(classic.table), ignore_row_order=True, allow_nan_equality=True)
    assert_df_equality(read(connect.scores), read(classic.scores), ignore_row_order=True, allow_nan_equality=True,
                       ignore_columns=["scored_at"])
    for suffix in ("_drift_metrics", "_profile_metrics"):
        assert_df_equality(read(connect.scores + suffix), read(classic.scores + suffix), ignore_row_order=True,
                           allow_nan_equality=True, ignore_columns=["computed_at", "window_start", "window_end"])

    # The models Connect saved load on a classic session and predict as the classic ones do.
    def predictions(flow: Flow):
        model = PipelineModel.load(os.path.join(flow.home, "models", "churn", "1", "model"))
        out = model.transform(tables.read(spark, classic.table))
        return _rounded(out.select("customer_id", "prediction", vector_to_array("probability").alias("probability"),
                                   vector_to_array("rawPrediction").alias("rawPrediction")))

    assert_df_equality(predictions(connect), predictions(classic), ignore_row_order=True, allow_nan_equality=True)
    manifests = [json.loads(Path(f.home, "models", "churn", "1", "manifest.json").read_text())
                 for f in (connect, classic)]
    for key in ("metrics", "reference_profile", "signature", "labels"):
        _same(manifests[0][key], manifests[1][key])
    assert read(connect.scores).where(F.col("run_id") != "flow").count() == 0


def test_a_model_trained_on_a_classic_session_validates_and_scores_on_spark_connect(spark, tmp_path, data_files,
                                                                                    capsys, monkeypatch):
    """A training job on a classic cluster, a scoring job on serverless: the model pyspark's classic writer saved
    (a pipeline of JVM stages) loads and scores on Connect, with the classic session's scores."""
    from chispa import assert_df_equality

    from sparkship import tables
    from sparkship.cli import main

    flow = Flow(tmp_path / "flow", *data_files)
    imported, batch, train, validate, promote, score, _ = flow.commands()
    for name in ("SPARK_REMOTE", "SPARK_MASTER", "SPARKSHIP_DELTA_ENGINE"):
        monkeypatch.delenv(name, raising=False)
    before = tables.engine_for(spark)
    tables.use_engine(spark, "native")
    try:
        for argv in (imported, batch, train, validate, promote, score):
            assert main(argv) == 0, (argv, capsys.readouterr().err[-4000:])
    finally:
        tables.use_engine(spark, before)
    capsys.readouterr()
    on_connect = str(tmp_path / "scores_connect")
    remote = [c[:3] + ["--remote", REMOTE] + c[3:] for c in (validate, score)]
    remote[1][remote[1].index(flow.scores)] = on_connect
    process = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(remote)],
                               env={**_env(), "SPARK_REMOTE": REMOTE}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    validated, scored = _connect_results(process)
    assert validated["passed"], validated
    assert scored["scored"] == 150, scored
    assert_df_equality(_rounded(tables.read(spark, on_connect)), _rounded(tables.read(spark, flow.scores)),
                       ignore_row_order=True, allow_nan_equality=True, ignore_columns=["scored_at"])


def test_remote_and_master_together_are_refused_before_spark_starts(tmp_path):
    out = subprocess.run(
        [SPARKSHIP, "--home", str(tmp_path / "home"), "--master", "local[1]", "--remote", REMOTE,
         "tables", "show", str(tmp_path / "t")],
        env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("sparkship: error:")]
    assert len(errors) == 1 and "--master local[1] and --remote local[2]" in errors[0], out.stderr[-2000:]
    assert "starting Spark" not in out.stderr


def test_every_command_documents_remote(capsys):
    from sparkship.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    assert "--remote URL" in capsys.readouterr().out


def test_a_flag_beats_the_environment_and_two_at_one_level_are_refused(monkeypatch):
    from sparkship.config import Settings
    from sparkship.errors import UsageError

    monkeypatch.setenv("SPARK_MASTER", "spark://cluster:7077")
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    assert Settings.resolve(home="/tmp/h").master == "spark://cluster:7077"
    chosen = Settings.resolve(home="/tmp/h", remote="sc://server:15002")
    assert (chosen.master, chosen.remote) == (None, "sc://server:15002")
    monkeypatch.setenv("SPARK_REMOTE", "sc://server:15002")
    assert Settings.resolve(home="/tmp/h", master="local[2]").remote is None
    with pytest.raises(UsageError, match="SPARK_MASTER=spark://cluster:7077 and SPARK_REMOTE=sc://server:15002"):
        Settings.resolve(home="/tmp/h")
