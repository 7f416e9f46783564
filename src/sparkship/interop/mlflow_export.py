"""Write a sparkship artifact as an MLflow model directory: a JVM-free ``python_function`` flavor plus the
``spark`` flavor, both reading the same Spark files. No SparkSession is started.

``out`` gets ``MLmodel``, the artifact under ``data/sparkship/``, sparkship's pure-Python package under
``code/sparkship/`` and requirements without pyspark or anything that needs Java; the layout, and why sparkship
travels as code: docs/DESIGN.md.

    >>> export_model("/home/me/.sparkship/models/churn/3", "/tmp/churn-mlflow")       # doctest: +SKIP
    {'path': '/tmp/churn-mlflow', 'flavors': ['python_function', 'spark'], ...}
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from typing import Any

import sparkship
from sparkship import artifacts
from sparkship.errors import UsageError
from sparkship.serving.signature import INTEGRAL, normalise_type

# mlflow and pandas (the 'mlflow' extra) are imported inside the functions that use them: they are optional.

LOADER_MODULE = "sparkship.interop.mlflow_pyfunc"
DATA_DIR = "sparkship"  # MLflow copies data_path to data/<its basename>
SPARK_MODEL_DATA = f"data/{DATA_DIR}/{artifacts.MODEL_DIR}"
SERVING_REQUIREMENTS = ("numpy", "pandas", "pyarrow")
MLFLOW_EXTRA_HINT = "MLflow is not installed: pip install 'sparkship[mlflow]'"

# Spark simpleString -> MLflow DataType name (vectors become Array(double)).
_MLFLOW_TYPES = {
    "double": "double", "float": "float", "boolean": "boolean", "string": "string",
    "tinyint": "integer", "byte": "integer", "smallint": "integer", "short": "integer", "int": "integer",
    "integer": "integer", "bigint": "long", "long": "long",
}


def require_mlflow() -> Any:
    """The ``mlflow`` module, or a :class:`UsageError` saying which extra to install."""
    try:
        import mlflow
    except ImportError:
        raise UsageError(MLFLOW_EXTRA_HINT) from None
    return mlflow


def mlflow_schema(fields: list[Mapping[str, Any]]) -> Any:
    """An MLflow column-based ``Schema`` for sparkship signature fields (Spark type strings)."""
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    specs = []
    for f in fields:
        spark_type = normalise_type(str(f["type"]))
        if spark_type == "vector":
            specs.append(ColSpec(Array(DataType.double), f["name"]))
        elif spark_type in _MLFLOW_TYPES:
            specs.append(ColSpec(_MLFLOW_TYPES[spark_type], f["name"]))
        else:
            raise UsageError(f"signature field '{f['name']}' has type {f['type']}, which has no MLflow type")
    return Schema(specs)


def model_signature(manifest: Mapping[str, Any]) -> Any:
    """The MLflow ``ModelSignature`` of a manifest's ``signature`` (inputs required, outputs if listed)."""
    from mlflow.models import ModelSignature

    sig = manifest.get("signature") or {}
    if not sig.get("inputs"):
        raise UsageError("the model's manifest has no signature.inputs: retrain it with this sparkship version")
    outputs = sig.get("outputs") or []
    return ModelSignature(inputs=mlflow_schema(sig["inputs"]), outputs=mlflow_schema(outputs) if outputs else None)


def input_example(manifest: Mapping[str, Any]) -> dict[str, list[Any]]:
    """One record for ``input_example.json``: a typical value per input from the reference profile (the
    median bin edge, the most common category), else a neutral value of the input's type."""
    features = ((manifest.get("reference_profile") or {}).get("features")) or {}
    record: dict[str, list[Any]] = {}
    for f in (manifest.get("signature") or {}).get("inputs") or []:
        kind = normalise_type(str(f["type"]))
        value = _typical(features.get(f["name"]) or {}, kind)
        if kind in INTEGRAL and value is not None:
            value = int(round(float(value)))
        record[f["name"]] = [value]
    return record


def _typical(entry: Mapping[str, Any], kind: str) -> Any:
    edges = entry.get("edges") or []
    categories = {k: v for k, v in (entry.get("categories") or {}).items() if not str(k).startswith("__")}
    if kind == "string":
        return max(categories, key=categories.get) if categories else ""
    if kind == "boolean":
        return False
    if kind == "vector":
        return [0.0]
    return float(edges[len(edges) // 2]) if edges else 0.0


def serving_requirements() -> list[str]:
    """Pinned versions of what the pyfunc imports, as installed here (mlflow adds its own pin)."""
    return [f"{pkg}=={importlib_metadata.version(pkg)}" for pkg in SERVING_REQUIREMENTS]


def _copy_package(dest_root: str) -> str:
    """A clean copy of the sparkship package (no caches) to ship as MLflow code."""
    src = os.path.dirname(os.path.abspath(sparkship.__file__))
    dest = os.path.join(dest_root, "sparkship")
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _copy_artifact(artifact_dir: str, dest_root: str) -> str:
    dest = os.path.join(dest_root, DATA_DIR)
    os.makedirs(dest)
    shutil.copy2(os.path.join(artifact_dir, artifacts.MANIFEST), dest)
    shutil.copytree(os.path.join(artifact_dir, artifacts.MODEL_DIR), os.path.join(dest, artifacts.MODEL_DIR))
    return dest


def check_out_dir(out: str) -> None:
    """``out`` must not exist yet, or be an empty folder (MLflow writes into it)."""
    if os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out)):
        raise UsageError(f"--out {out} already exists and is not empty: give a new folder")


def export_model(artifact_dir: str, out: str) -> dict[str, Any]:
    """Write the MLflow model directory ``out`` for the sparkship artifact ``artifact_dir`` (verified first)."""
    mlflow = require_mlflow()
    from mlflow.models import Model

    check_out_dir(out)
    manifest = artifacts.verify(artifact_dir)
    if manifest.get("servable") is False:  # recorded by `sparkship register`: the export serves without a JVM
        raise UsageError(f"{manifest.get('name')} cannot be exported: the JVM-free scorer cannot serve it "
                         f"({manifest.get('unservable_reason')})")
    signature = model_signature(manifest)
    example = input_example(manifest)
    with tempfile.TemporaryDirectory(prefix="sparkship-export-") as tmp:
        data = _copy_artifact(artifact_dir, tmp)
        code = _copy_package(os.path.join(tmp, "code"))
        artifacts.verify(data)  # the copy is what gets shipped
        mlflow.pyfunc.save_model(
            out, loader_module=LOADER_MODULE, data_path=data, code_paths=[code], signature=signature,
            input_example=_example_frame(example, manifest), pip_requirements=serving_requirements(),
        )
    model = Model.load(out)
    model.add_flavor("spark", pyspark_version=(manifest.get("versions") or {}).get("spark"),
                     model_data=SPARK_MODEL_DATA, model_class="pyspark.ml.pipeline.PipelineModel")
    model.metadata = {**(model.metadata or {}), "sparkship": _lineage(manifest)}
    model.save(os.path.join(out, "MLmodel"))
    return {"path": out, "flavors": sorted(model.flavors), "model": manifest.get("name"),
            "requirements": _read_lines(os.path.join(out, "requirements.txt"))}


# pandas makes every Python int an int64: a column MLflow types "integer" (int32) or "float" needs its own dtype,
# or MLflow's schema check refuses the example.
_PANDAS_DTYPES = {"integer": "int32", "float": "float32"}


def _example_frame(example: dict[str, list[Any]], manifest: Mapping[str, Any]) -> Any:
    import pandas as pd

    frame = pd.DataFrame(example)
    for f in (manifest.get("signature") or {}).get("inputs") or []:
        dtype = _PANDAS_DTYPES.get(_MLFLOW_TYPES.get(normalise_type(str(f["type"])), ""))
        if dtype and f["name"] in frame and frame[f["name"]].notna().all():
            frame[f["name"]] = frame[f["name"]].astype(dtype)
    return frame


def _lineage(manifest: Mapping[str, Any]) -> dict[str, Any]:
    training = manifest.get("training") or {}
    return {
        "name": manifest.get("name"),
        "training_table": training.get("table"),
        "training_table_version": training.get("table_version"),
        "job_run_id": training.get("run_id"),
        "versions": manifest.get("versions"),
    }


def _read_lines(path: str) -> list[str]:
    with open(path) as fh:
        return [line.strip() for line in fh if line.strip()]
