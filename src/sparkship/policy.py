"""Gate policies: each model's validation rules, kept in the registry rather than in a candidate's own spec.

A policy holds inclusive metric bounds (``thresholds``), the allowed regression against the champion
(``max_regression``) or, chosen explicitly, ``permissive`` (no rules: recorded as such). It lives in the Delta table
``<registry_root>/policies``, one row per change, written through the registry's metadata store
(:mod:`sparkship.tables.metadata`) as a compare-and-set on the whole table: ``seq`` numbers the rows in commit
order and ``version`` numbers one model's policies 1, 2, 3...; the latest is the highest ``seq``, never the
newest ``set_at`` (clocks may disagree). The gate (:mod:`sparkship.validation`) refuses a model without one.

    >>> rules = parse_rules("areaUnderROC>=0.8, max_regression=0.02")
    >>> rules.to_text()
    'areaUnderROC>=0.8, max_regression=0.02'
    >>> set_policy(settings, "churn", rules, reason="Q3 bar").version          # doctest: +SKIP
    1
"""
from __future__ import annotations

import difflib
import json
import math
import os
import random
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from sparkship.config import Settings
from sparkship.errors import ConcurrentWriteError, SparkshipError, UsageError
from sparkship.metrics import SILHOUETTE, WEIGHTED
from sparkship.names import validate_name
from sparkship.spec import METRICS
from sparkship.tables import metadata

__all__ = ["GATE_METRICS", "NoPolicyError", "Policy", "Rules", "current", "history", "parse_rules", "policies_path",
           "rules_from_options", "set_policy"]

TABLE = "policies"
SCHEMA = pa.schema([
    ("seq", pa.int64()),
    ("name", pa.string()),
    ("version", pa.int64()),
    ("thresholds_json", pa.string()),
    ("max_regression", pa.float64()),
    ("permissive", pa.bool_()),
    ("set_at", pa.timestamp("us", tz="UTC")),
    ("source", pa.string()),
    ("reason", pa.string()),
    ("run_id", pa.string()),
])
# What a gate can bound per task: the spec's metrics, multiclass's weighted ones and clustering's silhouette.
_EXTRA = {"classification": WEIGHTED, "clustering": (SILHOUETTE,)}
GATE_METRICS: dict[str, tuple[str, ...]] = {
    task: tuple(dict.fromkeys([*METRICS.get(task, ()), *_EXTRA.get(task, ())])) for task in [*METRICS, *_EXTRA]}
ALL_METRICS = tuple(dict.fromkeys(m for task in GATE_METRICS.values() for m in task))
MAX_ATTEMPTS = 100
# ASCII digits only: float() also reads other scripts' digits ("٣"), which a policy must not.
_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_TERM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|=)\s*(\S+)")
GRAMMAR = "METRIC>=X, METRIC<=X, max_regression=X (comma-separated), or 'permissive'"


class NoPolicyError(SparkshipError):
    """The model has no gate policy: the gate refuses it until one is set."""


@dataclass(frozen=True)
class Rules:
    """What a policy asks: ``thresholds`` ``{metric: {"min": x, "max": y}}``, ``max_regression``, or nothing
    (``permissive``, which must be chosen explicitly)."""

    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    max_regression: float | None = None
    permissive: bool = False

    def to_text(self) -> str:
        """The rules in :func:`parse_rules`' grammar."""
        if self.permissive:
            return "permissive"
        terms = [f"{m}{'>=' if k == 'min' else '<='}{v:g}" for m, b in self.thresholds.items() for k, v in b.items()]
        if self.max_regression is not None:
            terms.append(f"max_regression={self.max_regression:g}")
        return ", ".join(terms)

    def to_dict(self) -> dict[str, Any]:
        return {"thresholds": {m: dict(b) for m, b in self.thresholds.items()},
                "max_regression": self.max_regression, "permissive": self.permissive}


@dataclass(frozen=True)
class Policy:
    """One recorded policy of model ``name``: its ``version`` (1, 2... per model) and ``seq`` (commit order)."""

    name: str
    version: int
    seq: int
    rules: Rules
    set_at: datetime
    source: str | None = None
    reason: str | None = None
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "seq": self.seq, **self.rules.to_dict(),
                "rules": self.rules.to_text(), "set_at": self.set_at.isoformat(), "source": self.source,
                "reason": self.reason, "run_id": self.run_id}


# --- parsing ----------------------------------------------------------------------------------------------


def _number(text: str, what: str) -> float:
    if not _NUMBER.fullmatch(text):
        raise UsageError(f"{what}: {text!r} is not a number")
    value = float(text)
    if not math.isfinite(value):
        raise UsageError(f"{what}: {text!r} is not a finite number")
    return value


def _metric(name: str, what: str) -> str:
    if name not in ALL_METRICS:
        same_letters = [m for m in ALL_METRICS if m.lower() == name.lower()]
        close = same_letters or difflib.get_close_matches(name, ALL_METRICS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(ALL_METRICS)}"
        raise UsageError(f"{what}: unknown metric {name!r}{hint}")
    return name


def _rules(bounds: Iterable[tuple[str, str, float]], max_regression: float | None, permissive: bool,
           what: str) -> Rules:
    """Rules from ``(metric, "min"|"max", value)`` triples, each checked; the one place both syntaxes meet."""
    thresholds: dict[str, dict[str, float]] = {}
    for metric, kind, value in bounds:
        if kind in thresholds.setdefault(metric, {}):
            raise UsageError(f"{what}: {metric} has two {kind} bounds; give one")
        thresholds[metric][kind] = value
        low, high = thresholds[metric].get("min"), thresholds[metric].get("max")
        if low is not None and high is not None and low > high:
            raise UsageError(f"{what}: {metric} min {low:g} is above its max {high:g}: no model could pass")
    if max_regression is not None and max_regression < 0:
        raise UsageError(f"{what}: max_regression must be >= 0, got {max_regression:g}")
    if permissive and (thresholds or max_regression is not None):
        raise UsageError(f"{what}: 'permissive' gates nothing, so it takes no bounds and no max_regression")
    if not (permissive or thresholds or max_regression is not None):
        raise UsageError(f"{what}: no rules given: give metric bounds and/or max_regression, or choose "
                         "'permissive' explicitly to gate nothing")
    return Rules(thresholds, max_regression, permissive)


def parse_rules(text: str, what: str = "policy") -> Rules | None:
    """Rules from ``"areaUnderROC>=0.8, max_regression=0.02"`` (or ``"permissive"``); None for an empty text.

        >>> parse_rules("rmse<=3, r2>=0.5").thresholds
        {'rmse': {'max': 3.0}, 'r2': {'min': 0.5}}
        >>> parse_rules("") is None
        True
    """
    if not text.strip():
        return None
    terms = [t.strip() for t in text.split(",")]
    if "permissive" in terms:
        if len(terms) > 1:
            raise UsageError(f"{what}: 'permissive' gates nothing, so it takes no bounds and no max_regression")
        return _rules([], None, True, what)
    bounds, max_regression = [], None
    for term in terms:
        match = _TERM.fullmatch(term)
        if term == "permissive" or not match:
            raise UsageError(f"{what}: cannot read {term!r}; expected {GRAMMAR}")
        key, op, raw = match.groups()
        if key == "max_regression":
            if op != "=" or max_regression is not None:
                raise UsageError(f"{what}: give max_regression once, as max_regression=X")
            max_regression = _number(raw, f"{what}: max_regression")
            continue
        if op == "=":
            raise UsageError(f"{what}: {term!r}: a bound is METRIC>=X or METRIC<=X")
        bounds.append((_metric(key, what), "min" if op == ">=" else "max", _number(raw, f"{what}: {key}")))
    return _rules(bounds, max_regression, False, what)


def rules_from_options(mins: Iterable[str], maxes: Iterable[str], max_regression: str | None,
                       permissive: bool) -> Rules:
    """Rules from ``policy set``'s ``--min METRIC=X``, ``--max METRIC=X``, ``--max-regression X``, ``--permissive``."""
    bounds = []
    for flag, kind, values in (("--min", "min", mins), ("--max", "max", maxes)):
        for item in values:
            metric, sep, raw = item.partition("=")
            if not sep:
                raise UsageError(f"{flag} {item!r}: expected METRIC=VALUE, e.g. {flag} areaUnderROC=0.8")
            bounds.append((_metric(metric.strip(), flag), kind, _number(raw.strip(), f"{flag} {metric.strip()}")))
    limit = None if max_regression is None else _number(max_regression.strip(), "--max-regression")
    return _rules(bounds, limit, permissive, "policy")


def check_task(rules: Rules, task: str, what: str, remedy: str) -> None:
    """Refuse rules that bound a metric a ``task`` model does not report (before any Spark job)."""
    foreign = [m for m in rules.thresholds if m not in GATE_METRICS.get(task, ())]
    if foreign:
        raise UsageError(f"{what} bounds {', '.join(foreign)}, which a {task} model does not report "
                         f"({', '.join(GATE_METRICS.get(task, ()))}): {remedy}")


# --- the table ----------------------------------------------------------------------------------------------


def policies_path(settings: Settings) -> str:
    """The policies table, beside the registry's own tables."""
    return os.path.join(settings.registry_root, TABLE)


def _read(path: str) -> tuple[int, list[dict[str, Any]]]:
    """(table version or -1, rows in commit order)."""
    version = metadata.table_version(path)
    if version is None:
        return -1, []
    return version, sorted(metadata.read_arrow(path, version=version).to_pylist(), key=lambda r: r["seq"])


def _to_policy(row: Mapping[str, Any]) -> Policy:
    rules = Rules(json.loads(row["thresholds_json"] or "{}"), row["max_regression"], bool(row["permissive"]))
    return Policy(row["name"], int(row["version"]), int(row["seq"]), rules, row["set_at"], row["source"],
                  row["reason"], row["run_id"])


def history(settings: Settings, name: str) -> list[Policy]:
    """Every policy ``name`` has had, oldest first (commit order)."""
    validate_name(name)
    return [_to_policy(r) for r in _read(policies_path(settings))[1] if r["name"] == name]


def current(settings: Settings, name: str) -> Policy | None:
    """The policy in force for ``name`` (the last committed), or None."""
    found = history(settings, name)
    return found[-1] if found else None


def require(settings: Settings, name: str) -> Policy:
    """:func:`current`, or :class:`NoPolicyError` naming the command that sets one."""
    found = current(settings, name)
    if found is None:
        raise NoPolicyError(
            f"{name} has no gate policy, so the gate refuses it: set one with `sparkship policy set {name} "
            "--min METRIC=X --max-regression X` (or `--permissive`, recorded, to gate nothing)"
        )
    return found


def set_policy(settings: Settings, name: str, rules: Rules, *, source: str = "api", reason: str | None = None,
               run_id: str | None = None, expect_version: int | None = None) -> tuple[Policy, bool]:
    """Make ``rules`` the policy of ``name``: ``(policy in force, whether this call committed a change)``.

    The same rules as the current policy commit nothing. ``expect_version``: change only if the model's policy is
    at that version now (0: only if it has none), else :class:`SparkshipError` and nothing changes. The commit is
    a compare-and-set on the table, retried when another change lands first.
    """
    validate_name(name)
    path = policies_path(settings)
    for _ in range(MAX_ATTEMPTS):
        table_version, rows = _read(path)
        mine = [_to_policy(r) for r in rows if r["name"] == name]
        latest = mine[-1] if mine else None
        at = latest.version if latest is not None else 0
        if expect_version is not None and at != expect_version:
            raise SparkshipError(f"the gate policy of {name} is at version {at}, not the expected {expect_version}; "
                                 "nothing changed (read it with `sparkship policy show` and set it again)")
        if latest is not None and latest.rules == rules:
            return latest, False
        row = {"seq": max((r["seq"] for r in rows), default=0) + 1, "name": name, "version": at + 1,
               "thresholds_json": json.dumps(rules.thresholds, sort_keys=True), "max_regression": rules.max_regression,
               "permissive": rules.permissive, "set_at": datetime.now(timezone.utc), "source": source,
               "reason": reason, "run_id": run_id}
        try:
            metadata.append_arrow(path, pa.Table.from_pylist([row], schema=SCHEMA), expected_version=table_version)
        except ConcurrentWriteError:
            time.sleep(random.uniform(0.005, 0.05))
            continue
        return _to_policy(row), True
    raise ConcurrentWriteError(f"setting the gate policy of {name}: {path} kept changing ({MAX_ATTEMPTS} attempts)")
