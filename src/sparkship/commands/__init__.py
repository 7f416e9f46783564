"""CLI command groups. Each module exposes ``register(subparsers, common)``; commands return a dict that the CLI
prints as JSON (``--json``) or as text. Commands only parse and call the library."""
from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sparkship.config import Settings
from sparkship.spark import get_spark

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger("sparkship")


@dataclass
class Context:
    """What every command gets: resolved settings and a lazily started SparkSession."""

    settings: Settings
    as_json: bool = False
    _spark: SparkSession | None = field(default=None, repr=False)

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            where = f"Spark Connect {self.settings.remote}" if self.settings.remote else self.settings.master or "local"
            log.info("starting Spark (%s)", where)
            self._spark = get_spark(home=self.settings.home, master=self.settings.master,
                                    remote=self.settings.remote)
        return self._spark


Handler = Callable[[Context, argparse.Namespace], "dict[str, Any] | CommandResult"]


@dataclass
class CommandResult:
    """A command's JSON payload, its text rendering, and its exit code (0 unless the outcome is a 'no')."""

    payload: dict[str, Any]
    text: str | None = None
    exit_code: int = 0


def add_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    name: str,
    handler: Handler,
    help: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help, description=description or help, parents=[common])
    parser.set_defaults(handler=handler)
    return parser


def render_text(payload: Any) -> str:
    """Plain text for a payload: a table for lists of flat dicts, ``key: value`` lines otherwise."""
    if isinstance(payload, dict) and len(payload) == 1 and isinstance(next(iter(payload.values())), list):
        payload = next(iter(payload.values()))
    if isinstance(payload, list):
        if not payload:
            return "(none)"
        if all(isinstance(r, dict) for r in payload):
            cols = list(dict.fromkeys(k for r in payload for k in r))
            cells = [[_cell(r.get(c)) for c in cols] for r in payload]
            widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
            lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
            lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
            return "\n".join(lines)
        return "\n".join(_cell(r) for r in payload)
    if isinstance(payload, dict):
        return "\n".join(f"{k}: {_cell(v)}" for k, v in payload.items())
    return _cell(payload)


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)
