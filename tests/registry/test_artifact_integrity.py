"""Integrity of what is loaded: the manifest's own sha256 kept in the registry row, stage folders resolved inside
the model, and registries written before the digest was recorded. Real Spark models, real Delta tables."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from datetime import datetime, timezone

import pyarrow as pa
import pytest
from pyspark.ml import Pipeline
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import VectorAssembler

from sparkship import artifacts, serving
from sparkship.config import Settings
from sparkship.errors import IntegrityError
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from sparkship.serving.source import resolve
from sparkship.tables import metadata

pytestmark = pytest.mark.seconds(25)

NAME = "churn"


@pytest.fixture(scope="module")
def tiny_model(spark):
    df = spark.createDataFrame([(float(i % 10), float((i * 7) % 5), float(i % 10 > 4)) for i in range(120)],
                               "a double, b double, label double")
    return Pipeline(stages=[VectorAssembler(inputCols=["a", "b"], outputCol="features"),
                            LogisticRegression(maxIter=5)]).fit(df)


def _manifest() -> dict:
    return {"name": NAME, "task": "classification", "label": "label", "labels": ["0", "1"],
            "algorithm": "logistic_regression", "metrics": {"accuracy": 0.9},
            "signature": {"inputs": [{"name": "a", "type": "double"}, {"name": "b", "type": "double"}]},
            "training": {"table": "/nowhere", "table_version": 0}}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.resolve(home=str(tmp_path / "home"))


def _register(settings: Settings, model):
    return Registry(settings).register(NAME, artifacts.stage(model, _manifest(), settings.models_root))


def _edit_manifest(artifact: str, edit) -> None:  # noqa: ANN001
    path = os.path.join(artifact, artifacts.MANIFEST)
    with open(path) as fh:
        manifest = json.load(fh)
    edit(artifact, manifest)
    with open(path, "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)


def _replace_a_file(artifact: str, manifest: dict) -> None:
    """Change a model file and its checksum in the manifest alike: the manifest alone cannot tell."""
    rel = sorted(manifest["files"])[0]
    with open(os.path.join(artifact, rel), "ab") as fh:
        fh.write(b" ")
    with open(os.path.join(artifact, rel), "rb") as fh:
        manifest["files"][rel] = hashlib.sha256(fh.read()).hexdigest()


def _one_line_integrity_error(call, artifact: str) -> None:  # noqa: ANN001
    with pytest.raises(IntegrityError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    assert f"{artifact}: file manifest.json was changed after registration" in message


# --- the manifest's own digest --------------------------------------------------------------------------------

EDITS = {
    "labels": lambda a, m: m.update(labels=["1", "0"]),  # swapped: every prediction would be reported inverted
    "signature": lambda a, m: m["signature"]["inputs"].reverse(),
    "task": lambda a, m: m.update(task="regression"),
    "files": _replace_a_file,
}


@pytest.mark.parametrize("field", sorted(EDITS))
def test_an_edited_manifest_is_refused_naming_the_file(settings, tiny_model, field):
    one = _register(settings, tiny_model)
    two = _register(settings, tiny_model)
    with open(os.path.join(one.artifact, artifacts.MANIFEST), "rb") as fh:
        assert one.manifest_sha256 == hashlib.sha256(fh.read()).hexdigest()
    _edit_manifest(one.artifact, EDITS[field])
    assert artifacts.verify(one.artifact)  # the manifest alone still vouches for itself ...
    reg = Registry(settings)
    # ... but not to the registry: every way a registered version is loaded refuses it.
    _one_line_integrity_error(lambda: reg.load_model(parse_ref(f"{NAME}/1")), one.artifact)
    _one_line_integrity_error(lambda: reg.manifest(parse_ref(f"{NAME}/1")), one.artifact)
    _one_line_integrity_error(lambda: reg.get(parse_ref(f"{NAME}/1")), one.artifact)
    # the JVM-free server's path
    _one_line_integrity_error(lambda: resolve(parse_ref(f"{NAME}/1"), settings), one.artifact)
    with pytest.raises(IntegrityError):
        reg.set_alias(NAME, "champion", 1)
    assert reg.alias_version(NAME, "champion") is None
    # The untouched version loads, served and in Spark alike.
    assert reg.load_model(parse_ref(NAME))[0].version == two.version == 2
    assert resolve(parse_ref(f"{NAME}/2"), settings).version == 2


def test_a_version_loaded_again_is_reused_only_while_its_files_still_verify(spark, settings, tiny_model):
    """The second load of a version in one session gives back the pipeline read the first time; the files are
    checked on every load all the same, so one changed after the first load is refused."""
    one, two = _register(settings, tiny_model), _register(settings, tiny_model)
    reg = Registry(settings)
    first = reg.load_model(parse_ref(f"{NAME}/1"))[1]
    assert reg.load_model(parse_ref(f"{NAME}/1"))[1] is first
    assert artifacts.load(one.artifact) is first
    assert reg.load_model(parse_ref(f"{NAME}/2"))[1] is not first  # another version: another folder
    rel = sorted(artifacts.verify(one.artifact)["files"])[0]
    with open(os.path.join(one.artifact, rel), "ab") as fh:
        fh.write(b" ")
    with pytest.raises(IntegrityError, match=f"file {rel} was changed"):
        reg.load_model(parse_ref(f"{NAME}/1"))
    assert two.version == 2


# --- stage folders stay inside the model ----------------------------------------------------------------------


def _saved(tiny_model, tmp_path) -> tuple[str, list[str]]:  # noqa: ANN001
    """The model saved by Spark, and its stage uids."""
    path = str(tmp_path / "model")
    tiny_model.write().save(path)
    return path, [st.uid for st in tiny_model.stages]


def _set_stage_uids(path: str, uids: list[str]) -> None:
    meta = glob.glob(os.path.join(path, "metadata", "part-*"))[0]
    with open(meta) as fh:
        raw = json.loads(fh.readline())
    raw["paramMap"]["stageUids"] = uids
    with open(meta, "w") as fh:
        fh.write(json.dumps(raw) + "\n")


def test_stage_folders_of_a_sound_model_load(tiny_model, tmp_path):
    path, uids = _saved(tiny_model, tmp_path)
    scorer = serving.load(path)
    assert [st["uid"] for st in scorer.describe()["stages"]] == uids


@pytest.mark.parametrize("escape", ["through_a_real_stage", "parent", "dot_dot", "absolute"])
def test_a_stage_uid_that_names_a_path_is_refused_as_corrupt(tiny_model, tmp_path, escape):
    path, uids = _saved(tiny_model, tmp_path)
    # A saved stage outside the model, where a path in the uid would lead.
    shutil.copytree(glob.glob(os.path.join(path, "stages", f"1_{uids[1]}"))[0], str(tmp_path / "outside"))
    bad = {
        "through_a_real_stage": f"{uids[0]}/../../../outside",  # a glob on "*_<uid>" reached ./outside
        "parent": "../../outside",
        "dot_dot": "..",
        "absolute": str(tmp_path / "outside"),
    }[escape]
    _set_stage_uids(path, [uids[0], bad])
    with pytest.raises(IntegrityError) as caught:
        serving.load(path)
    message = str(caught.value)
    assert "\n" not in message and "not a plain name" in message and "corrupt" in message and repr(bad) in message


def test_a_stage_folder_that_links_outside_the_model_is_refused_as_corrupt(tiny_model, tmp_path):
    path, uids = _saved(tiny_model, tmp_path)
    stage = os.path.join(path, "stages", f"1_{uids[1]}")
    outside = str(tmp_path / "outside")
    shutil.move(stage, outside)
    os.symlink(outside, stage)
    with pytest.raises(IntegrityError) as caught:
        serving.load(path)
    message = str(caught.value)
    assert "\n" not in message and f"resolves to {os.path.realpath(outside)}, outside the model" in message


# --- registries written before the digest and the event sequence -----------------------------------------------

OLD_VERSIONS = pa.schema([
    ("name", pa.string()), ("version", pa.int64()), ("artifact", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")), ("run_id", pa.string()), ("task", pa.string()),
    ("algorithm", pa.string()), ("table", pa.string()), ("table_version", pa.int64()), ("metrics_json", pa.string()),
])
OLD_EVENTS = pa.schema([
    ("name", pa.string()), ("version", pa.int64()), ("event", pa.string()), ("at", pa.timestamp("us", tz="UTC")),
    ("run_id", pa.string()), ("details_json", pa.string()),
])


def _old_registry(settings: Settings, model) -> str:  # noqa: ANN001
    """Version 1 of NAME and its event, as a sparkship without manifest_sha256 and seq wrote them."""
    staged = artifacts.stage(model, _manifest(), settings.models_root)
    artifact = os.path.join(settings.models_root, NAME, "1")
    os.makedirs(os.path.dirname(artifact))
    os.rename(staged, artifact)
    with open(os.path.join(artifact, "REGISTERED"), "w") as fh:
        fh.write(f"{NAME}/1\n")
    reg = Registry(settings)
    at = datetime.now(timezone.utc)
    metadata.append_arrow(reg.versions_path, pa.Table.from_pylist([{
        "name": NAME, "version": 1, "artifact": artifact, "created_at": at, "run_id": "old", "task": "classification",
        "algorithm": "logistic_regression", "table": "/nowhere", "table_version": 0, "metrics_json": "{}",
    }], schema=OLD_VERSIONS), expected_version=-1)
    metadata.append_arrow(reg.events_path, pa.Table.from_pylist([{
        "name": NAME, "version": 1, "event": "registered", "at": at, "run_id": "old", "details_json": "{}",
    }], schema=OLD_EVENTS), expected_version=-1)
    return artifact


def test_a_registry_written_before_the_digest_loads_and_is_upgraded_by_its_next_write(engine, settings, tiny_model):
    from deltalake import DeltaTable

    old = _old_registry(settings, tiny_model)
    reg = Registry(settings)
    mv, _ = reg.load_model(parse_ref(NAME))
    assert (mv.version, mv.manifest_sha256) == (1, None)  # nothing recorded: the check is skipped for this row
    assert [(e["event"], e["seq"]) for e in reg.events(NAME)] == [("registered", None)]

    two = _register(settings, tiny_model)
    assert two.version == 2 and two.manifest_sha256 == artifacts.manifest_digest(two.artifact)
    assert "manifest_sha256" in DeltaTable(reg.versions_path).schema().to_arrow().names
    assert "seq" in DeltaTable(reg.events_path).schema().to_arrow().names
    assert [mv.version for mv in reg.versions(NAME)] == [1, 2]
    events = reg.events(NAME)
    assert [(e["version"], e["seq"] is None) for e in events] == [(1, True), (2, False)]  # old events first
    assert events[1]["seq"] == DeltaTable(reg.events_path).version()

    # The new row's digest is checked; the old row, which has none, loads as it always did.
    _edit_manifest(two.artifact, EDITS["labels"])
    _one_line_integrity_error(lambda: reg.load_model(parse_ref(f"{NAME}/2")), two.artifact)
    _edit_manifest(old, EDITS["labels"])
    assert reg.manifest(parse_ref(f"{NAME}/1"))[1]["labels"] == ["1", "0"]
