"""TCP ports for the servers the tests start: below the kernel's ephemeral range, a slice per pytest worker.

A port from ``bind(0)`` comes out of the ephemeral range, which every outgoing connection on the machine (Spark's
JVMs, py4j, HTTP clients, the other pytest worker) draws from too. Between the probe and the server's own bind
another socket can take it; CI saw exactly that (mlflow's uvicorn: "[Errno 98] ... address already in use").
Below the ephemeral range only a process that asks for a fixed port binds, and each worker draws from its own
slice, so the tests do not race each other or the machine's clients.

    >>> port = free_port()                                                              # doctest: +SKIP
    >>> 20000 <= port < 32768                                                        # doctest: +SKIP
    True
"""
from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess

FIRST_PORT = 20000
SLICE = 400  # ports per pytest worker

_draws = itertools.count()


def _ephemeral_floor() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _worker_slice() -> range:
    worker = re.sub(r"\D", "", os.environ.get("PYTEST_XDIST_WORKER", "")) or "0"
    low = FIRST_PORT + int(worker) * SLICE
    return range(low, min(low + SLICE, _ephemeral_floor()))


def _bindable(port: int) -> bool:
    # No SO_REUSEADDR: a port with a connection still in TIME_WAIT counts as taken, as a server would find it.
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing holds now, not handed out before by this process."""
    ports = _worker_slice()
    start = os.getpid() % max(len(ports), 1)
    for _ in range(len(ports)):
        port = ports[(start + next(_draws)) % len(ports)]
        if _bindable(port):
            return port
    with socket.socket() as fallback:  # the slice is full or outside the range: the kernel's choice
        fallback.bind(("127.0.0.1", 0))
        return int(fallback.getsockname()[1])


def wait_for_health(proc: subprocess.Popen, url: str, log_path: os.PathLike[str] | str,
                    timeout_s: float = 90.0) -> None:
    """Return once the server process ``proc`` answers ``GET <url>/health`` with 200; fail with its log if it
    exits or does not answer within ``timeout_s``."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, open(log_path).read()
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start:\n" + open(log_path).read()
        time.sleep(0.2)
