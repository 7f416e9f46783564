"""A sweep of bad inputs through the `sparkship` command (its ``main`` in this process, on the suite's session):
each exits non-zero with ONE line that names the cause and the remedy, prints no traceback, and commits nothing
(the file tree of the home and the test's folder is the same before and after)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli

pytestmark = pytest.mark.seconds(30)

INPUT_SCHEMA = "id long, age double, tenure double, plan string, region string"


def _tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots`` with its size and mtime: what a failed command must leave as it was."""
    seen = {}
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                st = os.lstat(path)
                seen[path] = (st.st_size, st.st_mtime_ns)
    return seen


def _assert_one_line_and_nothing_written(world: Path, args: list[str], *words: str) -> None:
    before = _tree(world)
    out = run_cli(*args)
    assert out.returncode != 0, (args, out.stdout)
    assert "Traceback" not in out.stderr, out.stderr[-4000:]
    # "sparkship: error: ..." from a command, "sparkship tables import: error: ..." from argparse (after its usage)
    lines = out.error_lines()
    assert len(lines) == 1, (args, out.stderr[-4000:])
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert _tree(world) == before, f"{args} changed files"


@pytest.fixture
def world(spark, tmp_path, home) -> Path:
    """The test's folder: a home, a CSV, a spec, a file where a folder would be (the session, which the
    in-process CLI gets, started)."""
    (tmp_path / "rows.csv").write_text("id,age,tenure,plan,region\n1,40.0,12.0,pro,north\n")
    (tmp_path / "blocker").write_text("a file, not a folder")
    (tmp_path / "bad.yml").write_text("name: churn\ntable: [unclosed\n")
    return tmp_path


def _read_only_folder(world: Path) -> str:
    """A folder this process cannot write: a mode-555 folder, or for root (whom modes do not stop) a folder on a
    read-only mount such as /proc/sys."""
    folder = world / "read-only"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    for candidate in (str(folder), "/proc/sys"):
        if os.path.isdir(candidate) and not os.access(candidate, os.W_OK):
            return candidate
    pytest.skip("no read-only folder here: root can write the test's folder and /proc/sys is writable")


def _spec(world: Path, **overrides: str) -> str:
    keys = {"name": "churn", "task": "classification", "table": str(world / "t"), "label": "y",
            "features": "{numeric: [age]}", "model": "{algorithm: logistic_regression}", **overrides}
    path = world / f"spec-{len(os.listdir(world))}.yml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in keys.items()))
    return str(path)


# Refused before Spark starts: (argv, words the one line must hold). "{w}" is the test's folder.
BEFORE_SPARK = [
    (["score", "--model", "Churn Model", "--input", "{w}/in", "--output", "{w}/out", "--keys", "id"], ["Churn Model"]),
    (["score", "--model", "churn/0", "--input", "{w}/in", "--output", "{w}/out", "--keys", "id"], ["version"]),
    (["score", "--model", "churn/²", "--input", "{w}/in", "--output", "{w}/out", "--keys", "id"], ["version"]),
    (["score", "--model", "churn", "--input", "{w}/in@²", "--output", "{w}/out", "--keys", "id"], ["--input", "'²'"]),
    (["score", "--model", "churn", "--input", "{w}/in@٣", "--output", "{w}/out", "--keys", "id"], ["--input", "'٣'"]),
    (["score", "--model", "churn", "--input", "{w}/in", "--output", "{w}/out@3", "--keys", "id"], ["cannot be pinned"]),
    (["score", "--model", "churn", "--input", "{w}/in", "--output", "{w}/in", "--keys", "id"], ["another table"]),
    (["score", "--model", "churn", "--input", "{w}/in", "--output", "{w}/blocker/out", "--keys", "id"],
     ["--output", "is a file, not a folder"]),
    (["score", "--model", "churn", "--input", "{w}/in", "--output", "{w}/out", "--keys", "prediction"], ["--keys"]),
    (["score", "--model", "churn", "--input", "{w}/in", "--output", "{w}/out", "--keys", "id", "--stream"],
     ["--checkpoint"]),
    (["score", "--model", "churn", "--input", "{w}/in", "--output", "{w}/out", "--keys", "id", "--checkpoint",
      "{w}/ck"], ["--stream"]),
    (["score", "--model", "churn", "--input", "sales.`churn", "--output", "{w}/out", "--keys", "id"],
     ["not a valid table name"]),
    (["score", "--model", "churn", "--input", "{w}/in", "--output", "{ro}/scores", "--keys", "id"],
     ["--output", "{ro}", "not writable"]),
    (["tables", "import", "--source", "{w}/rows.csv", "--table", "{ro}/t"], ["--table", "{ro}", "not writable"]),
    (["train", "--spec", "{w}/missing.yml"], ["missing.yml"]),
    (["train", "--spec", "{w}/bad.yml"], ["bad.yml"]),
    (["train", "--spec", "SPEC:colour=red"], ["colour"]),
    (["train", "--spec", "SPEC:table={w}/t@²"], ["'²'"]),
    (["train", "--spec", "SPEC:name=../up"], ["name"]),
    (["train", "--spec", "SPEC:model={algorithm: no_such}"], ["no_such"]),
    (["tables", "import", "--source", "{w}/missing.csv", "--table", "{w}/t"], ["missing.csv", "no such file"]),
    (["tables", "import", "--source", "{w}/rows.csv", "--table", "{w}/blocker/t"], ["is a file, not a folder"]),
    (["tables", "import", "--source", "{w}/rows.csv", "--table", "{w}/t", "--format", "xml"], ["--format"]),
    (["--registry-root", "s3://bucket/registry", "models", "list"], ["mounted filesystem"]),
    (["promote", "--model", "churn/1", "--alias", "champion", "--force"], ["--reason"]),
    (["serve", "--model", "churn@", "--port", "8123"], ["alias"]),
]


def _argv(world: Path, argv: list[str]) -> list[str]:
    out = []
    if any("{ro}" in arg for arg in argv):
        argv = [arg.replace("{ro}", _read_only_folder(world)) for arg in argv]
    for arg in argv:
        if arg.startswith("SPEC:"):
            key, value = arg[len("SPEC:"):].split("=", 1)
            arg = _spec(world, **{key: value.replace("{w}", str(world))})
        out.append(arg.replace("{w}", str(world)))
    return out


@pytest.mark.parametrize("argv,words", BEFORE_SPARK, ids=[" ".join(a[:3]) + f" #{i}" for i, (a, _) in
                                                         enumerate(BEFORE_SPARK)])
def test_a_bad_input_before_spark_starts(world, argv, words):
    args = _argv(world, argv)
    ro = _read_only_folder(world) if any("{ro}" in w for w in words) else ""
    _assert_one_line_and_nothing_written(world, args, *[w.replace("{w}", str(world)).replace("{ro}", ro)
                                                        for w in words])


def test_bad_inputs_that_need_the_data(spark, world):
    """Missing columns, wrong types, an unknown model, a damaged model and a vacuumed version: each refused in
    one line after reading what it needs, before anything is written."""
    from deltalake import DeltaTable

    from sparkship import artifacts
    from sparkship.config import Settings
    from sparkship.registry import Registry
    from tests.helpers.scoring import fit_model, make_rows, manifest_for

    settings = Settings.resolve(home=os.environ["SPARKSHIP_HOME"])
    staged = artifacts.stage(fit_model(spark), manifest_for(spark), settings.models_root)
    version = Registry(settings).register("churn", staged)
    rows = spark.createDataFrame(make_rows(20, seed=3), INPUT_SCHEMA)
    rows.write.format("delta").save(str(world / "in"))
    rows.drop("tenure").write.format("delta").save(str(world / "no_tenure"))
    rows.withColumn("age", rows["plan"]).write.format("delta").save(str(world / "string_age"))
    for _ in range(2):
        rows.write.format("delta").mode("overwrite").save(str(world / "vacuumed"))
    assert DeltaTable(str(world / "vacuumed")).vacuum(retention_hours=0, enforce_retention_duration=False,
                                                      dry_run=False)
    score = ["score", "--model", "churn", "--output", str(world / "out"), "--keys", "id", "--input"]
    _assert_one_line_and_nothing_written(world, [*score, str(world / "no_tenure")], "tenure")
    _assert_one_line_and_nothing_written(world, [*score, str(world / "string_age")], "age")
    _assert_one_line_and_nothing_written(world, [*score, str(world / "vacuumed@0")], "version 0", "VACUUM")
    _assert_one_line_and_nothing_written(world, [*score[:2], "nosuch", *score[3:], str(world / "in")], "nosuch")
    damaged = next(p for p in (Path(version.artifact) / "model").rglob("part-*") if p.is_file())
    damaged.write_bytes(damaged.read_bytes() + b" ")  # a model file changed after registration
    _assert_one_line_and_nothing_written(world, [*score, str(world / "in")], damaged.name)
