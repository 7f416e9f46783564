"""Registering a staged artifact as a model's next version, such that no failure leaves a row without its files.

:func:`register` holds the model's lock (``<models_root>/.locks/<name>.lock``, ``flock``: the kernel releases it
when a process dies) and runs compare-and-set attempts on ``model_versions``. Each attempt reads the table, takes
the row that already names its folder (an earlier attempt's commit landed after all), deals with leftover folders,
renames its folder to ``<models_root>/<name>/<N>``, verifies it, and commits the row of version N, which names that
folder and the sha256 of its manifest. A leftover is a folder under ``<models_root>/<name>/`` that no row names: a
registration that died, or failed after a commit call that did not land. Under the lock it is moved aside to
``<models_root>/.orphaned/`` (kept for inspection, safe to delete); without file locks it may be a registration in
progress, so it is left alone, a warning names it, and the version takes ``<N>-<token>`` instead: a leftover
never blocks a registration.

A failure is handled by where it happens relative to the commit call:

* before any commit call: the folder is renamed back to its staging path (which the caller then removes);
* after a commit call, the table is read again before anything else. If a row names the folder, the version is
  registered (an exception is logged and the registration goes on; an interrupt still propagates). If none does,
  and every commit call reported that its compare-and-set lost, the folder is renamed back as above; if one call
  ended otherwise (it raised, or was interrupted: a py4j call that Python gave up on may still commit), or the
  table cannot be read, the folder stays where it is, never undone, for the next registration to move aside;
* after the row landed: nothing is moved or undone; the ``REGISTERED`` marker is written best-effort.

A folder beyond the latest row that carries the ``REGISTERED`` marker (written after the commit) means the table
lost a commit: :class:`IntegrityError`, and nothing is registered until it is repaired.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sparkship import artifacts, killpoints
from sparkship.errors import ConcurrentWriteError, IntegrityError
from sparkship.registry_tables import (
    VERSIONS_SCHEMA,
    ModelVersion,
    now,
    read_rows,
    retry_on_conflict,
    to_version,
    upgrade,
    version_row,
)
from sparkship.tables import metadata

log = logging.getLogger(__name__)

REGISTERED_MARKER = "REGISTERED"  # written into a version's folder once its row is committed
LOCKS_DIR = ".locks"
ORPHANED_DIR = ".orphaned"

# Where a registration stands with its commit calls (see the module docstring).
IDLE, PENDING, LANDED = "idle", "pending", "landed"


def folder_version(entry: str) -> int | None:
    """The version a folder under ``<models_root>/<name>/`` is for (``3`` or ``3-<token>``), or None."""
    head = entry.split("-", 1)[0]
    return int(head) if head.isascii() and head.isdigit() else None


def check_no_lost_versions(models_root: str, versions_path: str, name: str, rows: list[dict[str, Any]],
                           table_version: int) -> None:
    """A registered folder (one with the ``REGISTERED`` marker) beyond the latest row means a lost commit.

    (The marker is written after the row is committed, so such a folder is either a registration that landed after
    our read - the table moved: read again - or a commit the table lost. A folder without the marker is a
    registration in progress or a leftover: not a version, and not an error.)
    """
    latest = max((r["version"] for r in rows), default=0)
    folder = os.path.join(models_root, name)
    beyond = sorted(
        (v, d) for d in (os.listdir(folder) if os.path.isdir(folder) else [])
        if (v := folder_version(d)) is not None and v > latest
        and os.path.exists(os.path.join(folder, d, REGISTERED_MARKER))
    )
    if not beyond:
        return
    current = metadata.table_version(versions_path)
    if (current if current is not None else -1) != table_version:
        raise ConcurrentWriteError(f"{versions_path} moved past version {table_version}")
    raise IntegrityError(
        f"the registry lists {name} up to version {latest}, but {folder}/{beyond[0][1]} was registered: "
        f"{versions_path} may have lost a commit; nothing is read or registered until it is repaired"
    )


class Registration:
    """One registration's folder (where it is now) and where it stands with its commit calls."""

    def __init__(self, models_root: str, versions_path: str, name: str, staged: str, manifest: dict[str, Any],
                 run_id: str | None, locked: bool) -> None:
        self.models_root, self.versions_path, self.name = models_root, versions_path, name
        self.staged = self.path = staged
        self.manifest, self.run_id, self.locked = manifest, run_id, locked
        self.folder = os.path.join(models_root, name)
        self.token = uuid.uuid4().hex[:12]
        self.state = IDLE
        self.calls = 0  # commit calls made
        self.landed: ModelVersion | None = None
        self.named: set[str] = set()  # leftovers already named in a warning

    def attempt(self) -> ModelVersion:
        """One compare-and-set attempt; :class:`ConcurrentWriteError` when another commit came first."""
        table_version, rows = read_rows(self.versions_path)
        mine = [r for r in rows if r["name"] == self.name]
        own = self._own(mine)
        if own:  # an earlier attempt's commit landed, though its call reported a conflict
            self.state, self.landed = LANDED, to_version(own[0])
            return self.landed
        self.state = IDLE  # read after the last commit call: nothing of ours is in the table
        check_no_lost_versions(self.models_root, self.versions_path, self.name, mine, table_version)
        self._leftovers(mine)
        version = max((r["version"] for r in mine), default=0) + 1
        self._place(version)
        training = self.manifest.get("training") or {}
        mv = ModelVersion(
            name=self.name, version=version, artifact=self.path, created_at=now(), run_id=self.run_id,
            task=self.manifest.get("task"), algorithm=self.manifest.get("algorithm"), table=training.get("table"),
            table_version=training.get("table_version"),
            metrics={k: float(v) for k, v in (self.manifest.get("metrics") or {}).items()},
            manifest_sha256=artifacts.manifest_digest(self.path),
        )
        self.state, self.calls = PENDING, self.calls + 1
        try:
            metadata.append_arrow(self.versions_path, version_row(mv), expected_version=table_version)
        except ConcurrentWriteError:
            self.state = IDLE  # the compare-and-set lost: the table is unchanged
            raise
        # Still PENDING here: a fault at this point is handled as one inside the commit call after it landed.
        killpoints.reached("register:committed")
        self.state, self.landed = LANDED, mv
        return mv

    def _own(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The row that names this registration's folder, if one does (never its staging folder)."""
        if self.path == self.staged:
            return []
        return [r for r in rows if r["name"] == self.name and r["artifact"] == self.path]

    def _leftovers(self, mine: list[dict[str, Any]]) -> None:
        """Move aside (under the lock) or name (without it) the folders of this model that no row names."""
        named = {os.path.basename(r["artifact"]) for r in mine}
        entries = sorted(os.listdir(self.folder)) if os.path.isdir(self.folder) else []
        for entry in entries:
            path = os.path.join(self.folder, entry)
            if entry in named or path == self.path or folder_version(entry) is None or not os.path.isdir(path) \
                    or os.path.exists(os.path.join(path, REGISTERED_MARKER)):
                continue
            if self.locked:
                aside = os.path.join(self.models_root, ORPHANED_DIR, f"{self.name}-{entry}-{uuid.uuid4().hex[:8]}")
                os.makedirs(os.path.dirname(aside), exist_ok=True)
                os.rename(path, aside)
                log.warning("%s was left by a registration that did not commit: moved to %s", path, aside)
            elif path not in self.named:
                self.named.add(path)
                log.warning("%s is not a registered version (left by a registration that did not commit, or one "
                            "in progress); without file locks it is left alone: delete it once no registration "
                            "runs", path)

    def _place(self, version: int) -> None:
        """Rename the folder to version ``version``'s path (``<N>-<token>`` where a leftover holds ``<N>``)."""
        target = os.path.join(self.folder, str(version))
        if os.path.exists(target) and target != self.path:
            target = os.path.join(self.folder, f"{version}-{self.token}")
        if target == self.path:
            return
        os.makedirs(self.folder, exist_ok=True)
        try:
            os.rename(self.path, target)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise ConcurrentWriteError(f"{target} appeared while registering {self.name}") from None
        self.path = target
        killpoints.reached("register:renamed")
        artifacts.verify(target)

    def recover(self, exc: BaseException) -> ModelVersion | None:
        """After ``exc`` stopped the attempts: the version if its row landed, else None (see the module docstring).

        After any commit call the table is read again before anything is undone; after one whose outcome is
        unknown, nothing is undone at all.
        """
        if self.state != LANDED and self.calls:
            try:
                own = self._own(read_rows(self.versions_path)[1])
            except BaseException as again:  # noqa: BLE001 - whatever it is, the outcome stays unknown
                log.warning("registering %s failed (%s: %s) and %s could not be read again (%s): %s is left in "
                            "place", self.name, type(exc).__name__, exc, self.versions_path, again, self.path)
                return None
            if own:
                self.state, self.landed = LANDED, to_version(own[0])
        if self.state == LANDED:
            assert self.landed is not None
            log.warning("%s is registered (artifact %s), though the registration then failed: %s: %s",
                        self.landed.ref, self.landed.artifact, type(exc).__name__, exc)
            return self.landed
        if self.state == PENDING:
            log.warning("registering %s failed inside its commit call (%s: %s) and no row names %s: it is left in "
                        "place for the next registration to move aside", self.name, type(exc).__name__, exc,
                        self.path)
            return None
        self._undo()
        return None

    def _undo(self) -> None:
        if self.path == self.staged or not os.path.isdir(self.path):
            return
        try:
            os.rename(self.path, self.staged)
            self.path = self.staged
        except OSError as exc:
            log.warning("could not move %s back to %s (%s): it is a leftover now", self.path, self.staged, exc)

    def mark(self, mv: ModelVersion) -> None:
        """Write the ``REGISTERED`` marker (best-effort: the row, not the marker, makes the version)."""
        try:
            with open(os.path.join(mv.artifact, REGISTERED_MARKER), "w") as fh:
                fh.write(f"{mv.ref}\n")
        except OSError as exc:
            log.warning("%s is registered, but its %s marker could not be written (%s)", mv.ref, REGISTERED_MARKER,
                        exc)


def register(models_root: str, versions_path: str, name: str, staged_dir: str, manifest: dict[str, Any],
             run_id: str | None) -> ModelVersion:
    """Give the verified artifact at ``staged_dir`` the next version number of ``name`` (see the module docstring).

    Returns the version; re-raises what stopped it otherwise, except an exception after its row landed (logged).
    """
    upgrade(versions_path, VERSIONS_SCHEMA)
    with registration_lock(models_root, name) as locked:
        job = Registration(models_root, versions_path, name, staged_dir, manifest, run_id, locked)
        try:
            mv = retry_on_conflict(f"registering {name}", job.attempt)
        except BaseException as exc:
            landed = job.recover(exc)
            if landed is None or not isinstance(exc, Exception):
                raise
            mv = landed
        job.mark(mv)
    return mv


@contextmanager
def registration_lock(models_root: str, name: str) -> Iterator[bool]:
    """Hold the registration lock of ``name`` (True), or yield False where the file system has no flock."""
    path = os.path.join(models_root, LOCKS_DIR, f"{name}.lock")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            log.warning("%s: no file locks here (%s); leftover folders are named, not moved", path, exc)
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


__all__ = ["LOCKS_DIR", "ORPHANED_DIR", "REGISTERED_MARKER", "Registration", "check_no_lost_versions",
           "folder_version", "register", "registration_lock"]
