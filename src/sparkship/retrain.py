"""Retraining on drift, with a guard against retraining loops.

The monitoring job (resources/monitoring.yml) runs ``sparkship monitor --on-drift report``, which sets the task
value ``drift``; on ``"true"`` a condition task starts ``sparkship retrain`` (:func:`request_retrain`) and, when
that allows it, the training job, which validates and promotes through the gate as any training run does.

The guard: at most one retraining per window and model. Each decision is an event in sparkship's registry,
``retrain_requested`` (allowed) or ``retrain_refused`` (one was requested within the window); the window counts
from the latest ``retrain_requested``. A model that stays drifted after its retraining is refused until the
window has passed, and the refusal fails the monitoring run, so it reaches the job's failure recipients. The
decision and its event are one compare-and-set on the registry's events table, so concurrent runs cannot both
request a retraining.

    >>> decision = request_retrain(registry, "churn", "7d", reason="drift", run_id="42")   # doctest: +SKIP
    >>> decision.allowed, decision.event                                                    # doctest: +SKIP
    (True, 'retrain_requested')
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sparkship.errors import UsageError
from sparkship.names import validate_name

if TYPE_CHECKING:  # pragma: no cover
    from sparkship.registry import Registry

log = logging.getLogger(__name__)

REQUESTED = "retrain_requested"
REFUSED = "retrain_refused"
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class RetrainDecision:
    """Whether ``model`` may be retrained now, and the event that records the decision."""

    model: str
    allowed: bool
    event: str
    seq: int
    window: str
    reason: str
    at: str
    last_request: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def message(self) -> str:
        if self.allowed:
            return f"retraining {self.model} ({self.reason}): requested, event seq {self.seq}"
        last = self.last_request or {}
        return (f"retraining {self.model} refused: one was already requested at {last.get('at')} "
                f"(run {last.get('run_id')}), within the window of {self.window}; look at the drift, or retrain "
                f"by hand (`databricks bundle run training`)")


def parse_window(text: str) -> timedelta:
    """A window like ``30m``, ``12h``, ``7d`` or ``2w`` as a duration.

    >>> parse_window("7d")
    datetime.timedelta(days=7)
    """
    match = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text or "")
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"--window {text!r} is invalid: use a positive number with m, h, d or w (e.g. 12h, 7d)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def request_retrain(
    registry: Registry, model: str, window: str, *, reason: str = "drift", run_id: str | None = None,
    now: datetime | None = None,
) -> RetrainDecision:
    """Decide whether ``model`` may be retrained now and record the decision as a registry event.

    Args:
        registry: sparkship's registry; its ``events`` table keeps the decisions.
        model: the registered model's name.
        window: at most one retraining per this window (``7d``); it counts from the latest request.
        reason: why (recorded), e.g. ``drift`` or ``quality_monitor``.
        run_id: the job run that asks (recorded as lineage).
        now: the decision's time (default: the clock); the registry's ``at`` of each event is compared with it.

    Returns:
        The decision: ``allowed`` and the event (``retrain_requested`` or ``retrain_refused``) with its ``seq``.
    """
    validate_name(model)
    span = parse_window(window)
    if not reason or not reason.strip():
        raise UsageError("--reason must not be empty: say why the model is retrained (e.g. drift)")
    now = now or datetime.now(timezone.utc)

    def decide(events: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        requests = [e for e in events if e["event"] == REQUESTED]
        last = requests[-1] if requests else None
        allowed = last is None or now - datetime.fromisoformat(last["at"]) >= span
        details: dict[str, Any] = {"reason": reason, "window": window, "decided_at": now.isoformat()}
        if last:
            details["last_request"] = {"seq": last["seq"], "at": last["at"], "run_id": last["run_id"]}
        return (REQUESTED if allowed else REFUSED), details

    # One compare-and-set: two monitoring runs deciding at once cannot both request a retraining.
    event, details, seq = registry.record_decision(model, decide, run_id)
    allowed = event == REQUESTED
    log.info("retrain %s for %s (%s, window %s)", "requested" if allowed else "refused", model, reason, window)
    return RetrainDecision(model, allowed, event, seq, window, reason, now.isoformat(),
                           details.get("last_request"))


def set_task_value(key: str, value: str) -> bool:
    """Set a Databricks job task value (read by later tasks as ``{{tasks.<task>.values.<key>}}``).

    Off Databricks (no ``DATABRICKS_RUNTIME_VERSION``) there is no job to tell: it logs the value and returns
    False. On Databricks it returns True once ``dbutils.jobs.taskValues.set`` has taken the value.
    """
    if "DATABRICKS_RUNTIME_VERSION" not in os.environ:
        log.info("task value %s=%s (not on Databricks: not set)", key, value)
        return False
    # databricks-sdk ships with every Databricks runtime; the package never needs it elsewhere.
    from databricks.sdk.runtime import dbutils

    dbutils.jobs.taskValues.set(key=key, value=value)
    log.info("task value %s=%s set", key, value)
    return True
