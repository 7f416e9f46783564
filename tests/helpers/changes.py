"""Inputs with the Change Data Feed, the changes Databricks makes to tables (appends, DELETE, UPDATE, MERGE,
OPTIMIZE, ...) on either engine, and the check that an output equals a full scoring of its input."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sparkship import tables
from tests.helpers.scoring import INPUT_SCHEMA, assert_same_scores, make_rows

INITIAL_ROWS = make_rows(200, 7)  # what make_input writes


def scores_of(fitted, rows):
    """The model's transform of ``rows`` (a DataFrame of the input's columns): key, prediction, probability."""
    from pyspark.ml.functions import vector_to_array

    rows = rows.select("id", "age", "tenure", "plan", "region")
    return (fitted.transform(rows).select("id", "prediction", vector_to_array("probability").alias("probability"))
            .orderBy("id"))


def full_scoring(spark, fitted, path: str):
    """What the output must hold: the model's transform of every current input row."""
    return scores_of(fitted, tables.read(spark, path))


def initial_scoring(spark, fitted):
    """The full scoring of :func:`make_input`'s rows, computed once and kept (a module's cases all start there)."""
    return scores_of(fitted, spark.createDataFrame(INITIAL_ROWS, INPUT_SCHEMA)).localCheckpoint()


def assert_output_is_full_scoring(spark, fitted, src: str, out: str, expected=None) -> None:
    """The output holds each key once, with the scores of a full scoring of ``src``'s current rows (``expected``
    when given: that full scoring, computed before)."""
    got = tables.read(spark, out).select("id", "prediction", "probability").orderBy("id")
    rows = got.collect()  # one read of the output for both checks
    ids = [row["id"] for row in rows]
    assert len(set(ids)) == len(ids), "a key is in the output more than once"
    assert_same_scores(spark.createDataFrame(rows, got.schema),
                       full_scoring(spark, fitted, src) if expected is None else expected)


@contextmanager
def naming(change: str, engine: str) -> Iterator[None]:
    """Checks of one step in a chain of changes: a failure says which change (and engine) it followed.

    Example: ``with naming("merge", engine): ...`` fails with "after the merge (deltars engine): ...".
    """
    try:
        yield
    except Exception as exc:  # an assert, chispa's mismatch or a failed run: all name the change
        raise AssertionError(f"after the {change} ({engine} engine): {exc}") from exc


def make_input(spark, path: str, engine: str, *, cdf: bool = True, dv: bool = False) -> None:
    """The input: 200 rows, with the Change Data Feed as sparkship creates tables, or a plain table without it."""
    df = spark.createDataFrame(INITIAL_ROWS, INPUT_SCHEMA)
    if cdf:
        props = {"delta.enableDeletionVectors": "true"} if dv else {}
        tables.write(df, path, mode="overwrite", properties=props)
    elif engine == "native":
        writer = df.write.format("delta").option("delta.enableChangeDataFeed", "false")
        writer.option("delta.enableDeletionVectors", "true" if dv else "false").save(path)
    else:
        from deltalake import write_deltalake

        write_deltalake(path, df.toArrow())


def apply_change(spark, path: str, engine: str, change: str) -> None:
    """One change to the input, done the way that engine's users do it (SQL on delta-spark, delta-rs' API).
    ``restore`` deletes rows, then restores the version from before that DELETE."""
    if change == "append":
        tables.write(spark.createDataFrame(make_rows(20, 8, first_id=1000), INPUT_SCHEMA), path)
    elif change == "overwrite":
        rows = make_rows(150, 9, first_id=50)  # keys 50..199 rewritten with new values, 0..49 gone, 200.. new
        tables.write(spark.createDataFrame(rows, INPUT_SCHEMA), path, mode="overwrite")
    elif engine == "native":
        _native_change(spark, path, change)
    else:
        _deltars_change(spark, path, change)


def _native_change(spark, path: str, change: str) -> None:
    t = f"delta.`{path}`"
    if change == "merge":
        spark.createDataFrame(make_rows(30, 10, first_id=180), INPUT_SCHEMA).createOrReplaceTempView("upserts")
        spark.sql(f"MERGE INTO {t} AS t USING upserts AS s ON t.id = s.id WHEN MATCHED THEN UPDATE SET * "
                  "WHEN NOT MATCHED THEN INSERT *")
    elif change == "restore":
        before = tables.version(spark, path)
        spark.sql(f"DELETE FROM {t} WHERE id % 3 = 0")
        spark.sql(f"RESTORE TABLE {t} TO VERSION AS OF {before}")
    else:
        statements = {
            "delete": [f"DELETE FROM {t} WHERE id % 7 = 0"],
            "update": [f"UPDATE {t} SET age = age + 25, plan = 'pro' WHERE id % 5 = 0"],
            "optimize": [f"DELETE FROM {t} WHERE id < 3", f"OPTIMIZE {t}"],
            "add_column": [f"ALTER TABLE {t} ADD COLUMNS (note string)", f"UPDATE {t} SET note = 'x', tenure = 1.0 "
                           "WHERE id % 9 = 0"],
        }
        for statement in statements[change]:
            spark.sql(statement)


def _deltars_change(spark, path: str, change: str) -> None:
    from deltalake import DeltaTable, write_deltalake

    dt = DeltaTable(path)
    if change == "merge":
        source = spark.createDataFrame(make_rows(30, 10, first_id=180), INPUT_SCHEMA).toArrow()
        (dt.merge(source, "t.id = s.id", source_alias="s", target_alias="t")
         .when_matched_update_all().when_not_matched_insert_all().execute())
    elif change == "delete":
        dt.delete("id % 7 = 0")
    elif change == "update":
        dt.update(updates={"age": "age + 25", "plan": "'pro'"}, predicate="id % 5 = 0")
    elif change == "optimize":
        dt.delete("id < 3")
        DeltaTable(path).optimize.compact()
    elif change == "add_column":
        import pyarrow as pa

        rows = spark.createDataFrame(make_rows(5, 11, first_id=3000), INPUT_SCHEMA).toArrow()
        write_deltalake(path, rows.append_column("note", pa.array(["x"] * 5)), mode="append", schema_mode="merge")
    elif change == "restore":
        before = dt.version()
        dt.delete("id % 3 = 0")
        DeltaTable(path).restore(before)

