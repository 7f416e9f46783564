"""Offline checks of the Databricks asset bundle (``databricks.yml`` + ``resources/*.yml``), before a deploy.

Each section of the bundle is checked by the module named after it (:mod:`~sparkship.bundle.loader`, ``targets``,
``variables``, ``artifacts``, ``jobs``, ``environments``, ``triggers``, ``score_tasks``, ``monitors``), in every
target (overrides merged), each problem naming the file and where in it; what each one checks is listed in
docs/DESIGN.md. Checking needs the ``bundle`` extra (``databricks-bundles``); reading a bundle
(``sparkship jobs run``) does not.

    >>> [str(p) for p in check(".")]                                   # doctest: +SKIP
    []
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkship.bundle.artifacts import WheelInfo, build_artifact, build_wheel, check_artifacts, read_wheel
from sparkship.bundle.loader import BUNDLE_FILE, Bundle, BundleError, JobSource, ResourceSource, load_bundle
from sparkship.bundle.problems import Problem, Problems
from sparkship.bundle.targets import (
    check_bundle_section,
    check_targets,
    deployed_job_name,
    needs_short_name,
    short_user_name,
)
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

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "root": self.root, "bundle": self.bundle, "targets": self.targets, "jobs": self.jobs,
            "monitors": self.monitors, "compute": self.compute, "wheel": self.wheel,
            "problems": [str(p) for p in self.problems],
        }


def check(bundle_dir: str | os.PathLike[str] = ".", wheel: str | os.PathLike[str] | None = None) -> list[Problem]:
    """The problems :func:`check_bundle` finds (an empty list when the bundle is fine)."""
    return check_bundle(bundle_dir, wheel=wheel).problems


def check_bundle(root: str | os.PathLike[str] = ".", wheel: str | os.PathLike[str] | None = None) -> BundleReport:
    """Check the bundle in ``root`` offline; ``wheel`` skips the build and checks that wheel instead.

    Raises :class:`BundleError` only when the YAML cannot be read, and
    :class:`~sparkship.extras.MissingExtraError` without ``databricks-bundles``; everything else is a
    :class:`Problem` in the report.
    """
    from sparkship.bundle import jobs as job_checks
    from sparkship.bundle import monitors as monitor_checks
    from sparkship.bundle.score_tasks import check_score_tasks
    from sparkship.bundle.triggers import check_triggers
    from sparkship.extras import require

    require("databricks.bundles", extra="bundle", command="sparkship bundle check")  # before reading anything
    bundle = load_bundle(root)
    problems = Problems(list(bundle.targets))
    problems.extend(bundle.problems)
    check_bundle_section(bundle, problems)
    check_artifacts(bundle, problems)
    check_variables(bundle, problems)
    check_targets(bundle, problems)
    parsed = job_checks.parse_jobs(bundle, problems)
    monitors = monitor_checks.parse_monitors(bundle, problems)

    wheel_info = _wheel(bundle, wheel, problems) if job_checks.has_wheel_tasks(parsed) else None
    runs = job_checks.check_wheel_tasks(bundle, parsed, wheel_info, problems) if wheel_info else []
    check_triggers(bundle, parsed, runs, problems)
    check_score_tasks(parsed, runs, problems)
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
    from sparkship.bundle.environments import compute_of

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
