"""`tables import`: untyped files appended to typed tables, through the real CLI, real Spark and real tables;
a null key appended this way reaches scoring's quarantine."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml
from chispa import assert_df_equality

from sparkship import tables
from sparkship.cli import main

pytestmark = pytest.mark.seconds(18)

HEADER = "id,age,plan,churned"


def _csv(path, rows: list[str]) -> str:
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return str(path)


@pytest.fixture
def customers(spark, tmp_path, home) -> str:
    """A table created by `tables import` from a CSV: id is inferred as int, age as double."""
    rng = np.random.default_rng(5)
    rows = []
    for i in range(120):
        age = 20 + 50 * rng.random()
        plan = ["basic", "pro"][i % 2]
        churned = int(rng.random() < (0.8 if age > 45 else 0.2))
        rows.append(f"{i},{age:.2f},{plan},{churned}")
    table = str(tmp_path / "customers")
    assert main(["--json", "tables", "import", "--source", _csv(tmp_path / "first.csv", rows), "--table", table,
                 "--mode", "overwrite"]) == 0
    assert tables.schema(spark, table).simpleString() == "struct<id:int,age:double,plan:string,churned:int>"
    return table


def _import(source: str, table: str, capsys) -> tuple[int, dict]:
    code = main(["--json", "tables", "import", "--source", source, "--table", table, "--mode", "append"])
    return code, json.loads(capsys.readouterr().out)


def test_a_one_row_csv_with_an_empty_key_appends_a_null_key(spark, customers, tmp_path, capsys):
    """Before: "column 'id' is string, the table has int" (a one-row CSV's empty column is inferred as string)."""
    code, out = _import(_csv(tmp_path / "one.csv", [",33.5,pro,0"]), customers, capsys)
    assert code == 0, out
    assert (out["version"], out["rows"]) == (1, 1)
    added = tables.added_rows(spark, customers, 0, 1)
    expected = spark.createDataFrame([(None, 33.5, "pro", 0)], tables.schema(spark, customers))
    assert_df_equality(added, expected, ignore_nullable=True)


def test_values_parse_with_the_table_types_not_guessed_ones(spark, customers, tmp_path, capsys):
    """'007' is the int 7 in an int column; an all-integer age column is still double; JSON lines too."""
    code, out = _import(_csv(tmp_path / "typed.csv", ["007,40,basic,1", "8,41,,0"]), customers, capsys)
    assert code == 0, out
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(json.dumps({"id": 9, "age": 42, "plan": "pro", "churned": "1"}) + "\n"
                     + json.dumps({"id": "10", "age": None, "plan": None, "churned": 0}) + "\n")
    code, out = _import(str(jsonl), customers, capsys)
    assert code == 0 and out["rows"] == 2, out
    added = tables.added_rows(spark, customers, 0, 2)
    expected = spark.createDataFrame(
        [(7, 40.0, "basic", 1), (8, 41.0, None, 0), (9, 42.0, "pro", 1), (10, None, None, 0)],
        tables.schema(spark, customers),
    )
    assert_df_equality(added, expected, ignore_nullable=True, ignore_row_order=True)


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("bad.csv", "\n".join([HEADER, "1,30,basic,0", "2,31,pro,1", "3,abc,pro,1", "x,32,pro,1"]) + "\n",
         "row 3 (line 4), column 'age': 'abc' does not parse as double"),
        ("bad.csv", "\n".join([HEADER, "1,30,basic,0", "2.5,31,pro,1"]) + "\n",
         "row 2 (line 3), column 'id': '2.5' does not parse as int"),
        ("bad.jsonl", json.dumps({"id": 1, "age": 1, "plan": "a", "churned": 0}) + "\n"
         + json.dumps({"id": 2, "age": 1, "plan": "a", "churned": "yes!"}) + "\n",
         "row 2 (line 2), column 'churned': 'yes!' does not parse as int"),
    ],
)
def test_a_value_that_does_not_parse_names_row_and_column_and_writes_nothing(spark, customers, tmp_path, capsys,
                                                                             name, content, words):
    before = sorted(os.listdir(customers))
    source = tmp_path / name
    source.write_text(content)
    code, out = _import(str(source), customers, capsys)
    assert code == 1 and out["type"] == "SchemaMismatchError"
    assert words in out["error"] and str(source) in out["error"]
    assert tables.version(spark, customers) == 0 and sorted(os.listdir(customers)) == before


def test_missing_and_extra_columns_are_still_named(spark, customers, tmp_path, capsys):
    source = tmp_path / "cols.csv"
    source.write_text("id,age,plan,extra\n1,2,pro,x\n")
    code, out = _import(str(source), customers, capsys)
    assert code == 1 and "missing columns ['churned']" in out["error"] and "'extra'" in out["error"]


def test_an_appended_null_key_is_quarantined_by_score(spark, customers, tmp_path, capsys):
    """import (append, empty id) -> `sparkship score` -> the row is in <output>_quarantine with its reason."""
    spec = {"name": "churn", "task": "classification", "table": customers, "label": "churned",
            "features": {"numeric": ["age"], "categorical": ["plan"]},
            "model": {"algorithm": "logistic_regression", "params": {"maxIter": 20}},
            "split": {"test_fraction": 0.25, "seed": 3}}
    spec_file = tmp_path / "spec.yml"
    spec_file.write_text(yaml.safe_dump(spec))
    assert main(["--json", "train", "--spec", str(spec_file)]) == 0
    capsys.readouterr()
    code, _ = _import(_csv(tmp_path / "one.csv", [",33.5,pro,0"]), customers, capsys)
    assert code == 0
    out = str(tmp_path / "scores")
    assert main(["--json", "score", "--model", "churn/1", "--input", customers, "--output", out, "--keys", "id"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["rows_in"], result["scored"], result["quarantined"]) == (121, 120, 1)
    quarantined = [r.asDict() for r in tables.read(spark, out + "_quarantine").collect()]
    assert [(r["id"], r["age"], r["plan"], r["reason"]) for r in quarantined] == [
        (None, "33.5", "pro", "null key 'id'")]
