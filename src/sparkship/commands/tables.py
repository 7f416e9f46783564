"""``sparkship tables import|show|history``."""
from __future__ import annotations

import argparse
from typing import Any

from sparkship import ingest, tables
from sparkship.commands import CommandResult, Context, add_command, render_text


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    group = subparsers.add_parser("tables", help="import, show and list the history of Delta tables")
    sub = group.add_subparsers(dest="tables_command", metavar="ACTION")
    sub.required = True

    p = add_command(sub, common, "import", import_table, "write a CSV, parquet or JSON file into a Delta table")
    p.add_argument("--source", required=True, help="input file or folder")
    p.add_argument("--table", required=True, help="Delta table path")
    p.add_argument("--format", choices=["csv", "parquet", "json"], help="default: from the source's extension")
    p.add_argument("--mode", choices=["append", "overwrite"], default="append",
                   help="append (default): a CSV or JSON file is parsed with the existing table's column types; "
                        "overwrite: the types are inferred from the file")
    p.add_argument("--partition-by", default=None, help="comma-separated partition columns for a new table")
    p.add_argument("--expected-version", type=int, default=None, metavar="V",
                   help="commit only if the table is still at version V (-1: it must not exist yet)")

    p = add_command(sub, common, "show", show_table, "print rows of a Delta table")
    p.add_argument("table", help="Delta table path")
    p.add_argument("--version", type=int, default=None, help="table version to read (time travel)")
    p.add_argument("--limit", type=int, default=20)

    p = add_command(sub, common, "history", table_history, "list a Delta table's commits, newest first")
    p.add_argument("table", help="Delta table path")
    p.add_argument("--limit", type=int, default=None)


def import_table(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    partition_by = [c.strip() for c in args.partition_by.split(",")] if args.partition_by else None
    return ingest.import_file(
        ctx.spark, args.source, args.table, fmt=args.format, mode=args.mode, partition_by=partition_by,
        expected_version=args.expected_version,
    )


def show_table(ctx: Context, args: argparse.Namespace) -> CommandResult:
    df = tables.read(ctx.spark, args.table, version=args.version)
    rows = [r.asDict(recursive=True) for r in df.limit(args.limit).collect()]
    payload = {
        "table": args.table,
        "version": args.version if args.version is not None else tables.version(ctx.spark, args.table),
        "schema": [{"name": f.name, "type": f.dataType.simpleString()} for f in df.schema.fields],
        "rows": rows,
    }
    return CommandResult(payload, text=render_text(rows) if rows else "(no rows)")


def table_history(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    commits = tables.history(ctx.spark, args.table, limit=args.limit)
    # The create commit's parameters repeat the whole table metadata; the schema is what `show` is for.
    return {
        "history": [
            {
                "version": c["version"],
                "timestamp": c["timestamp"],
                "operation": c["operation"],
                "parameters": {k: v for k, v in c["parameters"].items() if k not in ("metadata", "protocol")},
            }
            for c in commits
        ]
    }
