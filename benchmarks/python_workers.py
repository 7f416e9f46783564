"""The Python workers' CPU of JVM-free scoring runs on a local session, with pyspark's daemon and with sparkship's
(``sparkship.python_workers``: pyspark's daemon without the archive copies of pyspark on the workers' path, Arrow,
numpy and the scorer imported before it forks).

Each way is a child process (``--child WAY``) with its own local session, both at once so that they share the machine
alike: the churn pipeline fitted and registered, then ``--runs`` runs of ``sparkship.scoring.score`` (``--scorer
auto``: the JVM-free scorer in ``mapInArrow``), each into a new output table. A child prints the CPU seconds of its
Python workers (the daemon and its forks), its JVM and itself over the runs.

    .venv/bin/python benchmarks/python_workers.py --runs 20
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.run_info import cpu_seconds, header_lines, run_children  # noqa: E402

WAYS = ("pyspark.daemon", "sparkship.python_workers")


def _workers_cpu(module: str) -> float:
    """CPU seconds of this machine's live processes started as ``python -m MODULE`` (a daemon and its workers)."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            if argv[1:3] == [b"-m", module.encode()] and argv[0] == sys.executable.encode():
                total += cpu_seconds(pid)
        except (OSError, IndexError):
            continue
    return total


def child(way: str, runs: int) -> None:
    """``runs`` JVM-free scoring runs on a session whose workers start from ``way``; CPU seconds as JSON."""
    os.environ["SPARKSHIP_DRIVER_JAVA_OPTIONS"] = ""
    from sparkship import scoring
    from sparkship import spark as sessions
    from sparkship.config import Settings
    from tests.helpers.scoring import MODEL, fit_model, make_rows, register, write_input

    if way == "pyspark.daemon":  # the baseline: get_spark without sparkship's daemon
        sessions._local_python_workers = lambda builder: builder.config("spark.python.daemon.module", way)
    root = tempfile.mkdtemp(prefix="python-workers-")
    spark = sessions.get_spark(home=os.path.join(root, "spark"))
    jvm = spark.sparkContext._gateway.proc.pid
    settings = Settings.resolve(home=os.path.join(root, "home"))
    register(spark, fit_model(spark), settings)
    events = os.path.join(root, "events")
    write_input(spark, events, make_rows(200, 11))
    scoring.score(spark, settings, MODEL, events, os.path.join(root, "warm"), ["id"])  # workers started
    before = (_workers_cpu(way), cpu_seconds(jvm), cpu_seconds(os.getpid()), time.monotonic())
    for run in range(runs):
        result = scoring.score(spark, settings, MODEL, events, os.path.join(root, f"scores{run}"), ["id"])
        assert result.scorer == "jvm-free", result.scorer
    after = (_workers_cpu(way), cpu_seconds(jvm), cpu_seconds(os.getpid()), time.monotonic())
    print(json.dumps(dict(zip(("workers", "jvm", "driver", "wall"), (a - b for a, b in zip(after, before))))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="scoring runs per way (default 20)")
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.runs)
        return
    print("\n".join(header_lines(f"Python {sys.version.split()[0]}, {args.runs} runs of 200 rows, both ways at once")))
    results = run_children({way: [sys.executable, __file__, "--runs", str(args.runs), "--child", way] for way in WAYS},
                           cwd=REPO)
    base = results[WAYS[0]]
    print("| Python workers' daemon | workers CPU s / run | JVM CPU s / run | driver CPU s / run | wall s / run | "
          "workers ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for way, got in results.items():
        per = {k: v / args.runs for k, v in got.items()}
        print(f"| `{way}` | {per['workers']:.2f} | {per['jvm']:.2f} | {per['driver']:.2f} | {per['wall']:.2f} | "
              f"{got['workers'] / base['workers']:.2f}x |")


if __name__ == "__main__":
    main()
