"""Table names through the catalog, persistent locally across CLI processes.

One flow with names, each step a separate ``sparkship`` process (real Spark with delta-spark, real Delta tables
on disk), and the same flow with paths through the CLI of this process, each sharing a ``--home`` per flow:
import -> show -> history -> train (pinned ``@0``) -> score -> monitor. The two flows run side by side once for
the module; the tests then compare their outputs with chispa and check what the named flow left in the catalog
from yet another process.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from sparkship import datasets, tables
from sparkship.cli import main
from sparkship.errors import UsageError
from sparkship.refs import TableRef, parse_table
from sparkship.spark import DRIVER_JAVA_OPTIONS_ENV
from sparkship.tables import names
from tests.helpers.cli import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.seconds(112)]

TRAIN_ROWS, MORE_ROWS, NULL_KEYS = 300, 100, 2
DERIVED = ("scores_state", "scores_quarantine", "scores_lease", "scores_profile_metrics", "scores_drift_metrics")


def _env(home: str, **extra: str) -> dict[str, str]:
    # No inherited sparkship or Spark settings, except conftest's flags for short-lived JVMs (faster, same results).
    env = {k: v for k, v in os.environ.items()
           if k == DRIVER_JAVA_OPTIONS_ENV or not k.startswith(("SPARKSHIP_", "SPARK_"))}
    env.update(SPARKSHIP_HOME=home, **extra)
    return env


def _cli(*args: str, home: str, cwd: str, expect: tuple[int, ...] = (0,), **env: str) -> dict[str, Any]:
    """One ``sparkship --json`` process; its JSON line, with ``_rc`` and ``_stderr`` added."""
    out = subprocess.run([sys.executable, "-m", "sparkship.cli", "--json", *args], env=_env(home, **env), cwd=cwd,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode in expect, f"{args}: rc {out.returncode}\n{out.stderr[-4000:]}"
    assert "Traceback" not in out.stderr, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(_rc=out.returncode, _stderr=out.stderr)
    return result


def _cli_in_process(*args: str, home: str, cwd: str, expect: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """The same command run by this process's CLI on the session fixture: the path flow, whose tables need no
    catalog shared across processes (the named flow is the one that proves names persist between processes)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["--json", "--home", home, *args])
    assert rc in expect, f"{args}: rc {rc}\n{err.getvalue()[-4000:]}"
    assert "Traceback" not in err.getvalue(), err.getvalue()[-4000:]
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    result.update(_rc=rc, _stderr=err.getvalue())
    return result


def _rows(n: int, seed: int, first_id: int):  # noqa: ANN202 - a pyarrow Table
    """Churn rows with NaN as null: a CSV holds "nan" as text, which would make the column a string."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = datasets.churn_rows(n, seed=seed, first_id=first_id)
    for i, field in enumerate(rows.schema):
        if pa.types.is_floating(field.type):
            column = rows.column(i)
            rows = rows.set_column(i, field, pc.if_else(pc.is_nan(column), pa.scalar(None, field.type), column))
    return rows


def _write_csvs(folder: str) -> tuple[str, str]:
    """The training rows, and more rows to append (two with an empty key, which scoring quarantines)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    train, more = os.path.join(folder, "train.csv"), os.path.join(folder, "more.csv")
    pacsv.write_csv(_rows(TRAIN_ROWS, seed=7, first_id=1), train)
    rows = _rows(MORE_ROWS, seed=8, first_id=10_001)
    keys = rows.column(datasets.KEY).to_pylist()
    keys[:NULL_KEYS] = [None] * NULL_KEYS
    rows = rows.set_column(rows.schema.get_field_index(datasets.KEY), datasets.KEY, pa.array(keys, pa.int64()))
    pacsv.write_csv(rows, more)
    return train, more


def _spec(folder: str, table: str) -> str:
    path = os.path.join(folder, "spec.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump({
            "name": "churn", "task": "classification", "table": table, "label": datasets.LABEL,
            "features": {"numeric": datasets.FEATURES_NUMERIC, "categorical": datasets.FEATURES_CATEGORICAL},
            "model": {"algorithm": "logistic_regression", "params": {"maxIter": 10}},
            "split": {"test_fraction": 0.2, "seed": 42},
        }, fh)
    return path


def _flow(root: str, churn: str, churn_3part: str, scores: str, train_csv: str, more_csv: str,
          cli: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """import -> import (append) -> show -> history -> train (@0) -> score -> monitor, each a ``cli`` call."""
    home, work = os.path.join(root, "home"), os.path.join(root, "work")
    os.makedirs(work)
    run: dict[str, Any] = {"home": home, "work": work, "seconds": {}}

    def step(key: str, *args: str, expect: tuple[int, ...] = (0,)) -> None:
        started = time.monotonic()
        run[key] = cli(*args, home=home, cwd=work, expect=expect)
        run["seconds"][key] = round(time.monotonic() - started, 1)

    step("import", "tables", "import", "--source", train_csv, "--table", churn)
    step("append", "tables", "import", "--source", more_csv, "--table", churn_3part)
    step("show", "tables", "show", churn, "--version", "0", "--limit", "1000")
    step("history", "tables", "history", churn_3part)
    step("train", "train", "--spec", _spec(work, f"{churn}@0"), "--run-id", "r1")
    step("score", "score", "--model", "churn/1", "--input", churn, "--output", scores, "--keys", datasets.KEY)
    step("monitor", "monitor", "--model", "churn/1", "--scores", scores, expect=(0, 2))  # 2: drift flagged
    return run


@pytest.fixture(scope="module")
def flows(spark, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The named flow (a process per step) and the path flow (this process), side by side, each its own home."""
    root = str(tmp_path_factory.mktemp("names"))
    train_csv, more_csv = _write_csvs(root)
    p = os.path.join(root, "paths", "tables")
    plans = {
        "names": ("sales.churn", "`main`.sales.`churn`", "sales.scores", _cli),
        "paths": (f"{p}/churn", f"{p}/churn", f"{p}/scores", _cli_in_process),
    }
    results: dict[str, Any] = {}

    def go(kind: str) -> None:
        try:
            churn, churn_3part, scores, cli = plans[kind]
            results[kind] = _flow(os.path.join(root, kind), churn, churn_3part, scores, train_csv, more_csv, cli)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread below
            results[kind] = exc

    started = time.monotonic()
    threads = [threading.Thread(target=go, args=(k,)) for k in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for result in results.values():
        if isinstance(result, BaseException):
            raise result
    print(f"\nflows: {time.monotonic() - started:.0f} s wall; per step (s): "
          + "; ".join(f"{k}: {v['seconds']}" for k, v in results.items()))
    return results


def _read_folder(spark, path: str):  # noqa: ANN001, ANN202 - pyspark types
    return spark.read.format("delta").load(path)


def _comparable(df):  # noqa: ANN001, ANN202
    """Vectors as arrays (chispa compares plain values), without the columns two runs cannot share: the wall-clock
    time of the run (``scored_at``, ``computed_at``, and the monitor's daily windows, which follow ``scored_at``: two
    runs on either side of midnight have different ones) and its run id (generated per run)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT

    for field in df.schema.fields:
        if isinstance(field.dataType, VectorUDT):
            df = df.withColumn(field.name, vector_to_array(field.name))
    return df.drop("scored_at", "computed_at", "window_start", "window_end", "run_id")


def test_named_and_path_runs_give_equal_outputs(flows, spark):
    from chispa import assert_df_equality

    named, pathed = flows["names"], flows["paths"]
    assert named["train"]["metrics"] == pathed["train"]["metrics"]
    warehouse = os.path.join(named["home"], "spark-warehouse", "sales.db")
    folder = os.path.join(os.path.dirname(pathed["home"]), "tables")
    for table in ("scores", "scores_quarantine", "scores_profile_metrics", "scores_drift_metrics"):
        a = _comparable(_read_folder(spark, os.path.join(warehouse, table)))
        b = _comparable(_read_folder(spark, os.path.join(folder, table)))
        assert a.count() > 0, table
        assert_df_equality(a, b, ignore_row_order=True, ignore_nullable=True)
    assert named["score"]["rows_in"] == TRAIN_ROWS + MORE_ROWS
    assert named["score"]["quarantined"] == NULL_KEYS


def test_names_persist_across_processes_and_pinning_reads_that_version(flows):
    named = flows["names"]
    assert (named["import"]["version"], named["append"]["version"]) == (0, 1)  # 3-part, backquoted: same table
    assert named["show"]["version"] == 0 and len(named["show"]["rows"]) == TRAIN_ROWS
    assert [c["version"] for c in named["history"]["history"]] == [1, 0]
    assert named["train"]["table_version"] == 0  # sales.churn@0, while the table is at version 1
    assert named["score"]["input_version"] == 1
    # Nothing named after a table landed in the working folder (a lease or state table written as a path).
    assert os.listdir(named["work"]) == ["spec.yaml"]


def test_derived_tables_are_sibling_names_seen_by_a_new_process(flows):
    home = flows["names"]["home"]
    code = (
        "import json, sys; from sparkship.spark import get_spark; from sparkship.tables import names; "
        f"spark = get_spark(home={home!r}); names.register_tables(spark); "
        "print(json.dumps(sorted(r.tableName for r in spark.sql('SHOW TABLES IN sales').collect())))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(home), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == sorted(("churn", "scores") + DERIVED)


@contextlib.contextmanager
def _session_engine(spark, name: str) -> Iterator[None]:  # noqa: ANN001 - a SparkSession
    """The shared session on engine ``name`` (a process would read SPARKSHIP_DELTA_ENGINE), restored after."""
    before = tables.engine_for(spark)
    tables.use_engine(spark, name)
    try:
        yield
    finally:
        tables.use_engine(spark, before)


def test_refusals_are_one_line_errors(flows, spark):
    """The deltars engine refuses names; a malformed name, an unknown catalog and a part the local catalog
    cannot hold are refused naming what is wrong: exit 2, one line, no traceback, nothing written. Run by this
    process's CLI on the session (native unless deltars is named, as in a fresh process), with the named flow's
    home."""
    home, work = flows["names"]["home"], flows["names"]["work"]
    cases = [
        (["tables", "show", "sales.churn"], "deltars", "needs the native engine"),
        (["tables", "show", "other.sales.churn"], "native", "catalog 'other' does not exist locally"),
        (["score", "--model", "churn/1", "--input", "sales.`churn", "--output", "sales.x", "--keys", "customer_id"],
         "native", "not a valid table name"),
        (["tables", "import", "--source", "/dev/null", "--format", "csv", "--table", "sales.`churn-2`"], "native",
         "letters, digits and '_' only"),
    ]
    # As _env gives a process: no inherited sparkship settings (SPARKSHIP_CATALOG...), the named flow's home.
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SPARKSHIP_")}
    env["SPARKSHIP_HOME"] = home
    for args, engine, message in cases:
        with _session_engine(spark, engine):
            out = run_cli(*args, env=env, cwd=work)
        errors = [line for line in out.stderr.splitlines() if line.startswith("sparkship: error:")]
        assert out.returncode == 2 and len(errors) == 1 and message in errors[0], out.stderr[-3000:]
        assert "Traceback" not in out.stderr
    for warehouse in (os.path.join(home, "spark-warehouse"), names.warehouse_dir(spark)):
        assert warehouse is not None
        assert not os.path.exists(os.path.join(warehouse, "sales.db", "x"))
        assert not os.path.exists(os.path.join(warehouse, "sales.db", "churn-2"))


def test_two_processes_creating_one_name_at_once(flows, tmp_path):
    """Both append: each commits, or the loser says ConcurrentWriteError; the table holds the winners' rows."""
    home, work = flows["names"]["home"], flows["names"]["work"]
    source = os.path.join(str(tmp_path), "rows.csv")
    with open(source, "w") as fh:
        fh.write("id,v\n1,a\n2,b\n")
    procs = [
        subprocess.Popen([sys.executable, "-m", "sparkship.cli", "--json", "tables", "import", "--source", source,
                          "--table", "race.t"], env=_env(home), cwd=work, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    won = [json.loads(out.strip().splitlines()[-1]) for rc, out, _ in outcomes if rc == 0]
    lost = [err for rc, _, err in outcomes if rc != 0]
    assert won, outcomes
    assert all("sparkship: error:" in e and "concurrent" in e and "Traceback" not in e for e in lost), lost
    assert sorted(w["version"] for w in won) == list(range(len(won)))
    from deltalake import DeltaTable

    table = DeltaTable(os.path.join(home, "spark-warehouse", "race.db", "t"))
    assert table.to_pyarrow_table().num_rows == 2 * len(won)


# --- names without Spark ------------------------------------------------------------------------------------------


def test_parsing_sibling_names_and_the_local_catalog_mapping(monkeypatch):
    assert str(names.parse_name("`main`.`sales`.`churn`")) == "main.sales.churn"
    assert names.parse_name("`a``b`.c").parts == ("a`b", "c")
    assert names.sibling("`my-cat`.sales.`scores`", "_state") == "`my-cat`.sales.scores_state"
    assert names.sibling("/x/scores/", "_lease") == "/x/scores_lease"
    assert names.local_parts("MAIN.Sales.Churn") == ("sales", "churn")
    assert names.local_parts("spark_catalog.sales.churn") == ("sales", "churn")
    with pytest.raises(UsageError, match="catalog 'dev' does not exist locally"):
        names.local_parts("dev.sales.churn")
    monkeypatch.setenv(names.CATALOG_ENV, "dev")
    assert names.local_parts("dev.sales.churn") == ("sales", "churn")
    with pytest.raises(UsageError, match="catalog 'main'"):
        names.local_parts("main.sales.churn")
    assert parse_table("`main`.sales.`churn`@3") == TableRef("main.sales.churn", 3)
    with pytest.raises(UsageError, match="not a valid table name"):
        parse_table("sales.`churn", what="--input")
