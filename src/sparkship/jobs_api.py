"""Trigger and follow the bundle's deployed jobs through ``databricks-sdk``.

The job is found by the name the bundle gives it in the target (development mode prefixes
``[dev <short user name>] ``), read from ``databricks.yml`` and ``resources/*.yml``. Authentication is the
SDK's own: ``DATABRICKS_HOST`` + ``DATABRICKS_TOKEN``, a ``~/.databrickscfg`` profile, OAuth, ...

    >>> result = run_job("training", target="dev", wait=True)        # doctest: +SKIP
    >>> result.result_state, result.tasks                      # doctest: +SKIP
    ('SUCCESS', [{'task_key': 'train', 'result_state': 'SUCCESS', ...}, ...])
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sparkship.bundle import deployed_job_name, load_bundle, needs_short_name, short_user_name
from sparkship.errors import NotFoundError, SparkshipError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.jobs import Run

log = logging.getLogger(__name__)

# A run is over in one of these life-cycle states; its result_state says how it went.
TERMINAL_STATES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})


class JobRunError(SparkshipError):
    """The Databricks API refused a call, or a run did not finish in time."""


@dataclass
class RunResult:
    """Where a job run stands: ``result_state`` is set once it is over (``SUCCESS`` when it succeeded)."""

    job_key: str
    job_name: str
    job_id: int
    run_id: int
    run_page_url: str | None = None
    life_cycle_state: str | None = None
    result_state: str | None = None
    state_message: str | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.result_state == "SUCCESS"

    @property
    def finished(self) -> bool:
        return self.life_cycle_state in TERMINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "succeeded": self.succeeded}


def _value(enum_or_str: Any) -> str | None:
    return None if enum_or_str is None else str(getattr(enum_or_str, "value", enum_or_str))


def _api_call(what: str, call: Callable[[], Any]) -> Any:
    """Run one SDK call, turning its errors into ones that say what sparkship was doing."""
    from databricks.sdk.errors import DatabricksError

    try:
        return call()
    except DatabricksError as exc:
        raise JobRunError(f"Databricks API refused to {what}: {exc}") from None
    except ValueError as exc:  # the SDK's "cannot configure default credentials" and friends
        raise UsageError(f"cannot {what}: {exc}") from None


def workspace_client(host: str | None = None, profile: str | None = None) -> WorkspaceClient:
    """A ``WorkspaceClient`` configured the SDK's usual way (env vars, ``~/.databrickscfg``, ...).

    >>> client = workspace_client()                                   # doctest: +SKIP
    """
    from databricks.sdk import WorkspaceClient

    try:
        return WorkspaceClient(host=host, profile=profile)
    except ValueError as exc:
        raise UsageError(
            f"cannot configure Databricks authentication: {exc}. Set DATABRICKS_HOST and DATABRICKS_TOKEN, "
            "or pick a ~/.databrickscfg profile with --profile / DATABRICKS_CONFIG_PROFILE"
        ) from None


def find_job(client: WorkspaceClient, name: str) -> int:
    """The id of the one job named exactly ``name``; ``NotFoundError`` when there is none."""
    jobs = _api_call(f"list jobs named {name!r}", lambda: list(client.jobs.list(name=name)))
    matching = [j for j in jobs if j.settings is not None and j.settings.name == name]
    if not matching:
        raise NotFoundError(
            f"no job named {name!r} in {client.config.host}: deploy the bundle to this target first "
            "(databricks bundle deploy -t TARGET)"
        )
    if len(matching) > 1:
        ids = ", ".join(str(j.job_id) for j in matching)
        raise UsageError(f"{len(matching)} jobs are named {name!r} (ids {ids}): delete the stale ones")
    return int(matching[0].job_id)


def start_run(client: WorkspaceClient, job_id: int) -> int:
    """Trigger a run of a job (``jobs/run-now``) and return its run id."""
    waiter = _api_call(f"start job {job_id}", lambda: client.jobs.run_now(job_id=job_id))
    return int(waiter.run_id)


def _task_rows(client: WorkspaceClient, run: Run) -> list[dict[str, Any]]:
    rows = []
    for task in run.tasks or []:
        state = task.state
        row: dict[str, Any] = {
            "task_key": task.task_key,
            "life_cycle_state": _value(state.life_cycle_state) if state else None,
            "result_state": _value(state.result_state) if state else None,
        }
        if row["result_state"] not in (None, "SUCCESS") and task.run_id is not None:
            # The task's own error says why (a traceback's last line, an exit code); best effort.
            try:
                row["error"] = client.jobs.get_run_output(run_id=task.run_id).error
            except Exception as exc:  # noqa: BLE001 - the run's own state already says it failed
                log.debug("no output for task run %s: %s", task.run_id, exc)
        rows.append(row)
    return rows


def follow_run(
    client: WorkspaceClient,
    result: RunResult,
    poll_seconds: float = 10.0,
    timeout_seconds: float | None = None,
) -> RunResult:
    """Poll ``jobs/runs/get`` until the run is over, logging each state change; fill in ``result``.

    Raises :class:`JobRunError` when the run is still going after ``timeout_seconds``.
    """
    started = time.monotonic()
    last: tuple[Any, ...] | None = None
    while True:
        run = _api_call(f"get run {result.run_id}", lambda: client.jobs.get_run(run_id=result.run_id))
        state = run.state
        result.life_cycle_state = _value(state.life_cycle_state) if state else None
        result.result_state = _value(state.result_state) if state else None
        result.state_message = (state.state_message or None) if state else None
        result.run_page_url = run.run_page_url or result.run_page_url
        tasks = tuple((t.task_key, _value(t.state.life_cycle_state) if t.state else None) for t in run.tasks or [])
        if (result.life_cycle_state, tasks) != last:
            last = (result.life_cycle_state, tasks)
            detail = ", ".join(f"{k} {s}" for k, s in tasks)
            log.info("run %s: %s%s", result.run_id, result.life_cycle_state, f" ({detail})" if detail else "")
        if result.finished:
            result.tasks = _task_rows(client, run)
            return result
        if timeout_seconds is not None and time.monotonic() - started > timeout_seconds:
            raise JobRunError(
                f"run {result.run_id} is still {result.life_cycle_state} after {timeout_seconds:g} s; "
                f"follow it at {result.run_page_url or client.config.host}"
            )
        time.sleep(poll_seconds)


def run_job(
    job_key: str,
    target: str | None = None,
    *,
    root: str = ".",
    wait: bool = False,
    poll_seconds: float = 10.0,
    timeout_seconds: float | None = None,
    client: WorkspaceClient | None = None,
    profile: str | None = None,
) -> RunResult:
    """Trigger the bundle job ``job_key`` as deployed to ``target`` (default: the default target).

    With ``wait``, follow the run until it is over; ``result.succeeded`` then says whether it succeeded.
    """
    bundle = load_bundle(root)
    target_name, settings = bundle.target(target)
    bundle.job_config(job_key, target_name)  # NotFoundError naming the bundle's jobs
    if client is None:
        host = (settings.get("workspace") or {}).get("host")
        use_host = host if host and not os.environ.get("DATABRICKS_HOST") and not profile else None
        client = workspace_client(host=use_host, profile=profile)
    short_name = None
    if needs_short_name(bundle, job_key, target_name):
        me = _api_call("read the current user", lambda: client.current_user.me())
        short_name = short_user_name(me.user_name or me.display_name or "")
    name = deployed_job_name(bundle, job_key, target_name, short_name)
    job_id = find_job(client, name)
    run_id = start_run(client, job_id)
    result = RunResult(job_key=job_key, job_name=name, job_id=job_id, run_id=run_id)
    log.info("started run %s of job %r (id %s)", run_id, name, job_id)
    if wait:
        follow_run(client, result, poll_seconds=poll_seconds, timeout_seconds=timeout_seconds)
    return result


def describe(result: RunResult) -> str:
    """A few lines for a person: the job, the run, its state and, when it failed, why."""
    lines = [f"job: {result.job_name} (id {result.job_id})", f"run: {result.run_id}"]
    if result.run_page_url:
        lines.append(f"url: {result.run_page_url}")
    state = " ".join(s for s in (result.life_cycle_state, result.result_state) if s)
    lines.append(f"state: {state or 'started'}")
    if result.tasks:
        lines.append("tasks: " + ", ".join(f"{t['task_key']} {t['result_state'] or t['life_cycle_state']}"
                                          for t in result.tasks))
    if result.finished and not result.succeeded:
        lines.append(f"run {result.run_id} did not succeed ({result.result_state or result.life_cycle_state})"
                     + (f": {result.state_message}" if result.state_message else ""))
        for t in result.tasks:
            if t.get("error"):
                lines.append(f"  task {t['task_key']}: {t['error']}")
    return "\n".join(lines)


__all__ = ["JobRunError", "RunResult", "TERMINAL_STATES", "describe", "find_job", "follow_run", "run_job",
           "start_run", "workspace_client"]
