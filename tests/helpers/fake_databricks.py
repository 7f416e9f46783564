"""A small local Databricks workspace for tests: an HTTP server on 127.0.0.1 speaking the few endpoints
``databricks-sdk`` calls to trigger and follow a job (found by running the SDK against a logging server):

- ``GET  /api/2.2/jobs/list?name=...``            exact (case-insensitive) name filter, as the service does
- ``POST /api/2.2/jobs/run-now``                   ``{"job_id": N}`` -> ``{"run_id": R}``
- ``GET  /api/2.2/jobs/runs/get?run_id=R``         each call moves the run one step: PENDING, RUNNING, TERMINATED
- ``GET  /api/2.2/jobs/runs/get-output?run_id=T``  a task run's ``error`` when it failed
- ``GET  /api/2.0/preview/scim/v2/Me``             the current user (member of ``users``)
- ``GET  /.well-known/databricks-config``          404 (the SDK probes it at start-up and carries on)

and the few that the Databricks CLI's ``bundle validate`` and ``bundle plan`` call (found the same way, by
running the CLI against this server and reading the 404s it logged):

- ``GET  /api/2.0/workspace/get-status?path=P``    a folder for every path, 404 for files (none exist yet)
- ``POST /api/2.0/workspace/mkdirs``               ``{}``
- ``GET  /api/2.0/permissions/directories/ID``     the bundle folder's access list: its creator manages it

Every API call needs ``Authorization: Bearer <token>``; anything else gets the service's 401 error body.
This is the only fake in the test suite: the Databricks service cannot exist here.
"""
from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@dataclass
class FakeJob:
    job_id: int
    name: str
    tasks: list[str]
    fail_task: str | None = None  # the task that fails; the ones after it are skipped
    error: str = "SparkshipError: validation FAILED"


@dataclass
class FakeRun:
    run_id: int
    job: FakeJob
    task_run_ids: dict[str, int]
    polls: int = 0


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorization: str | None


@dataclass
class FakeDatabricks:
    """Start with ``with FakeDatabricks(token=...) as ws:``; ``ws.host`` is the URL to point the SDK at.

    ``user_name`` is the caller: a person's e-mail, or a service principal's application ID (a UUID).
    """

    token: str = "dapi-test-token"
    user_name: str = "first.last@example.com"
    jobs: dict[int, FakeJob] = field(default_factory=dict)
    runs: dict[int, FakeRun] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _next_id: int = 100

    def add_job(self, name: str, tasks: list[str], fail_task: str | None = None, error: str | None = None) -> FakeJob:
        job = FakeJob(self._new_id(), name, tasks, fail_task)
        if error:
            job.error = error
        self.jobs[job.job_id] = job
        return job

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # ------------------------------------------------------------------ server
    def __enter__(self) -> FakeDatabricks:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                fake.requests.append(Request(self.command, url.path, parse_qs(url.query), body,
                                             self.headers.get("Authorization")))
                status, payload = fake.handle(self.command, url.path, parse_qs(url.query), body,
                                              self.headers.get("Authorization"))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def calls(self, path_suffix: str) -> list[Request]:
        return [r for r in self.requests if r.path.endswith(path_suffix)]

    # ---------------------------------------------------------------- handlers
    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any,
               authorization: str | None) -> tuple[int, dict[str, Any]]:
        if path == "/.well-known/databricks-config":
            return 404, {"error_code": "NOT_FOUND", "message": "not found"}
        if authorization != f"Bearer {self.token}":
            return 401, {"error_code": "UNAUTHENTICATED", "message": "Invalid access token."}
        route = (method, path)
        if route == ("GET", "/api/2.0/preview/scim/v2/Me"):
            return 200, {"id": "42", "userName": self.user_name, "displayName": "First Last", "active": True,
                         "groups": [{"display": "users", "value": "1"}]}
        if route == ("GET", "/api/2.0/workspace/get-status"):
            return self._workspace_status((query.get("path") or [""])[0])
        if route == ("POST", "/api/2.0/workspace/mkdirs"):
            return 200, {}
        if method == "GET" and path.startswith("/api/2.0/permissions/directories/"):
            object_id = path.rsplit("/", 1)[-1]
            # A service principal's user name is its application ID (a UUID), the key its permissions use.
            who = "service_principal_name" if _is_uuid(self.user_name) else "user_name"
            return 200, {"object_id": f"/directories/{object_id}", "object_type": "directory",
                         "access_control_list": [{who: self.user_name, "all_permissions": [
                             {"permission_level": "CAN_MANAGE", "inherited": False}]}]}
        if route == ("GET", "/api/2.2/jobs/list"):
            name = (query.get("name") or [None])[0]
            jobs = [j for j in self.jobs.values() if name is None or j.name.lower() == name.lower()]
            return 200, {"jobs": [{"job_id": j.job_id, "settings": {"name": j.name}} for j in jobs],
                         "has_more": False}
        if route == ("POST", "/api/2.2/jobs/run-now"):
            job = self.jobs.get((body or {}).get("job_id"))
            if job is None:
                return 400, {"error_code": "INVALID_PARAMETER_VALUE",
                             "message": f"Job {(body or {}).get('job_id')} does not exist."}
            run = FakeRun(self._new_id(), job, {t: self._new_id() for t in job.tasks})
            self.runs[run.run_id] = run
            return 200, {"run_id": run.run_id, "number_in_job": run.run_id}
        if route == ("GET", "/api/2.2/jobs/runs/get"):
            run = self.runs.get(int((query.get("run_id") or ["0"])[0]))
            if run is None:
                return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "Run does not exist."}
            run.polls += 1
            return 200, self._run_json(run)
        if route == ("GET", "/api/2.2/jobs/runs/get-output"):
            task_run = int((query.get("run_id") or ["0"])[0])
            for run in self.runs.values():
                for key, rid in run.task_run_ids.items():
                    if rid == task_run:
                        failed = key == run.job.fail_task
                        return 200, {"metadata": {"run_id": rid, "task_key": key},
                                     **({"error": run.job.error, "error_trace": f"Traceback...\n{run.job.error}"}
                                        if failed else {})}
            return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "Run does not exist."}
        return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for '{method} {path}'"}

    @staticmethod
    def _workspace_status(path: str) -> tuple[int, dict[str, Any]]:
        # An empty workspace: the bundle's folders "exist" (so the CLI can check and create them), its files
        # (the deployment state, the lock) do not.
        if "." in path.rsplit("/", 1)[-1]:
            return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"Path ({path}) doesn't exist."}
        return 200, {"object_type": "DIRECTORY", "path": path, "object_id": abs(hash(path)) % 10**9}

    def _run_json(self, run: FakeRun) -> dict[str, Any]:
        # Poll 1: pending; poll 2: running (the first task); poll 3 on: terminated with the outcome.
        job = run.job
        tasks = []
        if run.polls == 1:
            life, result = "PENDING", None
            task_states = {t: ("PENDING", None) for t in job.tasks}
        elif run.polls == 2:
            life, result = "RUNNING", None
            task_states = {t: ("RUNNING" if i == 0 else "PENDING", None) for i, t in enumerate(job.tasks)}
        else:
            life = "TERMINATED"
            result = "FAILED" if job.fail_task else "SUCCESS"
            task_states, failed = {}, False
            for t in job.tasks:
                if failed:
                    task_states[t] = ("TERMINATED", "UPSTREAM_FAILED")
                elif t == job.fail_task:
                    task_states[t], failed = ("TERMINATED", "FAILED"), True
                else:
                    task_states[t] = ("TERMINATED", "SUCCESS")
        for key, (task_life, task_result) in task_states.items():
            state: dict[str, Any] = {"life_cycle_state": task_life}
            if task_result:
                state["result_state"] = task_result
            tasks.append({"task_key": key, "run_id": run.task_run_ids[key], "state": state})
        state = {"life_cycle_state": life, "state_message": ""}
        if result:
            state["result_state"] = result
            if result == "FAILED":
                state["state_message"] = f"Task {job.fail_task} failed with message: Workload failed."
        return {"job_id": job.job_id, "run_id": run.run_id, "run_name": job.name, "state": state, "tasks": tasks,
                "run_page_url": f"{self.host}/#job/{job.job_id}/run/{run.run_id}"}
