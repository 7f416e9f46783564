"""Expected failures through the `sparkship` command: a clear one-line error, a non-zero exit, no traceback.

The command runs in this process on the suite's session (:func:`tests.helpers.cli.run_cli`); the missing-jars
case needs a fresh JVM, so it runs the console script itself: the entry point's end-to-end check.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.cli import CliRun, run_cli

pytestmark = pytest.mark.seconds(20)

SPARKSHIP = os.path.join(os.path.dirname(sys.executable), "sparkship")


def _assert_clean_failure(out: CliRun | subprocess.CompletedProcess, *words: str, code: int | None = None) -> str:
    assert out.returncode != 0, out.stdout
    if code is not None:
        assert out.returncode == code, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-4000:]
    message = [line for line in out.stderr.splitlines() if line.startswith("sparkship: error:")]
    assert len(message) == 1, out.stderr[-4000:]
    for word in words:
        assert word in message[0], message[0]
    return message[0]


@pytest.fixture
def csv_file(tmp_path) -> str:
    path = tmp_path / "rows.csv"
    path.write_text("id,score\n1,0.5\n2,1.5\n")
    return str(path)


def test_a_lost_compare_and_set_is_a_concurrent_write_error(spark, home, tmp_path, csv_file):
    table = str(tmp_path / "t")
    assert run_cli("tables", "import", "--source", csv_file, "--table", table).returncode == 0
    assert run_cli("tables", "import", "--source", csv_file, "--table", table).returncode == 0
    out = run_cli("tables", "import", "--source", csv_file, "--table", table, "--expected-version", "0", "--json")
    _assert_clean_failure(out, table, "version 1", "not 0", code=1)
    assert json.loads(out.stdout)["type"] == "ConcurrentWriteError"


def test_a_missing_table(spark, home, tmp_path):
    _assert_clean_failure(run_cli("tables", "show", str(tmp_path / "nowhere")), "no Delta table",
                          str(tmp_path / "nowhere"))


def test_a_schema_mismatch(spark, home, tmp_path, csv_file):
    table = str(tmp_path / "t")
    assert run_cli("tables", "import", "--source", csv_file, "--table", table).returncode == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("id,score,extra\n3,0.1,x\n")
    _assert_clean_failure(run_cli("tables", "import", "--source", str(bad), "--table", table), "extra")


def test_a_bad_spec(spark, home, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: churn\ntask: classification\ntable: /nowhere\nlabel: y\nfeatures:\n  numeric: [a]\n"
                    "model:\n  algorithm: no_such_algorithm\n")
    _assert_clean_failure(run_cli("train", "--spec", str(spec)), "algorithm", code=2)


def test_an_unsupported_model_stage(spark, home, tmp_path):
    from pyspark.ml.recommendation import ALS

    ratings = spark.createDataFrame([(u, i, float((u * i) % 5)) for u in range(6) for i in range(5)],
                                    "user int, item int, rating double")
    model_dir = str(tmp_path / "als")
    ALS(userCol="user", itemCol="item", ratingCol="rating", rank=2, maxIter=2).fit(ratings).save(model_dir)
    rows = tmp_path / "rows.csv"
    rows.write_text("user,item\n1,2\n")
    out = run_cli("predict", "--path", model_dir, "--input", str(rows), "--output", str(tmp_path / "out.csv"))
    _assert_clean_failure(out, "ALSModel")


def test_missing_jars_through_the_console_script(home, tmp_path, csv_file):
    """A fresh process (the session's jars are chosen when its JVM starts), run as the installed `sparkship`
    console script: the entry point itself exits non-zero with one error line."""
    env = {**os.environ, "SPARKSHIP_DELTA_ENGINE": "native", "SPARKSHIP_DELTA_JARS": str(tmp_path / "no-jars")}
    out = subprocess.run([SPARKSHIP, "tables", "import", "--source", csv_file, "--table", str(tmp_path / "t")],
                         env=env, capture_output=True, text=True, timeout=600)
    _assert_clean_failure(out, "make jars", "SPARKSHIP_DELTA_ENGINE=deltars", code=2)
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("root", ["s3://bucket/registry", "dbfs:/sparkship/registry", "abfss://c@a.dfs.core.windows.net/r"])
def test_a_remote_root_is_refused_at_start(spark, home, root):
    out = run_cli("--registry-root", root, "models", "list")
    message = _assert_clean_failure(out, root, "mounted filesystem", code=2)
    if root.startswith("dbfs:"):
        assert "/dbfs/sparkship/registry" in message
    assert not os.path.exists(root.split(":")[0])  # no local folder named after the URI


def test_a_table_under_a_regular_file_is_refused_before_anything_is_written(spark, home, tmp_path, csv_file):
    # A file where a folder of the table's path should be: one line naming it, not a writer's trace.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = run_cli("tables", "import", "--source", csv_file, "--table", str(blocker / "t"))
    _assert_clean_failure(out, str(blocker), "is a file, not a folder", code=2)
    out = run_cli("score", "--model", "churn", "--input", str(tmp_path / "in"), "--output",
                  str(blocker / "scores"), "--keys", "id")
    _assert_clean_failure(out, "--output", str(blocker), "is a file, not a folder", code=2)
    assert blocker.read_text() == "not a folder"


def test_a_pinned_version_removed_by_vacuum(spark, home, tmp_path, csv_file):
    from deltalake import DeltaTable

    table = str(tmp_path / "t")
    for _ in range(2):
        assert run_cli("tables", "import", "--source", csv_file, "--table", table, "--mode",
                       "overwrite").returncode == 0
    removed = DeltaTable(table).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    assert removed  # version 0's files
    _assert_clean_failure(run_cli("tables", "show", table, "--version", "0"), "version 0", "VACUUM",
                          "pin a version", code=1)
    assert run_cli("tables", "show", table, "--version", "1").returncode == 0
