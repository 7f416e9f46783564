"""The bundle as the real Databricks CLI sees it: ``bundle validate --strict``, ``-o json`` and ``bundle plan`` per
target, against a fake workspace on 127.0.0.1 (fake_databricks: the only stand-in, for the remote service).

The CLI is ``databricks`` on PATH or next to this Python (``make test`` unpacks the shared copy into .venv/bin).
Where it is required (``SPARKSHIP_REQUIRE_DATABRICKS_CLI=1``, set by ``make test``, or CI) a missing CLI fails
these tests; elsewhere they are skipped with the reason.

staging and prod are deployed by CI as a service principal, so their fake workspace's caller is one (its user
name is its application ID); dev by a person. All CLI processes of the module run at once in a thread pool.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparkship.bundle import short_user_name
from tests.helpers.fake_databricks import FakeDatabricks
from tests.helpers.paths import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.seconds(35)]


TARGETS = ("dev", "staging", "prod")
DEVELOPER = "first.last@example.com"
SERVICE_PRINCIPAL = "6f1c1f2e-8a3e-4e0a-9d1b-3c4e5f6a7b8c"
ALERTS = ["ml-oncall@example.com", "platform@example.com"]
JOBS = {"training", "scoring", "scoring_on_change", "monitoring", "registration"}
CONFIG = yaml.safe_load((ROOT / "databricks.yml").read_text())


def _required() -> bool:
    return (os.environ.get("SPARKSHIP_REQUIRE_DATABRICKS_CLI", "") == "1"
            or os.environ.get("CI", "").lower() in ("1", "true"))


def _find_cli() -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    found = shutil.which("databricks", path=path)
    # The legacy Python package databricks-cli installs a `databricks` too (`Version 0.18.0`), without bundles.
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout if found else ""
    if version.startswith("Databricks CLI v"):
        return found
    message = ("the Databricks CLI (`databricks`, with bundles) is not on PATH nor in the venv"
               + (f" ({found} is {version.strip()!r})" if found else "") + ": run `make databricks-cli` "
               "(it unpacks ../shared/tools/databricks-cli/databricks.xz) or install it (databricks/setup-cli)")
    if _required():
        pytest.fail(message + " - SPARKSHIP_REQUIRE_DATABRICKS_CLI=1 or CI is set, so the CLI is required")
    pytest.skip(message)


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> dict[str, Any]:
        assert self.returncode == 0, self.stderr
        return json.loads(self.stdout)


def _bundle_copy(dest: Path) -> Path:
    """The bundle's sources in ``dest``: the CLI keeps its state (.databricks) and builds the wheel there."""
    dest.mkdir(parents=True)
    for name in ("databricks.yml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "resources", dest / "resources", ignore=skip)
    shutil.copytree(ROOT / "src", dest / "src", ignore=skip)
    # A complex variable is set per target in databricks.yml or, as here, in the target's overrides file.
    overrides = dest / ".databricks" / "bundle" / "prod" / "variable-overrides.json"
    overrides.parent.mkdir(parents=True)
    overrides.write_text(json.dumps({"failure_emails": ALERTS}))
    return dest


def _cli(cli: str, host: str, cwd: Path, *args: str) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "BUNDLE_VAR_"))}
    env.update(DATABRICKS_HOST=host, DATABRICKS_TOKEN="dapi-test-token", DATABRICKS_BUNDLE_ENGINE="direct",
               DATABRICKS_CONFIG_FILE=str(cwd / "no-databrickscfg"),
               # `bundle plan` builds the wheel with the `python` on PATH: this one, which has `build`.
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    started = time.perf_counter()
    proc = subprocess.run([cli, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return Run(list(args), proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started)


def _target_args(target: str) -> list[str]:
    return ["-t", target] + ([] if target == "dev" else ["--var", f"service_principal={SERVICE_PRINCIPAL}"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, str], Run]:
    """Every CLI call of the module, at once: strict validate, ``-o json`` and plan per target, and a prod
    validate that forgets the service principal. Keyed by (what, target)."""
    cli = _find_cli()
    base = tmp_path_factory.mktemp("bundle_cli")
    # One copy per target: two plans in one folder would build the wheel into the same build/ at once.
    copies = {t: _bundle_copy(base / t) for t in TARGETS}
    with FakeDatabricks(user_name=DEVELOPER) as person, FakeDatabricks(user_name=SERVICE_PRINCIPAL) as robot:
        hosts = {"dev": person.host, "staging": robot.host, "prod": robot.host}
        calls = {}
        for t in TARGETS:
            calls[("strict", t)] = ["bundle", "validate", "--strict", *_target_args(t)]
            calls[("json", t)] = ["bundle", "validate", "-o", "json", *_target_args(t)]
            calls[("plan", t)] = ["bundle", "plan", "-o", "json", *_target_args(t)]
        calls[("no_sp", "prod")] = ["bundle", "validate", "--strict", "-t", "prod"]
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {key: pool.submit(_cli, cli, hosts[key[1]], copies[key[1]], *args)
                       for key, args in calls.items()}
            return {key: f.result() for key, f in futures.items()}


@pytest.fixture(scope="module")
def resolved(runs) -> dict[str, dict[str, Any]]:
    return {t: runs[("json", t)].json() for t in TARGETS}


@pytest.mark.parametrize("target", TARGETS)
def test_validate_is_clean_under_strict(runs, target):
    run = runs[("strict", target)]
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Validation OK!" in run.stdout
    for word in ("Warning:", "Error:", "Recommendation:"):
        assert word not in run.stdout + run.stderr, run.stdout + run.stderr


def test_prod_without_its_service_principal_fails_strict_validation(runs):
    run = runs[("no_sp", "prod")]
    assert run.returncode != 0
    assert "permissions section should explicitly include the current deployment identity" in run.stdout + run.stderr


def test_every_target_resolves_the_same_bundle_identity(resolved):
    for target, config in resolved.items():
        assert config["bundle"]["name"] == "sparkship"
        assert config["bundle"]["uuid"] == CONFIG["bundle"]["uuid"]
        assert config["bundle"]["target"] == target
        assert set(config["resources"]["jobs"]) == JOBS
        assert "run_as" not in config  # per job (quality monitors refuse a bundle-level run_as)


def test_dev_is_a_development_deployment_of_the_developer_with_a_schema_of_their_own(resolved):
    config = resolved["dev"]
    short = short_user_name(DEVELOPER)
    assert config["bundle"]["mode"] == "development"
    assert config["workspace"]["root_path"] == f"/Workspace/Users/{DEVELOPER}/.bundle/sparkship/dev"
    schema = config["variables"]["schema"]["value"]
    assert schema == f"sparkship_{short}"
    assert config["variables"]["training_table"]["value"] == f"main.{schema}.churn_training"
    assert config["variables"]["home"]["value"] == f"/Volumes/main/{schema}/sparkship"
    for job in config["resources"]["jobs"].values():
        assert job["name"].startswith(f"[dev {short}] ")
        assert "run_as" not in job and "permissions" not in job
    assert config["resources"]["jobs"]["scoring"]["schedule"]["pause_status"] == "PAUSED"
    assert config["resources"]["jobs"]["scoring_on_change"]["trigger"]["pause_status"] == "PAUSED"
    assert "quality_monitors" not in config["resources"]


@pytest.mark.parametrize("target", ["staging", "prod"])
def test_staging_and_prod_run_as_the_service_principal_in_its_own_folder(resolved, target):
    config = resolved[target]
    assert config["workspace"]["current_user"]["userName"] == SERVICE_PRINCIPAL
    assert config["workspace"]["root_path"] == f"/Workspace/Users/{SERVICE_PRINCIPAL}/.bundle/sparkship/{target}"
    assert config["variables"]["schema"]["value"] == f"sparkship_{target}"
    expected = [{"level": "CAN_MANAGE", "service_principal_name": SERVICE_PRINCIPAL},
                {"level": "CAN_MANAGE", "group_name": config["variables"]["admins_group"]["value"]},
                {"level": "CAN_VIEW", "group_name": config["variables"]["viewers_group"]["value"]}]
    assert config["permissions"] == expected
    # Each job is owned by the identity it runs as; the groups get the bundle's levels.
    owner = [{"level": "IS_OWNER", "service_principal_name": SERVICE_PRINCIPAL}]
    for key, job in config["resources"]["jobs"].items():
        assert job["run_as"] == {"service_principal_name": SERVICE_PRINCIPAL}, key
        assert job["permissions"] == owner + expected[1:], key


def test_staging_jobs_are_paused_and_named_apart_from_prod(resolved):
    staging, prod = resolved["staging"], resolved["prod"]
    assert "mode" not in staging["bundle"] and prod["bundle"]["mode"] == "production"
    assert staging["presets"]["name_prefix"] == "[staging] "
    for key, job in staging["resources"]["jobs"].items():
        assert job["name"] == "[staging] " + prod["resources"]["jobs"][key]["name"]
        assert job["tags"]["environment"] == "staging"
    staging_names = {j["name"] for j in staging["resources"]["jobs"].values()}
    assert not staging_names & {j["name"] for j in prod["resources"]["jobs"].values()}
    assert staging["resources"]["jobs"]["scoring"]["schedule"]["pause_status"] == "PAUSED"
    assert staging["resources"]["jobs"]["monitoring"]["schedule"]["pause_status"] == "PAUSED"
    assert staging["resources"]["jobs"]["scoring_on_change"]["trigger"]["pause_status"] == "PAUSED"
    for job in prod["resources"]["jobs"].values():
        for when in (job.get("schedule"), job.get("trigger")):
            assert when is None or when.get("pause_status", "UNPAUSED") == "UNPAUSED"
    assert set(prod["resources"]["quality_monitors"]) == {"scores"}
    assert "quality_monitors" not in staging["resources"]


def test_failures_alert_the_variable_list_of_emails(resolved):
    for target, config in resolved.items():
        emails = config["variables"]["failure_emails"]["value"]
        assert emails == (ALERTS if target == "prod" else [])
        for key, job in config["resources"]["jobs"].items():
            assert job.get("email_notifications", {}).get("on_failure", []) == emails, (target, key)


def test_job_parameters_default_to_the_targets_variables(resolved):
    for config in resolved.values():
        jobs, values = config["resources"]["jobs"], config["variables"]
        assert jobs["training"]["parameters"] == [{"name": "training_table",
                                                   "default": values["training_table"]["value"]}]
        train = next(t for t in jobs["training"]["tasks"] if t["task_key"] == "train")
        params = train["python_wheel_task"]["parameters"]
        assert params[params.index("--table") + 1] == "{{job.parameters.training_table}}"
        assert jobs["monitoring"]["parameters"] == [{"name": "window", "default": values["drift_window"]["value"]}]


def test_monitoring_retrains_through_a_condition_and_the_guard(resolved):
    for target, config in resolved.items():
        tasks = {t["task_key"]: t for t in config["resources"]["jobs"]["monitoring"]["tasks"]}
        monitor = tasks["monitor"]["python_wheel_task"]["parameters"]
        assert monitor[monitor.index("--on-drift") + 1] == "report"
        assert tasks["drifted"]["condition_task"] == {"op": "EQUAL_TO", "left": "{{tasks.monitor.values.drift}}",
                                                      "right": "true"}
        assert tasks["retrain_guard"]["depends_on"] == [{"task_key": "drifted", "outcome": "true"}]
        guard = tasks["retrain_guard"]["python_wheel_task"]
        assert guard["entry_point"] == "sparkship-retrain"
        assert guard["parameters"][guard["parameters"].index("--window") + 1] == \
            config["variables"]["retrain_window"]["value"]
        assert tasks["retrain"]["depends_on"] == [{"task_key": "retrain_guard"}]
        # The training job's id is known once it is deployed: the reference stays until then.
        assert tasks["retrain"]["run_job_task"] == {"job_id": "${resources.jobs.training.id}"}, target


@pytest.mark.parametrize("target", TARGETS)
def test_plan_builds_the_wheel_and_creates_every_resource(runs, target):
    run = runs[("plan", target)]
    plan = run.json()["plan"]
    assert "Building default" in run.stderr
    expected = {f"resources.jobs.{k}" for k in JOBS}
    if target != "dev":
        expected |= {f"resources.jobs.{k}.permissions" for k in JOBS}
    if target == "prod":
        expected.add("resources.quality_monitors.scores")
    assert set(plan) == expected
    assert {entry["action"] for entry in plan.values()} == {"create"}
    version = {}
    exec((ROOT / "src" / "sparkship" / "_version.py").read_text(), version)
    wheel = f"sparkship-{version['__version__']}-py3-none-any.whl"
    training = plan["resources.jobs.training"]["new_state"]["value"]
    libraries = [lib for t in training["tasks"] for lib in t.get("libraries", [])]
    dependencies = [d for e in training.get("environments", []) for d in e["spec"]["dependencies"]]
    uploaded = [lib["whl"] for lib in libraries if "whl" in lib] + [d for d in dependencies if d.endswith(".whl")]
    assert uploaded and all(w.endswith(f"/.bundle/sparkship/{target}/artifacts/.internal/{wheel}") for w in uploaded)
    # The monitoring job is created after the training job, whose id its retrain task needs.
    monitoring = plan["resources.jobs.monitoring"]
    assert {"node": "resources.jobs.training", "label": "${resources.jobs.training.id}"} in monitoring["depends_on"]
