"""Where a served model comes from: a registry reference (NAME, NAME/VERSION, NAME@ALIAS) or a folder.

The two are told apart by the caller, never guessed: ``churn`` could be a registered model and a ``./churn``
folder at once. :func:`resolve` takes registry references only, :func:`resolve_folder` folders only (the CLI's
``--model`` and ``--path``). A folder is either a Spark PipelineModel folder (``metadata/``, ``stages/``) or a
sparkship artifact (``model/`` + ``manifest.json``, checksums verified).

    >>> from sparkship.config import Settings
    >>> served = resolve(parse_ref("churn@champion"), Settings.resolve(home="/tmp/sh"))  # doctest: +SKIP
    >>> served.name, served.version, served.alias                               # doctest: +SKIP
    ('churn', 3, 'champion')
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from sparkship.config import Settings
from sparkship.errors import NotFoundError, UsageError
from sparkship.refs import ModelRef, parse_ref
from sparkship.registry import Registry
from sparkship.serving.pipeline import PipelineScorer, load

log = logging.getLogger(__name__)


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
        """What ``/metadata`` shows: no filesystem path (it would tell clients about the server's disks)."""
        manifest = self.scorer.manifest or {}
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "source": "registry" if self.version is not None else "folder",
            "alias": self.alias,
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


def resolve(ref: ModelRef, settings: Settings) -> ServedModel:
    """Load the registered model ``ref`` names (``NAME``, ``NAME/VERSION``, ``NAME@ALIAS``); never a folder."""
    mv = Registry(settings).get(ref)
    return ServedModel(load(mv.artifact), mv.name, mv.version, str(ref), mv.artifact, alias=ref.alias)


def resolve_folder(folder: str) -> ServedModel:
    """Load a model folder: a Spark PipelineModel folder or a sparkship artifact folder."""
    if not is_model_folder(folder):
        raise UsageError(f"--path {folder}: not a model folder (a Spark PipelineModel folder holding metadata/, "
                         "or an artifact folder holding model/ and manifest.json)")
    path = os.path.abspath(folder)
    scorer = load(path)
    base = os.path.basename(path.rstrip(os.sep))
    name = (scorer.manifest or {}).get("name") or base
    return ServedModel(scorer, name, None, f"path:{base}", path)


def resolve_source(settings: Settings, *, model: str | None = None, path: str | None = None) -> ServedModel:
    """The model of ``--model REF`` (registry) or ``--path FOLDER``: exactly one of them.

    A ``--model`` value that is not a registry reference but names a folder, or a registry name that is not
    registered while a model folder of that name exists, is refused with a message saying to use ``--path``.
    """
    if (model is None) == (path is None):
        raise UsageError("pass either --model REF (a registered model: NAME, NAME/VERSION, NAME@ALIAS) "
                         "or --path FOLDER (a model folder), not both")
    if path is not None:
        return resolve_folder(path)
    assert model is not None
    try:
        ref = parse_ref(model)
    except UsageError as exc:
        if os.path.exists(model):
            raise UsageError(f"--model {model!r} is not a registry reference ({exc}); "
                             f"to serve the folder, pass --path {model}") from None
        raise
    try:
        served = resolve(ref, settings)
    except NotFoundError as exc:
        if is_model_folder(model):
            raise NotFoundError(f"{exc}; ./{model} is a model folder: to serve it, pass --path {model}") from None
        raise
    if is_model_folder(model):
        log.warning("--model %s is the registered model; the folder ./%s is not served (pass --path %s for it)",
                    model, model, model)
    return served


def load_version(settings: Settings, name: str, version: int, alias: str | None, ref: str) -> ServedModel:
    """Load one registered version (used when an alias moves)."""
    mv = Registry(settings).get(ModelRef(name, version=version))
    return ServedModel(load(mv.artifact), mv.name, mv.version, ref, mv.artifact, alias=alias)
