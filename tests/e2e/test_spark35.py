"""The jobs on Spark 3.5 + Delta 3.3 (Databricks Runtime 15.4 / 16.4 LTS): a smoke flow through the real CLI.

`make test` builds the second environment (.venv35: pyspark 3.5, delta-spark 3.3 and Delta's 2.12 jars) and
points SPARKSHIP_VENV35 at it. Spark 3.5 has no Python data sources, so this runs on the native engine only:
import -> train -> validate -> promote -> score -> monitor, each step a CLI command of one process, then the
outputs are read back here.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

VENV35 = os.environ.get("SPARKSHIP_VENV35", "")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not VENV35, reason="SPARKSHIP_VENV35 is not set: `make test` builds .venv35 and sets it"),
    pytest.mark.seconds(36),
]


# The steps run one after another by the CLI of one Spark 3.5 process, each step's exit code and JSON line coming
# back: one JVM start instead of one per step, which matters here because this environment has no class archive,
# so each JVM start is paid in full.
_FLOW = """
import contextlib, io, json, sys
from sparkship.cli import main
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["--json", *argv])
    print(json.dumps({"rc": rc, "result": json.loads(out.getvalue().strip().splitlines()[-1])}), flush=True)
"""


def _run35(steps: list[list[str]], home: str) -> list[dict]:
    """``sparkship --json STEP`` for each step, in one .venv35 process; each step's exit code and result."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARKSHIP_DELTA", "SPARK_"))}
    env.update(SPARKSHIP_HOME=home, PYSPARK_PYTHON=os.path.join(VENV35, "bin", "python"))
    out = subprocess.run([os.path.join(VENV35, "bin", "python"), "-c", _FLOW, json.dumps(steps)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"rc {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    assert "Traceback" not in out.stderr, out.stderr[-4000:]
    done = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{"rc"')]
    assert len(done) == len(steps), out.stdout[-4000:]
    return done


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

    from sparkship import datasets

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "churn", "task": "classification", "table": table, "label": datasets.LABEL,
        "features": {"numeric": datasets.FEATURES_NUMERIC, "categorical": datasets.FEATURES_CATEGORICAL},
        "model": {"algorithm": "logistic_regression", "params": {"maxIter": 20}},
        "split": {"test_fraction": 0.2, "seed": 42},
        "validation": {"thresholds": {"areaUnderROC": {"min": 0.6}}},
    }))
    steps = {
        "import": ["tables", "import", "--source", train_file, "--table", table],
        "import batch": ["tables", "import", "--source", batch_file, "--table", batch],
        "train": ["train", "--spec", str(spec), "--run-id", "35"],
        "validate": ["validate", "--model", "churn/1", "--table", table, "--policy", "areaUnderROC>=0.6"],
        "promote": ["promote", "--model", "churn/1"],
        "score": ["score", "--model", "churn@champion", "--input", batch, "--output", scores,
                  "--keys", datasets.KEY],
        "monitor": ["monitor", "--model", "churn@champion", "--scores", scores],
    }
    done = dict(zip(steps, _run35(list(steps.values()), home=home)))
    # Exit 2 from monitor means drift was flagged: a result, not a failure.
    assert all(step["rc"] == 0 for name, step in done.items() if name != "monitor"), done
    assert done["monitor"]["rc"] in (0, 2), done["monitor"]
    assert done["import"]["result"]["version"] == 0
    trained = done["train"]["result"]
    assert trained["version"] == 1 and trained["metrics"]["areaUnderROC"] > 0.6
    assert done["score"]["result"]["rows_in"] == 500
    assert done["monitor"]["result"]["windows"], done["monitor"]

    # Written by delta-spark 3.3, read here by delta-rs: every input row is scored or quarantined, once.
    import pyarrow.fs as pafs
    from deltalake import DeltaTable

    def rows(path: str) -> int:
        if not os.path.isdir(path):
            return 0
        return DeltaTable(path).to_pyarrow_table(
            filesystem=pafs.SubTreeFileSystem(path, pafs.LocalFileSystem())).num_rows

    assert rows(scores) + rows(scores + "_quarantine") == 500
    info = {c.get("engineInfo", "") for c in DeltaTable(scores).history()}
    assert any("Delta-Lake/3.3" in i for i in info), info
