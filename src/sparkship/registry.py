"""The model registry: Delta tables under ``<registry_root>`` for model versions, aliases and events.

* ``model_versions`` - one row per registered version; numbers per model are 1, 2, 3... with no gaps or
  duplicates, because each registration commits with ``expected_version`` (a compare-and-set on the table)
  and retries on conflict;

Registration order. A version becomes visible only once its artifact is complete: the staged folder is
verified, renamed to ``<models_root>/<name>/<N>`` and verified again, and only then is the row of version N
committed; a ``REGISTERED`` marker is written into the folder after the commit. Registrations of one model
hold a lock (``<models_root>/.locks/<name>.lock``, ``flock``: released by the kernel when a process dies), so
a folder ``N`` without a row seen under the lock belongs to a registration that was killed before its commit:
an orphan. The next registration moves it aside to ``<models_root>/.orphaned/`` (kept for inspection, safe to
delete) and takes number N itself, so visible versions stay 1..N without gaps. A folder beyond the latest row
that carries the ``REGISTERED`` marker means the table lost a commit: an :class:`IntegrityError`.

* ``aliases`` - one row per alias move (``seq`` 1, 2, ... per table), so the current holder and the whole
  history are both readable; moves are compare-and-set too, and may require the holder the caller saw;
* ``events`` - append-only: registered, alias moved, validated, promoted, rolled back...

The tables are small and read/written with Arrow through delta-rs (no Spark job), so the JVM-free server can
follow aliases too.

    >>> from sparkship.config import Settings
    >>> reg = Registry(Settings.resolve(home="/tmp/sh"))                    # doctest: +SKIP
    >>> mv = reg.register("churn", staged_dir, manifest)                     # doctest: +SKIP
    >>> reg.set_alias("churn", "champion", mv.version)                       # doctest: +SKIP
    >>> reg.get("churn@champion").version                                    # doctest: +SKIP
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import uuid
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

import pyarrow as pa

from sparkship import artifacts, killpoints
from sparkship.config import Settings
from sparkship.errors import ConcurrentWriteError, IntegrityError, NotFoundError, SparkshipError, UsageError
from sparkship.names import ModelRef, parse_ref, validate_alias, validate_name
from sparkship.tables import metadata

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel

log = logging.getLogger(__name__)
T = TypeVar("T")

VERSIONS_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("version", pa.int64()),
        ("artifact", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
        ("task", pa.string()),
        ("algorithm", pa.string()),
        ("table", pa.string()),
        ("table_version", pa.int64()),
        ("metrics_json", pa.string()),
    ]
)
ALIASES_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("name", pa.string()),
        ("alias", pa.string()),
        ("version", pa.int64()),
        ("previous_version", pa.int64()),
        ("moved_at", pa.timestamp("us", tz="UTC")),
        ("action", pa.string()),
        ("reason", pa.string()),
        ("forced", pa.bool_()),
        ("run_id", pa.string()),
    ]
)
EVENTS_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("version", pa.int64()),
        ("event", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
        ("details_json", pa.string()),
    ]
)
MAX_ATTEMPTS = 200
REGISTERED_MARKER = "REGISTERED"  # written into a version's folder once its row is committed
LOCKS_DIR = ".locks"
ORPHANED_DIR = ".orphaned"


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model."""

    name: str
    version: int
    artifact: str
    created_at: datetime
    run_id: str | None = None
    task: str | None = None
    algorithm: str | None = None
    table: str | None = None
    table_version: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        return out


@dataclass(frozen=True)
class AliasMove:
    name: str
    alias: str
    version: int
    previous_version: int | None
    seq: int


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _retry_on_conflict(what: str, attempt: Callable[[], T]) -> T:
    """Run ``attempt`` until its compare-and-set commit wins; back off a little between tries."""
    for n in range(MAX_ATTEMPTS):
        try:
            return attempt()
        except ConcurrentWriteError:
            time.sleep(random.uniform(0.005, 0.05) * min(n + 1, 10))
    raise ConcurrentWriteError(f"{what}: gave up after {MAX_ATTEMPTS} conflicting attempts")


class _Placement:
    """Where a registration's artifact folder is now; moved back to its staging path if the registration fails."""

    def __init__(self, staged: str) -> None:
        self.staged = staged
        self.path = staged

    def move_to(self, target: str) -> None:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(self.path, target)
        self.path = target

    def undo(self) -> None:
        if self.path != self.staged and os.path.isdir(self.path):
            os.rename(self.path, self.staged)
            self.path = self.staged


class Registry:
    """Model versions, aliases and events of one registry root."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.registry_root
        self.models_root = settings.models_root
        self.versions_path = os.path.join(self.root, "model_versions")
        self.aliases_path = os.path.join(self.root, "aliases")
        self.events_path = os.path.join(self.root, "events")

    # --- reading ------------------------------------------------------------------------------------------

    @staticmethod
    def _rows(path: str) -> tuple[int, list[dict[str, Any]]]:
        """(table version or -1, rows) of one registry table."""
        v = metadata.table_version(path)
        if v is None:
            return -1, []
        return v, metadata.read_arrow(path, version=v).to_pylist()

    def _version_rows(self, name: str | None = None) -> list[dict[str, Any]]:
        for _ in range(MAX_ATTEMPTS):
            table_version, rows = self._rows(self.versions_path)
            selected = sorted((r for r in rows if name is None or r["name"] == name),
                              key=lambda r: (r["name"], r["version"]))
            try:
                if name is not None:
                    self._check_no_lost_versions(name, selected, table_version)
                return selected
            except ConcurrentWriteError:
                continue  # a registration landed while we read: read again
        raise ConcurrentWriteError(f"{self.versions_path} kept changing while it was read")

    def _check_no_lost_versions(self, name: str, rows: list[dict[str, Any]], table_version: int) -> None:
        """A registered folder (one with the ``REGISTERED`` marker) beyond the latest row means a lost commit.

        (The marker is written after the row is committed, so such a folder is either a registration that
        landed after our read - the table moved: read again - or a commit the table lost. A folder without the
        marker is a registration in progress or a killed one's orphan: not a version, and not an error.)
        """
        latest = max((r["version"] for r in rows), default=0)
        folder = os.path.join(self.models_root, name)
        beyond = sorted(
            int(d) for d in (os.listdir(folder) if os.path.isdir(folder) else [])
            if d.isdigit() and int(d) > latest and os.path.exists(os.path.join(folder, d, REGISTERED_MARKER))
        )
        if not beyond:
            return
        current = metadata.table_version(self.versions_path)
        if (current if current is not None else -1) != table_version:
            raise ConcurrentWriteError(f"{self.versions_path} moved past version {table_version}")
        raise IntegrityError(
            f"the registry lists {name} up to version {latest}, but {folder}/{beyond[0]} was registered: "
            f"{self.versions_path} may have lost a commit; nothing is read or registered until it is repaired"
        )

    @staticmethod
    def _to_version(row: dict[str, Any]) -> ModelVersion:
        return ModelVersion(
            name=row["name"],
            version=int(row["version"]),
            artifact=row["artifact"],
            created_at=row["created_at"],
            run_id=row["run_id"],
            task=row["task"],
            algorithm=row["algorithm"],
            table=row["table"],
            table_version=row["table_version"],
            metrics=json.loads(row["metrics_json"] or "{}"),
        )

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first."""
        validate_name(name)
        return [self._to_version(r) for r in self._version_rows(name)]

    def list_models(self) -> list[dict[str, Any]]:
        """One summary per model: latest version, count, aliases."""
        rows = self._version_rows()
        aliases = self._current_aliases()
        out: dict[str, dict[str, Any]] = {}
        for r in rows:
            entry = out.setdefault(r["name"], {"name": r["name"], "versions": 0, "latest_version": None})
            entry["versions"] += 1
            entry["latest_version"] = r["version"]
        for entry in out.values():
            entry["aliases"] = {a: v for (n, a), v in sorted(aliases.items()) if n == entry["name"] and v is not None}
        return list(out.values())

    def get(self, ref: str | ModelRef) -> ModelVersion:
        """Resolve ``NAME``, ``NAME/VERSION``, ``NAME@ALIAS`` or ``NAME/run:RUN_ID`` to one version."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        rows = self._version_rows(parsed.name)
        if not rows:
            raise NotFoundError(f"model '{parsed.name}' is not registered in {self.root}")
        if parsed.alias is not None:
            version = self.alias_version(parsed.name, parsed.alias)
            if version is None:
                raise NotFoundError(f"model '{parsed.name}' has no alias '{parsed.alias}'")
            matches = [r for r in rows if r["version"] == version]
        elif parsed.version is not None:
            matches = [r for r in rows if r["version"] == parsed.version]
            if not matches:
                raise NotFoundError(
                    f"model '{parsed.name}' has no version {parsed.version} (latest is {rows[-1]['version']})"
                )
        elif parsed.run_id is not None:
            matches = [r for r in rows if r["run_id"] == parsed.run_id]
            if not matches:
                raise NotFoundError(f"model '{parsed.name}' has no version registered by run {parsed.run_id}")
        else:
            matches = rows
        return self._to_version(matches[-1])

    def load_model(self, ref: str | ModelRef) -> tuple[ModelVersion, "PipelineModel"]:
        """The version ``ref`` resolves to and its PipelineModel, checksums verified."""
        mv = self.get(ref)
        return mv, artifacts.load(mv.artifact)

    def manifest(self, ref: str | ModelRef) -> tuple[ModelVersion, dict[str, Any]]:
        """The version ``ref`` resolves to and its verified manifest."""
        mv = self.get(ref)
        return mv, artifacts.verify(mv.artifact)

    # --- registering --------------------------------------------------------------------------------------

    def register(
        self, name: str, staged_dir: str, manifest: dict[str, Any] | None = None, run_id: str | None = None
    ) -> ModelVersion:
        """Give ``staged_dir`` (from :func:`sparkship.artifacts.stage`) the next version number of ``name``.

        The artifact is verified, renamed to ``<models_root>/<name>/<version>`` and verified again before the
        version row is committed (compare-and-set, retried on conflict): a crash at any point leaves either no
        new version or a complete one (see the module docstring for the orphaned folder a crash leaves).
        """
        validate_name(name)
        if not os.path.isdir(staged_dir):
            raise NotFoundError(f"staged artifact {staged_dir} does not exist")
        manifest = manifest if manifest is not None else artifacts.read_manifest(staged_dir)
        artifacts.verify(staged_dir)  # a damaged artifact is refused before anything moves
        with self._registration_lock(name) as locked:
            placed = _Placement(staged_dir)
            try:
                mv = _retry_on_conflict(
                    f"registering {name}", lambda: self._commit_next_version(name, manifest, run_id, placed, locked)
                )
            except BaseException:
                placed.undo()
                raise
            killpoints.reached("register:committed")
            with open(os.path.join(mv.artifact, REGISTERED_MARKER), "w") as fh:
                fh.write(f"{mv.ref}\n")
        log.info("registered %s (artifact %s)", mv.ref, mv.artifact)
        self.record_event(name, mv.version, "registered", {"artifact": mv.artifact, "metrics": mv.metrics}, run_id)
        return mv

    def _commit_next_version(
        self, name: str, manifest: dict[str, Any], run_id: str | None, placed: "_Placement", locked: bool
    ) -> ModelVersion:
        """One compare-and-set attempt: place the artifact at the next number, verify it, commit its row."""
        table_version, rows = self._rows(self.versions_path)
        mine = [r for r in rows if r["name"] == name]
        self._check_no_lost_versions(name, mine, table_version)
        version = max((r["version"] for r in mine), default=0) + 1
        target = os.path.join(self.models_root, name, str(version))
        if placed.path != target:
            self._clear_orphan(name, target, locked)
            placed.move_to(target)
            killpoints.reached("register:renamed")
            artifacts.verify(target)
        training = manifest.get("training") or {}
        mv = ModelVersion(
            name=name,
            version=version,
            artifact=target,
            created_at=_now(),
            run_id=run_id,
            task=manifest.get("task"),
            algorithm=manifest.get("algorithm"),
            table=training.get("table"),
            table_version=training.get("table_version"),
            metrics={k: float(v) for k, v in (manifest.get("metrics") or {}).items()},
        )
        row = {**asdict(mv), "metrics_json": json.dumps(mv.metrics, sort_keys=True)}
        del row["metrics"]
        metadata.append_arrow(
            self.versions_path, pa.Table.from_pylist([row], schema=VERSIONS_SCHEMA), expected_version=table_version
        )
        return mv

    def _clear_orphan(self, name: str, target: str, locked: bool) -> None:
        """Move aside a folder left at ``target`` by a registration killed before its commit."""
        if not os.path.exists(target):
            return
        if not locked:  # without the lock it may be a live registration's: never touch it
            raise ConcurrentWriteError(f"{target} exists without a registry row (a registration in progress?)")
        aside = os.path.join(self.models_root, ORPHANED_DIR, f"{name}-{os.path.basename(target)}-{uuid.uuid4().hex[:8]}")
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        os.rename(target, aside)
        log.warning("%s was left by a registration that did not commit: moved to %s", target, aside)

    @contextmanager
    def _registration_lock(self, name: str) -> Iterator[bool]:
        """Hold the registration lock of ``name`` (True), or yield False where the file system has no flock."""
        path = os.path.join(self.models_root, LOCKS_DIR, f"{name}.lock")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                log.warning("%s: no file locks here (%s); orphaned folders are not cleared", path, exc)
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # --- aliases ------------------------------------------------------------------------------------------

    def _alias_rows(self) -> tuple[int, list[dict[str, Any]]]:
        v, rows = self._rows(self.aliases_path)
        return v, sorted(rows, key=lambda r: r["seq"])

    def _current_aliases(self, rows: list[dict[str, Any]] | None = None) -> dict[tuple[str, str], int | None]:
        current: dict[tuple[str, str], int | None] = {}
        for r in rows if rows is not None else self._alias_rows()[1]:
            current[(r["name"], r["alias"])] = r["version"]
        return current

    def alias_version(self, name: str, alias: str) -> int | None:
        """The version ``name@alias`` points at, or None."""
        return self._current_aliases().get((name, alias))

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        expect_version: int | None = None,
        reason: str | None = None,
        forced: bool = False,
        action: str = "set",
        run_id: str | None = None,
    ) -> AliasMove:
        """Point ``name@alias`` at ``version`` (compare-and-set).

        ``expect_version``: move only if the alias currently points at that version (0: only if it is not set
        yet); otherwise raise :class:`ConcurrentWriteError` and change nothing.
        """
        validate_name(name)
        validate_alias(alias)
        self.get(ModelRef(name, version=version))  # the target must exist

        def attempt() -> AliasMove:
            table_version, rows = self._alias_rows()
            previous = self._current_aliases(rows).get((name, alias))
            if expect_version is not None and (previous or 0) != expect_version:
                raise SparkshipError(
                    f"alias {name}@{alias} points at {previous if previous is not None else 'nothing'}, "
                    f"not the expected {expect_version}; nothing changed"
                )
            move = AliasMove(name, alias, version, previous, len(rows) + 1)
            row = {
                "seq": move.seq, "name": name, "alias": alias, "version": version, "previous_version": previous,
                "moved_at": _now(), "action": action, "reason": reason, "forced": forced, "run_id": run_id,
            }
            metadata.append_arrow(
                self.aliases_path, pa.Table.from_pylist([row], schema=ALIASES_SCHEMA), expected_version=table_version
            )
            return move

        move = _retry_on_conflict(f"moving {name}@{alias}", attempt)
        self.record_event(
            name, version, "alias_moved",
            {"alias": alias, "previous_version": move.previous_version, "action": action, "reason": reason,
             "forced": forced},
            run_id,
        )
        log.info("%s@%s: %s -> %s (%s)", name, alias, move.previous_version, version, action)
        return move

    def alias_history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Every move of ``name``'s aliases (or of one alias), oldest first."""
        rows = self._alias_rows()[1]
        return [
            {**r, "moved_at": r["moved_at"].isoformat()}
            for r in rows
            if r["name"] == name and (alias is None or r["alias"] == alias)
        ]

    def rollback(self, name: str, alias: str = "champion", reason: str | None = None,
                 run_id: str | None = None) -> AliasMove:
        """Move ``name@alias`` back to the version it pointed at before its latest move."""
        history = self.alias_history(name, alias)
        if not history:
            raise NotFoundError(f"model '{name}' has no alias '{alias}' to roll back")
        last = history[-1]
        if last["previous_version"] is None:
            raise UsageError(f"{name}@{alias} has no previous holder to roll back to (its first holder is {last['version']})")
        return self.set_alias(
            name, alias, last["previous_version"], expect_version=last["version"], reason=reason,
            action="rollback", run_id=run_id,
        )

    # --- events -------------------------------------------------------------------------------------------

    def record_event(
        self, name: str, version: int | None, event: str, details: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        """Append one event (registered, alias_moved, validated, promoted, ...)."""
        row = {
            "name": name, "version": version, "event": event, "at": _now(), "run_id": run_id,
            "details_json": json.dumps(details or {}, sort_keys=True, default=str),
        }
        events = pa.Table.from_pylist([row], schema=EVENTS_SCHEMA)
        metadata.append_arrow(self.events_path, events, append_only=True)

    def events(self, name: str, event: str | None = None, version: int | None = None) -> list[dict[str, Any]]:
        """Events of ``name``, oldest first, with ``details`` decoded."""
        rows = self._rows(self.events_path)[1]
        out = [
            {
                "name": r["name"], "version": r["version"], "event": r["event"], "at": r["at"].isoformat(),
                "run_id": r["run_id"], "details": json.loads(r["details_json"] or "{}"),
            }
            for r in rows
            if r["name"] == name and (event is None or r["event"] == event)
            and (version is None or r["version"] == version)
        ]
        return sorted(out, key=lambda e: e["at"])
