"""The built wheel runs without dev tools: installed into a virtual environment that holds only its
``install_requires`` plus pyspark and pandas (what a Databricks cluster provides), ``sparkship`` trains and
scores in subprocesses, no sparkship module imports a dev-only package, and a command that needs an extra
says which in one line.

The runtime environment (dependencies only; slow to install) is cached between runs under
``~/.cache/sparkship-tests`` (``SPARKSHIP_TEST_VENV_CACHE``), keyed by the requirements; sparkship's freshly
built wheel is reinstalled into it on every run, and the test checks that no dev package is installed there.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable, write_deltalake

from sparkship import datasets
from sparkship.bundle import build_wheel
from sparkship.scoring import OUTPUT_COLUMNS
from tests.helpers.paths import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.seconds(57)]


PLATFORM = ["pyspark==4.0.*", "pandas>=2.2,<3"]  # on a cluster these come with the runtime
# Packages only tests, the bundle check or other extras use: none may be imported by sparkship at run time.
DEV_ONLY = ["build", "databricks.bundles", "httpx", "pytest", "chispa", "hypothesis", "duckdb", "mlflow", "wheel"]
# Variables of the test process that would point the subprocesses at the dev environment.
DEV_ENV = ("PYTHONPATH", "VIRTUAL_ENV", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "SPARK_HOME", "SPARKSHIP_HOME")
TIMINGS: dict[str, float] = {}


def runtime_requirements(wheel: Path) -> list[str]:
    """The wheel's ``Requires-Dist`` outside any extra, read from its METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        info = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        dist = importlib.metadata.PathDistribution(zipfile.Path(archive, info.rsplit("/", 1)[0] + "/"))  # type: ignore[arg-type]
        return sorted(r for r in dist.requires or [] if "extra ==" not in r)


def _pip(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The dev environment's pip, installing into ``venv`` (which then needs no pip of its own)."""
    cmd = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(), timeout=1200)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DEV_ENV}
    return {**env, **extra}


def _runtime_venv(requirements: list[str]) -> Path:
    """A venv with exactly ``requirements`` installed, built once per requirement set and then reused."""
    cache = Path(os.environ.get("SPARKSHIP_TEST_VENV_CACHE", Path.home() / ".cache" / "sparkship-tests"))
    key = hashlib.sha256(json.dumps([sys.version_info[:2], requirements]).encode()).hexdigest()[:12]
    venv = cache / f"runtime-{key}"
    if (venv / ".complete").exists():
        return venv
    scratch = cache / f"building-{key}-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(scratch)], check=True, timeout=300)
    started = time.monotonic()
    proc = _pip(scratch, "install", "--quiet", *requirements)
    TIMINGS["install runtime dependencies"] = time.monotonic() - started
    if proc.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        if "No matching distribution" in proc.stderr or "connection" in proc.stderr.lower():
            pytest.skip(f"cannot install the runtime dependencies (no package index?): {proc.stderr[-500:]}")
        pytest.fail(f"installing {requirements} failed:\n{proc.stderr[-3000:]}")
    (scratch / ".complete").write_text("\n".join(requirements))
    shutil.rmtree(venv, ignore_errors=True)
    scratch.rename(venv)  # venv scripts use the interpreter path, which is venv/bin/python either way
    return venv


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """The runtime venv with this tree's freshly built wheel installed (``--no-deps``)."""
    started = time.monotonic()
    wheel = build_wheel(ROOT, tmp_path_factory.mktemp("wheel"))
    TIMINGS["build the wheel"] = time.monotonic() - started
    venv = _runtime_venv(runtime_requirements(wheel) + PLATFORM)
    started = time.monotonic()
    proc = _pip(venv, "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel))
    assert proc.returncode == 0, proc.stderr
    TIMINGS["install sparkship --no-deps"] = time.monotonic() - started
    yield venv
    print("\ntest_wheel timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMINGS.items()))


def run(venv: Path, *args: str, cwd: Path | None = None, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a console script of the venv (``sparkship``, ``python``...) with nothing of the dev environment."""
    env = _clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    if home is not None:
        env["SPARKSHIP_HOME"] = str(home)
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


IMPORT_EVERYTHING = """
import importlib, importlib.util, json, pkgutil, sys
import sparkship
names = sorted(m.name for m in pkgutil.walk_packages(sparkship.__path__, "sparkship."))
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:  # reported, not hidden: every module must import
        failed[name] = repr(exc)
def installed(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
dev = sys.argv[1:]
print(json.dumps({
    "modules": names, "failed": failed, "location": sparkship.__file__,
    "imported": [d for d in dev if d in sys.modules],
    "installed": [d for d in dev if installed(d)],
}))
"""


def test_every_module_imports_without_any_dev_package(venv, tmp_path):
    proc = run(venv, "python", "-c", IMPORT_EVERYTHING, *DEV_ONLY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)

    assert out["location"].startswith(str(venv)), out["location"]  # the wheel's copy, not the source tree
    assert out["failed"] == {}
    source_modules = {
        ".".join(p.relative_to(ROOT / "src").with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "src" / "sparkship").rglob("*.py")
    } - {"sparkship"}
    assert set(out["modules"]) == source_modules  # the wheel ships every module
    assert out["installed"] == []  # a clean runtime: nothing of the dev tools is there to be imported
    assert out["imported"] == []


def test_help_runs_from_the_wheel(venv, tmp_path):
    proc = run(venv, "sparkship", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "score", "bundle", "demo"):
        assert command in proc.stdout
    entry = run(venv, "sparkship-score", "--help", cwd=tmp_path)
    assert entry.returncode == 0 and "--output" in entry.stdout, entry.stderr


def test_a_command_that_needs_an_extra_says_which_in_one_line(venv, tmp_path):
    proc = run(venv, "sparkship", "bundle", "check", "--root", str(ROOT), cwd=tmp_path)

    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "sparkship: error: sparkship bundle check needs the 'bundle' extra (no module build): "
        "pip install 'sparkship[bundle]'"
    ]
    as_json = run(venv, "sparkship", "bundle", "check", "--root", str(ROOT), "--json", cwd=tmp_path)
    assert as_json.returncode == 1 and "Traceback" not in as_json.stderr
    assert json.loads(as_json.stdout)["type"] == "MissingExtraError"


def test_train_and_score_from_the_wheel(venv, tmp_path):
    home, tables = tmp_path / "home", tmp_path / "tables"
    # The input tables are written by delta-rs here: each sparkship command starts a JVM, which is what costs.
    write_deltalake(str(tables / "training"), datasets.churn_rows(400, seed=3))
    new_rows = datasets.churn_rows(150, seed=5, first_id=10_001)
    write_deltalake(str(tables / "customers"), new_rows.drop_columns([datasets.LABEL]))
    spec = tmp_path / "churn.yml"
    spec.write_text(yaml.safe_dump({
        "name": "churn", "task": "classification", "table": str(tables / "training"), "label": datasets.LABEL,
        "features": {"numeric": datasets.FEATURES_NUMERIC, "categorical": datasets.FEATURES_CATEGORICAL},
        "model": {"algorithm": "logistic_regression", "params": {"maxIter": 20}},
        "split": {"test_fraction": 0.25, "seed": 1},
    }))
    steps = [
        ["train", "--spec", str(spec), "--run-id", "wheel-test"],
        ["score", "--model", "churn/1", "--input", str(tables / "customers"), "--output", str(tables / "scores"),
         "--keys", datasets.KEY, "--run-id", "wheel-test"],
    ]
    outputs = []
    for step in steps:
        started = time.monotonic()
        proc = run(venv, "sparkship", *step, "--json", cwd=tmp_path, home=home)
        TIMINGS[f"sparkship {step[0]}"] = TIMINGS.get(f"sparkship {step[0]}", 0) + time.monotonic() - started
        assert proc.returncode == 0, f"sparkship {' '.join(step)}:\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr
        outputs.append(json.loads(proc.stdout))

    assert outputs[0]["version"] == 1
    scores = DeltaTable(str(tables / "scores")).to_pyarrow_table()  # read by delta-rs, not by the code under test
    assert set(OUTPUT_COLUMNS) <= set(scores.column_names)
    assert sorted(scores.column(datasets.KEY).to_pylist()) == sorted(new_rows.column(datasets.KEY).to_pylist())
    assert set(scores.column("model_version").to_pylist()) == {"1"}
    assert set(scores.column("prediction").to_pylist()) <= {0.0, 1.0}
    assert set(scores.column("run_id").to_pylist()) == {"wheel-test"}
