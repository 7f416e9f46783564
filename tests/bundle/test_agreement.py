"""`sparkship bundle check` agrees with the real Databricks CLI (`databricks bundle validate --strict`).

Each edit below changes one thing in a copy of the repository's bundle (databricks.yml + resources/, as they are
when the test runs). The copy is validated by the real CLI in every target, against the project's fake workspace
on 127.0.0.1, and checked by sparkship; each verdict is what the edit adds to the unedited copy's. The CLI's
verdict is never written down here: it comes from running the CLI. For every edit of the CLI's domain
(structure, types, values, the rules the CLI enforces), sparkship fails exactly when the CLI does, and every
problem sparkship adds names the edited thing (no problem that follows from an earlier one). The edits marked
``own`` are beyond the CLI (sparkship's own checks: task graph, table names): sparkship must find them whatever
the CLI says.

The CLI is `databricks` on PATH, else .venv/bin/databricks (the Makefile unpacks it there); without it the module
is skipped, or fails where SPARKSHIP_REQUIRE_DATABRICKS_CLI=1 (CI).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from sparkship.bundle import build_wheel, check_bundle, load_bundle
from sparkship.bundle.schema import cli_version
from sparkship.cli import build_parser
from tests.helpers.fake_databricks import FakeDatabricks
from tests.helpers.paths import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.seconds(65)]


# The deploying identity, as in CI: a service principal (its user name is its application ID), passed to the
# bundle as var.service_principal. A secret's variable is given at deploy time too.
SERVICE_PRINCIPAL = "6a1c0f3e-8d2b-4c5e-9f7a-0b1c2d3e4f50"
OTHER_PRINCIPAL = "0f9e8d7c-6b5a-4321-8fed-cba987654321"  # not the one deploying
DEPLOY_VARIABLES = {"BUNDLE_VAR_service_principal": SERVICE_PRINCIPAL, "BUNDLE_VAR_extra_token": "s3cr3t"}
EXTRA = "resources/zz_edit.yml"  # a new file the include glob picks up


def _find_cli() -> str | None:
    found = shutil.which("databricks")
    local = ROOT / ".venv" / "bin" / "databricks"
    return found or (str(local) if local.is_file() else None)


CLI = _find_cli()
if CLI is None:
    if os.environ.get("SPARKSHIP_REQUIRE_DATABRICKS_CLI") == "1":
        pytest.fail("the Databricks CLI is required (SPARKSHIP_REQUIRE_DATABRICKS_CLI=1) but is neither `databricks` "
                    "on PATH nor .venv/bin/databricks: run `make databricks-cli`", pytrace=False)
    pytest.skip("no Databricks CLI (`databricks` on PATH or .venv/bin/databricks): the agreement matrix needs the "
                "real CLI", allow_module_level=True)


@dataclass(frozen=True)
class Edit:
    """Replace the first match of ``pattern`` (a regex) in ``file`` by ``repl``; no pattern: append to the file."""

    name: str
    file: str
    pattern: str | None
    repl: str
    mark: str = ""  # every problem sparkship adds must contain it (empty: the CLI is expected to accept the edit)
    own: bool = False  # a check of sparkship's own, beyond the CLI

    def apply(self, root: Path) -> None:
        path = root / self.file
        text = path.read_text() if path.exists() else ""
        if self.pattern is None:
            path.write_text(text + self.repl)
            return
        new, count = re.subn(self.pattern, self.repl, text, count=1)
        assert count == 1, f"{self.name}: {self.pattern!r} not in {self.file}: the edit no longer matches the bundle"
        path.write_text(new)


def extra(name: str, yaml_text: str, mark: str = "", own: bool = False) -> Edit:
    return Edit(name, EXTRA, None, yaml_text, mark, own)


def var_default(name: str, variable: str, value: str, mark: str = "") -> Edit:
    """Change the default of a variable defined in databricks.yml."""
    return Edit(name, "databricks.yml", rf"(\n  {variable}:\n(?:    .*\n|      .*\n)*?    default: )[^\n]*",
                rf"\g<1>{value}", mark)


# Resource kinds the CLI knows besides the bundle's own, each with its required fields only.
NEW_KINDS = {
    "catalogs": "name: sparkship_extra",
    "external_locations": "name: loc\n        url: s3://bucket/path\n        credential_name: cred",
    "genie_spaces": "title: space\n        warehouse_id: abc123",
    "instance_pools": "instance_pool_name: pool\n        node_type_id: i3.xlarge",
    "job_runs": "job_id: 123",
    "postgres_projects": "project_id: proj",
    "postgres_branches": "branch_id: br\n        parent: projects/proj",
    "postgres_catalogs": "catalog_id: pgcat\n        postgres_database: db",
    "postgres_databases": "database_id: db\n        parent: projects/proj/branches/br\n        role: owner",
    "postgres_endpoints": "endpoint_id: ep\n        parent: projects/proj/branches/br\n        "
                          "endpoint_type: ENDPOINT_TYPE_READ_WRITE",
    "postgres_roles": "role_id: reader\n        parent: projects/proj/branches/br",
    "postgres_synced_tables": "synced_table_id: main.sparkship.synced",
    "secrets": "name: token\n        catalog_name: main\n        schema_name: sparkship\n"
               "        value: ${var.extra_token}\nvariables:\n  extra_token:\n    description: given at deploy time",
    "vector_search_endpoints": "name: vs\n        endpoint_type: STANDARD",
    "vector_search_indexes": "name: main.sparkship.idx\n        endpoint_name: vs\n        index_type: DELTA_SYNC\n"
                             "        primary_key: customer_id",
}

EDITS = [
    # The disagreements issue 34 lists: passed by sparkship, refused by the CLI ...
    var_default("variable default of the wrong type", "num_workers", "two", "num_workers"),
    extra("workspace.root_pth", "targets:\n  dev:\n    workspace:\n      root_pth: /Workspace/x\n", "root_pth"),
    extra("permission level CAN_DO", "permissions:\n  - level: CAN_DO\n    group_name: users\n", "CAN_DO"),
    extra("run_as with user and service principal",
          "run_as:\n  user_name: a@example.com\n  service_principal_name: abc\n", "run_as"),
    extra("presets.name_prefx", "targets:\n  dev:\n    presets:\n      name_prefx: x\n", "name_prefx"),
    # ... and refused by sparkship, accepted by the CLI.
    Edit("bundle.engine", "databricks.yml", r"(\nbundle:\n)", r"\1  engine: direct\n"),
    extra("a bundle section in an included file", "bundle:\n  name: sparkship\n"),
    extra("run_job_task.python_params", "resources:\n  jobs:\n    relay:\n      name: relay\n      tasks:\n"
          "        - task_key: run\n          run_job_task:\n            job_id: 1\n"
          "            python_params: [a, b]\n"),
    *[extra(f"resource kind {kind}", f"resources:\n  {kind}:\n    extra:\n        {fields}\n")
      for kind, fields in NEW_KINDS.items()],
    # Types, values and required fields.
    var_default("variable default a bool where an int is used", "num_workers", "true", "num_workers"),
    var_default("variable default a numeric string where an int is used", "num_workers", '"3"'),
    extra("target variable of the wrong type", "targets:\n  prod:\n    variables:\n      num_workers: two\n",
          "num_workers"),
    Edit("literal of the wrong type", "resources/compute_classic.yml", r"num_workers: \$\{var\.num_workers\}",
         "num_workers: two", "num_workers"),
    Edit("max_concurrent_runs not a number", "resources/training.yml", r"max_concurrent_runs: 1\b",
         "max_concurrent_runs: one", "max_concurrent_runs"),
    Edit("target default not a bool", "databricks.yml", r"\n    default: true\n", "\n    default: yes please\n",
         "default"),
    extra("tags a list", "targets:\n  dev:\n    resources:\n      jobs:\n        training:\n          tags: [a, b]\n",
          "tags"),
    extra("email notifications a string", "targets:\n  dev:\n    resources:\n      jobs:\n        training:\n"
          "          email_notifications:\n            on_failure: ops@example.com\n", "on_failure"),
    Edit("unknown pause status", "resources/scoring.yml", r"quartz_cron_expression:", "pause_status: PAUSD\n"
         "        quartz_cron_expression:", "PAUSD"),
    Edit("unknown trigger condition", "resources/scoring_on_change.yml", r"condition: ANY_UPDATED",
         "condition: ANY_UPDATE", "ANY_UPDATE"),
    Edit("trigger condition through a variable", "resources/scoring_on_change.yml", r"condition: ANY_UPDATED",
         "condition: ${var.drift_window}", "drift_window"),
    Edit("unknown problem type", "resources/quality_monitors.yml", r"PROBLEM_TYPE_CLASSIFICATION", "CLASSIFICATION",
         "CLASSIFICATION"),
    extra("unknown presets trigger_pause_status", "targets:\n  dev:\n    presets:\n      trigger_pause_status: PAUSD\n",
          "PAUSD"),
    Edit("unknown artifact type", "databricks.yml", r"type: whl", "type: wheel", "wheel"),
    Edit("unknown target mode", "databricks.yml", r"mode: production", "mode: prod", "mode"),
    extra("job permission level CAN_DO", "targets:\n  dev:\n    resources:\n      jobs:\n        training:\n"
          "          permissions:\n            - level: CAN_DO\n              group_name: users\n", "CAN_DO"),
    Edit("missing package_name", "resources/training.yml",
         r"package_name: sparkship\n\s*(entry_point: sparkship-train)", r"\1", "package_name"),
    Edit("missing monitor assets_dir", "resources/quality_monitors.yml", r"\n\s*assets_dir: [^\n]*", "",
         "assets_dir"),
    # The schema requires task_key; the CLI does not warn, the Jobs API refuses the job.
    extra("a task without task_key", "resources:\n  jobs:\n    relay:\n      name: relay\n      tasks:\n"
          "        - run_job_task:\n            job_id: 1\n", "task_key", own=True),
    # Unknown names.
    Edit("unknown task type", "resources/training.yml", r"python_wheel_task:(\n\s*package_name: sparkship\n"
         r"\s*entry_point: sparkship-train)", r"python_whl_task:\1", "python_whl_task"),
    Edit("unknown field in the scoring task (no monitor follow-on)", "resources/scoring.yml",
         r"python_wheel_task:", "python_wheel_tsk:", "python_wheel_tsk"),
    extra("unknown top-level key", "includes:\n  - other/*.yml\n", "includes"),
    extra("unknown resource kind", "resources:\n  quality_monitor:\n    x:\n      table_name: a.b.c\n",
          "quality_monitor"),
    extra("unknown job field", "targets:\n  dev:\n    resources:\n      jobs:\n        training:\n"
          "          max_concurent_runs: 2\n", "max_concurent_runs"),
    extra("unknown variable field", "variables:\n  extra_var:\n    defualt: 1\n", "defualt"),
    # Rules the CLI enforces in code.
    Edit("undefined variable", "resources/training.yml", r"\$\{var\.training_table\}", "${var.training_tabel}",
         "training_tabel"),
    extra("target sets an undefined variable", "targets:\n  prod:\n    variables:\n      nope: 3\n", "nope"),
    extra("a secret's value written in the bundle", "resources:\n  secrets:\n    token:\n      name: token\n"
          "      catalog_name: main\n      schema_name: sparkship\n      value: s3cr3t\n", "secret"),
    extra("bundle run_as next to the quality monitor",
          f"targets:\n  prod:\n    run_as:\n      service_principal_name: {OTHER_PRINCIPAL}\n", "run_as"),
    # Accepted.
    extra("a sync pattern that matches no file", "sync:\n  exclude:\n    - benchmarks/**\n", "benchmarks"),
    extra("a valid sync include", "sync:\n  include:\n    - specs/*.yml\n"),
    extra("a valid job timeout", "targets:\n  dev:\n    resources:\n      jobs:\n        training:\n"
          "          timeout_seconds: 7200\n"),
    Edit("an unparsable cron (the CLI does not parse it)", "resources/scoring.yml",
         r'quartz_cron_expression: "[^"]*"', 'quartz_cron_expression: "every day"'),
    # sparkship's own checks, beyond the CLI.
    Edit("depends on a task the job does not have", "resources/training.yml",
         r"(depends_on:\n\s*- task_key: )train\b", r"\1trian", "trian", own=True),
    extra("two tasks with one key", "resources:\n  jobs:\n    relay:\n      name: relay\n      tasks:\n"
          "        - task_key: a\n          run_job_task:\n            job_id: 1\n"
          "        - task_key: a\n          run_job_task:\n            job_id: 2\n", "tasks[a]", own=True),
    Edit("a table name that is not catalog.schema.table", "resources/quality_monitors.yml",
         r"table_name: \$\{var\.scoring_output\}", "table_name: churn_scores", "churn_scores", own=True),
    Edit("an entry point the wheel does not declare", "resources/monitoring.yml", r"entry_point: sparkship-monitor\b",
         "entry_point: sparkship-monitr", "sparkship-monitr", own=True),
]

_DIAGNOSTIC = re.compile(r"^(Warning|Error): (.*)$")  # a recommendation does not fail --strict


def _copy_bundle(into: Path) -> Path:
    into.mkdir(parents=True)
    shutil.copy(ROOT / "databricks.yml", into / "databricks.yml")
    shutil.copytree(ROOT / "resources", into / "resources")
    return into


def _diagnostics(output: str) -> set[str]:
    """Each diagnostic of `bundle validate` as its summary and its `at` line (where in the config, not the line
    number of the file, which an edit may shift)."""
    found, lines = set(), output.splitlines()
    for i, line in enumerate(lines):
        match = _DIAGNOSTIC.match(line)
        if match:
            at = next((x.strip() for x in lines[i + 1:i + 3] if x.strip().startswith("at ")), "")
            found.add(f"{match.group(1)}: {match.group(2)} {at}".strip())
    return found


def _validate(root: Path, target: str, host: str) -> tuple[int, set[str]]:
    env = {**os.environ, "DATABRICKS_HOST": host, "DATABRICKS_TOKEN": "dapi-test-token",
           "DATABRICKS_BUNDLE_ENGINE": "direct", **DEPLOY_VARIABLES,
           "HOME": str(root.parent / "home"), "DATABRICKS_CONFIG_FILE": str(root.parent / "home" / "none.cfg")}
    proc = subprocess.run([CLI, "bundle", "validate", "--strict", "-t", target], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, _diagnostics(proc.stdout + proc.stderr)


def _cli_verdict(root: Path, base: dict[str, tuple[int, set[str]]], host: str) -> list[str]:
    """What the CLI says of the edited copy beyond what it says of the unedited one, over all targets."""
    added = []
    for target, (base_rc, base_diags) in base.items():
        rc, diags = _validate(root, target, host)
        added += sorted(f"{d} (-t {target})" for d in diags - base_diags)
        if rc != 0 and base_rc == 0 and not diags - base_diags:
            added.append(f"exit {rc} (-t {target})")
    return added


def deploying_workspace() -> FakeDatabricks:
    return FakeDatabricks(token="dapi-test-token", user_name=SERVICE_PRINCIPAL)


@dataclass
class Outcome:
    cli: list[str]  # what the CLI adds (diagnostics), empty when it accepts the edit
    sparkship: list[str]  # the problems sparkship adds


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(ROOT, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, wheel) -> dict[str, Outcome]:
    """Every edit through the CLI (all targets, concurrently) and through sparkship, against the unedited copy."""
    scratch = tmp_path_factory.mktemp("agreement")
    commands = build_parser().parse_args(["bundle", "check"]).sparkship_commands
    base_root = _copy_bundle(scratch / "base" / "bundle")
    targets = list(load_bundle(base_root).targets)
    roots = {}
    for i, edit in enumerate(EDITS):
        roots[edit.name] = _copy_bundle(scratch / f"edit{i}" / "bundle")
        edit.apply(roots[edit.name])
    with pytest.MonkeyPatch.context() as env, deploying_workspace() as ws, ThreadPoolExecutor(max_workers=8) as pool:
        for name, value in DEPLOY_VARIABLES.items():
            env.setenv(name, value)  # sparkship takes BUNDLE_VAR_* as the CLI does
        base_runs = {t: pool.submit(_validate, base_root, t, ws.host) for t in targets}
        base = {t: f.result() for t, f in base_runs.items()}
        cli = {name: pool.submit(_cli_verdict, root, base, ws.host) for name, root in roots.items()}
        base_problems = {str(p) for p in check_bundle(base_root, wheel=wheel, commands=commands).problems}
        checked = {name: [str(p) for p in check_bundle(root, wheel=wheel, commands=commands).problems
                          if str(p) not in base_problems] for name, root in roots.items()}
        return {name: Outcome(cli[name].result(), checked[name]) for name in roots}


def test_the_matrix_covers_at_least_forty_edits_and_resource_kinds_of_the_schema():
    assert len(EDITS) >= 40
    assert len({e.name for e in EDITS}) == len(EDITS)
    schema = json.loads((ROOT / "src" / "sparkship" / "bundle" / "cli_schema.json").read_text())
    resources = schema["$defs"]["github.com"]["databricks"]["cli"]["bundle"]["config.Resources"]["oneOf"][0]
    assert set(NEW_KINDS) <= set(resources["properties"])


@pytest.mark.parametrize("edit", [e for e in EDITS if not e.own], ids=lambda e: e.name)
def test_sparkship_agrees_with_the_cli(edit, outcomes):
    outcome = outcomes[edit.name]
    if outcome.cli:
        assert edit.mark, f"the CLI refuses {edit.name!r} ({outcome.cli}): give the edit the mark its problems name"
        assert outcome.sparkship, f"the CLI refuses {edit.name!r} ({outcome.cli}), sparkship passes it"
    else:
        assert outcome.sparkship == [], f"the CLI accepts {edit.name!r}, sparkship refuses it"
    # One problem is reported where it is, not again through what follows from it.
    assert all(edit.mark in p for p in outcome.sparkship), (edit.mark, outcome.sparkship)


@pytest.mark.parametrize("edit", [e for e in EDITS if e.own], ids=lambda e: e.name)
def test_sparkship_finds_what_only_its_own_checks_can(edit, outcomes):
    outcome = outcomes[edit.name]
    assert outcome.sparkship, f"sparkship passes {edit.name!r} (the CLI: {outcome.cli or 'accepts it'})"
    assert all(edit.mark in p for p in outcome.sparkship), (edit.mark, outcome.sparkship)


def test_the_real_bundle_passes_the_cli_in_every_target_and_sparkship(wheel):
    with tempfile.TemporaryDirectory() as scratch, deploying_workspace() as ws:
        root = _copy_bundle(Path(scratch) / "bundle")
        for target in load_bundle(root).targets:
            assert _validate(root, target, ws.host) == (0, set()), target
    commands = build_parser().parse_args(["bundle", "check"]).sparkship_commands
    assert [str(p) for p in check_bundle(ROOT, wheel=wheel, commands=commands).problems] == []


def test_the_vendored_schema_is_the_one_of_the_cli_the_tests_run(tmp_path):
    out = tmp_path / "schema.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "refresh_bundle_schema.py"), "--cli", CLI,
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    vendored = ROOT / "src" / "sparkship" / "bundle" / "cli_schema.json"
    assert out.read_text() == vendored.read_text(), "run scripts/refresh_bundle_schema.py --cli " + CLI
    assert cli_version() == json.loads(out.read_text())["$comment"]
