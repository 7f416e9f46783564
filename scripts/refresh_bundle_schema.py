"""Refresh the bundle schema vendored in sparkship (src/sparkship/bundle/cli_schema.json) from a Databricks CLI.

``sparkship bundle check`` validates databricks.yml and its includes against the JSON schema that
``databricks bundle schema`` prints; this script runs that command with the given binary and writes its output,
with the CLI's version recorded in the schema's ``$comment`` (JSON Schema ignores it).

    .venv/bin/python scripts/refresh_bundle_schema.py --cli .venv/bin/databricks
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "src" / "sparkship" / "bundle" / "cli_schema.json"


def run(cli: str, *args: str) -> str:
    proc = subprocess.run([cli, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{cli} {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cli", default=shutil.which("databricks") or "databricks",
                        help="the databricks binary (default: databricks on PATH)")
    parser.add_argument("--out", type=Path, default=TARGET, help=f"where to write the schema (default {TARGET})")
    args = parser.parse_args(argv)
    version = run(args.cli, "--version").strip()  # e.g. "Databricks CLI v1.14.0-dev"
    schema = json.loads(run(args.cli, "bundle", "schema"))
    schema = {"$comment": f"databricks bundle schema of {version}", **schema}
    args.out.write_text(json.dumps(schema, separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes) from {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
