"""``sparkship validate``, ``sparkship promote`` and ``sparkship rollback``.

``validate`` exits 0 on PASS and 1 on FAIL; ``promote`` exits 1 when the gate refuses. In a bundle job the
version travels between tasks as ``--model NAME/run:{{job.run_id}}``.
"""
from __future__ import annotations

import argparse
from typing import Any

from sparkship import policy, promotion, validation
from sparkship.commands import CommandResult, Context, add_command, render_text
from sparkship.commands import policy as policy_commands
from sparkship.refs import parse_ref, parse_table
from sparkship.registry import Registry

REF_HELP = "NAME/VERSION, NAME/run:RUN_ID (the version a job run registered), NAME@ALIAS or NAME (latest)"


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        subparsers, common, "validate", validate_model,
        "evaluate a model version and the champion on one snapshot of a table; exit 0 PASS, 1 FAIL",
        description=(
            "Evaluate the candidate and NAME@champion on the same rows of one pinned version of the validation "
            "table (on a model's training table, only the rows its training held out), check the model's gate "
            "policy (`sparkship policy set`; the candidate's spec.validation can only tighten it), record the "
            "outcome; exit 0 on PASS, 1 on FAIL or when the model has no policy. max_regression is absolute, in "
            "the metric's units, on every bounded metric (else the primary one); worse = lower for "
            "areaUnderROC/areaUnderPR/accuracy/f1/r2, higher for rmse/mae/logLoss."
        ),
    )
    p.add_argument("--model", required=True, help=REF_HELP)
    p.add_argument("--table", required=True, help="validation Delta table, PATH or PATH@VERSION (default: latest)")
    p.add_argument("--run-id", default=None, help="job run id recorded with the result")
    p.add_argument("--policy", type=policy_commands.policy_argument, default=None, metavar="RULES",
                   help="make these rules the model's gate policy first (recorded), e.g. 'areaUnderROC>=0.8, "
                        "max_regression=0.02' or 'permissive'; empty: the policy in the registry (a bundle's "
                        "gate_policy)")

    p = add_command(
        subparsers, common, "promote", promote_model,
        "move an alias (default champion) to a version whose latest validation passed",
    )
    p.add_argument("--model", required=True, help=REF_HELP)
    p.add_argument("--alias", default="champion")
    p.add_argument("--force", action="store_true", help="skip the validation gate (needs --reason)")
    p.add_argument("--reason", default=None, help="why (required with --force; recorded)")
    p.add_argument("--run-id", default=None, help="job run id recorded with the move")

    p = add_command(subparsers, common, "rollback", rollback_model,
                    "move an alias back to the version it pointed at before its latest move")
    p.add_argument("name")
    p.add_argument("--alias", default="champion")
    p.add_argument("--reason", default=None, help="why (recorded)")
    p.add_argument("--run-id", default=None, help="job run id recorded with the move")

    policy_commands.register(subparsers, common)


def validate_model(ctx: Context, args: argparse.Namespace) -> CommandResult:
    model = parse_ref(args.model)
    table = parse_table(args.table, what="--table")
    if args.policy is None:  # refused before Spark starts: the registry is read without it
        policy.require(ctx.settings, Registry(ctx.settings).get(model).name)
    result = validation.validate(ctx.spark, ctx.settings, model, table, run_id=args.run_id, rules=args.policy)
    payload = result.to_dict()
    names = list(dict.fromkeys([*result.candidate_metrics, *(result.champion_metrics or {})]))
    rows = [{"metric": m, "candidate": result.candidate_metrics.get(m),
             "champion": (result.champion_metrics or {}).get(m)} for m in names]
    champion = result.champion_version if result.champion_version is not None else "(none)"
    lines = [
        f"{result.status}: {result.name}/{result.version} on {result.table}@{result.table_version} "
        f"({result.rows} {'held-out ' if result.rows_kind == 'held-out' else ''}rows); champion: {champion}; "
        f"gate policy version {(result.policy or {}).get('version')}: {(result.policy or {}).get('rules')}",
        render_text(rows),
        *(f"- {r}" for r in result.reasons),
    ]
    return CommandResult(payload, text="\n".join(lines), exit_code=0 if result.passed else 1)


def promote_model(ctx: Context, args: argparse.Namespace) -> CommandResult:
    change = promotion.promote(ctx.settings, parse_ref(args.model), alias=args.alias, force=args.force,
                               reason=args.reason, run_id=args.run_id)
    text = (
        f"{change.name}@{change.alias}: {change.previous_version} -> {change.version}"
        + (" (forced)" if change.forced else "")
        if change.changed else f"{change.name}@{change.alias} already points at {change.version}"
    )
    return CommandResult(change.to_dict(), text=text)


def rollback_model(ctx: Context, args: argparse.Namespace) -> CommandResult:
    change = promotion.rollback(ctx.settings, args.name, alias=args.alias, reason=args.reason, run_id=args.run_id)
    text = f"{change.name}@{change.alias}: {change.previous_version} -> {change.version} (rollback)"
    return CommandResult(change.to_dict(), text=text)
