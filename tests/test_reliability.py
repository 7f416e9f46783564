"""Reliability: idempotent re-runs, kill -9 at random points, concurrent registrations, damaged tables, paths.

Everything runs for real on this machine: the session's Spark, Delta tables on disk through sparkship.tables,
`sparkship score` subprocesses killed with SIGKILL, registrations from spawned processes. The model is
tests/helpers/scoring.py's churn pipeline (Imputer, StringIndexers, OneHotEncoder, VectorAssembler, LR).
"""
from __future__ import annotations

import multiprocessing
import os
import random
import shutil
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from chispa import assert_df_equality

from sparkship import artifacts, scoring, tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.errors import IntegrityError, UsageError
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from sparkship.scoring_state import ScoringState
from sparkship.tables import files as delta_files
from tests.helpers.reliability import (  # noqa: E402 - tests/ helper
    commit_actions,
    commit_count,
    register_staged,
    run_score,
    tree,
)
from tests.helpers.scoring import (
    MODEL,
    assert_same_scores,
    fit_model,
    make_rows,
    manifest_for,
    register,
)

pytestmark = [pytest.mark.timeout(600), pytest.mark.seconds(143)]

INPUT_ARROW = pa.schema([("id", pa.int64()), ("age", pa.float64()), ("tenure", pa.float64()),
                         ("plan", pa.string()), ("region", pa.string())])
RUN_COLUMNS = ("scored_at", "run_id")  # what differs between two runs that score the same rows
KILL_TRIALS = 5
MAX_TRIALS = 8  # a run that happens to finish before its kill point does not count as a kill
SEED = 20261127


def append_input(path: str, rows: list[tuple[Any, ...]]) -> int:
    """Append rows to the input table in one commit (Arrow through delta-rs: no Spark job)."""
    return tables.append_arrow(path, pa.Table.from_pylist([dict(zip(INPUT_ARROW.names, r)) for r in rows],
                                                          schema=INPUT_ARROW))


def scorable_ids(path: str, version: int | None = None) -> list[int]:
    """Keys of the input rows the model can score (the test data's only bad rows have a null key)."""
    if version is not None and version < 0:
        return []
    ids = tables.read_arrow(path, version=version, columns=["id"]).column("id").to_pylist()
    return sorted(i for i in ids if i is not None)


@pytest.fixture(scope="module")
def fitted(spark):
    return fit_model(spark)


@pytest.fixture(scope="module")
def workspace(spark, fitted, tmp_path_factory) -> Settings:
    """A home with churn/1 registered."""
    settings = Settings.resolve(home=str(tmp_path_factory.mktemp("reliability") / "home"))
    register(spark, fitted, settings)
    return settings


@pytest.fixture(scope="module")
def scored(spark, workspace, tmp_path_factory) -> tuple[str, str]:
    """(input, output) after one scoring run: 60 clean rows, a null key and an unseen strict category."""
    folder = tmp_path_factory.mktemp("scored")
    src, out = str(folder / "events"), str(folder / "scores")
    append_input(src, make_rows(60, 41) + [(None, 30.0, 5.0, "basic", "north"), (9001, 30.0, 5.0, "pro", "west")])
    result = scoring.score(spark, workspace, MODEL, src, out, ["id"], run_id="first")
    assert (result.rows_in, result.scored, result.quarantined) == (62, 60, 2)
    return src, out


# --- 1. re-running a scoring job ------------------------------------------------------------------------------


def _stable(df):  # noqa: ANN001, ANN202 - the output without what describes the run itself, in key order
    return df.drop(*RUN_COLUMNS).orderBy("id")


def test_rerunning_scoring_three_times_never_duplicates_rows(spark, workspace, scored):
    src, out = scored
    expected = _stable(tables.read(spark, out)).localCheckpoint()
    expected_quarantine = _stable(tables.read(spark, out + "_quarantine")).localCheckpoint()
    version = tables.version(spark, out)

    # An incremental re-run (nothing new), then two full re-runs, one of them through the CLI.
    for attempt, full, via_cli in [(1, False, False), (2, True, False), (3, True, True)]:
        run_id = f"rerun-{attempt}"
        if via_cli:
            assert main(["--home", workspace.home, "score", "--model", MODEL, "--input", src, "--output", out,
                         "--keys", "id", "--full", "--run-id", run_id, "-q"]) == 0
        else:
            result = scoring.score(spark, workspace, MODEL, src, out, ["id"], full=full, run_id=run_id)
            assert result.rows_in == result.scored + result.quarantined
            assert (result.rows_in, result.scored, result.quarantined) == ((62, 60, 2) if full else (0, 0, 0))
        got = tables.read(spark, out)
        assert got.count() == 60 and got.select("id").distinct().count() == 60, f"attempt {attempt}"
        assert_df_equality(_stable(got), expected, ignore_nullable=True)
        assert_df_equality(_stable(tables.read(spark, out + "_quarantine")), expected_quarantine,
                           ignore_nullable=True)
        run_ids = {r["run_id"] for r in got.select("run_id").distinct().collect()}
        if full:  # replaced whole, in one commit
            assert run_ids == {run_id} and tables.version(spark, out) == version + 1
            version += 1
        else:  # untouched
            assert run_ids == {"first"} and tables.version(spark, out) == version


# --- 2. kill -9 at random points ------------------------------------------------------------------------------


def _touched_partitions(table: str, version: int) -> set[str]:
    """The partition folders of the files the commit of ``version`` added or removed."""
    actions = commit_actions(table, version)
    return {os.path.dirname((a.get("add") or a.get("remove"))["path"]) for a in actions if "add" in a or "remove" in a}


def _check_trial(label: str, run_id: str, latest: Any, src: str, out: str, versions_before: tuple[int, int],
                 rows_before: pa.Table) -> str:
    """After one trial the output is unchanged (the run left unfinished), or moved by exactly one commit that holds
    the run's whole batch; ``label`` and what was seen, for the report."""
    quarantine = out + "_quarantine"
    this_run = latest.unfinished or latest.committed
    moved = tables.table_version(out) - versions_before[0]
    q_moved = tables.table_version(quarantine) - versions_before[1]
    if moved == 0:
        label += "output unchanged"
        assert latest.unfinished is not None and latest.unfinished.run_id == run_id, label
        assert tables.read_arrow(out).sort_by("id").equals(rows_before), label
        assert q_moved == 0, label
        return label
    assert moved == 1, label + f"the output moved by {moved} commits"
    assert this_run.run_id == run_id, label
    stage = "state not committed" if latest.unfinished is not None else "state committed"
    label += f"output +1 commit, quarantine +{q_moved}, {stage}"
    batch = this_run.scoring_batch
    # One commit, touching only this run's partition, holding every row of the run's range.
    assert _touched_partitions(out, versions_before[0] + 1) == {f"scoring_batch={batch}"}, label
    output = tables.read_arrow(out)
    assert sorted(output.column("id").to_pylist()) == scorable_ids(src), label  # the whole input, each key once
    in_batch = output.filter(pc.equal(output.column("scoring_batch"), batch)).column("id")
    expected_batch = sorted(set(scorable_ids(src)) - set(scorable_ids(src, this_run.from_version)))
    assert sorted(in_batch.to_pylist()) == expected_batch, label
    assert q_moved in (0, 1), label
    if latest.unfinished is None:
        assert q_moved == 1 and this_run.rows_in == this_run.scored + this_run.quarantined, label
    return label


@pytest.mark.e2e
def test_kill_9_at_random_points_never_leaves_a_partial_output(spark, fitted, workspace, tmp_path, record_property):
    """SIGKILL `sparkship score` (its whole process group) at seeded random points of its work.

    One incremental run is measured first: the time from its pending state commit to its committed one is the
    window the kill points are drawn from, one in each fifth of it. After each kill the output is unchanged, or
    moved by exactly one commit that holds the whole batch; the last run then leaves exact counts.
    """
    rng = random.Random(SEED)
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    quarantine, state_path = out + "_quarantine", out + "_state"
    args = ["--model", MODEL, "--input", src, "--output", out, "--keys", "id"]
    appended: list[tuple[Any, ...]] = []

    def grow(step: int) -> None:
        rows = make_rows(400, 100 + step, first_id=1000 * step) + [(None, 30.0, 5.0, "basic", "north")]
        append_input(src, rows)
        appended.extend(rows)

    grow(0)
    scoring.score(spark, workspace, MODEL, src, out, ["id"], run_id="first")  # full; the killed runs are incremental
    grow(1)
    measured = run_score(workspace.home, args + ["--run-id", "measure"], state_path, str(tmp_path / "m.log"), None)
    assert measured.returncode == 0 and len(measured.state_commits_s) == 2, measured.log
    window = measured.state_commits_s[1] - measured.state_commits_s[0]
    assert scorable_ids(out) == scorable_ids(src)

    # Stratified: one kill point in each fifth of the window, in a seeded random order.
    planned = [(i + rng.random()) / KILL_TRIALS for i in range(KILL_TRIALS)]
    rng.shuffle(planned)
    outcomes: list[str] = []
    trial = kills = 0
    while kills < KILL_TRIALS and trial < MAX_TRIALS:
        trial += 1
        grow(1 + trial)
        out_before, q_before = tables.table_version(out), tables.table_version(quarantine)
        rows_before = tables.read_arrow(out).sort_by("id")
        delay = (planned.pop() if planned else rng.random()) * window
        run = run_score(workspace.home, args + ["--run-id", f"trial-{trial}"], state_path,
                        str(tmp_path / f"t{trial}.log"), delay)
        assert run.killed or run.returncode == 0, run.log
        kills += run.killed
        latest = ScoringState(state_path).latest(MODEL, src, out)
        label = (f"trial {trial}: killed {delay:.2f}s after its pending row: " if run.killed else
                 f"trial {trial}: finished before its kill point ({delay:.2f}s after its pending row): ")
        outcomes.append(_check_trial(label, f"trial-{trial}", latest, src, out, (out_before, q_before), rows_before))
    report = "\n".join(outcomes)
    record_property("kill_outcomes", report)
    print(f"\nkill window {window:.2f}s (measured run: {measured.ended_after_s:.1f}s in all)\n{report}")
    assert kills >= KILL_TRIALS, report

    grow(2 + trial)
    _check_final_run(spark, fitted, workspace, src, out, appended, report)


def _check_final_run(spark, fitted, workspace, src: str, out: str, appended: list[tuple[Any, ...]],
                     report: str) -> None:
    """A last run after the kills leaves exact counts, a committed state and every row as transform gives it."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    final = scoring.score(spark, workspace, MODEL, src, out, ["id"], run_id="final")
    assert final.rows_in == final.scored + final.quarantined, report
    output, q = tables.read(spark, out), tables.read(spark, out + "_quarantine")
    n_in, n_q = len(appended), sum(1 for r in appended if r[0] is None)
    assert (tables.read(spark, src).count(), q.count()) == (n_in, n_q), report
    assert output.count() == n_in - n_q, report
    assert output.select("id").distinct().count() == output.count(), report
    latest = ScoringState(out + "_state").latest(MODEL, src, out)
    assert latest.unfinished is None and latest.committed.input_version == tables.version(spark, src), report
    # The killed runs left no wrong score behind: every row is what PipelineModel.transform gives.
    want = fitted.transform(tables.read(spark, src).where(F.col("id").isNotNull())).select(
        "id", "prediction", vector_to_array("probability").cast("array<double>").alias("probability")).orderBy("id")
    assert_same_scores(output.select("id", "prediction", "probability").orderBy("id"), want)


# --- 3. concurrent registrations ------------------------------------------------------------------------------


@pytest.mark.e2e
def test_eight_concurrent_registrations_get_versions_one_to_eight(spark, fitted, tmp_path):
    settings = Settings.resolve(home=str(tmp_path / "home"))
    first = artifacts.stage(fitted, manifest_for(spark), settings.models_root)
    staged = [first] + [shutil.copytree(first, f"{first}-{i}") for i in range(1, 8)]
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        versions = pool.starmap(register_staged, [(settings.home, MODEL, s, f"proc-{i}") for i, s in enumerate(staged)])

    assert sorted(versions) == list(range(1, 9))
    reg = Registry(settings)
    listed = reg.versions(MODEL)
    assert [mv.version for mv in listed] == list(range(1, 9))
    assert {mv.run_id: mv.version for mv in listed} == {f"proc-{i}": v for i, v in enumerate(versions)}
    assert commit_count(reg.versions_path) == 8  # one commit per registration, none lost or doubled
    for mv in listed:  # each version owns its artifact folder, intact
        assert mv.artifact == os.path.join(settings.models_root, MODEL, str(mv.version))
        assert artifacts.verify(mv.artifact)["name"] == MODEL
    assert not any(os.path.exists(s) for s in staged)
    events = reg.events(MODEL, "registered")
    assert sorted(e["version"] for e in events) == list(range(1, 9))
    assert {(e["run_id"], e["version"]) for e in events} == {(f"proc-{i}", v) for i, v in enumerate(versions)}


# --- 5. damaged registry and score tables ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_versions(spark, fitted, tmp_path_factory) -> Settings:
    """A registry with churn/1..3 (three commits of model_versions), real artifacts."""
    settings = Settings.resolve(home=str(tmp_path_factory.mktemp("three") / "home"))
    staged = artifacts.stage(fitted, manifest_for(spark), settings.models_root)
    reg = Registry(settings)
    for i in (1, 2):
        reg.register(MODEL, shutil.copytree(staged, f"{staged}-{i}"))
    reg.register(MODEL, staged)
    return settings


def _copy_registry(settings: Settings, tmp_path) -> Settings:  # noqa: ANN001
    """The same artifacts with a copy of the registry tables, to damage."""
    root = str(tmp_path / "registry")
    shutil.copytree(settings.registry_root, root)
    return Settings.resolve(home=settings.home, registry_root=root, models_root=settings.models_root)


def _data_files(table: str) -> list[str]:
    """Data files of the table's latest version, relative to it, in log order."""
    return [rel for rel, _, _ in delta_files.list_files(table, None)]


def _flip_byte_in_a_page(path: str) -> None:
    """Flip the last byte of the first column chunk: data of a page, under that page's CRC."""
    import pyarrow.parquet as pq

    chunk = pq.ParquetFile(path).metadata.row_group(0).column(0)
    starts = [o for o in (chunk.dictionary_page_offset, chunk.data_page_offset) if o is not None]
    offset = min(starts) + chunk.total_compressed_size - 1
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _damage(path: str, how: str) -> None:
    if how == "truncate":
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) - 1)
    else:
        _flip_byte_in_a_page(path)


@pytest.mark.parametrize("how", ["truncate", "edit_byte"])
def test_a_damaged_registry_table_file_is_refused_naming_it(three_versions, tmp_path, how):
    settings = _copy_registry(three_versions, tmp_path)
    reg = Registry(settings)
    assert [mv.version for mv in reg.versions(MODEL)] == [1, 2, 3]
    victim = _data_files(reg.versions_path)[1]
    _damage(os.path.join(reg.versions_path, victim), how)
    for read in (lambda: reg.versions(MODEL), lambda: reg.get(parse_ref(MODEL)),
                 lambda: reg.load_model(parse_ref(f"{MODEL}/1"))):
        with pytest.raises(IntegrityError, match=f"data file {victim} of Delta table {reg.versions_path}"):
            read()
    assert main(["--home", settings.home, "--registry-root", settings.registry_root, "models", "list"]) == 1


@pytest.mark.parametrize("how", ["truncate", "edit_byte"])
def test_a_damaged_scores_table_file_is_refused_naming_it(spark, scored, tmp_path, how):
    _, out = scored
    copy = str(tmp_path / "scores")
    shutil.copytree(out, copy)
    victim = _data_files(copy)[0]
    _damage(os.path.join(copy, victim), how)
    with pytest.raises(IntegrityError, match=f"data file {victim} of Delta table {copy}"):
        tables.read_arrow(copy)
    # Through Spark: the deltars reader runs the same check in its read task and fails the job with our message;
    # delta-spark's own reader refuses the file too (Hadoop's checksum or parquet's footer), naming it.
    engine_before = tables.engine_for(spark)
    try:
        tables.use_engine(spark, "deltars")
        with pytest.raises(Exception, match=f"IntegrityError: data file {victim}"):
            tables.read(spark, copy).collect()
        tables.use_engine(spark, "native")
        with pytest.raises(Exception, match=victim.rsplit("/", 1)[-1]):
            tables.read(spark, copy).collect()
    finally:
        tables.use_engine(spark, engine_before)


def test_every_single_byte_edit_of_a_registry_file_is_detected(three_versions, tmp_path):
    """Flip each byte of a model_versions data file in turn: the read fails with IntegrityError or, where the
    byte does not matter (footer statistics, padding), returns exactly the original rows; never other rows."""
    settings = _copy_registry(three_versions, tmp_path)
    table = Registry(settings).versions_path
    schema = delta_files.table_arrow_schema(table, None)
    split = [f for f in delta_files.plan_splits(delta_files.list_files(table, None))[0]][:1]
    path = os.path.join(table, split[0][0])
    original = open(path, "rb").read()
    good = pa.Table.from_batches(list(delta_files.read_batches(table, split, schema)), schema=schema)
    assert good.num_rows == 1
    wrong: dict[str, list[int]] = {}
    detected = 0
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= 0xFF
        with open(path, "wb") as fh:
            fh.write(damaged)
        try:
            got = pa.Table.from_batches(list(delta_files.read_batches(table, split, schema)), schema=schema)
        except IntegrityError:
            detected += 1
            continue
        except Exception as exc:  # noqa: BLE001 - any other failure is a gap we want to see listed
            wrong.setdefault(type(exc).__name__, []).append(offset)
            continue
        if not got.equals(good):
            wrong.setdefault("other rows returned", []).append(offset)
    with open(path, "wb") as fh:
        fh.write(original)
    print(f"\n{len(original)} byte edits: {detected} IntegrityError, "
          f"{len(original) - detected - sum(map(len, wrong.values()))} harmless, gaps {wrong}")
    assert not wrong, f"byte edits not reported as IntegrityError (kind: offsets): {wrong}"


@pytest.mark.parametrize("victim", [0, 1], ids=["first_commit", "middle_commit"])
def test_a_deleted_registry_commit_is_an_error_not_fewer_versions(three_versions, tmp_path, victim):
    settings = _copy_registry(three_versions, tmp_path)
    reg = Registry(settings)
    os.remove(os.path.join(reg.versions_path, "_delta_log", f"{victim:020d}.json"))
    # delta-rs refuses the log (no protocol and metadata / a gap in the commits); nothing is listed.
    with pytest.raises(IntegrityError, match="(?i)delta log|contiguous commit files") as info:
        reg.versions(MODEL)
    with pytest.raises(type(info.value)):
        reg.get(parse_ref(f"{MODEL}/1"))


def test_a_deleted_latest_registry_commit_is_an_error(three_versions, tmp_path):
    settings = _copy_registry(three_versions, tmp_path)
    reg = Registry(settings)
    os.remove(os.path.join(reg.versions_path, "_delta_log", f"{2:020d}.json"))
    with pytest.raises(IntegrityError):
        reg.versions(MODEL)


# --- 6. names and paths that would escape the roots -----------------------------------------------------------


BAD_SPEC = """\
name: {name}
task: classification
table: /nowhere/events
label: label
features: {{numeric: [age]}}
model: {{algorithm: logistic_regression}}
"""


def test_names_and_paths_escaping_the_roots_are_refused(spark, fitted, workspace, home, tmp_path, capsys):
    parent = str(tmp_path)
    os.makedirs(home)
    for name in ("../evil", "/abs"):
        with open(os.path.join(parent, f"spec-{name.strip('./')}.yml"), "w") as fh:
            fh.write(BAD_SPEC.format(name=name))
    staged = artifacts.stage(fitted, manifest_for(spark), os.path.join(home, "models"))
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    append_input(src, make_rows(5, 1))
    before = tree(parent)

    # (argv, what the message must quote)
    commands = [
        (["train", "--spec", os.path.join(parent, "spec-evil.yml")], "model name '../evil' is invalid"),
        (["train", "--spec", os.path.join(parent, "spec-abs.yml")], "model name '/abs' is invalid"),
        (["models", "show", "../x"], "model name '..' is invalid"),
        (["models", "history", "../x"], "model name '../x' is invalid"),
        (["alias", "set", "../x", "champion", "1"], "model name '../x' is invalid"),
        (["alias", "set", "x", "../champion", "1"], "alias '../champion' is invalid"),
        (["serve", "--model", "../x", "--port", "18080"], "model name '..' is invalid"),
        (["score", "--model", "../x", "--input", src, "--output", out, "--keys", "id"], "model name '..' is invalid"),
        (["score", "--model", "/abs", "--input", src, "--output", out, "--keys", "id"], "model name '' is invalid"),
        (["predict", "--model", "x/../../y", "--input", src + ".csv", "--output", out + ".csv"],
         "'../../y' is not a version number"),
    ]
    for argv, message in commands:
        code = main(["--home", home, *argv])
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert message in err, (argv, err)

    for name in ("a/b", "../evil", "/abs", "..", "x/../../y"):
        with pytest.raises(UsageError, match="invalid"):
            Registry(Settings.resolve(home=home)).register(name, staged)
    assert os.path.isdir(staged)  # left where it was
    assert tree(parent) == before  # nothing written anywhere under the parent, the home included
