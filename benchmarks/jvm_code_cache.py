"""The test suite's JVM flags on a long-lived session: the CPU one pytest worker's session spends on the
registration zoo's work (fit, register, score, the JVM-free check, validate, monitor, report of every case of
tests/helpers/zoo_models.py), under each flag set, all of them at once so that they share the machine alike.

- ``C1, 48 MB cache``: the suite's flags before (C1 alone, whose default code cache is 48 MB, flushed by the sweeper);
- ``C1, 256 MB unflushed``: the suite's flags now (scripts/jvm_class_archive.SUITE_JVM);
- ``C1+C2, 480 MB unflushed``: both JIT compilers.

Each way is a child process (``--child FLAGS``) with its own session; it prints its process's and its JVM's CPU
seconds and the JVM threads that took the most.

    .venv/bin/python benchmarks/jvm_code_cache.py            # every case (about 15 minutes on 2 cores)
    .venv/bin/python benchmarks/jvm_code_cache.py --cases 12
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pathlib
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.run_info import cpu_seconds, header_lines, run_children  # noqa: E402
from scripts.jvm_class_archive import C1_ONLY, INTERPRETED_EXPRESSIONS, SUITE_JVM, jvm_options  # noqa: E402

ARCHIVE = os.path.join(sys.prefix, "jvm-classes.jsa")
WAYS = {
    "C1, 48 MB cache": C1_ONLY,
    "C1, 256 MB unflushed": SUITE_JVM,
    "C1+C2, 480 MB unflushed": "-XX:+UseSerialGC -XX:ReservedCodeCacheSize=480m -XX:-UseCodeCacheFlushing",
}


def _threads(pid: int, top: int = 4) -> dict[str, float]:
    """CPU seconds of the JVM's threads, grouped by name without its number, the ``top`` largest."""
    found: dict[str, float] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as fh:
                name = fh.read().strip().rstrip("0123456789 ")
            found[name] = found.get(name, 0.0) + cpu_seconds(pid, task)
        except OSError:
            continue
    return dict(sorted(found.items(), key=lambda kv: -kv[1])[:top])


class _Captured:
    """What the zoo's helpers expect of pytest's capsys: the CLI's output since the last read."""

    def __init__(self) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()

    def readouterr(self) -> argparse.Namespace:
        read = argparse.Namespace(out=self.out.getvalue(), err=self.err.getvalue())
        for buf in (self.out, self.err):
            buf.seek(0)
            buf.truncate()
        return read


def child(flags: str, cases: int) -> None:
    """Run the zoo's work for the first ``cases`` cases on a session with ``flags``; print CPU seconds as JSON."""
    os.environ["SPARKSHIP_DRIVER_JAVA_OPTIONS"] = f"{jvm_options(ARCHIVE, flags)} {INTERPRETED_EXPRESSIONS}"
    from sparkship import tables
    from sparkship.config import Settings
    from sparkship.spark import get_spark
    from tests.helpers import zoo
    from tests.helpers.zoo_models import CASES, ESTIMATORS, SCHEMA, make_rows

    root = pathlib.Path(tempfile.mkdtemp(prefix="jvm-code-cache-"))
    spark = get_spark(home=str(root / "spark"))
    jvm = spark.sparkContext._gateway.proc.pid
    settings = Settings.resolve(home=str(root / "home"))
    data = {"root": root, "table": str(root / "table"), "holdout": str(root / "holdout")}
    tables.write(spark.createDataFrame(make_rows(200, 1), SCHEMA), data["table"], mode="overwrite")
    tables.write(spark.createDataFrame(make_rows(90, 7), SCHEMA), data["holdout"], mode="overwrite")
    data["df"], data["holdout_df"] = (tables.read(spark, data[k]).cache() for k in ("table", "holdout"))
    captured = _Captured()
    with contextlib.redirect_stdout(captured.out), contextlib.redirect_stderr(captured.err):
        for case in CASES[:cases]:
            model = ESTIMATORS[case.name]().fit(data["df"])
            done = zoo.register_and_score(case, model, settings, data, captured)
            zoo.check_registered_scored_and_served(case, model, done, spark, data, settings, captured)
            zoo.check_validated_monitored_reported(case, model, done, data, settings, captured)
    print(json.dumps({"python": cpu_seconds(os.getpid()), "jvm": cpu_seconds(jvm), "threads": _threads(jvm)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=None, help="the first N cases of the zoo (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from tests.helpers.zoo_models import CASES

    cases = args.cases or len(CASES)
    if args.child is not None:
        child(args.child, cases)
        return
    print("\n".join(header_lines(f"Java 17, the zoo's first {cases} cases, every way at once")))
    results = run_children({way: [sys.executable, __file__, "--cases", str(cases), "--child", flags]
                            for way, flags in WAYS.items()})
    base = results[next(iter(WAYS))]
    print("| JVM flags | JVM CPU s | Python CPU s | total | ratio | the JVM's busiest threads, CPU s |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for way, got in results.items():
        total = got["jvm"] + got["python"]
        threads = ", ".join(f"{name} {s:.0f}" for name, s in got["threads"].items())
        print(f"| {way} | {got['jvm']:.0f} | {got['python']:.0f} | {total:.0f} | "
              f"{total / (base['jvm'] + base['python']):.2f}x | {threads} |")


if __name__ == "__main__":
    main()
