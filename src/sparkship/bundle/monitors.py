"""``resources.quality_monitors``: Lakehouse Monitoring of the scores table as an inference table.

Each monitor that passed the CLI's schema (:mod:`sparkship.bundle.schema`), in every target that deploys it, is
checked against what the bundle's own jobs do: the monitored table is a Unity Catalog ``catalog.schema.table``
that a ``sparkship score`` task writes (its ``--output``), the ``inference_log`` columns are columns that
scoring writes (:data:`sparkship.scoring.OUTPUT_COLUMNS` plus the task's ``--keys``), and ``problem_type``
matches the task of the training spec the bundle ships.
"""
from __future__ import annotations

import re
from typing import Any

from sparkship.bundle.jobs import ParsedJobs, WheelTaskRun, load_shipped_specs
from sparkship.bundle.loader import Bundle
from sparkship.bundle.problems import UC_TABLE, Problems, did_you_mean
from sparkship.scoring import OUTPUT_COLUMNS

UC_SCHEMA = re.compile(r"[^.\s/`]+\.[^.\s/`]+")
PROBLEM_TYPES = {"classification": "PROBLEM_TYPE_CLASSIFICATION", "regression": "PROBLEM_TYPE_REGRESSION"}
GRANULARITY = re.compile(r"5 minutes|30 minutes|1 hour|1 day|[1-4] weeks?|1 month|1 year")
COLUMN_FIELDS = ("model_id_col", "prediction_col", "timestamp_col", "label_col", "prediction_proba_col")


def parse_monitors(bundle: Bundle,
                   broken: set[tuple[str | None, str, str]]) -> dict[str, dict[str, tuple[str, dict[str, Any]]]]:
    """target -> key -> (file, settings) of each monitor the schema check found no fault in (``broken``)."""
    return {target: {key: source for key, source in bundle.target_resources("quality_monitors", target).items()
                     if (None, "quality_monitors", key) not in broken
                     and (target, "quality_monitors", key) not in broken}
            for target in bundle.targets}


def check_monitors(
    bundle: Bundle, monitors: dict[str, dict[str, tuple[str, dict[str, Any]]]], jobs: ParsedJobs,
    runs: list[WheelTaskRun] | None, problems: Problems,
) -> None:
    """Check each parsed monitor against the scoring tasks and training specs of its target.

    ``runs`` is None when some job or task could not be followed (already reported): whether a score task writes
    the monitored table is then not known, and not reported.
    """
    for target, items in monitors.items():
        scoring = [r for r in runs or [] if r.target == target and r.command == ["score"]]
        tasks = _spec_tasks(bundle, jobs.get(target, {}), target)
        for key, (file, config) in items.items():
            where = f"resources.quality_monitors.{key}"
            table_ok = _check_names(bundle, problems, file, where, config, target)
            log = config.get("inference_log")
            if not isinstance(log, dict):
                problems.add(file, f"{where}.inference_log", "missing: the scores table is an inference table; "
                             "set model_id_col, prediction_col, timestamp_col and problem_type", target)
                continue
            table = bundle.resolve(str(config.get("table_name")), target)
            writer = next((r for r in scoring if r.args.output == table), None)
            if writer is None and (runs is None or not table_ok):
                continue  # not known who writes it, or its name is already reported
            if writer is None:
                written = ", ".join(sorted({r.args.output for r in scoring})) or "none"
                problems.add(file, f"{where}.table_name", f"{table!r} is not written by any sparkship score task "
                             f"of the bundle (their --output: {written})", target)
            else:
                _check_columns(bundle, problems, file, f"{where}.inference_log", log, writer, target)
            _check_problem_type(bundle, problems, file, f"{where}.inference_log", log, tasks, target)


def _check_names(bundle: Bundle, problems: Problems, file: str, where: str, config: dict[str, Any],
                 target: str) -> bool:
    """Report a table or schema name that is not one; return whether the table name is fine."""
    table = bundle.resolve(str(config.get("table_name")), target)
    table_ok = "${" in table or bool(UC_TABLE.fullmatch(table))
    if not table_ok:
        problems.add(file, f"{where}.table_name", f"{table!r} is not a Unity Catalog table name "
                     "(catalog.schema.table): Lakehouse Monitoring monitors UC tables only", target)
    schema = bundle.resolve(str(config.get("output_schema_name")), target)
    if "${" not in schema and not UC_SCHEMA.fullmatch(schema):
        problems.add(file, f"{where}.output_schema_name", f"{schema!r} is not a schema name (catalog.schema)", target)
    return table_ok


def written_columns(run: WheelTaskRun) -> list[str]:
    """The columns a ``sparkship score`` run writes to its output table (the features too with
    ``--include-features``, which this offline check cannot list)."""
    keys = [k.strip() for k in str(run.args.keys).split(",") if k.strip()]
    return [*keys, *OUTPUT_COLUMNS]


def _check_columns(bundle: Bundle, problems: Problems, file: str, where: str, log: dict[str, Any],
                   writer: WheelTaskRun, target: str) -> None:
    columns = written_columns(writer)
    for field in COLUMN_FIELDS:
        if log.get(field) is None:
            continue
        column = bundle.resolve(str(log[field]), target)
        if column not in columns and not getattr(writer.args, "include_features", False):
            problems.add(file, f"{where}.{field}", f"{column!r} is not a column of the scores table: "
                         f"{writer.job}.{writer.task} (sparkship score) writes {', '.join(columns)}"
                         f"{did_you_mean(column, columns)}", target)
    for granularity in log.get("granularities") or []:
        if not GRANULARITY.fullmatch(str(granularity)):
            problems.add(file, f"{where}.granularities", f"{granularity!r} is not a granularity: use 5 minutes, "
                         "30 minutes, 1 hour, 1 day, N weeks (1-4), 1 month or 1 year", target)


def _spec_tasks(bundle: Bundle, jobs: dict[str, tuple[str, dict[str, Any]]], target: str) -> set[str]:
    tasks: set[str] = set()
    quiet = Problems([])  # spec problems are reported with the job that passes the spec
    for key, (file, job) in jobs.items():
        tasks |= {spec.task for spec in load_shipped_specs(bundle, quiet, file, key, job, target)}
    return tasks


def _check_problem_type(bundle: Bundle, problems: Problems, file: str, where: str, log: dict[str, Any],
                        tasks: set[str], target: str) -> None:
    problem_type = bundle.resolve(str(log.get("problem_type")), target)
    expected = sorted(PROBLEM_TYPES[t] for t in tasks if t in PROBLEM_TYPES)
    if expected and problem_type not in expected:
        problems.add(file, f"{where}.problem_type", f"{problem_type!r}, but the bundle's training spec is "
                     f"{' and '.join(sorted(tasks))}: use {' or '.join(expected)}", target)
