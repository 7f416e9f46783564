"""Build a class-data-sharing archive for the test suite's JVMs, and hold the flags those JVMs get.

The suite starts about a hundred JVMs: every CLI call is a process with its own local SparkSession, and so are
the concurrent writers. Each one loads, parses and verifies the same ~20,000 classes of Spark. Java's class-data
sharing maps them from an archive instead, which saves a short CLI process much of its CPU time
(benchmarks/README.md, make_env.sh).

The archive is dumped (``java -Xshare:dump``) from a list of classes kept in the repository,
``scripts/jvm-classes.lst.gz``: the classes one small ``sparkship demo`` run (import, train, validate, promote,
score, monitor, report) loaded, so it holds the classes of every command. Dumping from the list needs only the
venv, so it runs beside the download of Delta's jars in a fresh ``make test``. The dump uses the class path and
module flags of the JVM that pyspark starts
(asked of a gateway JVM), which a later JVM must match to map the archive. A JVM whose class path or Java
version does not match (the Spark 3.5 environment, another JDK) runs without it. A class that the list names
and the class path lacks (another pyspark patch release) is skipped.

    python scripts/jvm_class_archive.py .venv/jvm-classes.jsa
    python scripts/jvm_class_archive.py --write-class-list     # after a pyspark minor or JDK upgrade

The archive is written next to OUT and moved into place once complete. The test suite's conftest gives it to its
JVMs when it is there (:func:`jvm_options`).
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time

# For the suite's JVMs: the C1 compiler alone and the serial collector start and run their first queries faster
# on two cores. C1 alone gets a small code cache (48 MB), and in a JVM that runs Spark queries for minutes (a
# pytest worker's session) its sweeper keeps flushing compiled code that is then compiled again, at a large cost
# in CPU (benchmarks/README.md). A larger cache that is never flushed keeps the code (it is reserved address
# space, not memory in use).
C1_ONLY = "-XX:TieredStopAtLevel=1 -XX:CICompilerCount=1 -XX:+UseSerialGC"
SUITE_JVM = f"{C1_ONLY} -XX:ReservedCodeCacheSize=256m -XX:-UseCodeCacheFlushing"
# Spark's expressions evaluated interpreted, for the suite's sessions: on queries over a few hundred or thousand
# rows, generating and compiling Java code per query costs more CPU than it saves (same results; Spark tests both).
INTERPRETED_EXPRESSIONS = "-Dspark.sql.codegen.wholeStage=false -Dspark.sql.codegen.factoryMode=NO_CODEGEN"
# JVM warnings go to stdout by default, where they would mix with the CLI's JSON (a JVM that cannot use the
# archive warns so): errors only, on stderr.
QUIET_JVM_LOG = "-Xlog:disable -Xlog:all=error:stderr"
CLASS_LIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jvm-classes.lst.gz")
DEMO_ARGS = ["-q", "--json", "demo", "--train-rows", "2000", "--batch-rows", "500"]


def jvm_options(archive: str, flags: str = SUITE_JVM) -> str:
    """The driver JVM flags of the suite's JVMs: ``flags``, and ``archive`` when it exists."""
    if not os.path.isfile(archive):
        return flags
    return f"{flags} -XX:SharedArchiveFile={archive} {QUIET_JVM_LOG}"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", help="where the archive goes (e.g. .venv/jvm-classes.jsa)")
    parser.add_argument("--write-class-list", action="store_true",
                        help=f"run the demo once and write the classes it loaded to {CLASS_LIST}")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the demo run or the dump")
    args = parser.parse_args(argv)
    if not args.out and not args.write_class_list:
        parser.error("give OUT, or --write-class-list")
    return args


def _pyspark_jvm() -> tuple[str, str, list[str]]:
    """The java binary, class path and module flags of the driver JVM that pyspark launches here."""
    from pyspark.java_gateway import launch_gateway

    # The gateway JVM's start-up warnings are noise in make's output.
    gateway = launch_gateway(popen_kwargs={"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL})
    try:
        system = gateway.jvm.System
        java = os.path.join(system.getProperty("java.home"), "bin", "java")
        arguments = gateway.jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()
        modules = [a for a in arguments if a.startswith(("--add-modules", "-XX:+IgnoreUnrecognizedVMOptions"))]
        return java, system.getProperty("java.class.path"), modules
    finally:
        gateway.shutdown()


def _dump(class_list: str, archive: str, timeout: float) -> None:
    """``java -Xshare:dump`` of the classes in ``class_list`` (gzipped) for pyspark's class path."""
    java, class_path, modules = _pyspark_jvm()
    with tempfile.TemporaryDirectory(prefix="sparkship-cds-") as workdir:
        plain = os.path.join(workdir, "classes.lst")
        with gzip.open(class_list, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst)
        # Run in an empty folder: the class path has a relative entry (hive-jackson/*) that must not resolve.
        command = [java, "-Xshare:dump", f"-XX:SharedClassListFile={plain}", f"-XX:SharedArchiveFile={archive}",
                   *modules, "-Xlog:disable", "-Xlog:cds=error", "-cp", class_path]
        done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not os.path.isfile(archive) or os.path.getsize(archive) == 0:
        raise RuntimeError(f"java -Xshare:dump failed (exit {done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")


def _write_class_list(path: str, timeout: float) -> int:
    """One demo run whose driver JVM lists the classes it loads; the list is gzipped to ``path``."""
    with tempfile.TemporaryDirectory(prefix="sparkship-cds-") as workdir:
        plain = os.path.join(workdir, "classes.lst")
        env = {
            **os.environ,
            "SPARKSHIP_HOME": os.path.join(workdir, "home"),
            "SPARKSHIP_DRIVER_JAVA_OPTIONS": f"{SUITE_JVM} -XX:DumpLoadedClassList={plain} {QUIET_JVM_LOG}",
        }
        command = [sys.executable, "-m", "sparkship.cli", *DEMO_ARGS, "--workdir", os.path.join(workdir, "demo")]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"the demo run failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        _wait_for_jvm_exit(plain, timeout)
        with open(plain, "rb") as src, gzip.GzipFile(path, "wb", mtime=0) as dst:
            shutil.copyfileobj(src, dst)
        with open(plain) as fh:
            return sum(1 for line in fh if line.strip() and not line.startswith("#"))


def _wait_for_jvm_exit(marker: str, timeout: float) -> None:
    """Wait while a process whose command line names ``marker`` runs (pyspark leaves its JVM to exit after it)."""
    deadline = time.monotonic() + timeout
    while _running_with(marker):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the JVM writing {marker} did not exit within {timeout:.0f} s")
        time.sleep(0.5)


def _running_with(marker: str) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    return True
        except OSError:  # the process ended while we looked
            continue
    return False


def _build_archive(out: str, timeout: float) -> str:
    """Dump the archive next to ``out``, then move it into place; nothing is left behind on failure."""
    out = os.path.abspath(out)
    partial = f"{out}.partial-{os.getpid()}"
    try:
        _dump(CLASS_LIST, partial, timeout)
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return f"{out} ({os.path.getsize(out) / 2**20:.0f} MiB)"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.perf_counter()
    try:
        if args.write_class_list:
            wrote = f"{CLASS_LIST} ({_write_class_list(CLASS_LIST, args.timeout)} classes)"
        else:
            wrote = _build_archive(args.out, args.timeout)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"jvm_class_archive: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {wrote} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
