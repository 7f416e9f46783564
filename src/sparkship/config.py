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

HOME_ENV = "SPARKSHIP_HOME"
REGISTRY_ENV = "SPARKSHIP_REGISTRY_ROOT"
MODELS_ENV = "SPARKSHIP_MODELS_ROOT"
MASTER_ENV = "SPARK_MASTER"
DEFAULT_HOME = ".sparkship"


def _absolute(path: str) -> str:
    # Remote URIs (dbfs:/, s3://, abfss://) are kept as given; local paths are made absolute.
    if "://" in path or path.startswith("dbfs:"):
        return path.rstrip("/")
    return str(Path(path).expanduser().resolve())


@dataclass(frozen=True)
class Settings:
    """Resolved locations and the Spark master for one command."""

    home: str
    registry_root: str
    models_root: str
    master: str | None = None

    @classmethod
    def resolve(
        cls,
        home: str | None = None,
        registry_root: str | None = None,
        models_root: str | None = None,
        master: str | None = None,
    ) -> "Settings":
        home_path = _absolute(home or os.environ.get(HOME_ENV) or DEFAULT_HOME)
        return cls(
            home=home_path,
            registry_root=_absolute(registry_root or os.environ.get(REGISTRY_ENV) or f"{home_path}/registry"),
            models_root=_absolute(models_root or os.environ.get(MODELS_ENV) or f"{home_path}/models"),
            master=master or os.environ.get(MASTER_ENV) or None,
        )

    @property
    def tables_root(self) -> str:
        """Default folder for tables named without a path (the demo's, for example)."""
        return f"{self.home}/tables"
