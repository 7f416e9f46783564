"""The jobs on Spark 3.5 + Delta 3.3 (Databricks Runtime 15.4 / 16.4 LTS): a smoke flow through the real CLI.

`make test` builds the second environment (.venv35: pyspark 3.5, delta-spark 3.3 and Delta's 2.12 jars) and
points SPARKSHIP_VENV35 at it. Spark 3.5 has no Python data sources, so this runs on the native engine only:
import -> train -> validate -> promote -> score -> monitor, then the outputs are read back here.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

VENV35 = os.environ.get("SPARKSHIP_VENV35", "")

pytestmark = pytest.mark.skipif(
    not VENV35, reason="SPARKSHIP_VENV35 is not set: `make test` builds .venv35 and sets it"
)


def _run35(*args: str, home: str, expect: tuple[int, ...] = (0,)) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARKSHIP_DELTA", "SPARK_"))}
    env.update(SPARKSHIP_HOME=home, PYSPARK_PYTHON=os.path.join(VENV35, "bin", "python"))
    out = subprocess.run([os.path.join(VENV35, "bin", "sparkship"), "--json", *args], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode in expect, f"{args}: rc {out.returncode}\n{out.stderr[-4000:]}"
    assert "Traceback" not in out.stderr, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write_parquet(python: str, path: str, rows: int, seed: int, first_id: int) -> None:
    code = (
        "import pyarrow.parquet as pq; from sparkship import datasets; "
        f"pq.write_table(datasets.churn_rows({rows}, seed={seed}, first_id={first_id}), {path!r})"
    )
    subprocess.run([python, "-c", code], check=True, timeout=300)


def test_import_train_validate_promote_score_monitor_on_spark35(tmp_path):
    python = os.path.join(VENV35, "bin", "python")
    version = subprocess.run([python, "-c", "import pyspark, delta; print(pyspark.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version.startswith("3.5."), version
    home = str(tmp_path / "home")
    train_file, batch_file = str(tmp_path / "train.parquet"), str(tmp_path / "batch.parquet")
    _write_parquet(python, train_file, 2000, seed=7, first_id=1)
    _write_parquet(python, batch_file, 500, seed=8, first_id=10_001)
    table, batch, scores = (str(tmp_path / n) for n in ("churn", "batch", "scores"))

    assert _run35("tables", "import", "--source", train_file, "--table", table, home=home)["version"] == 0
    _run35("tables", "import", "--source", batch_file, "--table", batch, home=home)
    from sparkship import datasets

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "churn", "task": "classification", "table": table, "label": datasets.LABEL,
        "features": {"numeric": datasets.FEATURES_NUMERIC, "categorical": datasets.FEATURES_CATEGORICAL},
        "model": {"algorithm": "logistic_regression", "params": {"maxIter": 20}},
        "split": {"test_fraction": 0.2, "seed": 42},
        "validation": {"thresholds": {"areaUnderROC": {"min": 0.6}}},
    }))
    trained = _run35("train", "--spec", str(spec), "--run-id", "35", home=home)
    assert trained["version"] == 1 and trained["metrics"]["areaUnderROC"] > 0.6
    _run35("validate", "--model", "churn/1", "--table", table, home=home)
    _run35("promote", "--model", "churn/1", home=home)
    scored = _run35("score", "--model", "churn@champion", "--input", batch, "--output", scores,
                    "--keys", datasets.KEY, home=home)
    assert scored["rows_in"] == 500
    # Exit 2 means drift was flagged: a result, not a failure.
    monitored = _run35("monitor", "--model", "churn@champion", "--scores", scores, home=home, expect=(0, 2))
    assert monitored["windows"], monitored

    # Written by delta-spark 3.3, read here by delta-rs: every input row is scored or quarantined, once.
    from deltalake import DeltaTable
    import pyarrow.fs as pafs

    def rows(path: str) -> int:
        if not os.path.isdir(path):
            return 0
        return DeltaTable(path).to_pyarrow_table(
            filesystem=pafs.SubTreeFileSystem(path, pafs.LocalFileSystem())).num_rows

    assert rows(scores) + rows(scores + "_quarantine") == 500
    info = {c.get("engineInfo", "") for c in DeltaTable(scores).history()}
    assert any("Delta-Lake/3.3" in i for i in info), info
