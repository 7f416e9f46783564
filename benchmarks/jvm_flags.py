"""The test suite's own session JVM under each set of driver flags the suite knows, side by side.

One pytest process per flag set, all at once (so they share the machine's hour and its two cores, as the suite's
two workers do), each without xdist, over the same test modules: the wall time, and the CPU seconds of pytest and
of its JVM (with the processes the JVM started), read from /proc when the session ends. The flag sets are those of
scripts/jvm_class_archive.py: C1 alone (the suite's short-lived CLI processes) and C1 with C2 (a worker's session).
The runs need minutes each: C2's compiles cost CPU first and repay it later.

This file is also the pytest plugin (``-p jvm_flags``) that writes a run's CPU seconds to ``$JVM_FLAGS_OUT``.

    .venv/bin/python benchmarks/jvm_flags.py [MODULE ...]
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from run_info import header_lines  # noqa: E402

from scripts.jvm_class_archive import INTERPRETED_EXPRESSIONS, jvm_options  # noqa: E402

MODULES = ["tests/registry/test_zoo_classifiers.py", "tests/registry/test_zoo_regressors_and_clusterers.py",
           "tests/registry/test_zoo_feature_pipelines.py", "tests/training/test_spec_pipelines.py",
           "tests/scoring/test_scoring.py", "tests/scoring/test_jvm_free.py", "tests/training/test_validation.py",
           "tests/serving/test_parity.py"]
ARCHIVE = os.path.join(sys.prefix, "jvm-classes.jsa")
FLAG_SETS = {
    "C1 only (CLI processes)": f"{jvm_options(ARCHIVE)} {INTERPRETED_EXPRESSIONS}",
    "C1 and C2 (a worker's session)": f"{jvm_options(ARCHIVE, long_lived=True)} {INTERPRETED_EXPRESSIONS}",
}


def _tree_cpu(root: int) -> float:
    """CPU seconds of ``root``'s live descendants and of the children they waited for."""
    children: dict[int, list[tuple[int, float]]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(
            (int(pid), sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")))
    total, stack = 0.0, [root]
    while stack:
        for pid, seconds in children.get(stack.pop(), []):
            total += seconds
            stack.append(pid)
    return total


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ANN001 - the plugin side
    """pytest's CPU seconds (with the processes it waited for) and its JVM's, which nobody waits for."""
    own = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    with open(os.environ["JVM_FLAGS_OUT"], "w") as fh:
        json.dump({"pytest": sum(r.ru_utime + r.ru_stime for r in own), "jvm": _tree_cpu(os.getpid())}, fh)


def _start(flags: str, modules: list[str], work: str, index: int) -> subprocess.Popen:
    env = {**os.environ, "SPARKSHIP_DRIVER_JAVA_OPTIONS": flags, "JVM_FLAGS_OUT": f"{work}/cpu-{index}.json",
           "PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "jvm_flags",
               f"--basetemp={work}/base-{index}", *modules]
    with open(f"{work}/pytest-{index}.log", "w") as log:
        return subprocess.Popen(command, cwd=os.path.dirname(HERE), env=env, stdout=log, stderr=subprocess.STDOUT)


def _run_all(modules: list[str], work: str) -> list[tuple[str, float, float, float, str]]:
    """(flags, wall s, pytest CPU s, JVM CPU s, pytest's last line) of each flag set, run at once."""
    started = time.monotonic()
    procs = [_start(flags, modules, work, i) for i, flags in enumerate(FLAG_SETS.values())]
    walls: dict[int, float] = {}
    while len(walls) < len(procs):
        ended = [i for i, proc in enumerate(procs) if i not in walls and proc.poll() is not None]
        walls.update({i: time.monotonic() - started for i in ended})
        time.sleep(0.5)
    rows = []
    for index, name in enumerate(FLAG_SETS):
        with open(f"{work}/pytest-{index}.log") as fh:
            result = fh.read().strip().splitlines()[-1]
        with open(f"{work}/cpu-{index}.json") as fh:
            cpu = json.load(fh)
        failed = "" if procs[index].returncode == 0 else "FAILED: "
        rows.append((name, walls[index], cpu["pytest"], cpu["jvm"], failed + result))
    return rows


def main() -> None:
    modules = sys.argv[1:] or MODULES
    print("\n".join(header_lines(f"Java 17; modules: {' '.join(modules)}")))
    with tempfile.TemporaryDirectory() as work:
        rows = _run_all(modules, work)
    base = rows[0][2] + rows[0][3]
    print("\n| flags | wall s | pytest CPU s | JVM CPU s | CPU s | ratio | result |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, wall, own, jvm, result in rows:
        ratio = (own + jvm) / base
        print(f"| {name} | {wall:.0f} | {own:.0f} | {jvm:.0f} | {own + jvm:.0f} | {ratio:.2f}x | {result} |")
    if any(row[4].startswith("FAILED") for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
