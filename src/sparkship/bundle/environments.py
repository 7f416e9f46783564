"""Where each task runs: a classic job cluster (``job_cluster_key`` + ``libraries``) or serverless compute
(``environment_key`` naming one of the job's ``environments``, whose ``dependencies`` install the wheel).

    >>> job = {"environments": [{"environment_key": "default",
    ...         "spec": {"environment_version": "4", "dependencies": ["../dist/*.whl"]}}]}
    >>> wheels_installed(job, {"environment_key": "default", "python_wheel_task": {}})
    ['../dist/*.whl']
"""
from __future__ import annotations

from typing import Any

from sparkship.bundle.problems import Problems, item_label

ENVIRONMENT_SPEC_VERSIONS = ("client", "environment_version", "base_environment")
# Task fields that choose compute; a wheel task needs exactly one.
COMPUTE_FIELDS = ("job_cluster_key", "existing_cluster_id", "new_cluster", "environment_key")


def wheels_installed(job: dict[str, Any], task: dict[str, Any]) -> list[str]:
    """The ``.whl`` paths a task installs: its ``libraries`` (classic) or its environment's ``dependencies``."""
    paths = [lib["whl"] for lib in task.get("libraries") or [] if isinstance(lib, dict) and lib.get("whl")]
    for env in job.get("environments") or []:
        if isinstance(env, dict) and env.get("environment_key") == task.get("environment_key"):
            paths += [str(d) for d in (env.get("spec") or {}).get("dependencies") or [] if ".whl" in str(d)]
    return paths


def compute_of(task: dict[str, Any]) -> str:
    """``serverless``, ``classic`` or ``none`` (condition tasks run on no compute)."""
    if task.get("environment_key"):
        return "serverless"
    return "classic" if any(task.get(f) for f in COMPUTE_FIELDS) else "none"


def check_compute(problems: Problems, file: str, where: str, job: dict[str, Any], target: str | None) -> None:
    """Each task's compute exists in the job; serverless environments name a version and their dependencies."""
    clusters = [c.get("job_cluster_key") for c in job.get("job_clusters") or [] if isinstance(c, dict)]
    environments = {e.get("environment_key"): e for e in job.get("environments") or [] if isinstance(e, dict)}
    used: set[str] = set()
    for i, task in enumerate(job.get("tasks") or []):
        if isinstance(task, dict):
            _check_task_compute(problems, file, f"{where}.tasks[{item_label(task, i)}]", task, clusters,
                                environments, target)
            used.add(str(task.get("environment_key")))
    for key, env in environments.items():
        env_where = f"{where}.environments[{key}]"
        spec = env.get("spec") or {}
        if not any(spec.get(v) for v in ENVIRONMENT_SPEC_VERSIONS):
            problems.add(file, f"{env_where}.spec", "names no environment version: set environment_version "
                         "(or client) so serverless knows which Python and libraries to start from", target)
        if key not in used:
            problems.add(file, env_where, "no task uses this environment", target)


def _check_task_compute(
    problems: Problems, file: str, where: str, task: dict[str, Any], clusters: list[Any],
    environments: dict[Any, Any], target: str | None,
) -> None:
    chosen = [f for f in COMPUTE_FIELDS if task.get(f)]
    if task.get("condition_task"):
        if chosen:
            problems.add(file, where, f"a condition task runs on no compute, but it sets {', '.join(chosen)}", target)
        return
    if task.get("python_wheel_task") and not chosen:
        problems.add(file, where, "runs on no compute: set job_cluster_key (a classic job cluster) or "
                     "environment_key (serverless)", target)
    if len(chosen) > 1:
        problems.add(file, where, f"sets {' and '.join(chosen)}: a task runs on one compute", target)
    if task.get("job_cluster_key") and task["job_cluster_key"] not in clusters:
        problems.add(file, f"{where}.job_cluster_key",
                     f"job cluster {task['job_cluster_key']!r} is not in the job's job_clusters", target)
    if task.get("environment_key"):
        if task["environment_key"] not in environments:
            problems.add(file, f"{where}.environment_key", f"environment {task['environment_key']!r} is not in the "
                         f"job's environments ({', '.join(map(str, environments)) or 'none'})", target)
        if task.get("libraries"):
            problems.add(file, f"{where}.libraries", "a serverless task installs libraries through its "
                         "environment's dependencies, not libraries", target)
