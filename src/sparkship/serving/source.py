"""Where a served model comes from: a registry reference (NAME, NAME/VERSION, NAME@ALIAS) or a folder.

A folder is either a Spark PipelineModel folder (``metadata/``, ``stages/``) or a sparkship artifact
(``model/`` + ``manifest.json``, checksums verified). Anything else is resolved in the registry.

    >>> from sparkship.config import Settings
    >>> served = resolve("churn@champion", Settings.resolve(home="/tmp/sh"))      # doctest: +SKIP
    >>> served.name, served.version, served.alias                               # doctest: +SKIP
    ('churn', 3, 'champion')
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from sparkship.config import Settings
from sparkship.serving.pipeline import PipelineScorer, load


@dataclass(frozen=True)
class ServedModel:
    """A loaded scorer and what it is: name, registry version (None for a bare folder), alias followed."""

    scorer: PipelineScorer
    name: str
    version: int | None
    ref: str
    path: str
    alias: str | None = None
    loaded_at: float = field(default_factory=time.time)

    def info(self) -> dict[str, Any]:
        manifest = self.scorer.manifest or {}
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "alias": self.alias,
            "path": self.path,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "task": manifest.get("task"),
            "algorithm": manifest.get("algorithm"),
            "signature": {
                "inputs": self.scorer.signature.to_list(),
                "outputs": self.scorer.describe()["outputs"],
            },
            "stages": self.scorer.describe()["stages"],
        }


def is_model_folder(ref: str) -> bool:
    return os.path.isdir(ref) and (
        os.path.isdir(os.path.join(ref, "metadata"))
        or (os.path.isfile(os.path.join(ref, "manifest.json")) and os.path.isdir(os.path.join(ref, "model")))
    )


def resolve(ref: str, settings: Settings) -> ServedModel:
    """Load the model ``ref`` names: a model folder, or a registry reference."""
    if is_model_folder(ref):
        path = os.path.abspath(ref)
        scorer = load(path)
        name = (scorer.manifest or {}).get("name") or os.path.basename(path.rstrip("/"))
        return ServedModel(scorer, name, None, ref, path)
    from sparkship.names import parse_ref
    from sparkship.registry import Registry

    parsed = parse_ref(ref)
    mv = Registry(settings).get(parsed)
    return ServedModel(load(mv.artifact), mv.name, mv.version, ref, mv.artifact, alias=parsed.alias)


def load_version(settings: Settings, name: str, version: int, alias: str | None, ref: str) -> ServedModel:
    """Load one registered version (used when an alias moves)."""
    from sparkship.names import ModelRef
    from sparkship.registry import Registry

    mv = Registry(settings).get(ModelRef(name, version=version))
    return ServedModel(load(mv.artifact), mv.name, mv.version, ref, mv.artifact, alias=alias)
