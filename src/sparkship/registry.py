"""The model registry: Delta tables under ``<registry_root>`` for model versions, aliases and events.

``model_versions`` holds one row per registered version, numbered 1, 2, 3... per model with no gaps or
duplicates (each registration commits as a compare-and-set, retried on conflict), visible only once its artifact
is complete; ``aliases`` one row per alias move (compare-and-set too); ``events`` is append-only, each row
numbered from the table's commit versions (``seq``), which alone orders events. The tables are small and read and
written with Arrow, so the JVM-free server can follow aliases too. Registration order, locks and leftover
folders: :mod:`sparkship.registration` and docs/DESIGN.md; columns added since the first release:
:mod:`sparkship.registry_tables`.

    >>> from sparkship.config import Settings
    >>> reg = Registry(Settings.resolve(home="/tmp/sh"))                    # doctest: +SKIP
    >>> mv = reg.register("churn", staged_dir, manifest)                     # doctest: +SKIP
    >>> reg.set_alias("churn", "champion", mv.version)                       # doctest: +SKIP
    >>> reg.get(parse_ref("churn@champion")).version                         # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sparkship import artifacts, killpoints, registration
from sparkship.config import Settings
from sparkship.errors import ConcurrentWriteError, NotFoundError, SparkshipError, UsageError
from sparkship.names import validate_alias, validate_name
from sparkship.refs import ModelRef
from sparkship.registry_tables import (
    ALIASES_SCHEMA,
    EVENTS_SCHEMA,
    MAX_ATTEMPTS,
    ModelVersion,
    read_rows,
    to_version,
    upgrade,
)
from sparkship.registry_tables import (
    now as _now,
)
from sparkship.registry_tables import (
    retry_on_conflict as _retry_on_conflict,
)
from sparkship.tables import metadata

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel

log = logging.getLogger(__name__)

# Events that a decision reads the latest of (the gate reads a version's latest verdict): appended by a
# compare-and-set so that their order is exactly their commits' (see Registry.record_event).
ORDERED_EVENTS = frozenset({"validated"})


@dataclass(frozen=True)
class AliasMove:
    name: str
    alias: str
    version: int
    previous_version: int | None
    seq: int


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
        return read_rows(path)

    def _version_rows(self, name: str | None = None) -> list[dict[str, Any]]:
        for _ in range(MAX_ATTEMPTS):
            table_version, rows = self._rows(self.versions_path)
            selected = sorted((r for r in rows if name is None or r["name"] == name),
                              key=lambda r: (r["name"], r["version"]))
            try:
                if name is not None:
                    registration.check_no_lost_versions(self.models_root, self.versions_path, name, selected,
                                                        table_version)
                return selected
            except ConcurrentWriteError:
                continue  # a registration landed while we read: read again
        raise ConcurrentWriteError(f"{self.versions_path} kept changing while it was read")

    @staticmethod
    def _to_version(row: dict[str, Any]) -> ModelVersion:
        return to_version(row)

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

    def get(self, ref: ModelRef) -> ModelVersion:
        """Resolve a reference (``NAME``, ``NAME/VERSION``, ``NAME@ALIAS`` or ``NAME/run:RUN_ID``) to one version."""
        rows = self._version_rows(ref.name)
        if not rows:
            raise NotFoundError(f"model '{ref.name}' is not registered in {self.root}")
        if ref.alias is not None:
            version = self.alias_version(ref.name, ref.alias)
            if version is None:
                raise NotFoundError(f"model '{ref.name}' has no alias '{ref.alias}'")
            matches = [r for r in rows if r["version"] == version]
        elif ref.version is not None:
            matches = [r for r in rows if r["version"] == ref.version]
            if not matches:
                raise NotFoundError(
                    f"model '{ref.name}' has no version {ref.version} (latest is {rows[-1]['version']})"
                )
        elif ref.run_id is not None:
            matches = [r for r in rows if r["run_id"] == ref.run_id]
            if not matches:
                raise NotFoundError(f"model '{ref.name}' has no version registered by run {ref.run_id}")
        else:
            matches = rows
        mv = self._to_version(matches[-1])
        if mv.manifest_sha256 is not None and os.path.isfile(os.path.join(mv.artifact, artifacts.MANIFEST)):
            # Every loader gets its version here: an edited manifest is refused before anyone reads it.
            artifacts.read_manifest(mv.artifact, mv.manifest_sha256)
        return mv

    def load_model(self, ref: ModelRef) -> tuple[ModelVersion, PipelineModel]:
        """The version ``ref`` resolves to and its PipelineModel, checksums (the manifest's own too) verified."""
        mv = self.get(ref)
        return mv, artifacts.load(mv.artifact, mv.manifest_sha256)

    def manifest(self, ref: ModelRef) -> tuple[ModelVersion, dict[str, Any]]:
        """The version ``ref`` resolves to and its verified manifest (checked against the registry's sha256)."""
        mv = self.get(ref)
        return mv, artifacts.verify(mv.artifact, mv.manifest_sha256)

    # --- registering --------------------------------------------------------------------------------------

    def register(
        self, name: str, staged_dir: str, manifest: dict[str, Any] | None = None, run_id: str | None = None
    ) -> ModelVersion:
        """Give ``staged_dir`` (from :func:`sparkship.artifacts.stage`) the next version number of ``name``.

        The artifact is verified, renamed to ``<models_root>/<name>/<version>`` and verified again before the
        version row is committed (compare-and-set, retried on conflict): a crash or an error at any point leaves
        either no new version or a complete one; how each failure is handled: :mod:`sparkship.registration`.
        """
        validate_name(name)
        if not os.path.isdir(staged_dir):
            raise NotFoundError(f"staged artifact {staged_dir} does not exist")
        manifest = manifest if manifest is not None else artifacts.read_manifest(staged_dir)
        artifacts.verify(staged_dir)  # a damaged artifact is refused before anything moves
        mv = registration.register(self.models_root, self.versions_path, name, staged_dir, manifest, run_id)
        log.info("registered %s (artifact %s)", mv.ref, mv.artifact)
        try:
            self.record_event(name, mv.version, "registered", {"artifact": mv.artifact, "metrics": mv.metrics},
                              run_id)
            killpoints.reached("register:recorded")
        except BaseException as exc:  # noqa: BLE001 - the version is registered: an error now invites a duplicate
            log.warning("%s is registered (artifact %s), though the registration then failed (its 'registered' "
                        "event may be missing): %s: %s", mv.ref, mv.artifact, type(exc).__name__, exc)
            if not isinstance(exc, Exception):
                raise  # an interrupt still stops the process
        return mv

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
            raise UsageError(
                f"{name}@{alias} has no previous holder to roll back to (its first holder is {last['version']})")
        return self.set_alias(
            name, alias, last["previous_version"], expect_version=last["version"], reason=reason,
            action="rollback", run_id=run_id,
        )

    # --- events -------------------------------------------------------------------------------------------

    def record_event(
        self, name: str, version: int | None, event: str, details: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> int:
        """Append one event (registered, alias_moved, validated, promoted, ...); return its ``seq``.

        Events are ordered by ``seq``, taken from the events table's commit versions, never by the writers' clocks
        (``at`` is informative only). A verdict (:data:`ORDERED_EVENTS`) is appended by a compare-and-set, so its
        ``seq`` is the exact version of its commit. Other events stay blind appends (no transaction id for
        delta-spark to look up; concurrent appends all land), numbered by the table version their writer read plus
        one: exact unless another append landed in between, and always above every event committed before.
        """
        upgrade(self.events_path, EVENTS_SCHEMA)

        def append(compare_and_set: bool) -> int:
            current = metadata.table_version(self.events_path)
            seq = (-1 if current is None else current) + 1
            return self._append_event(name, version, event, details, run_id, seq, compare_and_set=compare_and_set)

        if event not in ORDERED_EVENTS:
            return append(False)
        return _retry_on_conflict(f"recording the {event} event of {name}", lambda: append(True))

    def record_decision(self, name: str, decide: Callable[[list[dict[str, Any]]], tuple[str, dict[str, Any]]],
                        run_id: str | None = None) -> tuple[str, dict[str, Any], int]:
        """Decide from the events of ``name`` and record the decision as one event, atomically.

        ``decide(events)`` returns ``(event, details)``; the event is appended by a compare-and-set on the events
        table's version the decision read, so two deciders never both act on the same history (the loser decides
        again on the new one). Returns ``(event, details, seq)``.
        """
        upgrade(self.events_path, EVENTS_SCHEMA)

        def attempt() -> tuple[str, dict[str, Any], int]:
            read_version, rows = self._rows(self.events_path)
            event, details = decide(self._decoded_events(rows, name))
            seq = self._append_event(name, None, event, details, run_id, read_version + 1, compare_and_set=True)
            return event, details, seq

        return _retry_on_conflict(f"recording a decision for {name}", attempt)

    def _append_event(self, name: str, version: int | None, event: str, details: dict[str, Any] | None,
                      run_id: str | None, seq: int, *, compare_and_set: bool) -> int:
        """Commit one event row numbered ``seq``: a compare-and-set on version ``seq - 1``, or a blind append."""
        row = {"name": name, "version": version, "event": event, "at": _now(), "run_id": run_id,
               "details_json": json.dumps(details or {}, sort_keys=True, default=str), "seq": seq}
        metadata.append_arrow(self.events_path, pa.Table.from_pylist([row], schema=EVENTS_SCHEMA),
                              expected_version=seq - 1 if compare_and_set else None, append_only=not compare_and_set)
        return seq

    def events(self, name: str, event: str | None = None, version: int | None = None) -> list[dict[str, Any]]:
        """Events of ``name`` in commit order (``seq``; see :meth:`record_event`), with ``details`` decoded.

        Events of a registry older than ``seq`` come first, in the order of their ``at`` clocks: nothing else
        orders them.
        """
        return self._decoded_events(self._rows(self.events_path)[1], name, event, version)

    @staticmethod
    def _decoded_events(all_rows: list[dict[str, Any]], name: str, event: str | None = None,
                        version: int | None = None) -> list[dict[str, Any]]:
        rows = [
            r for r in all_rows
            if r["name"] == name and (event is None or r["event"] == event)
            and (version is None or r["version"] == version)
        ]
        legacy = sorted((r for r in rows if r.get("seq") is None), key=lambda r: r["at"])
        # On a tie, the verdict's seq is its own commit, so the blind append that shares it committed later.
        ordered = sorted((r for r in rows if r.get("seq") is not None),
                         key=lambda r: (r["seq"], r["event"] not in ORDERED_EVENTS))
        return [
            {
                "name": r["name"], "version": r["version"], "event": r["event"], "at": r["at"].isoformat(),
                "run_id": r["run_id"], "details": json.loads(r["details_json"] or "{}"), "seq": r.get("seq"),
            }
            for r in legacy + ordered
        ]
