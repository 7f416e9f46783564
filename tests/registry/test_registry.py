"""The Delta-backed model registry and verified artifacts: real Spark models, real Delta tables, real processes."""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil

import pytest
from chispa import assert_approx_df_equality
from pyspark.ml import Pipeline
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array

from sparkship import artifacts
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.errors import IntegrityError, NotFoundError, SparkshipError, UsageError
from sparkship.refs import parse_ref
from sparkship.registry import Registry

pytestmark = pytest.mark.seconds(41)


@pytest.fixture(autouse=True)
def _on_both_engines(engine):
    """Every test here runs on delta-spark and on the delta-rs data source (conftest.engine)."""



@pytest.fixture(scope="module")
def tiny_model(spark):
    df = spark.createDataFrame([(float(i % 10), float((i * 7) % 5), float(i % 10 > 4)) for i in range(120)],
                               "a double, b double, label double")
    model = Pipeline(stages=[VectorAssembler(inputCols=["a", "b"], outputCol="features"),
                             LogisticRegression(maxIter=10)]).fit(df)
    return model, df


def _manifest(name: str) -> dict:
    return {"name": name, "task": "classification", "label": "label", "algorithm": "logistic_regression",
            "metrics": {"accuracy": 0.9},
            "signature": {"inputs": [{"name": "a", "type": "double"}, {"name": "b", "type": "double"}]},
            "training": {"table": "/nowhere", "table_version": 0}}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.resolve(home=str(tmp_path / "home"))


def _register(settings: Settings, model, name: str = "churn", run_id: str | None = None):
    staged = artifacts.stage(model, _manifest(name), settings.models_root)
    return Registry(settings).register(name, staged, run_id=run_id)


def test_register_load_by_every_kind_of_reference(spark, settings, tiny_model):
    model, df = tiny_model
    reg = Registry(settings)
    v1 = _register(settings, model, run_id="run-1")
    v2 = _register(settings, model, run_id="run-2")
    assert (v1.version, v2.version) == (1, 2)
    assert v2.artifact == os.path.join(settings.models_root, "churn", "2")
    assert sorted(os.listdir(v2.artifact)) == ["REGISTERED", "manifest.json", "model"]
    reg.set_alias("churn", "champion", 1)
    assert reg.get(parse_ref("churn")).version == 2
    assert reg.get(parse_ref("churn/1")).version == 1
    assert reg.get(parse_ref("churn@champion")).version == 1
    assert reg.get(parse_ref("churn/run:run-2")).version == 2
    mv, loaded = reg.load_model(parse_ref("churn@champion"))
    expected = model.transform(df).select(vector_to_array("probability").alias("p"), "prediction")
    actual = loaded.transform(df).select(vector_to_array("probability").alias("p"), "prediction")
    assert_approx_df_equality(actual, expected, precision=1e-12)
    with pytest.raises(NotFoundError, match="has no version 9"):
        reg.get(parse_ref("churn/9"))
    with pytest.raises(NotFoundError, match="no alias 'staging'"):
        reg.get(parse_ref("churn@staging"))
    with pytest.raises(NotFoundError, match="not registered"):
        reg.get(parse_ref("other"))


def _register_in_process(home: str, staged: str, index: int) -> int:
    from sparkship.config import Settings
    from sparkship.registry import Registry

    return Registry(Settings.resolve(home=home)).register("churn", staged, run_id=f"proc-{index}").version


def test_concurrent_registrations_get_versions_one_to_n(settings, tiny_model):
    model, _ = tiny_model
    first = artifacts.stage(model, _manifest("churn"), settings.models_root)
    staged = [first] + [shutil.copytree(first, f"{first}-{i}") for i in range(1, 6)]
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        versions = pool.starmap(_register_in_process, [(settings.home, s, i) for i, s in enumerate(staged)])
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]
    reg = Registry(settings)
    assert [mv.version for mv in reg.versions("churn")] == [1, 2, 3, 4, 5, 6]
    for mv in reg.versions("churn"):  # each version got its own artifact folder, verified intact
        assert artifacts.verify(mv.artifact)["name"] == "churn"
    assert len(reg.events("churn", "registered")) == 6


def test_alias_moves_are_compare_and_set_and_recorded(settings, tiny_model):
    model, _ = tiny_model
    for _ in range(3):
        _register(settings, model)
    reg = Registry(settings)
    reg.set_alias("churn", "champion", 1, expect_version=0)
    with pytest.raises(SparkshipError, match="points at 1, not the expected 2"):
        reg.set_alias("churn", "champion", 3, expect_version=2)
    assert reg.alias_version("churn", "champion") == 1
    reg.set_alias("churn", "champion", 3, expect_version=1, reason="better")
    move = reg.rollback("churn")
    assert (move.version, move.previous_version) == (1, 3)
    history = reg.alias_history("churn", "champion")
    assert [(h["version"], h["previous_version"], h["action"]) for h in history] == [
        (1, None, "set"), (3, 1, "set"), (1, 3, "rollback")]
    with pytest.raises(NotFoundError):
        reg.set_alias("churn", "champion", 7)


@pytest.mark.parametrize("damage", ["edit_byte", "truncate", "remove", "add"])
def test_a_damaged_artifact_is_refused_naming_the_file(settings, tiny_model, damage):
    model, _ = tiny_model
    mv = _register(settings, model)
    data_dir = os.path.join(mv.artifact, "model", "stages")
    target = next(os.path.join(d, f) for d, _, fs in sorted(os.walk(data_dir)) for f in sorted(fs)
                  if f.endswith(".parquet"))
    rel = os.path.relpath(target, mv.artifact)
    if damage == "edit_byte":
        with open(target, "r+b") as fh:
            fh.seek(10)
            byte = fh.read(1)
            fh.seek(10)
            fh.write(bytes([byte[0] ^ 0xFF]))
        message = f"file {rel} was changed"
    elif damage == "truncate":
        with open(target, "r+b") as fh:
            fh.truncate(os.path.getsize(target) // 2)
        message = f"file {rel} was changed"
    elif damage == "remove":
        os.remove(target)
        message = f"file {rel} is missing"
    else:
        with open(os.path.join(data_dir, "extra.txt"), "w") as fh:
            fh.write("x")
        message = "unexpected file model/stages/extra.txt"
    with pytest.raises(IntegrityError, match=message.replace(".", r"\.")):
        Registry(settings).load_model(parse_ref("churn"))


@pytest.mark.parametrize("bad", ["../evil", "a/b", "/abs", "Upper", "", "x..y/"])
def test_bad_model_names_are_refused_before_any_write(settings, tiny_model, bad):
    with pytest.raises(UsageError):
        Registry(settings).register(bad, "/nonexistent")
    assert not os.path.exists(settings.registry_root)


def test_cli_models_and_alias(settings, tiny_model, capsys, monkeypatch):
    model, _ = tiny_model
    monkeypatch.setenv("SPARKSHIP_HOME", settings.home)
    _register(settings, model)
    _register(settings, model)
    assert main(["alias", "set", "churn", "champion", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "churn", "alias": "champion", "version": 2,
                                                   "previous_version": None}
    assert main(["alias", "set", "churn", "champion", "1", "--expect-version", "1", "--json"]) == 1
    assert "not the expected 1" in json.loads(capsys.readouterr().out)["error"]
    assert main(["models", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"] == [
        {"name": "churn", "versions": 2, "latest_version": 2, "aliases": {"champion": 2}}]
    assert main(["models", "show", "churn@champion", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["version"], shown["aliases"], shown["metrics"]) == (2, ["champion"], {"accuracy": 0.9})
    assert main(["models", "history", "churn", "--json"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in history["versions"]] == [1, 2]
    assert [e["event"] for e in history["events"]] == ["registered", "registered", "alias_moved"]
    assert main(["models", "show", "../etc", "--json"]) == 2


# --- registration order: a version is visible only once its artifact is complete ----------------------------

REGISTER_POINTS = ["register:renamed", "register:committed"]


@pytest.mark.parametrize("point", REGISTER_POINTS)
def test_kill_9_during_a_registration_never_exposes_a_version_without_its_artifact(settings, tiny_model, tmp_path,
                                                                                    point):
    from tests.helpers.reliability import kill_paused, start_registration_paused  # noqa: E402 - tests/ helper

    model, _ = tiny_model
    reg = Registry(settings)
    _register(settings, model, run_id="first")
    staged = artifacts.stage(model, _manifest("churn"), settings.models_root)
    proc = start_registration_paused(settings.home, staged, point, str(tmp_path))
    kill_paused(proc)

    # Whatever the point, NAME resolves to a version whose artifact is complete and verified.
    latest = reg.get(parse_ref("churn"))
    assert artifacts.verify(latest.artifact)["name"] == "churn"
    committed = point == "register:committed"
    assert [mv.version for mv in reg.versions("churn")] == ([1, 2] if committed else [1])
    assert latest.run_id == ("killed" if committed else "first")

    # The next registration is neither blocked nor corrupted by what the dead one left: it takes the next
    # number (the orphan's, when the dead one never committed), and the orphan is moved aside whole.
    after = _register(settings, model, run_id="next")
    assert after.version == latest.version + 1
    assert [mv.version for mv in reg.versions("churn")] == list(range(1, after.version + 1))
    assert reg.get(parse_ref("churn")).run_id == "next" and artifacts.verify(after.artifact)["name"] == "churn"
    orphans = os.path.join(settings.models_root, ".orphaned")
    moved = sorted(os.listdir(orphans)) if os.path.isdir(orphans) else []
    assert len(moved) == (0 if committed else 1)
    for folder in moved:  # the dead registration's artifact, intact, out of the way
        assert artifacts.verify(os.path.join(orphans, folder))["name"] == "churn"
    for mv in reg.versions("churn"):
        assert artifacts.verify(mv.artifact)["name"] == "churn"


def test_a_registered_folder_beyond_the_table_is_a_lost_commit_but_an_unregistered_one_is_not(settings, tiny_model):
    model, _ = tiny_model
    reg = Registry(settings)
    first = _register(settings, model)
    orphan = os.path.join(settings.models_root, "churn", "2")
    shutil.copytree(first.artifact, orphan)
    os.remove(os.path.join(orphan, "REGISTERED"))
    assert [mv.version for mv in reg.versions("churn")] == [1]  # an orphan is not a version, nor an error
    with open(os.path.join(orphan, "REGISTERED"), "w") as fh:
        fh.write("churn/2\n")
    with pytest.raises(IntegrityError, match="lost a commit"):
        reg.versions("churn")
