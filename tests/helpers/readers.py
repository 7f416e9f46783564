"""Readers of a Delta table independent of sparkship and Spark: delta-rs and duckdb."""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.fs as pafs


def deltalake_table(path: str, version: int | None = None) -> pa.Table:
    from deltalake import DeltaTable

    table = DeltaTable(path, version=version) if version is not None else DeltaTable(path)
    # A SubTreeFileSystem avoids delta-rs#2184 (abort at interpreter exit with the default filesystem).
    return table.to_pyarrow_table(filesystem=pafs.SubTreeFileSystem(path, pafs.LocalFileSystem()))


def duckdb_table(path: str) -> pa.Table:
    import duckdb
    import duckdb_extension_delta

    extension = os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions", f"v{duckdb.__version__}",
                             "delta.duckdb_extension")
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute("SET TimeZone = 'UTC'")
    con.load_extension(extension)
    return con.execute(f"SELECT * FROM delta_scan('{path}')").to_arrow_table()

