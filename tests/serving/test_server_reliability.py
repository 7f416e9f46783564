"""Reliability of `sparkship serve`: fuzzed request bodies never get a 5xx; 8 concurrent clients get no errors.

One real server process (`python -m sparkship.cli serve`, uvicorn on 127.0.0.1) per module, serving
tests/test_server.py's model (Imputer + StringIndexer + VectorAssembler + LogisticRegression, version 1).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkship.serving.server import DEFAULT_MAX_ROWS
from tests.helpers.ports import free_port, wait_for_health
from tests.helpers.server import GOOD, NAME, SIGNATURE

pytestmark = [pytest.mark.timeout(600), pytest.mark.seconds(39)]

FIELDS = [i["name"] for i in SIGNATURE["inputs"]]
ALLOWED = {200, 400, 404, 405, 413, 415, 422}
MAX_BODY = 1 << 20
LOAD_CLIENTS = 8
LOAD_SECONDS = 20.0


@pytest.fixture(scope="module")
def server(registry_setup, tmp_path_factory) -> Iterator[tuple[str, Path]]:  # noqa: F811 - the imported fixture
    """`sparkship serve --model churn/1` in its own process: (its URL, its log)."""
    settings, _ = registry_setup
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "SPARKSHIP_HOME": settings.home}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sparkship.cli", "-q", "serve", "--model", f"{NAME}/1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(proc, url, log_path)
        yield url, log_path
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=30) as c:
        yield c


# --- request bodies -------------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**4000), max_value=10**4000),
    st.floats(), st.text(max_size=20),
)
json_values = st.recursive(
    scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
field_values = st.one_of(
    json_values, st.floats(-1e6, 1e6), st.sampled_from(["basic", "pro", "team", "never-seen", ""]),
)
# A record: every field, some removed, maybe extra ones (which may also overwrite a field with junk).
records = st.tuples(
    st.fixed_dictionaries({f: field_values for f in FIELDS}),
    st.sets(st.sampled_from(FIELDS)),
    st.dictionaries(st.text(max_size=8), json_values, max_size=2),
).map(lambda t: {**{k: v for k, v in t[0].items() if k not in t[1]}, **t[2]})
valid_records = st.fixed_dictionaries({
    "age": st.one_of(st.none(), st.floats(0, 120), st.integers(0, 120)),
    "plan": st.one_of(st.none(), st.sampled_from(["basic", "pro", "team", "never-seen"])),
    "income": st.floats(0, 100),
})
# Lists long enough for the server's batch path, with one record that may be bad somewhere in them.
long_lists = st.tuples(valid_records, st.integers(250, 400), records, st.integers(0, 399)).map(
    lambda t: [t[0]] * t[3] + [t[2]] + [t[0]] * max(t[1] - t[3], 0)
)
json_bodies = st.one_of(json_values, records, valid_records, st.lists(records, max_size=6), long_lists)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # allow_nan: NaN, Infinity and -Infinity literals go out as such


number_literals = st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "9" * 5000, "-0", "0x10",
                                   "01", "1.", ".5", "-", "1e-400", "true", "[]", "{}", '"NaN"'])
raw_bodies = st.one_of(
    st.binary(max_size=300),
    json_bodies.map(_dumps).flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),  # cut short
    st.tuples(number_literals, st.sampled_from(FIELDS)).map(
        lambda t: json.dumps({**GOOD[0], t[1]: "@"}).replace('"@"', t[0]).encode()),
    st.tuples(st.integers(100, 300_000), st.sampled_from(["[", '{"a":', '{"age": [', "[{"])).map(
        lambda t: (t[1] * t[0]).encode()),  # deep nesting, unterminated
    st.integers(100, 300_000).map(lambda n: ("[" * n + "]" * n).encode()),  # deep nesting, terminated
    json_bodies.map(lambda v: json.dumps(v).encode("utf-16")),
    json_bodies.map(lambda v: json.dumps(v, ensure_ascii=False).encode("latin-1", errors="replace")),
    st.just(_dumps([GOOD[0]] * 12000)),  # over the 1 MiB limit
)
content_types = st.sampled_from([
    None, "application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/json; charset=utf-16", "application/octet-stream", "", "*/*", 'application/json; charset="',
])
targets = st.sampled_from([("POST", "/predict")] * 8 + [("GET", "/predict"), ("PUT", "/predict"),
                                                        ("POST", "/health"), ("DELETE", "/metadata"),
                                                        ("POST", "/nope")])
requests = st.tuples(targets, st.one_of(json_bodies.map(_dumps), raw_bodies), content_types, st.booleans())


def _strict_json(text: str) -> Any:
    """Parse as RFC 8259 JSON: NaN and Infinity are not JSON."""
    def refuse(literal: str) -> Any:
        raise ValueError(f"{literal} in a response")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(max_examples=2000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                 HealthCheck.filter_too_much])
@given(req=requests)
def test_fuzzed_requests_never_get_a_5xx(client, req):
    (method, path), body, content_type, chunked = req
    headers = {} if content_type is None else {"content-type": content_type}
    content: Any = iter([body[i:i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    resp = client.request(method, path, content=content, headers=headers)
    assert resp.status_code in ALLOWED, (resp.status_code, resp.text[:500], body[:200])
    if (method, path) != ("POST", "/predict"):
        return
    payload = _strict_json(resp.text)
    if resp.status_code == 200:
        sent = json.loads(body)
        n = 1 if isinstance(sent, dict) else len(sent)
        assert payload["model"] == NAME and len(payload["predictions"]) == n
        for p in payload["predictions"]:
            if p.get("dropped"):
                continue
            assert p["prediction"] in (0.0, 1.0) and math.isclose(sum(p["probability"]), 1.0, rel_tol=1e-9)
    else:
        assert resp.status_code in (413, 422), resp.status_code
        assert payload["detail"][0]["msg"], payload
        if resp.status_code == 413:  # over the byte limit, or a list of more records than the server takes
            assert len(body) > MAX_BODY or len(json.loads(body)) > DEFAULT_MAX_ROWS


def test_the_server_survives_the_fuzzing(server, client):
    assert client.get("/health").json()["status"] == "ok"
    assert client.post("/predict", json=GOOD[0]).status_code == 200
    log = server[1].read_text()
    assert "Traceback" not in log, log[-3000:]  # no request ended in an unhandled exception


# --- load -----------------------------------------------------------------------------------------------------


def test_eight_concurrent_clients_for_20_seconds_get_no_errors(server, tmp_path, record_property):
    base_url = server[0]
    bodies = [json.dumps(r).encode() for r in GOOD]  # single records, NaN and null included
    latencies: list[list[float]] = [[] for _ in range(LOAD_CLIENTS)]
    errors: list[str] = []
    start = threading.Barrier(LOAD_CLIENTS)

    def client_loop(i: int) -> None:
        with httpx.Client(base_url=base_url, timeout=10) as c:
            start.wait()
            end = time.monotonic() + LOAD_SECONDS
            n = 0
            while time.monotonic() < end:
                body = bodies[(i + n) % len(bodies)]
                n += 1
                t0 = time.perf_counter()
                try:
                    r = c.post("/predict", content=body, headers={"content-type": "application/json"})
                    ok = r.status_code == 200 and len(r.json()["predictions"]) == 1
                except (httpx.HTTPError, ValueError) as exc:
                    errors.append(repr(exc))
                    continue
                latencies[i].append(time.perf_counter() - t0)
                if not ok:
                    errors.append(f"{r.status_code}: {r.text[:200]}")

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(LOAD_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=LOAD_SECONDS + 60)
    every = np.array([x for per in latencies for x in per]) * 1000.0
    stats = {
        "clients": LOAD_CLIENTS, "seconds": LOAD_SECONDS, "requests": int(every.size), "errors": len(errors),
        "requests_per_s": round(every.size / LOAD_SECONDS, 1),
        "p50_ms": round(float(np.percentile(every, 50)), 2), "p99_ms": round(float(np.percentile(every, 99)), 2),
        "max_ms": round(float(every.max()), 2),
    }
    (tmp_path / "latency.json").write_text(json.dumps(stats, indent=2))
    for key, value in stats.items():
        record_property(key, value)
    print(f"\nload on 127.0.0.1 ({tmp_path / 'latency.json'}): {json.dumps(stats)}")
    assert errors == [], errors[:5]
    assert all(per for per in latencies), "a client got no answer at all"
