"""``sparkship models list|show|history`` and ``sparkship alias set``."""
from __future__ import annotations

import argparse
from typing import Any

from sparkship.commands import CommandResult, Context, add_command, render_text
from sparkship.errors import NotFoundError
from sparkship.refs import parse_ref
from sparkship.registry import Registry


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    models = subparsers.add_parser("models", help="list registered models, show a version, show a model's history")
    sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    sub.required = True
    add_command(sub, common, "list", list_models, "every registered model with its latest version and aliases")
    p = add_command(sub, common, "show", show_model, "one version: metrics, lineage, signature, aliases")
    p.add_argument("ref", help="NAME, NAME/VERSION, NAME@ALIAS or NAME/run:RUN_ID")
    p = add_command(sub, common, "history", model_history, "versions, alias moves and events of a model")
    p.add_argument("name")

    alias = subparsers.add_parser("alias", help="move a model alias (compare-and-set)")
    sub = alias.add_subparsers(dest="alias_command", metavar="ACTION")
    sub.required = True
    p = add_command(sub, common, "set", set_alias, "point NAME@ALIAS at VERSION")
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version", type=int)
    p.add_argument("--expect-version", type=int, default=None,
                   help="move only if the alias points at this version now (0: only if it is unset)")
    p.add_argument("--reason", default=None)


def _registry(ctx: Context) -> Registry:
    return Registry(ctx.settings)


def list_models(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    return {"models": _registry(ctx).list_models()}


def show_model(ctx: Context, args: argparse.Namespace) -> CommandResult:
    reg = _registry(ctx)
    mv, manifest = reg.manifest(parse_ref(args.ref))
    aliases = sorted(a["alias"] for a in _current_alias_rows(reg, mv.name) if a["version"] == mv.version)
    payload = {
        **mv.to_dict(),
        "aliases": aliases,
        "signature": manifest.get("signature"),
        "training": manifest.get("training"),
        "versions": manifest.get("versions"),
    }
    return CommandResult(payload)


def _current_alias_rows(reg: Any, name: str) -> list[dict[str, Any]]:
    current: dict[str, dict[str, Any]] = {}
    for move in reg.alias_history(name):
        current[move["alias"]] = move
    return list(current.values())


def model_history(ctx: Context, args: argparse.Namespace) -> CommandResult:
    reg = _registry(ctx)
    versions = [mv.to_dict() for mv in reg.versions(args.name)]
    if not versions:
        raise NotFoundError(f"model '{args.name}' is not registered")
    aliases = reg.alias_history(args.name)
    events = reg.events(args.name)
    payload = {"name": args.name, "versions": versions, "alias_history": aliases, "events": events}
    text = "\n\n".join(
        [
            "versions:\n" + render_text([{k: v[k] for k in ("version", "created_at", "algorithm", "metrics", "run_id")}
                                         for v in versions]),
            "alias moves:\n" + render_text([{k: a[k] for k in ("seq", "alias", "version", "previous_version",
                                                                "action", "forced", "reason", "moved_at")}
                                            for a in aliases]),
            "events:\n" + render_text([{k: e[k] for k in ("at", "version", "event")} | {"details": _summary(e)}
                                        for e in events]),
        ]
    )
    return CommandResult(payload, text=text)


def _summary(event: dict[str, Any]) -> Any:
    """A validation's full details are long; text mode shows its verdict (--json has everything)."""
    details = event["details"]
    if event["event"] == "validated":
        return {k: details.get(k) for k in ("status", "reasons", "table_version")}
    return details


def set_alias(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    move = _registry(ctx).set_alias(
        args.name, args.alias, args.version, expect_version=args.expect_version, reason=args.reason
    )
    return {"name": move.name, "alias": move.alias, "version": move.version,
            "previous_version": move.previous_version}
