"""Model artifacts: a fitted PipelineModel saved by Spark's own writer plus ``manifest.json``.

Layout (see docs/DESIGN.md): ``<models_root>/<name>/<version>/{model/, manifest.json}``. The manifest holds a
sha256 for every file under ``model/``; :func:`load` and :func:`verify` refuse an artifact whose files were
changed, truncated, removed or added, naming the file. The manifest cannot vouch for itself: the registry keeps
its sha256 (:func:`manifest_digest`) in the version's row and passes it in, so that an edited manifest (its
``labels``, ``signature``, ``task`` or file list) is refused too.

    >>> staged = stage(pipeline_model, {"name": "churn"}, "/tmp/models")        # doctest: +SKIP
    >>> manifest = verify(final_dir)                                            # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from sparkship.errors import IntegrityError, NotFoundError, UsageError
from sparkship.spark import active_session
from sparkship.spark_models import load_pipeline

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel
    from pyspark.sql import SparkSession

FORMAT = "sparkship-model/1"
MANIFEST = "manifest.json"
MODEL_DIR = "model"
STAGING_DIR = ".staging"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksums(artifact_dir: str) -> dict[str, str]:
    """sha256 of every file under ``<artifact_dir>/model``, keyed by path relative to ``artifact_dir``."""
    root = os.path.join(artifact_dir, MODEL_DIR)
    out: dict[str, str] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            full = os.path.join(folder, name)
            out[os.path.relpath(full, artifact_dir)] = _sha256(full)
    return dict(sorted(out.items()))


def stage(model: PipelineModel, manifest: dict[str, Any], models_root: str) -> str:
    """Save ``model`` and its manifest into a fresh staging folder under ``models_root``; return the folder.

    The registry then moves the folder to its versioned path in one rename.
    """
    staged = save_staged(model, models_root)
    seal(staged, manifest)
    return staged


def save_staged(model: PipelineModel, models_root: str) -> str:
    """Save ``model`` under ``model/`` of a fresh staging folder (no manifest yet: :func:`seal` adds it)."""
    staged = os.path.join(models_root, STAGING_DIR, uuid.uuid4().hex)
    model.write().save(os.path.join(staged, MODEL_DIR))
    if not os.path.isdir(os.path.join(staged, MODEL_DIR)):
        # Spark writes the model where its driver runs: a Spark Connect server on another machine wrote it there.
        raise UsageError(
            f"Spark saved the model to {os.path.join(staged, MODEL_DIR)}, but that folder is not on this machine: "
            "with a Spark Connect server elsewhere, --models-root must be a folder that both this machine and the "
            "server mount (a Unity Catalog volume, /Volumes/...)"
        )
    return staged


def seal(staged: str, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` into a staged folder, with ``format`` and the sha256 of every file under ``model/``."""
    full = {"format": FORMAT, **manifest, "files": checksums(staged)}
    with open(os.path.join(staged, MANIFEST), "w") as fh:
        json.dump(full, fh, indent=2, sort_keys=True, default=str)


def _manifest_bytes(artifact_dir: str) -> bytes:
    if not os.path.isdir(artifact_dir):
        raise NotFoundError(f"model artifact {artifact_dir} does not exist")
    try:
        with open(os.path.join(artifact_dir, MANIFEST), "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise IntegrityError(f"model artifact {artifact_dir}: {MANIFEST} is missing") from None


def manifest_digest(artifact_dir: str) -> str:
    """The sha256 of the artifact's ``manifest.json``, which the registry records when it registers the artifact."""
    return hashlib.sha256(_manifest_bytes(artifact_dir)).hexdigest()


def read_manifest(artifact_dir: str, expected_sha256: str | None = None) -> dict[str, Any]:
    """The artifact's manifest; with ``expected_sha256`` (the registry's record), :class:`IntegrityError` when the
    file is not the one registered. The digest is taken of the very bytes that are parsed."""
    return _read_manifest(artifact_dir, expected_sha256)[0]


def _read_manifest(artifact_dir: str, expected_sha256: str | None) -> tuple[dict[str, Any], str]:
    """The manifest and the sha256 of the bytes it was parsed from."""
    data = _manifest_bytes(artifact_dir)
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise IntegrityError(
            f"model artifact {artifact_dir}: file {MANIFEST} was changed after registration (its sha256 is not the "
            "one the registry recorded): refused; restore the registered file or register the model again"
        )
    try:
        return json.loads(data), digest
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"model artifact {artifact_dir}: {MANIFEST} is not valid JSON ({exc})") from None


def verify(artifact_dir: str, manifest_sha256: str | None = None) -> dict[str, Any]:
    """Check every file against the manifest (and the manifest against ``manifest_sha256``, the registry's record,
    when given); return the manifest or raise :class:`IntegrityError`."""
    return verified(artifact_dir, manifest_sha256)[0]


def verified(artifact_dir: str, manifest_sha256: str | None = None) -> tuple[dict[str, Any], str]:
    """:func:`verify`'s manifest, and the sha256 of the very bytes it was parsed from and checked the files against
    (what :func:`load_verified` takes)."""
    manifest, digest = _read_manifest(artifact_dir, manifest_sha256)
    expected: dict[str, str] = manifest.get("files") or {}
    if not expected:
        raise IntegrityError(f"model artifact {artifact_dir}: the manifest lists no files")
    actual = checksums(artifact_dir)
    for rel, file_digest in expected.items():
        if rel not in actual:
            raise IntegrityError(f"model artifact {artifact_dir}: file {rel} is missing")
        if actual[rel] != file_digest:
            raise IntegrityError(f"model artifact {artifact_dir}: file {rel} was changed (sha256 mismatch)")
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise IntegrityError(f"model artifact {artifact_dir}: unexpected file {extra[0]}")
    return manifest, digest


def load(artifact_dir: str, manifest_sha256: str | None = None) -> PipelineModel:
    """The verified PipelineModel of an artifact folder (see :func:`verify` for ``manifest_sha256``), loaded for
    the active session (classic or Spark Connect, whichever saved it)."""
    return load_verified(artifact_dir, verified(artifact_dir, manifest_sha256)[1])


# Pipelines already read, by session, folder and manifest digest, the most recent last. A sealed artifact never
# changes, and every load checks its files against the manifest first, so the same digest means the same model:
# a job or notebook that scores, validates and reports one version reads it from storage once.
_LOADED: OrderedDict[tuple[int, str, str], tuple[SparkSession, PipelineModel]] = OrderedDict()
_LOADED_MAX = 8


def load_verified(artifact_dir: str, digest: str) -> PipelineModel:
    """The PipelineModel of an artifact that :func:`verify` passed against the manifest whose sha256 is
    ``digest``, for the active session; the one read before when this session has read it already.

    Args:
        artifact_dir: the artifact folder (``<models_root>/<name>/<version>``).
        digest: the sha256 of the manifest the files were checked against.

    Returns:
        The fitted pipeline.
    """
    session = active_session()
    key = (id(session), os.path.realpath(artifact_dir), digest)
    if session is not None and key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key][1]
    model = load_pipeline(os.path.join(artifact_dir, MODEL_DIR), session)
    if session is not None:  # the session is kept with its models, so its id is not reused while they are
        _LOADED[key] = (session, model)
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.popitem(last=False)
    return model


def forget_loaded() -> None:
    """Drop the pipelines :func:`load_verified` keeps, so that the next load reads from storage as a fresh job's
    would (benchmarks measure a run that way)."""
    _LOADED.clear()
