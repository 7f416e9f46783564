"""Promotion and rollback: moving an alias (``champion`` by default) under the validation gate.

:func:`promote` needs the version's latest ``validated`` event to be a PASS (for ``champion``, against the version
that holds it now), or ``force=True`` with a ``reason``, which is recorded; the move is a compare-and-set.
:func:`rollback` moves the alias back to the holder before its latest move. The full rules: docs/DESIGN.md.

    >>> promote(settings, "churn/run:1234")                                    # doctest: +SKIP
    AliasChange(name='churn', alias='champion', version=3, previous_version=2, ...)
    >>> rollback(settings, "churn", reason="latency regression").version       # doctest: +SKIP
    2
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from sparkship import policy
from sparkship.config import Settings
from sparkship.errors import SparkshipError, UsageError
from sparkship.names import validate_alias, validate_name
from sparkship.refs import ModelRef, to_model_ref
from sparkship.registry import Registry
from sparkship.validation import CHAMPION
from sparkship.validation import EVENT as VALIDATED

log = logging.getLogger(__name__)

__all__ = ["AliasChange", "PromotionRefusedError", "latest_validation", "promote", "rollback"]


class PromotionRefusedError(SparkshipError):
    """The version has not passed validation (or its validation is stale); ``--force --reason`` overrides."""


@dataclass(frozen=True)
class AliasChange:
    """What :func:`promote` or :func:`rollback` did to ``name@alias``."""

    name: str
    alias: str
    version: int
    previous_version: int | None
    action: str
    changed: bool
    forced: bool = False
    reason: str | None = None
    validation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def latest_validation(registry: Registry, name: str, version: int) -> dict[str, Any] | None:
    """The newest ``validated`` event of ``name/version`` (``details`` holds the result), or None."""
    events = registry.events(name, event=VALIDATED, version=version)
    return events[-1] if events else None


def _summary(event: dict[str, Any] | None) -> dict[str, Any] | None:
    if event is None:
        return None
    d = event["details"]
    return {"at": event["at"], "run_id": event["run_id"], "passed": d.get("passed"), "table": d.get("table"),
            "table_version": d.get("table_version"), "champion_version": d.get("champion_version"),
            "policy_version": (d.get("policy") or {}).get("version"), "reasons": d.get("reasons", [])}


def _check_policy(settings: Settings, ref: str, name: str, summary: dict[str, Any]) -> None:
    """A PASS counts only under the gate policy in force now: a policy set since then re-opens the question."""
    in_force = policy.current(settings, name)
    if in_force is None:
        raise PromotionRefusedError(f"{name} has no gate policy: set one with `sparkship policy set {name}` and "
                                    f"validate {ref} again (or --force --reason TEXT)")
    judged = summary["policy_version"]
    if judged != in_force.version:
        under = f"gate policy version {judged}" if judged is not None else "no gate policy"
        raise PromotionRefusedError(f"{ref} was validated under {under}, but the gate policy of {name} is now "
                                    f"version {in_force.version}: validate it again")


def promote(
    settings: Settings,
    ref: str | ModelRef,
    alias: str = CHAMPION,
    force: bool = False,
    reason: str | None = None,
    run_id: str | None = None,
) -> AliasChange:
    """Point ``NAME@alias`` at the version ``ref`` resolves to, if its latest validation passed.

    Raises :class:`PromotionRefusedError` (nothing changes) when it did not, unless ``force`` with a
    ``reason``.

        >>> promote(settings, "churn/3").previous_version                        # doctest: +SKIP
        2
        >>> promote(settings, "churn/4", force=True, reason="hotfix").forced      # doctest: +SKIP
        True
    """
    validate_alias(alias)
    reason = reason.strip() if isinstance(reason, str) and reason.strip() else None
    if force and reason is None:
        raise UsageError("--force needs --reason TEXT: a forced promotion must say why")
    reg = Registry(settings)
    mv = reg.get(to_model_ref(ref))
    current = reg.alias_version(mv.name, alias)
    event = latest_validation(reg, mv.name, mv.version)
    summary = _summary(event)
    if current == mv.version:
        log.info("%s@%s already points at %s: nothing to do", mv.name, alias, mv.version)
        return AliasChange(mv.name, alias, mv.version, current, "promote", False, validation=summary)
    if not force:
        if summary is None:
            raise PromotionRefusedError(
                f"{mv.ref} has not been validated: run `sparkship validate --model {mv.ref} --table ...` first "
                "(or --force --reason TEXT)"
            )
        if not summary["passed"]:
            raise PromotionRefusedError(
                f"{mv.ref} failed its latest validation ({event['at']}): {'; '.join(summary['reasons']) or 'FAIL'}"
            )
        if alias == CHAMPION and summary["champion_version"] != current:
            compared = summary["champion_version"]
            raise PromotionRefusedError(
                f"{mv.ref} was validated against champion "
                f"{compared if compared is not None else '(none)'}, but {mv.name}@{alias} is now "
                f"{current if current is not None else '(unset)'}: validate it again"
            )
        _check_policy(settings, mv.ref, mv.name, summary)
    move = reg.set_alias(mv.name, alias, mv.version, expect_version=current or 0, reason=reason, forced=force,
                         action="promote", run_id=run_id)
    change = AliasChange(mv.name, alias, mv.version, move.previous_version, "promote", True, force, reason, summary)
    reg.record_event(mv.name, mv.version, "promoted",
                     {"alias": alias, "previous_version": move.previous_version, "forced": force, "reason": reason,
                      "validation": summary}, run_id)
    if force:
        log.warning("%s@%s -> %s FORCED (%s)", mv.name, alias, mv.version, reason)
    return change


def rollback(
    settings: Settings, name: str, alias: str = CHAMPION, reason: str | None = None, run_id: str | None = None
) -> AliasChange:
    """Move ``name@alias`` back to the version it pointed at before its latest move.

        >>> rollback(settings, "churn", reason="bad latency").version              # doctest: +SKIP
        2
    """
    validate_name(name)
    validate_alias(alias)
    reg = Registry(settings)
    move = reg.rollback(name, alias, reason=reason, run_id=run_id)
    reg.record_event(name, move.version, "rolled_back",
                     {"alias": alias, "from_version": move.previous_version, "to_version": move.version,
                      "reason": reason}, run_id)
    return AliasChange(name, alias, move.version, move.previous_version, "rollback", True, reason=reason)
