"""The Python workers of a local session start from sparkship's daemon: pyspark comes from the installed package,
no archive copy of it is on their path, and their tasks run as under pyspark's own daemon."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pyarrow as pa
import pyspark
import pytest

from sparkship.python_workers import DAEMON_MODULE, drop_archive_copies

pytestmark = [pytest.mark.quick, pytest.mark.seconds(15)]

PYSPARK_DIR = os.path.dirname(pyspark.__file__)
INSTALLED = os.path.realpath(PYSPARK_DIR)  # a venv may be reached through a link


def _archives_in_pyspark() -> list[str]:
    """The archives Spark lists for its workers that lie inside the installed package (zips and jars)."""
    found = []
    for folder in (os.path.join(PYSPARK_DIR, "python", "lib"), os.path.join(PYSPARK_DIR, "jars")):
        found += sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith((".zip", ".jar")))[:2]
    return found


def test_archive_copies_are_dropped_where_pyspark_is_installed_as_a_package():
    archives = _archives_in_pyspark()
    assert archives, "the installed pyspark has no archives to try"
    site = os.path.dirname(PYSPARK_DIR)
    path = ["", *archives, site]
    assert drop_archive_copies(path) == archives
    assert path == ["", site]


def test_every_path_is_kept_where_pyspark_is_only_in_an_archive():
    archives = _archives_in_pyspark()
    path = list(archives)  # no directory holds pyspark: the archives are where the workers import it from
    assert drop_archive_copies(path) == [] and path == archives


def _worker_facts(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    import importlib
    import zipimport

    import pyspark as worker_pyspark

    importlib.invalidate_caches()  # as the worker does before each task
    zips = [k for k, v in sys.path_importer_cache.items()
            if isinstance(v, zipimport.zipimporter) and os.path.realpath(v.archive).startswith(INSTALLED)]
    rows = sum(b.num_rows for b in batches)
    yield pa.RecordBatch.from_pylist([{"rows": rows, "pyspark": worker_pyspark.__file__, "zips": len(zips),
                                       "path": os.pathsep.join(sys.path)}])


def test_a_local_session_s_workers_import_pyspark_from_the_package(spark):
    assert spark.conf.get("spark.python.daemon.module") == DAEMON_MODULE
    facts = spark.range(10).mapInArrow(_worker_facts, "rows long, pyspark string, zips long, path string").collect()
    assert sum(f["rows"] for f in facts) == 10
    for f in facts:
        assert os.path.realpath(f["pyspark"]) == os.path.realpath(pyspark.__file__) and f["zips"] == 0, f
        assert not any(os.path.isfile(p) and os.path.realpath(p).startswith(INSTALLED)
                       for p in f["path"].split(os.pathsep)), f["path"]
