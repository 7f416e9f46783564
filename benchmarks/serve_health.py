"""``/health`` latency while big ``/predict`` requests are scored, against ``/health`` with no load, in one run.

A pipeline of ``serve_latency.py`` ((a) prep + LogisticRegression, (b) the same prep + RandomForest(50 trees)) is
fitted and saved by Spark, then served by ``sparkship serve --path`` (a real uvicorn on 127.0.0.1, its own process)
and, beside it, by the same command from the ``--baseline`` revision's ``src`` (``git archive``; that revision
scores on the event loop). A prober in its own process sends ``GET /health`` every ``--probe-interval`` seconds on
one keep-alive connection. Each round, for each server in alternating order, it is timed during three windows:
  * idle: no other request;
  * one: one ``--rows``-row ``POST /predict`` alone;
  * three: ``--requests`` such requests sent at once, each on its own connection.
A probe belongs to the window it was sent in. Reported: ``/health`` p50/p99 per window, the wall time of one
request alone and of the three together (first sent to last answered), and when the first of the three was
answered, as a share of that: one after the other at about 1/3, two at a time (two scoring threads on two cores)
at about 2/3, all three at once near the end.

    .venv/bin/python benchmarks/serve_health.py [--pipelines a,b] [--rows 8000] [--requests 3] [--rounds 10]
        [--baseline 16205dc|none]

Goal: ``/health`` p99 <= 20 ms during the three requests. The default baseline, 16205dc, is a commit from before
issue 35's change to the server (scoring on the event loop).
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run_info import REPO, checkout_src, header_lines  # noqa: E402 - this folder's own module

WINDOWS = ("idle", "one", "three")


# --- the prober (its own process, so the client's work does not delay its probes) ------------------------------


def _prober(conn: Any) -> None:
    """Probe the URL sent on ``conn`` until the next message; send back [(sent_at, seconds)]; None ends it."""
    while True:
        target = conn.recv()
        if target is None:
            return
        port, interval = target
        http_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        samples = []
        while not conn.poll():
            sent = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process of the machine
            http_conn.request("GET", "/health")
            response = http_conn.getresponse()
            response.read()
            samples.append((sent, time.monotonic() - sent))
            if response.status != 200:
                raise RuntimeError(f"/health answered {response.status}")
            time.sleep(interval)
        conn.recv()
        http_conn.close()
        conn.send(samples)


# --- servers --------------------------------------------------------------------------------------------------


def _start_server(src: str, model_dir: str, log_path: str) -> tuple[subprocess.Popen, int]:
    """``sparkship serve --path model_dir`` with ``src`` first on the path; (the process, its port)."""
    sys.path.insert(0, REPO)
    from tests.helpers.ports import free_port  # the tests' ports: below the range outgoing connections draw from

    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sparkship.cli", "-q", "serve", "--path", model_dir, "--port", str(port)],
            env=dict(os.environ, PYTHONPATH=src), stdout=log, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 90
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the server under {src} did not start:\n" + open(log_path).read())
        time.sleep(0.2)


def _post(port: int, body: bytes, out: list, i: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    sent = time.monotonic()
    conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    out[i] = (sent, time.monotonic(), response.status, data)
    conn.close()


def _send_at_once(port: int, body: bytes, n: int) -> list[tuple[float, float, int, bytes]]:
    """``n`` POSTs of ``body``, each on its own connection and thread, started together."""
    out: list = [None] * n
    threads = [threading.Thread(target=_post, args=(port, body, out, i)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


# --- one round ------------------------------------------------------------------------------------------------


def _round(prober: Any, port: int, body: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """The three windows once against one server: their (start, end), the answers, the probes."""
    prober.send((port, args.probe_interval))
    time.sleep(0.2)  # the prober's connection is up
    windows = {"idle": (time.monotonic(), time.monotonic() + args.idle_seconds)}
    time.sleep(args.idle_seconds)
    one = _send_at_once(port, body, 1)
    windows["one"] = (one[0][0], one[0][1])
    time.sleep(0.1)
    three = _send_at_once(port, body, args.requests)
    windows["three"] = (min(r[0] for r in three), max(r[1] for r in three))
    time.sleep(0.1)
    prober.send("stop")
    probes = prober.recv()
    for _sent, _done, status, data in one + three:
        if status != 200:
            raise SystemExit(f"POST /predict answered {status}: {data[:300]!r}")
    predictions = json.loads(three[0][3])["predictions"]
    if len(predictions) != args.rows:
        raise SystemExit(f"{len(predictions)} predictions for {args.rows} records")
    return {
        "health": {w: [s for t, s in probes if windows[w][0] <= t < windows[w][1]] for w in WINDOWS},
        "one_s": windows["one"][1] - windows["one"][0],
        "three_s": windows["three"][1] - windows["three"][0],
        "first_done": (min(r[1] for r in three) - windows["three"][0]) / (windows["three"][1] - windows["three"][0]),
    }


# --- set-up, main, report -------------------------------------------------------------------------------------


def _fit(work: str, pipelines: list[str], rows: int) -> tuple[dict[str, str], bytes, str]:
    """Fit and save the pipelines; the request body (``rows`` records); Spark's version."""
    sys.path.insert(0, HERE)
    import serve_latency as sl

    from sparkship.spark import get_spark

    spark = get_spark(home=work, master="local[*]")
    spark.sparkContext.setLogLevel("ERROR")
    train = spark.createDataFrame(sl._rows(20_000, 0), sl.SCHEMA).cache()
    paths = {}
    for label, pipeline in sl.pipelines_a_and_b().items():
        key = label[1]  # "(a) ..." -> "a"
        if key in pipelines:
            paths[label] = os.path.join(work, key)
            pipeline.fit(train).write().overwrite().save(paths[label])
    version = spark.version
    spark.stop()
    records = [{"x1": r[1], "x2": r[2], "x3": r[3], "plan": r[4], "region": r[5]} for r in sl._rows(rows, 1)]
    rounded = [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in records]
    return paths, json.dumps(rounded).encode(), version


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", default="a,b", help="serve_latency.py's pipelines to serve: a, b or a,b")
    parser.add_argument("--rows", type=int, default=8000, help="records per POST /predict")
    parser.add_argument("--requests", type=int, default=3, help="requests sent at once in the loaded window")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per server, alternating between servers")
    parser.add_argument("--idle-seconds", type=float, default=1.0, help="length of the idle window")
    parser.add_argument("--probe-interval", type=float, default=0.002, help="seconds between /health probes")
    parser.add_argument("--baseline", default="16205dc", help="git revision to serve beside this tree, or none")
    return parser.parse_args()


def main() -> None:
    args = _parse()
    with tempfile.TemporaryDirectory(prefix="sparkship-health-") as work:
        paths, body, spark_version = _fit(work, args.pipelines.split(","), args.rows)
        sources = {"this tree": os.path.join(REPO, "src")}
        if args.baseline != "none":
            sources[f"{args.baseline} (scores on the event loop)"] = checkout_src(args.baseline, work)
        parent, child = multiprocessing.get_context("spawn").Pipe()
        prober = multiprocessing.get_context("spawn").Process(target=_prober, args=(child,), daemon=True)
        prober.start()
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        try:
            for label, model_dir in paths.items():
                servers = {name: _start_server(src, model_dir, os.path.join(work, f"{label[1]}-{i}.log"))
                           for i, (name, src) in enumerate(sources.items())}
                try:
                    for round_no in range(args.rounds):
                        order = list(servers) if round_no % 2 == 0 else list(reversed(servers))
                        for name in order:
                            results.setdefault((label, name), []).append(
                                _round(parent, servers[name][1], body, args))
                        print(f"{label}: round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
                finally:
                    for proc, _ in servers.values():
                        proc.terminate()
                        proc.wait(timeout=30)
        finally:
            parent.send(None)
            prober.join(timeout=30)
    _report(results, args, spark_version, len(body))


def _machine_lines(spark_version: str) -> list[str]:
    return header_lines(f"Python {platform.python_version()}, uvicorn {metadata.version('uvicorn')}, "
                        f"fastapi {metadata.version('fastapi')}; models fitted with Spark {spark_version}")


def _ms(values: list[float], q: float) -> str:
    return f"{np.percentile(np.asarray(values), q) * 1e3:.1f}" if values else "-"


def _report(results: dict[tuple[str, str], list[dict[str, Any]]], args: argparse.Namespace, spark_version: str,
            body_bytes: int) -> None:
    print()
    for line in _machine_lines(spark_version):
        print(line)
    print(f"\n/health latency in ms, {args.rounds} rounds per server (alternating), probes every "
          f"{args.probe_interval * 1e3:g} ms; load: {args.requests} POST /predict of {args.rows:,} records "
          f"({body_bytes / 2**20:.2f} MiB each) sent at once; this tree's server scores on "
          f"{len(os.sched_getaffinity(0))} threads (one per core)\n")
    print(f"| pipeline | server | probes idle / one / {args.requests} | idle p50 | idle p99 | during one p50 | "
          f"during one p99 | during {args.requests} p50 | during {args.requests} p99 |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (label, name), runs in results.items():
        health = {w: [s for r in runs for s in r["health"][w]] for w in WINDOWS}
        print(f"| {label} | {name} | {' / '.join(str(len(health[w])) for w in WINDOWS)} | "
              f"{_ms(health['idle'], 50)} | {_ms(health['idle'], 99)} | {_ms(health['one'], 50)} | "
              f"{_ms(health['one'], 99)} | {_ms(health['three'], 50)} | **{_ms(health['three'], 99)}** |")
    print(f"\nThe {args.rows:,}-record requests, medians of the rounds: one alone, {args.requests} sent at once "
          f"(first sent to last answered), their ratio ({args.requests:.2f}x if one after the other), and when "
          "the first of them was answered, as a share of the whole (1/3 one after the other, 2/3 two at a time)\n")
    print(f"| pipeline | server | one alone s | {args.requests} at once s | ratio | first answered at |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for (label, name), runs in results.items():
        one = statistics.median(r["one_s"] for r in runs)
        three = statistics.median(r["three_s"] for r in runs)
        first = statistics.median(r["first_done"] for r in runs)
        print(f"| {label} | {name} | {one:.3f} | {three:.3f} | {three / one:.2f}x | {first:.0%} |")
    print(f"\ngoal: /health p99 <= 20 ms during the {args.requests} requests")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
