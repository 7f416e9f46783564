"""A filesystem that refuses hard links and no-replace renames, as a FUSE mount (a Unity Catalog volume) does.

The refusal is injected at the OS call: tests/fuse_refusals.c, preloaded into real processes, makes link(2),
linkat(2) and renameat2(RENAME_NOREPLACE) fail with ENOSYS under one folder (the "mount"). delta-rs commits
with exactly those calls (delta-rs#2540); delta-spark does not.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.seconds(20)

HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def refusing_mount(tmp_path_factory) -> dict[str, str]:
    """Environment for a child process whose folder ``mount`` refuses hard links, and the folder itself."""
    build = tmp_path_factory.mktemp("shim")
    library = str(build / "fuse_refusals.so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", library, os.path.join(HERE, "fuse_refusals.c"), "-ldl"],
                   check=True)
    mount = str(tmp_path_factory.mktemp("volume"))
    env = {**os.environ, "LD_PRELOAD": library, "SPARKSHIP_FAKE_FUSE": mount, "PYTHONUNBUFFERED": "1"}
    return {"mount": mount, **{f"env:{k}": v for k, v in env.items()}}


def _env(mount: dict[str, str], engine: str) -> dict[str, str]:
    env = {k[4:]: v for k, v in mount.items() if k.startswith("env:")}
    env["SPARKSHIP_DELTA_ENGINE"] = engine
    env["SPARKSHIP_HOME"] = os.path.join(mount["mount"], f"home-{engine}")
    return env


def _run(code: str, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_shim_refuses_hard_links_under_the_mount_only(refusing_mount, tmp_path):
    out = _run(
        f"""
        import errno, os
        mount = {refusing_mount['mount']!r}
        open(os.path.join(mount, "a"), "w").close()
        try:
            os.link(os.path.join(mount, "a"), os.path.join(mount, "b"))
            print("linked")
        except OSError as exc:
            print("refused", errno.errorcode[exc.errno])
        open({str(tmp_path / 'c')!r}, "w").close()
        os.link({str(tmp_path / 'c')!r}, {str(tmp_path / 'd')!r})
        print("outside ok")
        """,
        _env(refusing_mount, "deltars"),
    )
    assert out.stdout.split("\n")[:2] == ["refused ENOSYS", "outside ok"], out.stderr


def test_deltars_fails_at_once_naming_the_operation_and_the_mount(refusing_mount):
    """The registry on delta-rs: one clear error, no retries, no 'conflicting attempts'."""
    started = time.monotonic()
    out = _run(
        f"""
        import pyarrow as pa
        from sparkship.tables import metadata
        metadata.append_arrow({os.path.join(refusing_mount['mount'], 'registry', 'events')!r},
                              pa.table({{"name": ["churn"]}}))
        """,
        _env(refusing_mount, "deltars"),
    )
    elapsed = time.monotonic() - started
    assert out.returncode != 0
    message = out.stderr.strip().splitlines()[-1]
    assert "UnsupportedFilesystemError" in message
    assert "refuses hard link" in message and refusing_mount["mount"] in message
    assert "SPARKSHIP_DELTA_ENGINE=native" in message
    assert "conflict" not in out.stderr.lower()
    assert elapsed < 60  # one attempt (a Python start and a probe), not 200 retries


def test_deltars_cli_import_refuses_without_a_traceback_or_data(refusing_mount, tmp_path):
    source = tmp_path / "rows.csv"
    source.write_text("id,x\n1,0.5\n2,1.5\n")
    table = os.path.join(refusing_mount["mount"], "tables", "rows")
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "sparkship"), "tables", "import", "--source", str(source),
         "--table", table],
        env=_env(refusing_mount, "deltars"), capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "refuses hard link" in out.stderr and "SPARKSHIP_DELTA_ENGINE=native" in out.stderr
    assert not os.path.exists(table) or not os.listdir(table)  # refused before any data file was written


def test_native_engine_commits_data_and_registry_tables_there(refusing_mount):
    out = _run(
        f"""
        import os
        import pyarrow as pa
        from sparkship import tables
        from sparkship.spark import get_spark
        from sparkship.tables import metadata

        mount = {refusing_mount['mount']!r}
        spark = get_spark()
        assert tables.engine_for(spark) == "native"
        path = os.path.join(mount, "tables", "scores")
        v0 = tables.write(spark.createDataFrame([(1, 0.5)], "id long, p double"), path, mode="overwrite")
        v1 = tables.write(spark.createDataFrame([(2, 0.7)], "id long, p double"), path, expected_version=v0)
        events = os.path.join(mount, "registry", "events")
        e0 = metadata.append_arrow(events, pa.table({{"name": ["churn"]}}))
        e1 = metadata.append_arrow(events, pa.table({{"name": ["churn"]}}), expected_version=e0)
        print("versions", v0, v1, e0, e1, tables.read(spark, path).count(), metadata.read_arrow(events).num_rows)
        """,
        _env(refusing_mount, "native"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "versions 0 1 0 1 2 2"
