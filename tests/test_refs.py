"""Model and table references: every form parsed, every refusal one line naming what the value is called (no Spark)."""
from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparkship.errors import UsageError
from sparkship.refs import ModelRef, TableRef, parse_ref, parse_table, to_model_ref, to_table_ref

pytestmark = pytest.mark.quick


@pytest.mark.parametrize("text,expected", [
    ("churn", ModelRef("churn")),
    ("churn/3", ModelRef("churn", version=3)),
    ("churn@champion", ModelRef("churn", alias="champion")),
    ("churn/run:job-42", ModelRef("churn", run_id="job-42")),
    ("churn_v2-b/10", ModelRef("churn_v2-b", version=10)),
])
def test_every_form_of_model_reference_parses_and_writes_back(text, expected):
    ref = parse_ref(text)
    assert ref == expected
    assert str(ref) == text
    assert parse_ref(str(ref)) == ref


@pytest.mark.parametrize("text,words", [
    ("", "model reference is empty"),
    ("Churn Model", "model name 'Churn Model' is invalid"),
    ("../up", "model name '..' is invalid"),
    ("churn/0", "'0' is not a version number"),
    ("churn/²", "'²' is not a version number"),
    ("churn/run:", "'run:' is not a version number"),
    ("churn@", "alias '' is invalid"),
    ("churn@2nd", "alias '2nd' is invalid"),
])
def test_a_bad_model_reference_is_one_line_naming_the_fault(text, words):
    with pytest.raises(UsageError) as info:
        parse_ref(text)
    message = str(info.value)
    assert words in message and "\n" not in message


@pytest.mark.parametrize("text,location,version", [
    ("/a/b@12", "/a/b", 12),
    ("/a/b", "/a/b", None),
    ("/a/b@0", "/a/b", 0),
    ("/a/./c/../b/", "/a/b", None),
    ("dbfs:/mnt/t@2", "dbfs:/mnt/t", 2),
    ("s3://bucket/t/", "s3://bucket/t", None),
    ("abfss://c@acct.dfs.core.windows.net/t@4", "abfss://c@acct.dfs.core.windows.net/t", 4),
    ("/a@b/t", "/a@b/t", None),  # an '@' inside a folder name belongs to the path
    ("main.sales.churn@3", "main.sales.churn", 3),
    ("`main`.sales.`churn`", "main.sales.churn", None),
    ("sales.churn", "sales.churn", None),
    ("  /a/b@1  ", "/a/b", 1),
])
def test_every_form_of_table_reference_parses(text, location, version):
    assert parse_table(text) == TableRef(location, version)


def test_a_relative_path_resolves_against_base_dir_or_the_current_folder(tmp_path, monkeypatch):
    assert parse_table("data/t@2", base_dir="/specs") == TableRef("/specs/data/t", 2)
    monkeypatch.chdir(tmp_path)
    assert parse_table("./data.v2") == TableRef(os.path.join(str(tmp_path), "data.v2"))
    assert parse_table("~/t").location == os.path.join(os.path.expanduser("~"), "t")


@pytest.mark.parametrize("text,is_name", [
    ("main.sales.churn", True), ("sales.churn@2", True), ("`my-cat`.sales.churn", True),
    ("/data/churn", False), ("./data.v2", False), ("s3://bucket/t", False), ("dbfs:/mnt/t", False),
])
def test_a_catalog_name_is_told_from_a_path_or_uri(text, is_name):
    assert parse_table(text).is_name is is_name


@pytest.mark.parametrize("text", [
    "/a/b", "/a/b@7", "s3://bucket/t@0", "main.sales.churn@3", "`my-cat`.sales.`churn`@1", "dbfs:/mnt/t",
])
def test_a_table_reference_writes_back_to_an_equal_reference(text):
    ref = parse_table(text)
    assert parse_table(str(ref)) == ref
    assert str(ref).endswith("" if ref.version is None else f"@{ref.version}")


@given(st.integers(min_value=0, max_value=10**12))
def test_any_version_number_round_trips(version):
    ref = TableRef("/data/t", version)
    assert parse_table(str(ref)) == ref


@pytest.mark.parametrize("what", ["--input", "--scores", "spec key 'table'"])
@pytest.mark.parametrize("text,words", [
    ("", "expected a table path, optionally pinned as PATH@VERSION"),
    ("   ", "expected a table path"),
    ("/a/t@²", "version after '@' must be a number >= 0, got '²'"),
    ("/a/t@٣", "got '٣'"),
    ("/a/t@-1", "got '-1'"),
    ("/a/t@latest", "got 'latest'"),
    ("/a/t@", "got ''"),
])
def test_a_bad_table_reference_is_one_line_starting_with_what_it_is_called(what, text, words):
    with pytest.raises(UsageError) as info:
        parse_table(text, what=what)
    message = str(info.value)
    assert message.startswith(f"{what}: ") and words in message and "\n" not in message


def test_a_malformed_catalog_name_is_refused_naming_the_flag():
    with pytest.raises(UsageError) as info:
        parse_table("sales.`churn", what="--input")
    message = str(info.value)
    assert message.startswith("--input 'sales.`churn': not a valid table name") and "\n" not in message


def test_parsed_references_pass_through_and_strings_are_parsed():
    model, table = ModelRef("churn", alias="champion"), TableRef("/data/t", 3)
    assert to_model_ref(model) is model and to_model_ref("churn@champion") == model
    assert to_table_ref(table) is table and to_table_ref("/data/t@3") == table
    with pytest.raises(UsageError, match="^--output: version after '@'"):
        to_table_ref("/data/t@x", what="--output")
