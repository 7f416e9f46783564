"""What a check reports: :class:`Problem`, the :class:`Problems` collector, and the helpers every section uses."""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

# A Unity Catalog table name, catalog.schema.table (no path, no backquotes, no @VERSION).
UC_TABLE = re.compile(r"[^.\s/`@]+\.[^.\s/`@]+\.[^.\s/`@]+")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the bundle: the file, where in it (a dotted path), and what.

    >>> str(Problem("databricks.yml", "targets.prod.mode", "invalid mode 'prod'"))
    "databricks.yml: targets.prod.mode: invalid mode 'prod'"
    """

    file: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.message}" if self.where else f"{self.file}: {self.message}"


class Problems:
    """Problems in first-seen order; one found in only some targets says which.

    >>> p = Problems(["dev", "prod"])
    >>> p.add("a.yml", "x", "bad", "prod"); p.add("a.yml", "y", "worse", "dev"); p.add("a.yml", "y", "worse", "prod")
    >>> [str(x) for x in p.result()]
    ['a.yml: x: bad (target prod)', 'a.yml: y: worse']
    """

    def __init__(self, targets: list[str]) -> None:
        self._all_targets = targets
        self._seen: dict[tuple[str, str, str], list[str] | None] = {}

    def add(self, file: str, where: str, message: str, target: str | None = None) -> None:
        key = (file, where, message)
        if target is None:
            self._seen[key] = None
            return
        targets = self._seen.setdefault(key, [])
        if targets is not None and target not in targets:
            targets.append(target)

    def extend(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.add(p.file, p.where, p.message)

    def result(self) -> list[Problem]:
        out = []
        for (file, where, message), targets in self._seen.items():
            if targets is not None and sorted(targets) != sorted(self._all_targets):
                message = f"{message} (target{'s' if len(targets) > 1 else ''} {', '.join(targets)})"
            out.append(Problem(file, where, message))
        return out


def did_you_mean(word: Any, choices: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` when one of ``choices`` is close to ``word``, else ``''``.

    >>> did_you_mean("workspce", ["workspace", "targets"])
    " (did you mean 'workspace'?)"
    """
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def walk(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a parsed YAML value, with its dotted path (list items named by their ``*_key``).

    >>> list(walk({"tasks": [{"task_key": "a", "x": "${var.y}"}]}))
    [('tasks[a].task_key', 'a'), ('tasks[a].x', '${var.y}')]
    """
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            label = item_label(v, i)
            yield from walk(v, f"{where}[{label}]")
    elif isinstance(value, str):
        yield where, value


def item_label(item: Any, index: int) -> str:
    """How a list item is named in a problem: its ``task_key`` / ``job_cluster_key`` / ``environment_key``."""
    if isinstance(item, dict):
        for key in ("task_key", "job_cluster_key", "environment_key"):
            if item.get(key):
                return str(item[key])
    return str(index)
