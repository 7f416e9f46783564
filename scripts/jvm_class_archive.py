"""Build a class-data-sharing archive for the short-lived JVMs of the test suite.

The suite starts about a hundred JVMs: every CLI call is a process with its own local SparkSession, and so are
the concurrent writers. Each one loads, parses and verifies the same ~20,000 classes of Spark and Delta. Java's
dynamic class-data sharing (JDK 13+) writes the classes one run loaded to an archive that later JVMs map
instead: a `sparkship tables import` process then takes about 6 s instead of 10 s on two cores.

The archive comes from one small `sparkship demo` run (import, train, validate, promote, score, monitor,
report), so that it holds the classes of every command. A JVM given an archive that does not match its own
class path or Java version (the Spark 3.5 environment, another JDK) says so and runs without it.

    python scripts/jvm_class_archive.py .venv/jvm-classes.jsa

The archive is written next to OUT and moved into place once the JVM has finished writing it. The test suite's
conftest gives it to its short-lived JVMs when it is there (:func:`short_lived_jvm_options`).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

# For JVMs that live a few seconds: the C1 compiler alone and the serial collector start and run their first
# queries about a fifth faster on two cores. A long-lived JVM is better off with the defaults.
SHORT_LIVED_JVM = "-XX:TieredStopAtLevel=1 -XX:CICompilerCount=1 -XX:+UseSerialGC"
# JVM warnings go to stdout by default, where they would mix with the CLI's JSON (a JVM that cannot use the
# archive warns so): errors only, on stderr.
QUIET_JVM_LOG = "-Xlog:disable -Xlog:all=error:stderr"
DEMO_ARGS = ["-q", "--json", "demo", "--train-rows", "2000", "--batch-rows", "500"]


def short_lived_jvm_options(archive: str) -> str:
    """The driver JVM flags for short-lived JVMs: :data:`SHORT_LIVED_JVM`, and ``archive`` when it exists."""
    if not os.path.isfile(archive):
        return SHORT_LIVED_JVM
    return f"{SHORT_LIVED_JVM} -XX:SharedArchiveFile={archive} {QUIET_JVM_LOG}"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="where the archive goes (e.g. .venv/jvm-classes.jsa)")
    parser.add_argument("--jvm-options", default=SHORT_LIVED_JVM,
                        help="the other driver JVM flags the archive will be used with (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the demo run and the dump")
    return parser.parse_args(argv)


def _run_demo(workdir: str, archive: str, jvm_options: str, timeout: float) -> None:
    """One demo run whose JVM writes the classes it loaded to ``archive`` as it exits."""
    env = {
        **os.environ,
        "SPARKSHIP_HOME": os.path.join(workdir, "home"),
        "SPARKSHIP_DRIVER_JAVA_OPTIONS": f"{jvm_options} -XX:ArchiveClassesAtExit={archive} {QUIET_JVM_LOG}".strip(),
    }
    command = [sys.executable, "-m", "sparkship.cli", *DEMO_ARGS, "--workdir", os.path.join(workdir, "demo")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the demo run failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")


def _jvm_still_writing(archive: str) -> bool:
    """True while a process whose command line names ``archive`` runs (pyspark leaves its JVM to exit after it)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if archive.encode() in f.read():
                    return True
        except OSError:  # the process ended while we looked
            continue
    return False


def _wait_for_dump(archive: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _jvm_still_writing(archive):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the JVM did not finish writing {archive} within {timeout:.0f} s")
        time.sleep(0.5)
    if not os.path.isfile(archive) or os.path.getsize(archive) == 0:
        raise RuntimeError(f"the JVM wrote no archive at {archive}")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    out = os.path.abspath(args.out)
    partial = f"{out}.partial-{os.getpid()}"
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="sparkship-cds-") as workdir:
            _run_demo(workdir, partial, args.jvm_options, args.timeout)
            _wait_for_dump(partial, args.timeout)
        os.replace(partial, out)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        if os.path.exists(partial):
            os.remove(partial)
        print(f"jvm_class_archive: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({os.path.getsize(out) / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
