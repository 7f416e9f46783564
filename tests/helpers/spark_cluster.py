"""A real Spark standalone cluster on 127.0.0.1 (one master, N workers) for tests, from pyspark's own jars.

Each process runs in its own process group, so :meth:`StandaloneCluster.stop` also ends the executors a worker
launched and their Python workers.

    >>> with StandaloneCluster(str(tmp_path), workers=2) as cluster:               # doctest: +SKIP
    ...     cluster.master_url, len(cluster.alive_workers())
    ('spark://127.0.0.1:40123', 2)
"""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pyspark

from scripts.jvm_class_archive import SUITE_JVM
from tests.helpers.ports import free_port

SPARK_HOME = os.path.dirname(pyspark.__file__)
START_TIMEOUT_S = 120.0


class ClusterError(RuntimeError):
    """The cluster did not come up; the message carries the tail of its logs."""


class StandaloneCluster:
    """Start a master and ``workers`` workers (``cores`` cores, ``memory`` each); stop them all on exit."""

    def __init__(self, root: str, workers: int = 2, cores: int = 1, memory: str = "1g") -> None:
        self.root = root
        self.workers = workers
        self.cores = cores
        self.memory = memory
        self.port = free_port()
        self.webui_port = free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self.work_dir = os.path.join(root, "work")
        self.log_dir = os.path.join(root, "logs")
        self._procs: list[tuple[subprocess.Popen[bytes], str]] = []

    # --- environment and processes ----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment of the cluster's processes, and the one a driver should use to join it."""
        return {
            **os.environ,
            "SPARK_HOME": SPARK_HOME,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_WORKER_DIR": self.work_dir,
            "SPARK_LOG_DIR": self.log_dir,
            # Executors run the Python that runs the tests (the project's venv).
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
        }

    def _spawn(self, name: str, args: list[str]) -> None:
        log_path = os.path.join(self.log_dir, f"{name}.log")
        # The master, the workers and the executors they launch (a worker's environment is theirs) live for one
        # test module and handle a few thousand rows: the flags of the suite's short-lived JVMs, which cost them
        # less CPU than the defaults.
        env = {**self.env(), "JAVA_TOOL_OPTIONS": SUITE_JVM}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [os.path.join(SPARK_HOME, "bin", "spark-class"), *args],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        self._procs.append((proc, log_path))

    def start(self) -> StandaloneCluster:
        """Start the master, then the workers; return once every worker is registered and ALIVE."""
        os.makedirs(self.work_dir, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        try:
            self._spawn("master", [
                "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(self.port),
                "--webui-port", str(self.webui_port),
            ])
            self._wait(lambda: self.state() is not None, "the master's web UI to answer")
            for i in range(self.workers):
                self._spawn(f"worker-{i}", [
                    "org.apache.spark.deploy.worker.Worker", self.master_url, "--host", "127.0.0.1",
                    "--cores", str(self.cores), "--memory", self.memory, "--webui-port", str(free_port()),
                    "--work-dir", os.path.join(self.work_dir, f"worker-{i}"),
                ])
            self._wait(lambda: len(self.alive_workers()) == self.workers, f"{self.workers} workers to register")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            dead = [(p, log) for p, log in self._procs if p.poll() is not None]
            if dead:
                raise ClusterError(f"{os.path.basename(dead[0][1])} exited (rc {dead[0][0].returncode}) while "
                                   f"waiting for {what}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {START_TIMEOUT_S:.0f}s waiting for {what}:\n{self.logs()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop every process group started (TERM, then KILL after 10 s); safe to call twice."""
        for proc, _ in reversed(self._procs):
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc, _ in reversed(self._procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Executors and Python workers share the worker's group and may outlive it: KILL what is left.
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        self._procs.clear()

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what the master says ---------------------------------------------------------------------------------

    def state(self) -> dict[str, Any] | None:
        """The master's JSON status (workers, active and completed applications), or None if it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.webui_port}/json/", timeout=5) as resp:
                return json.load(resp)
        except (OSError, ValueError):
            return None

    def alive_workers(self) -> list[dict[str, Any]]:
        state = self.state() or {}
        return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]

    def executor_logs(self, app_id: str) -> dict[str, str]:
        """``{"worker-I/EXECUTOR_ID": stderr}`` of one application's executors (each worker keeps them in its
        work dir, ``<work>/worker-I/<app id>/<executor id>/stderr``)."""
        logs = {}
        for path in sorted(glob.glob(os.path.join(self.work_dir, "worker-*", app_id, "*", "stderr"))):
            executor_dir = os.path.dirname(path)
            worker = os.path.basename(os.path.dirname(os.path.dirname(executor_dir)))
            with open(path, errors="replace") as f:
                logs[f"{worker}/{os.path.basename(executor_dir)}"] = f.read()
        return logs

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for _, path in self._procs:
            with open(path, errors="replace") as f:
                parts.append(f"--- {os.path.basename(path)} ---\n{f.read()[-tail:]}")
        return "\n".join(parts)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
