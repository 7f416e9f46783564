"""A job's ``trigger``: ``table_update`` (Databricks starts the job when Unity Catalog tables are committed to).

The CLI's schema (:mod:`sparkship.bundle.schema`) already refuses unknown fields and a condition it does not
know; this checks the values as they resolve in each target: the watched tables are ``catalog.schema.table``
names, the condition is ``ANY_UPDATED`` or ``ALL_UPDATED``, the waits are at least the 60 s Databricks allows,
and a ``sparkship score`` task of the job reads a table the trigger watches.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sparkship.bundle.loader import Bundle
from sparkship.bundle.problems import UC_TABLE, Problems

if TYPE_CHECKING:
    from sparkship.bundle.jobs import ParsedJobs, WheelTaskRun

TABLE_UPDATE_CONDITIONS = ("ANY_UPDATED", "ALL_UPDATED")
MIN_WAIT_SECONDS = 60  # the least Databricks accepts for both waits (bundle schema)
WAIT_FIELDS = ("min_time_between_triggers_seconds", "wait_after_last_change_seconds")


def trigger_file(bundle: Bundle, key: str, target: str, job_file: str, part: str = "trigger") -> str:
    """The file that sets ``part`` of the job's trigger in ``target``: the target's override where it sets it
    (e.g. only ``trigger.pause_status``), else the job's own file."""
    return bundle.target_file(target, f"resources.jobs.{key}.{part}", fallback=job_file) if target else job_file


def check_triggers(bundle: Bundle, parsed: ParsedJobs, runs: list[WheelTaskRun], problems: Problems) -> None:
    """Check the ``table_update`` trigger of every parsed job in every target (``runs``: its score tasks)."""
    for target, jobs in parsed.items():
        for key, (file, job) in jobs.items():
            update = (job.get("trigger") or {}).get("table_update")
            if not isinstance(update, dict):
                continue
            where, tgt = f"resources.jobs.{key}.trigger.table_update", target or None
            file = trigger_file(bundle, key, target, file, "trigger.table_update")
            watched = _check_table_names(bundle, problems, file, where, update, target)
            condition = bundle.resolve(str(update.get("condition") or TABLE_UPDATE_CONDITIONS[0]), target)
            if "${" not in condition and condition not in TABLE_UPDATE_CONDITIONS:
                problems.add(file, f"{where}.condition", f"{condition!r}{_from(update.get('condition'), condition)} "
                             f"is not a table_update condition: expected {' or '.join(TABLE_UPDATE_CONDITIONS)}", tgt)
            for field in WAIT_FIELDS:
                if update.get(field) is not None:
                    _check_wait(bundle, problems, file, f"{where}.{field}", update[field], target)
            scoring = [r for r in runs if r.target == target and r.job == key and r.command == ["score"]]
            _check_reads_watched(problems, file, f"{where}.table_names", watched, scoring, tgt)


def _check_table_names(bundle: Bundle, problems: Problems, file: str, where: str, update: dict[str, Any],
                       target: str) -> list[str]:
    """Report names that are not ``catalog.schema.table``; return the watched names that are."""
    names = update.get("table_names")
    names = names if isinstance(names, list) else [names] if names else []
    if not names:
        problems.add(file, f"{where}.table_names", "names no table: list the catalog.schema.table names whose "
                     "commits start the job", target or None)
        return []
    watched = []
    for raw in names:
        name = bundle.resolve(str(raw), target)
        if "${" in name:
            continue  # an undefined variable is reported with the variables
        if UC_TABLE.fullmatch(name):
            watched.append(name)
        else:
            problems.add(file, f"{where}.table_names", f"{name!r}{_from(raw, name)} is not a Unity Catalog table "
                         "name (catalog.schema.table): a table_update trigger watches Unity Catalog tables only",
                         target or None)
    return watched


def _check_wait(bundle: Bundle, problems: Problems, file: str, where: str, raw: Any, target: str) -> None:
    value = bundle.resolve(str(raw), target)
    if "${" in value:
        return
    try:
        seconds = int(value)
    except ValueError:
        problems.add(file, where, f"{value!r}{_from(raw, value)} is not a whole number of seconds", target or None)
        return
    if seconds < MIN_WAIT_SECONDS:
        problems.add(file, where, f"{seconds}{_from(raw, value)} s: Databricks accepts {MIN_WAIT_SECONDS} s or more",
                     target or None)


def _check_reads_watched(problems: Problems, file: str, where: str, watched: list[str],
                         scoring: list[WheelTaskRun], target: str | None) -> None:
    """A score task's input that the trigger does not watch: its changes would not start the job."""
    if not watched:
        return  # no valid name to compare with: already reported
    for run in scoring:
        table = str(run.args.input).partition("@")[0]
        if table not in watched:
            problems.add(file, where, f"watches {', '.join(watched)}, but task {run.task} scores --input "
                         f"{run.args.input}: changes to it would not start the job", target)


def _from(raw: Any, resolved: str) -> str:
    """`` (from ${var.x})`` when a value came from a reference."""
    return f" (from {raw})" if str(raw) != resolved else ""
