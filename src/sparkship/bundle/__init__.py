"""Offline checks of the Databricks asset bundle (``databricks.yml`` + ``resources/*.yml``), before a deploy.

Every file is first checked against the Databricks CLI's own JSON schema (:mod:`~sparkship.bundle.schema`, the
schema vendored at a pinned CLI version), with each variable's value checked where it is used; then each section
is checked by the module named after it (``targets``, ``variables``, ``artifacts``, ``jobs``, ``environments``,
``triggers``, ``score_tasks``, ``monitors``), in every target (overrides merged), each problem naming the file
and where in it; what each one checks is listed in docs/DESIGN.md. A resource the schema finds a fault in is not
checked further, so that one mistake is one problem. Building the wheel needs the ``bundle`` extra (``build``).

    >>> [str(p) for p in check(".", commands=None)]                    # doctest: +SKIP
    []
"""
from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkship.bundle import jobs as job_checks
from sparkship.bundle import monitors as monitor_checks
from sparkship.bundle.artifacts import WheelInfo, build_artifact, build_wheel, check_artifacts, read_wheel
from sparkship.bundle.environments import compute_of
from sparkship.bundle.loader import BUNDLE_FILE, Bundle, BundleError, JobSource, ResourceSource, load_bundle
from sparkship.bundle.problems import Problem, Problems
from sparkship.bundle.schema import check_cli_rules, check_structure, cli_version
from sparkship.bundle.score_tasks import check_score_tasks
from sparkship.bundle.targets import (
    check_bundle_section,
    check_targets,
    deployed_job_name,
    needs_short_name,
    short_user_name,
)
from sparkship.bundle.triggers import check_triggers
from sparkship.bundle.variables import check_variables
from sparkship.errors import SparkshipError


@dataclass
class BundleReport:
    """The outcome of :func:`check_bundle`; ``ok`` when there are no problems."""

    root: str
    bundle: str
    targets: list[str]
    jobs: dict[str, list[str]]  # job key -> task keys (as defined, before target overrides)
    monitors: dict[str, list[str]]  # quality monitor key -> targets that deploy it
    compute: dict[str, str]  # target -> classic / serverless / mixed
    wheel: str | None
    problems: list[Problem]
    schema: str = ""  # the CLI whose bundle schema the structure was checked against

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "root": self.root, "bundle": self.bundle, "targets": self.targets, "jobs": self.jobs,
            "monitors": self.monitors, "compute": self.compute, "wheel": self.wheel, "schema": self.schema,
            "problems": [str(p) for p in self.problems],
        }


Commands = Mapping[str, argparse.ArgumentParser]


def check(bundle_dir: str | os.PathLike[str] = ".", wheel: str | os.PathLike[str] | None = None,
          commands: Commands | None = None) -> list[Problem]:
    """The problems :func:`check_bundle` finds (an empty list when the bundle is fine)."""
    return check_bundle(bundle_dir, wheel=wheel, commands=commands).problems


def check_bundle(root: str | os.PathLike[str] = ".", wheel: str | os.PathLike[str] | None = None,
                 commands: Commands | None = None) -> BundleReport:
    """Check the bundle in ``root`` offline; ``wheel`` skips the build and checks that wheel instead.

    ``commands`` (command name -> its ``argparse`` parser: the ``sparkship`` CLI's, passed in by
    ``sparkship bundle check``) parses each ``python_wheel_task``'s parameters; without it they are not checked.
    Raises :class:`BundleError` only when the YAML cannot be read; everything else is a :class:`Problem` in
    the report.
    """
    bundle = load_bundle(root)
    problems = Problems(list(bundle.targets))
    problems.extend(bundle.problems)
    broken = check_structure(bundle, problems)
    check_cli_rules(bundle, problems)
    check_bundle_section(bundle, problems)
    check_artifacts(bundle, problems)
    check_variables(bundle, problems)
    check_targets(bundle, problems, broken)
    parsed = job_checks.parse_jobs(bundle, problems, broken)
    monitors = monitor_checks.parse_monitors(bundle, broken)

    has_wheel = job_checks.has_wheel_tasks(parsed)
    wheel_info = _wheel(bundle, wheel, problems) if has_wheel else None
    runs = job_checks.check_wheel_tasks(bundle, parsed, wheel_info, problems, commands) if wheel_info else None
    if not has_wheel or any(len(jobs) != len(bundle.target_resources("jobs", t)) for t, jobs in parsed.items()):
        runs = [] if not has_wheel else None  # None: a job left out, so what its score tasks write is not known
    check_triggers(bundle, parsed, runs or [], problems)
    check_score_tasks(parsed, runs or [], problems)
    monitor_checks.check_monitors(bundle, monitors, parsed, runs, problems)
    return BundleReport(
        root=str(bundle.root),
        bundle=bundle.name,
        targets=list(bundle.targets),
        jobs={k: [str(t.get("task_key")) for t in (j.config.get("tasks") or []) if isinstance(t, dict)]
              for k, j in bundle.jobs.items()},
        monitors=_monitor_targets(monitors),
        compute={t: _compute(jobs) for t, jobs in parsed.items()},
        wheel=Path(wheel_info.path).name if wheel_info else None,
        problems=problems.result(),
        schema=cli_version(),
    )


def _wheel(bundle: Bundle, wheel: str | os.PathLike[str] | None, problems: Problems) -> WheelInfo | None:
    with tempfile.TemporaryDirectory(prefix="sparkship-bundle-check-") as scratch:
        try:
            return read_wheel(wheel) if wheel is not None else read_wheel(build_artifact(bundle, scratch))
        except SparkshipError as exc:
            problems.add(BUNDLE_FILE, "artifacts", str(exc))
            return None


def _monitor_targets(monitors: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for target, items in monitors.items():
        for key in items:
            out.setdefault(key, []).append(target)
    return out


def _compute(jobs: dict[str, tuple[str, dict[str, Any]]]) -> str:
    kinds = {compute_of(t) for _, job in jobs.values() for t in job.get("tasks") or [] if isinstance(t, dict)}
    kinds.discard("none")
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "none")


__all__ = [
    "BUNDLE_FILE",
    "Bundle",
    "BundleError",
    "BundleReport",
    "JobSource",
    "Problem",
    "ResourceSource",
    "WheelInfo",
    "build_wheel",
    "check",
    "check_bundle",
    "deployed_job_name",
    "load_bundle",
    "needs_short_name",
    "read_wheel",
    "short_user_name",
]
