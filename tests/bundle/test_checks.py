"""Offline checks of the Databricks asset bundle against the wheel the project really builds."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from sparkship.bundle import BundleError, build_wheel, check_bundle, load_bundle, read_wheel
from sparkship.cli import build_parser, main
from sparkship.scoring import OUTPUT_COLUMNS
from tests.helpers.paths import ROOT

pytestmark = [pytest.mark.seconds(6), pytest.mark.quick]


ENTRY_POINTS = ["sparkship", "sparkship-train", "sparkship-validate", "sparkship-promote", "sparkship-score",
                "sparkship-monitor", "sparkship-retrain", "sparkship-publish", "sparkship-register"]
# sparkship's own command parsers, as `sparkship bundle check` hands them to the checker.
COMMANDS = build_parser().parse_args(["bundle", "check"]).sparkship_commands
HAS_PUBLISH = "publish" in build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
# Until the publish command (issue 15, another branch) is merged, the bundle has exactly this one problem.
PUBLISH_PENDING = ("resources/training.yml: resources.jobs.training.tasks[publish].python_wheel_task.entry_point: "
                   "entry point 'sparkship-publish' runs sparkship.entrypoints:publish, which the built wheel ")


def expected_problems(problems: list[str]) -> list[str]:
    """[] once `sparkship publish` exists; before that, the one problem that says the wheel lacks it."""
    if HAS_PUBLISH:
        return []
    return [p for p in problems if p.startswith(PUBLISH_PENDING) and p.endswith(" does not define")][:1]


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
    report = check_bundle(ROOT, wheel=wheel, commands=COMMANDS)
    problems = [str(p) for p in report.problems]
    assert len(expected_problems(problems)) == (0 if HAS_PUBLISH else 1), problems
    assert problems == expected_problems(problems), "\n".join(problems)
    assert report.bundle == "sparkship"
    assert report.targets == ["dev", "staging", "prod"]
    assert report.jobs["training"] == ["train", "validate", "promote", "publish_enabled", "publish"]
    assert set(report.jobs) == {"training", "scoring", "scoring_on_change", "monitoring", "registration"}
    assert report.jobs["registration"] == ["fit", "register"]
    assert report.jobs["scoring_on_change"] == ["score"]
    # Both compute variants are deployed by some target, and so checked; the monitor only in prod.
    assert report.compute == {"dev": "classic", "staging": "serverless", "prod": "classic"}
    assert report.monitors == {"scores": ["prod"]}


def _wheel_tasks(job: dict) -> list[dict]:
    return [t for t in job["tasks"] if "python_wheel_task" in t]


def test_every_task_records_the_job_run_and_passes_the_trained_version_by_run_id():
    bundle = load_bundle(ROOT)
    for key, job in bundle.jobs.items():
        for task in _wheel_tasks(job.config):
            params = task["python_wheel_task"]["parameters"]
            assert params[params.index("--run-id") + 1] == "{{job.run_id}}", (key, task["task_key"])
    tasks = {t["task_key"]: t for t in bundle.jobs["training"].config["tasks"]}
    for later in ("validate", "promote"):
        params = tasks[later]["python_wheel_task"]["parameters"]
        assert params[params.index("--model") + 1] == "${var.model_name}/run:{{job.run_id}}"
    assert tasks["promote"]["depends_on"] == [{"task_key": "validate"}]
    assert tasks["validate"]["depends_on"] == [{"task_key": "train"}]
    assert "quartz_cron_expression" in bundle.jobs["scoring"].config["schedule"]


def test_each_target_installs_the_wheel_on_its_compute():
    bundle = load_bundle(ROOT)
    for target in ("dev", "prod"):  # classic: a job cluster, the wheel as a task library
        for key in bundle.jobs:
            job = bundle.job_config(key, target)
            assert [c["job_cluster_key"] for c in job["job_clusters"]] == ["sparkship"]
            for task in _wheel_tasks(job):
                assert task["job_cluster_key"] == "sparkship" and "environment_key" not in task
                assert {"whl": "../dist/*.whl"} in task["libraries"], (target, key, task["task_key"])
    for key in bundle.jobs:  # serverless: an environment whose dependencies install the wheel
        job = bundle.job_config(key, "staging")
        environments = {e["environment_key"]: e["spec"] for e in job["environments"]}
        assert "job_clusters" not in job
        for task in _wheel_tasks(job):
            assert "job_cluster_key" not in task and "libraries" not in task
            assert "../dist/*.whl" in environments[task["environment_key"]]["dependencies"]
            assert environments[task["environment_key"]]["environment_version"] == "${var.serverless_environment_version}"


def test_publish_runs_after_promote_only_when_a_unity_catalog_model_is_named():
    bundle = load_bundle(ROOT)
    tasks = {t["task_key"]: t for t in bundle.jobs["training"].config["tasks"]}
    condition = tasks["publish_enabled"]
    assert condition["depends_on"] == [{"task_key": "promote"}]
    assert tasks["publish"]["depends_on"] == [{"task_key": "publish_enabled", "outcome": "true"}]
    params = tasks["publish"]["python_wheel_task"]["parameters"]
    assert params[:8] == ["--model", "${var.model_name}@champion", "--to", "mlflow", "--registered-model",
                          "${var.uc_model}", "--alias", "champion"]

    def outcome(uc_model: str) -> bool:  # the condition as the Jobs service evaluates it (string comparison)
        left = condition["condition_task"]["left"].replace("${var.uc_model}", uc_model)
        right = condition["condition_task"]["right"]
        assert condition["condition_task"]["op"] == "NOT_EQUAL"
        return left != right

    assert bundle.variable_values("prod")["uc_model"] == ""
    assert outcome(bundle.resolve("${var.uc_model}", "prod")) is False  # off by default
    assert outcome("main.sparkship_prod.churn") is True


def test_the_prod_monitor_watches_the_scores_table_by_the_columns_scoring_writes():
    bundle = load_bundle(ROOT)
    monitor = bundle.resource_config("quality_monitors", "scores", "prod")
    assert bundle.resolve(monitor["table_name"], "prod") == bundle.resolve("${var.scoring_output}", "prod")
    log = monitor["inference_log"]
    for column in (log["model_id_col"], log["prediction_col"], log["timestamp_col"]):
        assert column in OUTPUT_COLUMNS
    assert not bundle.target_resources("quality_monitors", "dev")


def test_top_level_sections_follow_the_bundle_conventions():
    config = yaml.safe_load((ROOT / "databricks.yml").read_text())
    assert config["bundle"]["name"] == "sparkship"
    assert config["include"] == ["resources/*.yml"]
    assert config["artifacts"]["default"]["type"] == "whl"
    assert config["artifacts"]["default"]["path"] == "."
    assert config["targets"]["dev"] == {"mode": "development", "default": True,
                                        "variables": {"schema": "sparkship_${workspace.current_user.short_name}"}}
    assert config["targets"]["prod"]["mode"] == "production"
    bundle = load_bundle(ROOT)
    assert bundle.resolve("${var.registry_root}", "prod") == "/Volumes/main/sparkship_prod/sparkship/registry"
    assert bundle.resolve("${var.models_root}", "prod") == "/Volumes/main/sparkship_prod/sparkship/models"


def test_tables_are_unity_catalog_names_and_the_volume_keeps_models_and_the_registry():
    bundle = load_bundle(ROOT)
    user = {"workspace.current_user.short_name": "first_last"}  # dev: a schema per developer
    for target, schema in (("dev", "sparkship_first_last"), ("staging", "sparkship_staging"),
                           ("prod", "sparkship_prod")):
        tables = [bundle.resolve(f"${{var.{v}}}", target, user)
                  for v in ("training_table", "validation_table", "scoring_input", "scoring_output",
                            "scoring_stream_output")]
        assert all(t.startswith(f"main.{schema}.") and t.count(".") == 2 for t in tables), tables
        volume = f"/Volumes/main/{schema}/sparkship/"
        assert [bundle.resolve(f"${{var.{v}}}", target, user).startswith(volume)
                for v in ("registry_root", "models_root")] == [True, True]
    # Every table a task reads or writes is passed as one of those variables, never as a volume path (train's
    # through the job parameter training_table, which defaults to the variable).
    assert bundle.jobs["training"].config["parameters"] == [{"name": "training_table",
                                                             "default": "${var.training_table}"}]
    for job in bundle.jobs.values():
        for task in _wheel_tasks(job.config):
            params = task["python_wheel_task"]["parameters"]
            for flag in ("--table", "--input", "--output", "--scores"):
                if flag in params:
                    assert params[params.index(flag) + 1] in {"{{job.parameters.training_table}}",
                                                               "${var.training_table}", "${var.validation_table}",
                                                               "${var.scoring_input}", "${var.scoring_output}",
                                                               "${var.scoring_stream_output}"}


def _params(bundle, key: str) -> list[str]:
    [task] = _wheel_tasks(bundle.jobs[key].config)
    return task["python_wheel_task"]["parameters"]


def test_the_nightly_job_passes_the_auto_full_flag_variable_which_refuses_by_default():
    bundle = load_bundle(ROOT)
    params = _params(bundle, "scoring")
    assert params[-1] == "${var.scoring_auto_full_flag}"
    parser = build_parser()
    for target in ("dev", "staging", "prod"):
        flag = bundle.resolve(params[-1], target)
        assert flag == "--no-auto-full"
        argv = ["score", *[bundle.resolve(p, target) for p in params]]
        assert parser.parse_args(argv).auto_full is False
    # Set to --auto-full, the same parameters turn it on.
    assert parser.parse_args(["score", *[bundle.resolve(p, "prod") for p in params[:-1]], "--auto-full"]).auto_full


def test_the_on_change_job_streams_the_nightly_jobs_input_into_a_table_of_its_own():
    bundle = load_bundle(ROOT)
    job = bundle.jobs["scoring_on_change"].config
    nightly = bundle.jobs["scoring"].config
    assert job["trigger"]["table_update"]["table_names"] == ["${var.scoring_input}"]
    assert job["trigger"]["table_update"]["condition"] == "ANY_UPDATED"
    assert "schedule" not in job and job["max_concurrent_runs"] == 1 and job["tags"] == nightly["tags"]
    params, nightly_params = _params(bundle, "scoring_on_change"), _params(bundle, "scoring")

    def flags(ps: list[str]) -> dict[str, str]:
        return {p: ps[i + 1] for i, p in enumerate(ps[:-1]) if p.startswith("--") and not ps[i + 1].startswith("-")}

    shared = ("--model", "--input", "--keys", "--run-id", "--home", "--registry-root", "--models-root")
    assert {f: flags(params)[f] for f in shared} == {f: flags(nightly_params)[f] for f in shared}
    assert params[-5:] == ["--stream", "--checkpoint", "${var.scoring_checkpoint}", "--trigger", "available-now"]
    args = build_parser().parse_args(["score", *[bundle.resolve(p, "prod") for p in params]])
    assert (args.stream, args.trigger) == (True, "available-now")
    assert args.checkpoint == "/Volumes/main/sparkship_prod/sparkship/checkpoints/scoring"
    for target in ("dev", "staging", "prod"):  # the stream's progress and the nightly job's are separate records
        outputs = [bundle.resolve(flags(p)["--output"], target) for p in (params, nightly_params)]
        assert outputs[0].endswith(".churn_scores_stream") and outputs[0] != outputs[1]


# One broken thing per case: (file, text in it, replacement, fragments the problem must name).
BROKEN = {
    "misspelt field": ("resources/training.yml", "depends_on:", "depend_on:",
                       ["resources/training.yml", "tasks[validate].depend_on",
                        "unknown field (did you mean 'depends_on'?)"]),
    "misspelt job field": ("resources/scoring.yml", "max_concurrent_runs", "max_concurent_runs",
                           ["resources/scoring.yml", "resources.jobs.scoring.max_concurent_runs: unknown field"]),
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
                            ["databricks.yml", "more than one default target (dev, prod)"]),
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
                             ["resources/scoring.yml", "tasks[score].python_wheel_task",
                              'required field "package_name" is not set']),
    "wrong package name": ("resources/training.yml", "package_name: sparkship", "package_name: sparkshp",
                           ["resources/training.yml", "tasks[train].python_wheel_task.package_name",
                            "'sparkshp' is not the bundle's wheel package 'sparkship'"]),
    "wheel not installed from dist": ("resources/compute_classic.yml", "whl: ../dist/*.whl", "whl: ./dist/*.whl",
                                      ["resources/compute_classic.yml", "tasks[train].libraries", "../dist/*.whl",
                                       "(targets dev, prod)"]),
    "classic task on no compute": ("resources/compute_classic.yml", "            - task_key: validate\n"
                                   "              job_cluster_key: sparkship\n", "            - task_key: validate\n",
                                   ["resources/compute_classic.yml", "tasks[validate]", "runs on no compute",
                                    "(targets dev, prod)"]),
    "unknown job cluster": ("resources/compute_classic.yml", "job_cluster_key: sparkship\n              libraries: &wheel",
                            "job_cluster_key: sparkshp\n              libraries: &wheel",
                            ["resources/compute_classic.yml", "tasks[train].job_cluster_key", "'sparkshp' is not in"]),
    "serverless task names no environment": ("resources/compute_serverless.yml",
                                             "- task_key: publish\n              environment_key: publish",
                                             "- task_key: publish\n              environment_key: publsh",
                                             ["resources/compute_serverless.yml", "tasks[publish].environment_key",
                                              "environment 'publsh' is not in the job's environments (sparkship, "
                                              "publish)", "(target staging)"]),
    "serverless environment without the wheel": ("resources/compute_serverless.yml",
                                                 "                dependencies:\n                  - ../dist/*.whl\n",
                                                 "                dependencies:\n                  - numpy\n",
                                                 ["resources/compute_serverless.yml", "scoring.tasks[score].libraries",
                                                  "installs no wheel: add its environment's dependencies",
                                                  "(target staging)"]),
    "serverless environment without a version": ("resources/compute_serverless.yml",
                                                 "environment_version: ${var.serverless_environment_version}\n"
                                                 "                dependencies:\n                  - ../dist/*.whl\n"
                                                 "                  - mlflow",
                                                 "dependencies:\n                  - ../dist/*.whl\n                  - mlflow",
                                                 ["resources/compute_serverless.yml", "environments[publish].spec",
                                                  "names no environment version"]),
    "misspelt environment field": ("resources/compute_serverless.yml", "              spec: &sparkship_environment",
                                   "              specs: &sparkship_environment",
                                   ["resources/compute_serverless.yml",
                                    "targets.staging.resources.jobs.training.environments[sparkship].specs",
                                    "unknown field (did you mean 'spec'?)"]),
    "serverless task with libraries": ("resources/compute_serverless.yml", "              environment_key: publish\n",
                                       "              environment_key: publish\n              libraries:\n"
                                       "                - whl: ../dist/*.whl\n",
                                       ["resources/compute_serverless.yml", "tasks[publish].libraries",
                                        "through its environment's dependencies"]),
    "publish entry point misspelt": ("resources/training.yml", "entry_point: sparkship-publish",
                                     "entry_point: sparkship-publsh",
                                     ["resources/training.yml", "tasks[publish].python_wheel_task.entry_point",
                                      "did you mean 'sparkship-publish'"]),
    "publish condition operator": ("resources/training.yml", "op: NOT_EQUAL", "op: NOT_EQUALS",
                                   ["resources/training.yml", "tasks[publish_enabled].condition_task.op",
                                    "invalid value 'NOT_EQUALS'", "did you mean 'NOT_EQUAL'"]),
    "publish outcome": ("resources/training.yml", 'outcome: "true"', 'outcome: "yes"',
                        ["resources/training.yml", "tasks[publish].depends_on", "outcome must be 'true' or 'false'"]),
    "outcome on a task that is no condition": ("resources/training.yml", "- task_key: publish_enabled\n              outcome",
                                               "- task_key: promote\n              outcome",
                                               ["resources/training.yml", "tasks[publish].depends_on",
                                                "task 'promote', which is not a condition task"]),
    "monitor column not written by scoring": ("resources/quality_monitors.yml", "prediction_col: prediction",
                                              "prediction_col: predicted",
                                              ["resources/quality_monitors.yml", "resources.quality_monitors.scores."
                                               "inference_log.prediction_col", "'predicted' is not a column of the "
                                               "scores table", "did you mean 'prediction'", "(target prod)"]),
    "monitor timestamp column": ("resources/quality_monitors.yml", "timestamp_col: scored_at",
                                 "timestamp_col: timestamp",
                                 ["resources/quality_monitors.yml", "inference_log.timestamp_col", "'timestamp'"]),
    "monitor on a volume path": ("resources/quality_monitors.yml", "table_name: ${var.scoring_output}",
                                 "table_name: ${var.home}/tables/churn_scores",
                                 ["resources/quality_monitors.yml", "scores.table_name",
                                  "'/Volumes/main/sparkship_prod/sparkship/tables/churn_scores' is not a Unity "
                                  "Catalog table name (catalog.schema.table)"]),
    "monitor on a table scoring does not write": ("resources/quality_monitors.yml", "table_name: ${var.scoring_output}",
                                                  "table_name: ${var.scoring_input}",
                                                  ["resources/quality_monitors.yml", "scores.table_name",
                                                   "'main.sparkship_prod.churn_customers' is not written by any "
                                                   "sparkship score task", "main.sparkship_prod.churn_scores"]),
    "monitor without assets_dir": ("resources/quality_monitors.yml",
                                   "          assets_dir: ${workspace.root_path}/monitoring/${var.model_name}_scores\n",
                                   "", ["resources/quality_monitors.yml", "targets.prod.resources.quality_monitors.scores",
                                        'required field "assets_dir" is not set']),
    "monitor misspelt field": ("resources/quality_monitors.yml", "granularities:", "granularity:",
                               ["resources/quality_monitors.yml", "inference_log.granularity",
                                "unknown field (did you mean 'granularities'?)"]),
    "monitor problem type": ("resources/quality_monitors.yml", "PROBLEM_TYPE_CLASSIFICATION",
                             "PROBLEM_TYPE_REGRESSION",
                             ["resources/quality_monitors.yml", "inference_log.problem_type",
                              "training spec is classification: use PROBLEM_TYPE_CLASSIFICATION"]),
    "monitor granularity": ("resources/quality_monitors.yml", "- 1 day", "- 1 days",
                            ["resources/quality_monitors.yml", "inference_log.granularities", "'1 days'"]),
    "monitor output schema": ("resources/quality_monitors.yml", "output_schema_name: ${var.catalog}.${var.schema}",
                              "output_schema_name: ${var.schema}",
                              ["resources/quality_monitors.yml", "output_schema_name", "'sparkship_prod' is not a "
                               "schema name"]),
    "unknown resource kind": ("resources/quality_monitors.yml", "quality_monitors:", "quality_monitor:",
                              ["resources/quality_monitors.yml", "resources.quality_monitor",
                               "did you mean 'quality_monitors'"]),
    "undefined task dependency": ("resources/training.yml", "- task_key: train\n          python_wheel_task",
                                  "- task_key: fit\n          python_wheel_task",
                                  ["resources/compute_classic.yml", "resources.jobs.training.tasks[train]",
                                   "target override of task 'train', which resources/training.yml does not define"]),
    "dependency on a task the job lacks": ("resources/training.yml", "depends_on:\n            - task_key: train",
                                           "depends_on:\n            - task_key: trian",
                                           ["resources/training.yml", "tasks[validate].depends_on",
                                            "depends on task 'trian', which the job does not have"]),
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
                              ["databricks.yml", "includes", "unknown field (did you mean 'include'?)"]),
    "auto-full flag misspelt": ("databricks.yml", "default: --no-auto-full", "default: --no_auto_full",
                                ["resources/scoring.yml", "tasks[score].python_wheel_task.parameters",
                                 "unrecognized arguments: --no_auto_full"]),
    "trigger table from a variable that is a path": ("resources/scoring_on_change.yml",
                                                     "            - ${var.scoring_input}\n          condition",
                                                     "            - ${var.home}/churn_customers\n          condition",
                                                     ["resources/scoring_on_change.yml", "trigger.table_update."
                                                      "table_names", "'/Volumes/main/sparkship_prod/sparkship/"
                                                      "churn_customers' (from ${var.home}/churn_customers) is not a "
                                                      "Unity Catalog table name", "(target prod)"]),
    "trigger condition from a variable": ("resources/scoring_on_change.yml", "condition: ANY_UPDATED",
                                          "condition: ${var.model_name}",
                                          ["resources/scoring_on_change.yml", "trigger.table_update.condition",
                                           "invalid value 'churn'", "(from ${var.model_name})"]),
    "trigger misspelt field": ("resources/scoring_on_change.yml", "wait_after_last_change_seconds:",
                               "wait_after_last_change_secs:",
                               ["resources/scoring_on_change.yml",
                                "scoring_on_change.trigger.table_update.wait_after_last_change_secs",
                                "unknown field (did you mean 'wait_after_last_change_seconds'?)"]),
    "trigger wait under a minute": ("resources/scoring_on_change.yml", "min_time_between_triggers_seconds: 300",
                                    "min_time_between_triggers_seconds: 30",
                                    ["resources/scoring_on_change.yml", "min_time_between_triggers_seconds",
                                     "30 s: Databricks accepts 60 s or more"]),
    "trigger watches another table": ("resources/scoring_on_change.yml",
                                      "            - ${var.scoring_input}\n          condition",
                                      "            - ${var.training_table}\n          condition",
                                      ["resources/scoring_on_change.yml", "trigger.table_update.table_names",
                                       "watches main.sparkship_prod.churn_training, but task score scores --input "
                                       "main.sparkship_prod.churn_customers", "(target prod)"]),
    "stream and batch write one output": ("databricks.yml", "default: ${var.catalog}.${var.schema}.churn_scores_stream",
                                          "default: ${var.scoring_output}",
                                          ["resources/scoring_on_change.yml", "tasks[score].python_wheel_task."
                                           "parameters", "--output main.sparkship_prod.churn_scores is also written "
                                           "by batch scoring (scoring.score)", "give the stream an output of its own"]),
    "processing-time stream on serverless": ("resources/scoring_on_change.yml", "- available-now",
                                             "- processing-time=1 minute",
                                             ["resources/scoring_on_change.yml", "tasks[score].python_wheel_task."
                                              "parameters", "serverless compute runs available-now streams only",
                                              "(target staging)"]),
    "processing-time stream in a triggered job": ("resources/scoring_on_change.yml", "- available-now",
                                                  "- processing-time=1 minute",
                                                  ["resources/scoring_on_change.yml", "runs until stopped, but the "
                                                   "job is started by its trigger", "(targets dev, prod)"]),
    "unknown stream trigger": ("resources/scoring_on_change.yml", "- available-now", "- availablenow",
                               ["resources/scoring_on_change.yml", "--trigger 'availablenow': expected available-now "
                                "or processing-time=INTERVAL"]),
    "checkpoint without stream": ("resources/scoring_on_change.yml", "              - --stream\n", "",
                                  ["resources/scoring_on_change.yml", "tasks[score].python_wheel_task.parameters",
                                   "--checkpoint without --stream"]),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_bundle_fails_with_a_message_naming_the_file_and_problem(case, copy_bundle, wheel):
    file, old, new, fragments = BROKEN[case]
    root = copy_bundle(file, old, new)

    report = check_bundle(root, wheel=wheel, commands=COMMANDS)

    assert not report.ok
    messages = [str(p) for p in report.problems]
    assert any(all(f in m for f in fragments) for m in messages), "\n".join(messages)


# Broken on-change jobs that must each give exactly one problem line: (file, text, replacement, the line).
ONE_LINE = {
    "unknown trigger condition": ("resources/scoring_on_change.yml", "condition: ANY_UPDATED", "condition: ANY_UPDATE",
                                  "resources/scoring_on_change.yml: resources.jobs.scoring_on_change.trigger."
                                  "table_update.condition: invalid value 'ANY_UPDATE': expected one of ANY_UPDATED, "
                                  "ALL_UPDATED (did you mean 'ANY_UPDATED'?)"),
    "a path instead of a table name": ("resources/scoring_on_change.yml",
                                       "            - ${var.scoring_input}\n          condition",
                                       "            - /Volumes/main/sparkship/landing/churn_customers\n          "
                                       "condition",
                                       "resources/scoring_on_change.yml: resources.jobs.scoring_on_change.trigger."
                                       "table_update.table_names: '/Volumes/main/sparkship/landing/churn_customers' "
                                       "is not a Unity Catalog table name (catalog.schema.table): a table_update "
                                       "trigger watches Unity Catalog tables only"),
    "--stream without --checkpoint": ("resources/scoring_on_change.yml",
                                      "              - --checkpoint\n              - ${var.scoring_checkpoint}\n", "",
                                      "resources/scoring_on_change.yml: resources.jobs.scoring_on_change.tasks[score]."
                                      "python_wheel_task.parameters: --stream needs --checkpoint PATH: where the "
                                      "stream keeps its progress through the input (e.g. ${var.scoring_checkpoint})"),
}


@pytest.mark.parametrize("case", list(ONE_LINE))
def test_a_broken_on_change_job_gives_one_clear_problem(case, copy_bundle, wheel):
    file, old, new, line = ONE_LINE[case]
    root = copy_bundle(file, old, new)

    problems = [str(p) for p in check_bundle(root, wheel=wheel, commands=COMMANDS).problems]

    assert problems == [line]


def test_pausing_one_scoring_job_in_a_target_is_clean_and_its_problems_name_that_file(copy_bundle, wheel):
    # docs/DEPLOY.md: run only one scoring job in a target by pausing the other there, in databricks.yml.
    pause = "      num_workers: 2\n    resources:\n      jobs:\n        scoring_on_change:\n          trigger:\n" \
            "            pause_status: PAUSED\n"
    root = copy_bundle("databricks.yml", "      num_workers: 2\n", pause)
    assert [str(p) for p in check_bundle(root, wheel=wheel, commands=COMMANDS).problems] == []
    assert load_bundle(root).job_config("scoring_on_change", "prod")["trigger"]["table_update"]["table_names"] \
        == ["${var.scoring_input}"]

    root = copy_bundle("databricks.yml", "            pause_status: PAUSED\n", "            pause_status: PAUSD\n")
    assert [str(p) for p in check_bundle(root, wheel=wheel, commands=COMMANDS).problems] == [
        "databricks.yml: targets.prod.resources.jobs.scoring_on_change.trigger.pause_status: invalid value 'PAUSD': "
        "expected one of UNPAUSED, PAUSED (did you mean 'PAUSED'?)"]


def test_a_problem_in_one_target_only_says_which(copy_bundle, wheel):
    root = copy_bundle("databricks.yml", "      num_workers: 2\n", "      num_workers: 2\n      model_name: Churn\n")
    messages = [str(p) for p in check_bundle(root, wheel=wheel, commands=COMMANDS).problems]
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
    # Fails when the bundle has any problem beyond the one the pending publish command explains.
    assert out["problems"] == expected_problems(out["problems"]), "\n".join(out["problems"])
    assert (out["ok"], code) == ((True, 0) if HAS_PUBLISH else (False, 1))


def test_cli_check_without_a_buildable_project_says_so(copy_bundle, capsys):
    root = copy_bundle("databricks.yml", "bundle:", "bundle:")  # the copy has no setup.py to build from

    code = main(["bundle", "check", "--root", str(root)])
    out = capsys.readouterr().out

    assert code == 1
    assert "databricks.yml: artifacts: " in out and "has no setup.py or pyproject.toml" in out


def test_cli_check_without_databricks_yml_is_a_usage_error(tmp_path, capsys):
    assert main(["bundle", "check", "--root", str(tmp_path)]) == 2
    assert "databricks.yml does not exist" in capsys.readouterr().err
