"""``sparkship policy set|show``: a model's gate policy, kept in the registry (see :mod:`sparkship.policy`)."""
from __future__ import annotations

import argparse
from typing import Any

from sparkship import policy
from sparkship.commands import CommandResult, Context, add_command, render_text
from sparkship.errors import UsageError


def policy_argument(text: str) -> Any:
    """argparse ``type`` of ``validate --policy``: the rules, or None for an empty text (the registry's policy).

    Read when the arguments are parsed, so that ``sparkship bundle check`` reports a malformed ``gate_policy``.
    """
    try:
        return policy.parse_rules(text, what="policy")
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("policy: ")) from None


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    group = subparsers.add_parser("policy", help="set or show a model's gate policy (the rules validate applies)")
    sub = group.add_subparsers(dest="policy_command", metavar="ACTION")
    sub.required = True
    p = add_command(
        sub, common, "set", set_policy, "set the gate policy of a model (compare-and-set, versioned, recorded)",
        description=(
            "Set the rules `sparkship validate` holds every candidate of NAME to: inclusive metric bounds (--min, "
            "--max) and the largest allowed regression against the champion (--max-regression, absolute, in the "
            "metric's units; on every bounded metric, else the primary one). --permissive, chosen explicitly, gates "
            "nothing. The same rules as the current policy change nothing. A candidate's spec.validation can only "
            "tighten them."
        ),
    )
    p.add_argument("name", help="model name")
    p.add_argument("--min", action="append", default=[], metavar="METRIC=X",
                   help="lower bound, inclusive (repeatable), e.g. --min areaUnderROC=0.8")
    p.add_argument("--max", action="append", default=[], metavar="METRIC=X",
                   help="upper bound, inclusive (repeatable), e.g. --max rmse=30")
    p.add_argument("--max-regression", default=None, metavar="X",
                   help="how much worse than the champion a candidate may be (absolute, >= 0)")
    p.add_argument("--permissive", action="store_true", help="gate nothing (recorded as such)")
    p.add_argument("--reason", default=None, help="why (recorded)")
    p.add_argument("--expect-version", type=int, default=None,
                   help="change only if the policy is at this version now (0: only if there is none)")
    p.add_argument("--run-id", default=None, help="job run id recorded with the change")

    p = add_command(sub, common, "show", show_policy, "the gate policy in force for a model (--history: all)")
    p.add_argument("name", help="model name")
    p.add_argument("--history", action="store_true", help="every version of the policy, oldest first")


def set_policy(ctx: Context, args: argparse.Namespace) -> CommandResult:
    rules = policy.rules_from_options(args.min, args.max, args.max_regression, args.permissive)
    reason = args.reason.strip() if isinstance(args.reason, str) and args.reason.strip() else None
    found, changed = policy.set_policy(ctx.settings, args.name, rules, source="cli", reason=reason,
                                       run_id=args.run_id, expect_version=args.expect_version)
    payload = {**found.to_dict(), "changed": changed}
    text = f"{found.name}: gate policy version {found.version} {'set' if changed else 'unchanged'}: "
    return CommandResult(payload, text=text + found.rules.to_text())


def show_policy(ctx: Context, args: argparse.Namespace) -> CommandResult:
    if args.history:
        rows = [p.to_dict() for p in policy.history(ctx.settings, args.name)]
        text = render_text([{k: r[k] for k in ("version", "rules", "set_at", "source", "reason", "run_id")}
                            for r in rows])
        return CommandResult({"name": args.name, "history": rows}, text=text)
    found = policy.require(ctx.settings, args.name)
    return CommandResult(found.to_dict(), text=(
        f"{found.name}: gate policy version {found.version}: {found.rules.to_text()} "
        f"(set {found.set_at.isoformat(timespec='seconds')} by {found.source}"
        + (f": {found.reason}" if found.reason else "") + ")"
    ))
