"""Where sparkship keeps things: one home folder, with the registry and model artifacts beneath it.

Precedence: explicit argument (a CLI flag) > environment variable > default.

    >>> from sparkship.config import Settings
    >>> s = Settings.resolve(home="/tmp/sh")
    >>> s.registry_root
    '/tmp/sh/registry'
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sparkship.errors import UsageError

HOME_ENV = "SPARKSHIP_HOME"
REGISTRY_ENV = "SPARKSHIP_REGISTRY_ROOT"
MODELS_ENV = "SPARKSHIP_MODELS_ROOT"
MASTER_ENV = "SPARK_MASTER"
REMOTE_ENV = "SPARK_REMOTE"
DEFAULT_HOME = ".sparkship"


def is_uri(path: str) -> bool:
    """A remote URI (``s3://``, ``abfss://``, ``gs://``, ``dbfs:/``...), not a path on a mounted filesystem."""
    return "://" in path or path.startswith("dbfs:")


def _root(option: str, path: str) -> str:
    """A root folder made absolute; URIs are refused, since artifacts are written with file-system calls."""
    if is_uri(path):
        mounted = "/dbfs/" + path[len("dbfs:"):].lstrip("/") if path.startswith("dbfs:") else None
        hint = f"use {mounted}" if mounted else "use a Unity Catalog volume (/Volumes/<catalog>/<schema>/<volume>/...)"
        raise UsageError(
            f"{option} {path}: sparkship keeps its home, registry and model artifacts on a mounted filesystem, "
            f"not at a URI; {hint} or a local folder. (Tables may be URIs or catalog names.)"
        )
    return str(Path(path).expanduser().resolve())


def _master_or_remote(master: str | None, remote: str | None) -> dict[str, str | None]:
    """One of a master URL (classic session) and a Connect remote: a flag beats an environment variable.

    pyspark refuses a session with both (CANNOT_CONFIGURE_SPARK_CONNECT_MASTER), so two at the same level are a
    usage error said before Spark starts.
    """
    if master and remote:
        raise UsageError(f"--master {master} and --remote {remote}: give one (a Spark Connect session has no master)")
    env_master, env_remote = os.environ.get(MASTER_ENV) or None, os.environ.get(REMOTE_ENV) or None
    if master or remote:
        return {"master": master, "remote": remote}
    if env_master and env_remote:
        raise UsageError(f"{MASTER_ENV}={env_master} and {REMOTE_ENV}={env_remote} are both set: unset one, or "
                         "choose with --master or --remote (a Spark Connect session has no master)")
    return {"master": env_master, "remote": env_remote}


@dataclass(frozen=True)
class Settings:
    """Resolved locations and the Spark master (classic) or remote (Spark Connect) for one command."""

    home: str
    registry_root: str
    models_root: str
    master: str | None = None
    remote: str | None = None

    @classmethod
    def resolve(
        cls,
        home: str | None = None,
        registry_root: str | None = None,
        models_root: str | None = None,
        master: str | None = None,
        remote: str | None = None,
    ) -> Settings:
        home_path = _root("--home / SPARKSHIP_HOME", home or os.environ.get(HOME_ENV) or DEFAULT_HOME)
        return cls(
            home=home_path,
            registry_root=_root("--registry-root / SPARKSHIP_REGISTRY_ROOT",
                                registry_root or os.environ.get(REGISTRY_ENV) or f"{home_path}/registry"),
            models_root=_root("--models-root / SPARKSHIP_MODELS_ROOT",
                              models_root or os.environ.get(MODELS_ENV) or f"{home_path}/models"),
            **_master_or_remote(master, remote),
        )

    @property
    def tables_root(self) -> str:
        """Default folder for tables named without a path (the demo's, for example)."""
        return f"{self.home}/tables"
