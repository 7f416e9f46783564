"""The CI/CD workflows in .github/workflows: actionlint passes on them, and each runs what docs/DEPLOY.md says.

actionlint is on PATH or next to this Python (``make actionlint`` builds it from its Go module into the venv).
Where it is required (``SPARKSHIP_REQUIRE_ACTIONLINT=1``, set by ``make test``, or CI) a missing actionlint fails
the lint test; elsewhere it is skipped with the reason.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.paths import ROOT

pytestmark = pytest.mark.seconds(5)


WORKFLOWS = ROOT / ".github" / "workflows"
CREDENTIALS = {"DATABRICKS_HOST", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"}


def _load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    workflow["on"] = workflow.pop(True)
    return workflow


def _runs(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def _actionlint() -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    found = shutil.which("actionlint", path=path)
    if found:
        return found
    message = "actionlint is not on PATH nor in the venv: run `make actionlint` (needs Go)"
    if os.environ.get("SPARKSHIP_REQUIRE_ACTIONLINT", "") == "1" or os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(message + " - SPARKSHIP_REQUIRE_ACTIONLINT=1 or CI is set, so actionlint is required")
    pytest.skip(message)


def test_actionlint_passes_on_every_workflow():
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) == 3
    proc = subprocess.run([_actionlint(), "-color=false", *files], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_reports_a_broken_workflow(tmp_path):
    """The lint can fail: a job that needs a job the workflow does not have is reported."""
    runs_on = "    runs-on: ubuntu-latest\n"
    broken = (WORKFLOWS / "release.yml").read_text().replace(runs_on, runs_on + "    needs: nowhere\n", 1)
    (tmp_path / "broken.yml").write_text(broken)
    proc = subprocess.run([_actionlint(), "-color=false", str(tmp_path / "broken.yml")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "nowhere" in proc.stdout, proc.stdout + proc.stderr


def test_a_pull_request_runs_the_tests_and_validates_staging():
    workflow = _load("pr.yml")
    assert set(workflow["on"]) == {"pull_request"}
    assert "make test" in _runs(workflow["jobs"]["test"])
    validate = workflow["jobs"]["validate-staging"]
    assert validate["environment"] == "staging"
    assert _runs(validate) == ["databricks bundle validate --strict -t staging"]


def test_main_deploys_to_staging_and_runs_the_training_job_after_the_tests():
    workflow = _load("main.yml")
    assert workflow["on"] == {"push": {"branches": ["main"]}}
    deploy = workflow["jobs"]["deploy-staging"]
    assert deploy["needs"] == "test" and deploy["environment"] == "staging"
    assert _runs(deploy)[-3:] == ["databricks bundle validate --strict -t staging",
                                  "databricks bundle deploy -t staging", "databricks bundle run training -t staging"]
    assert "make test" in _runs(workflow["jobs"]["test"])


def test_a_release_tag_deploys_to_prod():
    workflow = _load("release.yml")
    assert workflow["on"] == {"push": {"tags": ["v*"]}}
    deploy = workflow["jobs"]["deploy-prod"]
    assert deploy["environment"] == "prod"
    assert _runs(deploy)[-2:] == ["databricks bundle validate --strict -t prod", "databricks bundle deploy -t prod"]


@pytest.mark.parametrize("name", ["pr.yml", "main.yml", "release.yml"])
def test_credentials_come_from_the_secrets_named_in_deploy_md(name):
    workflow = _load(name)
    deploy_md = (ROOT / "docs" / "DEPLOY.md").read_text()
    for job in workflow["jobs"].values():
        if "environment" not in job:
            continue
        env = job["env"]
        assert CREDENTIALS <= set(env)
        for value in env.values():
            [secret] = re.findall(r"\$\{\{ secrets\.(\w+) \}\}", value)
            assert f"`{secret}`" in deploy_md, secret
        # staging and prod jobs run as the service principal that deploys them.
        assert env["BUNDLE_VAR_service_principal"] == env["DATABRICKS_CLIENT_ID"]
        assert any(step.get("uses", "").startswith("databricks/setup-cli@") for step in job["steps"])
