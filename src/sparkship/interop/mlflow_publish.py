"""Publish a registered sparkship version to MLflow: one run with the manifest's params, metrics and lineage,
the exported model (:mod:`sparkship.interop.mlflow_export`) as its artifact, registered in the MLflow model
registry, with the version's sparkship aliases carried over.

The registry is Unity Catalog (``databricks-uc``) for a three-part name ``catalog.schema.model`` - which is
required when running on Databricks - and the tracking server's own registry otherwise.

    >>> publish(settings, "churn@champion", tracking_uri="http://127.0.0.1:5000")     # doctest: +SKIP
    {'registered_model': 'churn', 'version': '1', 'aliases': ['champion'], 'run_id': '...', ...}
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sparkship.config import Settings
from sparkship.errors import UsageError
from sparkship.interop.mlflow_export import export_model, require_mlflow
from sparkship.refs import ModelRef, to_model_ref
from sparkship.registry import Registry

UC_REGISTRY_URI = "databricks-uc"
MODEL_ARTIFACT_PATH = "model"
_MLFLOW_ALIAS = re.compile(r"^[A-Za-z0-9_-]+$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class PublishTarget:
    """Where a version goes: registered model name, aliases to set, MLflow URIs and experiment."""

    registered_model: str | None = None
    aliases: Sequence[str] = field(default_factory=tuple)
    tracking_uri: str | None = None
    registry_uri: str | None = None
    experiment: str | None = None
    job_run_id: str | None = None  # the publishing job's run (lineage; the training run is in the manifest)


def on_databricks() -> bool:
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def registry_uri_for(name: str, explicit: str | None = None) -> str | None:
    """``explicit`` if given; ``databricks-uc`` for ``catalog.schema.model``; else the tracking server's."""
    if explicit:
        return explicit
    if len(name.split(".")) == 3:
        return UC_REGISTRY_URI
    if on_databricks():
        raise UsageError(f"registered model name '{name}' is not catalog.schema.model: Unity Catalog needs a "
                         "three-part name (or pass --registry-uri databricks for the workspace registry)")
    return None


def check_aliases(aliases: Sequence[str]) -> list[str]:
    """Aliases MLflow accepts (letters, digits, _ and -; not ``latest`` or ``v<N>``), deduplicated."""
    for alias in aliases:
        if not _MLFLOW_ALIAS.match(alias) or _RESERVED_ALIAS.match(alias):
            raise UsageError(f"alias '{alias}' is not a valid MLflow alias (letters, digits, _ and -; "
                             "not 'latest' or 'v<number>')")
    return sorted(set(aliases))


def default_experiment(model: str) -> str:
    """``/Shared/sparkship-<model>`` on Databricks (a workspace path), ``sparkship-<model>`` elsewhere."""
    return f"/Shared/sparkship-{model}" if on_databricks() else f"sparkship-{model}"


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts as dotted keys with string values (lists as JSON), for MLflow params.

    >>> flatten({"model": {"algorithm": "lr", "params": {"regParam": 0.1}}, "features": ["a", "b"]})
    {'model.algorithm': 'lr', 'model.params.regParam': '0.1', 'features': '["a", "b"]'}
    """
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    text = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value)
    return {prefix: text[:6000]}  # MLflow's limit on a param value


def lineage(manifest: Mapping[str, Any], ref: str) -> dict[str, str]:
    """Tags naming where the model came from: sparkship version, training table + Delta version, job run."""
    training = manifest.get("training") or {}
    tags = {
        "sparkship.model_version": ref,
        "sparkship.training_table": training.get("table"),
        "sparkship.training_table_version": training.get("table_version"),
        "sparkship.job_run_id": training.get("run_id"),
        "sparkship.algorithm": manifest.get("algorithm"),
        "sparkship.task": manifest.get("task"),
    }
    return {k: str(v) for k, v in tags.items() if v is not None}


def run_params(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The spec (dotted keys under ``spec.``) and the training lineage, as params."""
    training = {k: v for k, v in (manifest.get("training") or {}).items() if k != "tuning"}
    return {**flatten(manifest.get("spec") or {}, "spec"), **flatten(training, "training")}


def carried_aliases(settings: Settings, name: str, version: int) -> list[str]:
    """The sparkship aliases that point at ``name``/``version`` now."""
    for model in Registry(settings).list_models():
        if model["name"] == name:
            return sorted(a for a, v in model["aliases"].items() if v == version)
    return []


def publish(settings: Settings, ref: str | ModelRef, target: PublishTarget = PublishTarget()) -> dict[str, Any]:
    """Log ``ref``'s model in an MLflow run, register it, and set its aliases; return what was created."""
    mlflow = require_mlflow()
    mv, manifest = Registry(settings).manifest(to_model_ref(ref))
    name = target.registered_model or mv.name
    registry_uri = registry_uri_for(name, target.registry_uri)
    aliases = check_aliases([*carried_aliases(settings, mv.name, mv.version), *target.aliases])
    if target.tracking_uri:
        mlflow.set_tracking_uri(target.tracking_uri)
    if registry_uri:
        mlflow.set_registry_uri(registry_uri)
    mlflow.set_experiment(target.experiment or default_experiment(mv.name))
    tags = lineage(manifest, mv.ref)
    if target.job_run_id:
        tags["sparkship.publish_job_run_id"] = target.job_run_id
    # MLflow prints "View run ..." links on stdout, which belongs to the CLI's --json answer.
    with tempfile.TemporaryDirectory(prefix="sparkship-publish-") as tmp, contextlib.redirect_stdout(sys.stderr):
        export_model(mv.artifact, os.path.join(tmp, MODEL_ARTIFACT_PATH))
        run_id = _log_run(mlflow, mv.ref, manifest, tags, os.path.join(tmp, MODEL_ARTIFACT_PATH))
        registered = mlflow.register_model(f"runs:/{run_id}/{MODEL_ARTIFACT_PATH}", name, tags=tags)
        client = mlflow.MlflowClient()
        for alias in aliases:
            client.set_registered_model_alias(name, alias, registered.version)
    return {
        "model": mv.ref, "registered_model": name, "version": str(registered.version), "aliases": aliases,
        "run_id": run_id, "experiment": target.experiment or default_experiment(mv.name),
        "tracking_uri": mlflow.get_tracking_uri(), "registry_uri": mlflow.get_registry_uri(),
        "model_uri": f"models:/{name}/{registered.version}",
    }


def _log_run(mlflow: Any, ref: str, manifest: Mapping[str, Any], tags: dict[str, str], model_dir: str) -> str:
    """One finished run holding params, metrics, lineage tags, the manifest and the model; its id."""
    with mlflow.start_run(run_name=ref.replace("/", "-v"), tags=tags) as run:
        params = run_params(manifest)
        keys = sorted(params)
        for i in range(0, len(keys), 100):  # MLflow accepts at most 100 params per call
            mlflow.log_params({k: params[k] for k in keys[i:i + 100]})
        mlflow.log_metrics({k: float(v) for k, v in (manifest.get("metrics") or {}).items()})
        mlflow.log_dict(dict(manifest), "sparkship/manifest.json")
        mlflow.log_artifacts(model_dir, MODEL_ARTIFACT_PATH)
        return run.info.run_id
