"""What registering a model takes, whoever fitted it: sparkship's training (:mod:`sparkship.training`) or a
notebook (:mod:`sparkship.fitted`): the runtime versions for the manifest, the registration of a staged
artifact, and the spec that validation and reports evaluate a version with.

    >>> sorted(runtime_versions())
    ['python', 'spark', 'sparkship']
"""
from __future__ import annotations

import platform
import shutil
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sparkship._version import __version__
from sparkship.errors import IntegrityError, UsageError
from sparkship.registry import Registry
from sparkship.spark import active_session
from sparkship.spec import FeatureSpec, ModelSpec, SplitSpec, TrainingSpec, ValidationSpec, parse_spec

if TYPE_CHECKING:  # pragma: no cover
    from sparkship.config import Settings
    from sparkship.registry_tables import ModelVersion

# Types a spec can list as numeric features (the rest of a registered model's scalar inputs are categorical).
_NUMERIC = ("tinyint", "smallint", "int", "bigint", "float", "double")


def runtime_versions() -> dict[str, str]:
    """The Spark (of the active session, else the installed pyspark), sparkship and Python versions."""
    active = active_session()
    if active is not None:
        spark = active.version
    else:
        import pyspark  # pyspark is a dependency of registering, not of importing sparkship

        spark = pyspark.__version__
    return {"spark": spark, "sparkship": __version__, "python": platform.python_version()}


def register_staged(settings: Settings, name: str, staged: str, manifest: dict[str, Any],
                    run_id: str | None = None) -> ModelVersion:
    """Register the sealed staging folder ``staged`` as the next version of ``name`` (compare-and-set).

    The staging folder is removed when the registration fails before any commit call could have used it; after
    an integrity error it is kept for the operator (see :mod:`sparkship.registration`).
    """
    try:
        return Registry(settings).register(name, staged, manifest, run_id=run_id)
    except IntegrityError:
        raise  # the version row exists: keep the staged files for the operator
    except BaseException:
        # register() hands the folder back at `staged` only where no commit call can have used it; after one it
        # stays at its versioned path (registered, or a leftover that the next registration moves aside).
        shutil.rmtree(staged, ignore_errors=True)
        raise


def spec_of(manifest: Mapping[str, Any], ref: str) -> TrainingSpec:
    """The spec to evaluate version ``ref`` with: its manifest's ``spec``, or for a model registered with
    ``sparkship register`` one built from its signature, label and lineage.

    >>> spec = spec_of({"name": "m", "task": "classification", "label": "y", "registered": {},
    ...                 "algorithm": "LogisticRegressionModel", "training": {"table": "/t", "table_version": 2},
    ...                 "signature": {"inputs": [{"name": "age", "type": "double"},
    ...                                          {"name": "plan", "type": "string"}]}}, "m/1")
    >>> spec.features.numeric, spec.features.categorical, spec.table, spec.table_version
    (('age',), ('plan',), '/t', 2)
    """
    raw = manifest.get("spec")
    if raw is None and isinstance(manifest.get("registered"), Mapping):
        return _registered_spec(manifest, ref)
    if not isinstance(raw, Mapping):
        raise UsageError(f"{ref}: its manifest has no 'spec' to evaluate it with")
    try:
        return parse_spec(raw)
    except UsageError as exc:
        raise UsageError(f"{ref}: the spec in its manifest is invalid: {exc}") from None


def _registered_spec(manifest: Mapping[str, Any], ref: str) -> TrainingSpec:
    task, label = manifest.get("task"), manifest.get("label")
    if task not in ("classification", "regression", "clustering"):
        raise UsageError(f"{ref} is a {task} model: it is evaluated on classification, regression and clustering "
                         "models only")
    if not label and task != "clustering":  # a clustering model is judged on its inputs alone (silhouette)
        raise UsageError(f"{ref} was registered without --label: register it again with the label column to "
                         "evaluate it")
    inputs = [(f["name"], f["type"]) for f in (manifest.get("signature") or {}).get("inputs") or []]
    other = [n for n, t in inputs if not (t in _NUMERIC or t.startswith("decimal") or t == "string")]
    if other:
        raise UsageError(f"{ref} reads column(s) {', '.join(other)} that are neither numeric nor strings: it is "
                         "evaluated on scalar inputs only (register a pipeline that builds its vectors)")
    lineage = manifest.get("training") or {}
    algorithm = str(manifest.get("algorithm"))
    return TrainingSpec(
        name=str(manifest.get("name")), task=task, table=str(lineage.get("table")), label=label or "",
        table_version=lineage.get("table_version"),
        features=FeatureSpec(numeric=tuple(n for n, t in inputs if t != "string"),
                             categorical=tuple(n for n, t in inputs if t == "string")),
        model=ModelSpec(algorithm=algorithm, estimator_class=algorithm),
        split=_split(lineage.get("split")),
        validation=_validation(lineage.get("spec")),
    )


def _split(raw: Any) -> SplitSpec:
    """The held-out split a version was trained with: a spec-trained pipeline records it (``training.split``)."""
    if isinstance(raw, Mapping) and "test_fraction" in raw and "seed" in raw:
        return SplitSpec(float(raw["test_fraction"]), int(raw["seed"]))
    return SplitSpec()


def _validation(spec: Any) -> ValidationSpec:
    """The ``validation`` rules of a spec-trained pipeline's spec (``training.spec``); none for other models."""
    raw = spec.get("validation") if isinstance(spec, Mapping) else None
    if not isinstance(raw, Mapping):
        return ValidationSpec()
    return ValidationSpec(dict(raw.get("thresholds") or {}), raw.get("max_regression"))


__all__ = ["register_staged", "runtime_versions", "spec_of"]
