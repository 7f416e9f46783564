"""Offline checks of the Databricks asset bundle against the wheel the project really builds."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from sparkship.bundle import BundleError, build_wheel, check_bundle, load_bundle, read_wheel
from sparkship.cli import main

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ["sparkship", "sparkship-train", "sparkship-validate", "sparkship-promote", "sparkship-score",
                "sparkship-monitor"]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built once per test session (python -m build --wheel, in tmp)."""
    return build_wheel(ROOT, tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def copy_bundle(tmp_path):
    """databricks.yml + resources/ copied to tmp; returns a function that breaks one thing in the copy."""
    shutil.copy(ROOT / "databricks.yml", tmp_path / "databricks.yml")
    shutil.copytree(ROOT / "resources", tmp_path / "resources")

    def edit(file: str, old: str, new: str) -> Path:
        path = tmp_path / file
        text = path.read_text()
        assert old in text, f"{old!r} not in {file}: the test no longer matches the bundle"
        path.write_text(text.replace(old, new, 1))
        return tmp_path

    return edit


def test_built_wheel_declares_the_package_and_entry_points(wheel):
    info = read_wheel(wheel)
    assert info.name == "sparkship"
    assert sorted(info.entry_points) == sorted(ENTRY_POINTS)
    assert info.entry_points["sparkship-train"] == "sparkship.entrypoints:train"
    # The build ran in a scratch copy: the source tree gets no build/ folder from it.
    assert not (ROOT / "build" / "bdist.linux-x86_64").exists()


def test_the_bundle_passes_every_offline_check(wheel):
    report = check_bundle(ROOT, wheel=wheel)
    assert report.problems == [], "\n".join(map(str, report.problems))
    assert report.bundle == "sparkship"
    assert report.targets == ["dev", "staging", "prod"]
    assert report.jobs["training"] == ["train", "validate", "promote"]
    assert set(report.jobs) == {"training", "scoring", "monitoring"}


def test_every_task_records_the_job_run_and_passes_the_trained_version_by_run_id():
    bundle = load_bundle(ROOT)
    for key, job in bundle.jobs.items():
        for task in job.config["tasks"]:
            params = task["python_wheel_task"]["parameters"]
            assert params[params.index("--run-id") + 1] == "{{job.run_id}}", (key, task["task_key"])
            assert task["libraries"] == [{"whl": "../dist/*.whl"}]
    tasks = {t["task_key"]: t for t in bundle.jobs["training"].config["tasks"]}
    for later in ("validate", "promote"):
        params = tasks[later]["python_wheel_task"]["parameters"]
        assert params[params.index("--model") + 1] == "${var.model_name}/run:{{job.run_id}}"
    assert tasks["promote"]["depends_on"] == [{"task_key": "validate"}]
    assert tasks["validate"]["depends_on"] == [{"task_key": "train"}]
    assert "quartz_cron_expression" in bundle.jobs["scoring"].config["schedule"]


def test_top_level_sections_follow_the_bundle_conventions():
    config = yaml.safe_load((ROOT / "databricks.yml").read_text())
    assert config["bundle"]["name"] == "sparkship"
    assert config["include"] == ["resources/*.yml"]
    assert config["artifacts"]["default"]["type"] == "whl"
    assert config["artifacts"]["default"]["path"] == "."
    assert config["targets"]["dev"] == {"mode": "development", "default": True}
    assert config["targets"]["prod"]["mode"] == "production"
    bundle = load_bundle(ROOT)
    assert bundle.resolve("${var.registry_root}", "prod") == "/Volumes/main/sparkship_prod/sparkship/registry"


# One broken thing per case: (file, text in it, replacement, fragments the problem must name).
BROKEN = {
    "misspelt field": ("resources/training.yml", "depends_on:", "depend_on:",
                       ["resources/training.yml", "tasks[validate]", "Unexpected field 'depend_on'"]),
    "misspelt job field": ("resources/scoring.yml", "max_concurrent_runs", "max_concurent_runs",
                           ["resources/scoring.yml", "resources.jobs.scoring", "'max_concurent_runs'"]),
    "undefined variable": ("resources/scoring.yml", "${var.scoring_output}", "${var.scoring_outptu}",
                           ["resources/scoring.yml", "undefined variable ${var.scoring_outptu}",
                            "did you mean 'scoring_output'"]),
    "unknown reference root": ("resources/monitoring.yml", "${var.drift_window}", "${vars.drift_window}",
                               ["resources/monitoring.yml", "unknown reference ${vars.drift_window}"]),
    "bad target mode": ("databricks.yml", "mode: production", "mode: prod",
                        ["databricks.yml", "targets.prod.mode", "invalid mode 'prod'", "development, production"]),
    "unknown target key": ("databricks.yml", "    workspace:\n", "    workspce:\n",
                           ["databricks.yml", "targets.staging.workspce", "did you mean 'workspace'"]),
    "two default targets": ("databricks.yml", "    mode: production\n", "    mode: production\n    default: true\n",
                            ["databricks.yml", "exactly one target must have default: true, found dev, prod"]),
    "target sets an undefined variable": ("databricks.yml", "      num_workers: 2", "      num_worker: 2",
                                          ["databricks.yml", "targets.prod.variables.num_worker", "not defined"]),
    "unknown entry point": ("resources/monitoring.yml", "entry_point: sparkship-monitor", "entry_point: sparkship-monitr",
                            ["resources/monitoring.yml", "entry_point", "'sparkship-monitr' is not declared by the "
                             "built wheel sparkship-", "did you mean 'sparkship-monitor'"]),
    "unknown parameter": ("resources/training.yml", "              - --spec\n",
                          "              - --epochs\n              - \"3\"\n              - --spec\n",
                          ["resources/training.yml", "tasks[train].python_wheel_task.parameters",
                           "sparkship-train (sparkship train) rejects its parameters", "unrecognized arguments: --epochs 3"]),
    "missing package name": ("resources/scoring.yml", "            package_name: sparkship\n", "",
                             ["resources/scoring.yml", "tasks[score]", "PythonWheelTask is missing required field(s) "
                              "'package_name'"]),
    "wrong package name": ("resources/training.yml", "package_name: sparkship", "package_name: sparkshp",
                           ["resources/training.yml", "tasks[train].python_wheel_task.package_name",
                            "'sparkshp' is not the bundle's wheel package 'sparkship'"]),
    "wheel not installed from dist": ("resources/scoring.yml", "whl: ../dist/*.whl", "whl: ./dist/*.whl",
                                      ["resources/scoring.yml", "tasks[score].libraries", "../dist/*.whl"]),
    "undefined task dependency": ("resources/training.yml", "task_key: train\n          job", "task_key: fit\n          job",
                                  ["resources/training.yml", "tasks[validate].depends_on", "'train'"]),
    "invalid model name": ("databricks.yml", "default: churn\n", "default: Churn\n",
                           ["resources/training.yml", "tasks[validate]", "--model 'Churn/run:123456789'",
                            "model name 'Churn' is invalid"]),
    "model is not the one the spec trains": ("databricks.yml", "default: churn\n", "default: attrition\n",
                                             ["resources/training.yml", "tasks[promote]", "names model 'attrition'",
                                              "training spec trains churn"]),
    "spec file missing": ("databricks.yml", "resources/specs/churn.yml", "resources/specs/churn_v2.yml",
                          ["resources/training.yml", "tasks[train]", "resources/specs/churn_v2.yml",
                           "does not exist in the bundle"]),
    "invalid spec": ("resources/specs/churn.yml", "algorithm: random_forest", "algorithm: random_forrest",
                     ["resources/training.yml", "tasks[train]", "--spec resources/specs/churn.yml",
                      "model.algorithm", "unknown algorithm 'random_forrest'"]),
    "unknown top-level key": ("databricks.yml", "include:", "includes:",
                              ["databricks.yml", "includes", "unknown top-level key (did you mean 'include'?)"]),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_bundle_fails_with_a_message_naming_the_file_and_problem(case, copy_bundle, wheel):
    file, old, new, fragments = BROKEN[case]
    root = copy_bundle(file, old, new)

    report = check_bundle(root, wheel=wheel)

    assert not report.ok
    messages = [str(p) for p in report.problems]
    assert any(all(f in m for f in fragments) for m in messages), "\n".join(messages)


def test_a_problem_in_one_target_only_says_which(copy_bundle, wheel):
    root = copy_bundle("databricks.yml", "      num_workers: 2\n", "      num_workers: 2\n      model_name: Churn\n")
    messages = [str(p) for p in check_bundle(root, wheel=wheel).problems]
    scoring = [m for m in messages if m.startswith("resources/scoring.yml")]
    # Only prod sets the bad name: the one problem says so; dev and staging are fine.
    assert len(scoring) == 1, messages
    assert "tasks[score].python_wheel_task.parameters: --model 'Churn@champion'" in scoring[0]
    assert "'Churn' is invalid" in scoring[0] and scoring[0].endswith(" (target prod)")


def test_invalid_yaml_names_the_file_and_line(copy_bundle):
    root = copy_bundle("resources/scoring.yml", "      tags:\n", "      tags: [\n")
    with pytest.raises(BundleError, match=r"resources/scoring.yml: not valid YAML \(line \d+"):
        check_bundle(root, wheel=None)


def test_cli_check_reports_problems_as_json_and_exits_1(copy_bundle, wheel, capsys):
    root = copy_bundle("databricks.yml", "mode: development", "mode: develop")

    code = main(["bundle", "check", "--root", str(root), "--wheel", str(wheel), "--json"])
    out = json.loads(capsys.readouterr().out)

    assert code == 1
    assert out["ok"] is False
    assert any(p.startswith("databricks.yml: targets.dev.mode: invalid mode 'develop'") for p in out["problems"])


def test_cli_check_builds_the_wheel_itself(capsys):
    code = main(["bundle", "check", "--root", str(ROOT), "--json"])
    out = json.loads(capsys.readouterr().out)

    assert out["wheel"].startswith("sparkship-") and out["wheel"].endswith(".whl")
    assert not [p for p in out["problems"] if "artifacts" in p]
    assert code == (0 if out["ok"] else 1)


def test_cli_check_without_a_buildable_project_says_so(copy_bundle, capsys):
    root = copy_bundle("databricks.yml", "bundle:", "bundle:")  # the copy has no setup.py to build from

    code = main(["bundle", "check", "--root", str(root)])
    out = capsys.readouterr().out

    assert code == 1
    assert "databricks.yml: artifacts: " in out and "has no setup.py or pyproject.toml" in out


def test_cli_check_without_databricks_yml_is_a_usage_error(tmp_path, capsys):
    assert main(["bundle", "check", "--root", str(tmp_path)]) == 2
    assert "databricks.yml does not exist" in capsys.readouterr().err
