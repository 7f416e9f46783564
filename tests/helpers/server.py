"""The model server's tests' world: a churn model's name, signature and good records, its training rows,
and a real uvicorn serving an app in a thread."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.helpers.ports import free_port

NAME = "churn"


SIGNATURE = {
    "inputs": [{"name": "age", "type": "double"}, {"name": "plan", "type": "string"},
               {"name": "income", "type": "double"}],
    "outputs": [{"name": "prediction", "type": "double"}, {"name": "probability", "type": "array<double>"}],
}


GOOD = [
    {"age": 41.0, "plan": "pro", "income": 5.5},
    {"age": None, "plan": "basic", "income": 1.0},      # imputed
    {"age": 23, "plan": "never-seen", "income": 2.25},   # unseen label: 'keep' bucket; int for a double
    {"age": float("nan"), "plan": None, "income": 0.0},  # NaN is the Imputer's missing value; null plan: keep
]


@contextmanager
def serve_in_thread(app) -> Iterator[httpx.Client]:
    """``app`` under a real uvicorn on 127.0.0.1, in a thread, for the life of the block."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def server_rows(flip: bool) -> list[tuple]:
    out = []
    for i in range(120):
        age = None if i % 11 == 0 else 20.0 + (i * 7) % 50
        plan = ["basic", "pro", "team"][i % 3]
        income = (i * 13) % 17 / 2.0
        label = int(((age or 40) > 40) ^ (plan == "pro") ^ flip ^ (i % 7 == 0))
        out.append((age, plan, income, label))
    return out

