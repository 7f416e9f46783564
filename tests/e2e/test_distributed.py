"""Issue 9: import -> train -> score on a real Spark standalone cluster (a master and 2 workers on 127.0.0.1)
gives the same tables as local mode.

The cluster-mode commands run as `python -m sparkship.cli --master spark://...` subprocesses (one driver each);
the local-mode ones run in this process on the session fixture. Workers and drivers share this machine's
filesystem, so the Delta tables under tmp serve both.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
import yaml
from chispa import assert_approx_df_equality, assert_df_equality

from sparkship import datasets, tables
from sparkship.cli import main
from tests.helpers.spark_cluster import StandaloneCluster  # noqa: E402 - sibling test module

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600), pytest.mark.seconds(97)]

ROWS = 2000
PARTS = 4  # CSV files in the extract, hence read tasks and data files per table
MODEL = "churn"
KEY = datasets.KEY
# Columns of a scores table that differ between any two runs by design (time, generated run id).
RUN_COLUMNS = ("scored_at", "run_id")
CLI_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with StandaloneCluster(str(tmp_path_factory.mktemp("cluster")), workers=2, cores=1, memory="1g") as running:
        yield running


def write_csv_parts(table: Any, folder: str, parts: int) -> str:
    """The dataset as ``parts`` CSV files in ``folder``, as an extract lands: nulls empty, NaN as Spark's "NaN".

    Several files make several read tasks, so each import writes several data files, read back in the order of
    their random names: the two tables hold the same rows, most likely in another order (23 times in 24), which
    a split drawn with ``rand(seed)`` would turn into another train/test split.
    """
    os.makedirs(folder)
    bounds = [round(i * table.num_rows / parts) for i in range(parts + 1)]
    for i in range(parts):
        chunk = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        with open(os.path.join(folder, f"part-{i}.csv"), "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(chunk.column_names)
            for row in zip(*(chunk.column(c).to_pylist() for c in chunk.column_names)):
                writer.writerow(["" if v is None else ("NaN" if v != v else v) for v in row])
    return folder


def write_spec(path: str, table: str) -> str:
    spec = {
        "name": MODEL,
        "task": "classification",
        "table": table,
        "label": datasets.LABEL,
        "features": {"numeric": datasets.FEATURES_NUMERIC, "categorical": datasets.FEATURES_CATEGORICAL},
        "model": {"algorithm": "logistic_regression", "params": {"maxIter": 50, "regParam": 0.01}},
        "split": {"test_fraction": 0.25, "seed": 3},
    }
    with open(path, "w") as fh:
        yaml.safe_dump(spec, fh)
    return path


def run_cli(cluster: StandaloneCluster, home: str, *args: str, log_path: str) -> dict[str, Any]:
    """`sparkship --json ARGS` as a driver of ``cluster``; its JSON result. Its stderr (the log) goes to log_path."""
    cmd = [sys.executable, "-m", "sparkship.cli", "--master", cluster.master_url, "--home", home, "--json", *args]
    with open(log_path, "w") as log:
        # Its own process group: on a timeout the driver's JVM goes with it.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=cluster.env(), text=True,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"{' '.join(args)} ran over {CLI_TIMEOUT_S}s:\n{open(log_path).read()[-4000:]}")
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{out}\n{open(log_path).read()[-4000:]}"
    return json.loads(out.strip().splitlines()[-1])


def run_local(home: str, *args: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The same command in this process: it takes the active local session (the ``spark`` fixture)."""
    capsys.readouterr()
    rc = main(["--home", home, "--json", *args])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out.strip().splitlines()[-1])


def pipeline(workdir: str, source: str, run: Any) -> dict[str, Any]:
    """import -> train -> score, tables under ``workdir``; ``run(*args)`` runs one CLI command (in its own home).
    Returns the paths and the commands' results."""
    table, scores = os.path.join(workdir, "churn"), os.path.join(workdir, "scores")
    spec = write_spec(os.path.join(workdir, "spec.yml"), table)
    imported = run("tables", "import", "--source", source, "--format", "csv", "--table", table)
    trained = run("train", "--spec", spec)
    scored = run("score", "--model", f"{MODEL}/{trained['version']}", "--input", table, "--output", scores,
                 "--keys", KEY)
    return {"table": table, "scores": scores, "imported": imported, "trained": trained, "scored": scored}


def data_files(table: str) -> list[str]:
    return sorted(f for f in os.listdir(table) if f.endswith(".parquet"))


def comparable_scores(spark: Any, path: str) -> Any:
    """A scores table less its per-run columns, ``probability`` spread over ``p0``, ``p1``, ordered by key."""
    from pyspark.sql import functions as F

    df = tables.read(spark, path)
    classes = df.select(F.max(F.size("probability"))).first()[0]
    assert classes == 2, classes
    spread = [F.col("probability")[i].alias(f"p{i}") for i in range(classes)]
    return df.select(*[c for c in df.columns if c not in RUN_COLUMNS], *spread).drop("probability").orderBy(KEY)


def test_cluster_run_matches_local_mode(spark, cluster, tmp_path, capsys):
    source = write_csv_parts(datasets.churn_rows(ROWS, seed=21), str(tmp_path / "extract"), PARTS)
    homes = {mode: tmp_path / mode for mode in ("cluster", "local")}
    for folder in homes.values():
        folder.mkdir()

    def on_cluster(*args: str) -> dict[str, Any]:
        log_path = homes["cluster"] / f"{'-'.join(args[:2] if args[0] == 'tables' else args[:1])}.log"
        return run_cli(cluster, str(homes["cluster"] / "home"), *args, log_path=str(log_path))

    def in_local_mode(*args: str) -> dict[str, Any]:
        return run_local(str(homes["local"] / "home"), *args, capsys=capsys)

    assert spark.sparkContext.master.startswith("local")
    dist = pipeline(str(homes["cluster"]), source, on_cluster)
    local = pipeline(str(homes["local"]), source, in_local_mode)

    # The cluster ran the three drivers (import, train, score), each with one executor per worker, and the
    # executors on both workers ran tasks.
    state = cluster.state()
    assert state is not None and state["aliveworkers"] == 2, state
    apps = sorted(state["completedapps"], key=lambda a: a["starttime"])
    assert [a["state"] for a in apps] == ["FINISHED"] * 3, apps
    executors = {app["id"]: cluster.executor_logs(app["id"]) for app in apps}
    for app_id, logs in executors.items():
        assert sorted(k.split("/")[0] for k in logs) == ["worker-0", "worker-1"], (app_id, sorted(logs))
    tasks = {f"{app_id}:{executor}": text.count("Finished task")
             for app_id, logs in executors.items() for executor, text in logs.items()}
    for worker in ("worker-0", "worker-1"):
        assert sum(n for k, n in tasks.items() if f":{worker}/" in k) > 0, tasks

    # Same rows imported, each table written by PARTS tasks (in a layout of its own).
    assert dist["imported"]["rows"] == local["imported"]["rows"] == ROWS
    assert len(data_files(dist["table"])) == len(data_files(local["table"])) == PARTS
    assert_df_equality(
        tables.read(spark, dist["table"]).orderBy(KEY), tables.read(spark, local["table"]).orderBy(KEY),
        allow_nan_equality=True,
    )

    # Same train/test split (drawn from the rows, not from the layout) and the same held-out metrics.
    manifests = [json.load(open(os.path.join(r["trained"]["artifact"], "manifest.json"))) for r in (dist, local)]
    split = [(m["training"]["rows_train"], m["training"]["rows_test"]) for m in manifests]
    assert split[0] == split[1] and sum(split[0]) == ROWS, split
    assert manifests[0]["metrics"] == pytest.approx(manifests[1]["metrics"], abs=1e-6)

    # Same scores: keys, predictions, probabilities, and the lineage that does not depend on the run. The two
    # fits sum their gradients over differently ordered rows, so probabilities agree to rounding, not bit for bit;
    # chispa compares floats approximately but arrays exactly, hence one column per class.
    assert dist["scored"]["scored"] == local["scored"]["scored"] == ROWS
    dist_scores, local_scores = (comparable_scores(spark, r["scores"]) for r in (dist, local))
    assert dist_scores.count() == ROWS
    assert_approx_df_equality(dist_scores, local_scores, precision=1e-9)
