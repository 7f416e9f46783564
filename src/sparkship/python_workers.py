"""The Python workers' daemon of sparkship's local sessions: pyspark's own daemon (``pyspark.daemon``), started
without the archive copies of pyspark that Spark puts on the workers' path ahead of the installed package.

Spark's worker environment lists ``$SPARK_HOME/python/lib/pyspark.zip``, the py4j zip and the spark-core jar first.
Before every task a worker calls ``importlib.invalidate_caches()``, and on Python 3.11 each zip importer then reads
its archive's whole directory again (pyspark's zip once per subpackage imported from it), which costs more CPU
than a small task's own work (docs/DESIGN.md, benchmarks/python_workers.py). Where pyspark and py4j are
installed as packages (pip, the ``local`` extra), archives inside the pyspark package hold nothing the workers
lack, so the daemon drops them before pyspark is imported; where pyspark is only in an archive, every path is kept.

:func:`sparkship.spark.get_spark` sets it (``spark.python.daemon.module``) for local masters only: executors of a
cluster may not have sparkship installed. Spark runs it as ``python -m sparkship.python_workers WORKER_MODULE``.
It also imports what sparkship's tasks use (Arrow, numpy, the JVM-free scorer) once, before it forks workers: a
worker that Spark replaces (an idle one ends after a minute) then starts without importing them again.
"""
from __future__ import annotations

import importlib
import os
import runpy
import sys
from importlib.machinery import PathFinder

DAEMON_MODULE = "sparkship.python_workers"
PRELOADED = ("pyarrow", "numpy", "sparkship.scoring.arrow_scorer")


def _installed_dir(package: str, directories: list[str]) -> str | None:
    spec = PathFinder.find_spec(package, directories)
    origin = spec.origin if spec is not None else None
    return os.path.dirname(origin) if origin else None


def drop_archive_copies(path: list[str]) -> list[str]:
    """The archives (zip or jar files) in ``path`` that lie inside the installed pyspark package, removed from
    ``path`` and from the import system's caches; none when pyspark or py4j is not installed as a package.

    Example:
        >>> drop_archive_copies(["/nowhere/pyspark.zip"])  # not inside an installed pyspark: kept
        []
    """
    directories = [p for p in path if not os.path.isfile(p)]
    pyspark_dir = _installed_dir("pyspark", directories)
    if pyspark_dir is None or _installed_dir("py4j", directories) is None:
        return []
    inside = os.path.join(os.path.realpath(pyspark_dir), "")
    dropped = [p for p in path if os.path.isfile(p) and os.path.realpath(p).startswith(inside)]
    path[:] = [p for p in path if p not in dropped]
    for key in list(sys.path_importer_cache):
        if any(key == d or key.startswith(os.path.join(d, "")) for d in dropped):
            del sys.path_importer_cache[key]
    return dropped


def main() -> None:
    """pyspark's daemon, as ``python -m pyspark.daemon WORKER_MODULE`` would run it, on a path without the copies."""
    drop_archive_copies(sys.path)
    for module in PRELOADED:
        try:
            importlib.import_module(module)
        except ImportError:  # a worker that needs it fails with the error itself; the others need not
            break
    runpy.run_module("pyspark.daemon", run_name="__main__")


if __name__ == "__main__":
    main()
