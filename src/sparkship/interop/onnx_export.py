"""Write a registered Spark pipeline as an ONNX model, checked against Spark before anything is written.

``out`` gets ``model.onnx`` (the whole pipeline: feature stages and model, converted by onnxmltools' Spark
converter) and ``sparkship-onnx.json`` (the graph's inputs and outputs with their Spark types, the missing-value
convention, the check that was run). Each input is an ``[N, 1]`` tensor named after the signature column:
numbers as float32 (a missing number is NaN), strings as strings, and an integer column that a StringIndexer
reads as int64 (a missing category is any value that is not one of the model's categories, e.g. ``""``).

The export refuses, in one line naming the stage, a pipeline that ONNX cannot express, before anything is
written. It then scores a sample with ONNX Runtime and with Spark's ``transform`` and refuses a model whose
predictions differ: class labels must be equal; probabilities and regression predictions may differ by
:data:`TOLERANCE`, because ONNX Runtime computes the converted stages in float32 (why, and where the rows
come from: docs/DESIGN.md).

    >>> export_onnx(spark, "/home/me/.sparkship/models/churn/3", "/tmp/churn-onnx")      # doctest: +SKIP
    {'format': 'onnx', 'path': '/tmp/churn-onnx', 'inputs': [...], 'outputs': [...], 'checked_rows': 1012, ...}
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sparkship import artifacts, tables
from sparkship.errors import SchemaMismatchError, SparkshipError, UsageError
from sparkship.interop.mlflow_export import check_out_dir
from sparkship.serving.signature import FLOATING, INTEGRAL, normalise_type

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel, Transformer
    from pyspark.sql import SparkSession

ONNX_EXTRA_HINT = "ONNX export needs onnx, onnxmltools and onnxruntime: pip install 'sparkship[onnx]'"
MODEL_FILE = "model.onnx"
SIDECAR_FILE = "sparkship-onnx.json"
SIDECAR_FORMAT = "sparkship-onnx/1"
# float32 rounding through scaling, a linear model or a tree ensemble's sum stays far below this; a real
# conversion error (a wrong category, a dropped stage) is orders of magnitude larger.
TOLERANCE = 1e-5
REMEDY = "serve it with `sparkship serve`, or export it with --format mlflow"
OHE = "pyspark.ml.feature.OneHotEncoderModel"
IMPUTER = "pyspark.ml.feature.ImputerModel"
INDEXER = "pyspark.ml.feature.StringIndexerModel"
GBT_REGRESSOR = "pyspark.ml.regression.GBTRegressionModel"
LOGISTIC = "pyspark.ml.classification.LogisticRegressionModel"
DEFAULT_ROWS = 1000
UNSEEN = "__sparkship_unseen__"  # a category no model was trained on: the check covers the keep bucket


class PredictionMismatchError(SparkshipError):
    """ONNX Runtime's predictions for the converted graph differ from Spark's: nothing was written."""


def require_onnx() -> Any:
    """The ``onnxmltools`` module (with onnx and onnxruntime importable), or a :class:`UsageError` naming the
    extra to install."""
    try:
        import onnx  # noqa: F401 - optional dependency, imported only when exporting to ONNX
        import onnxmltools
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UsageError(ONNX_EXTRA_HINT) from None
    return onnxmltools


def flat_stages(model: Transformer) -> list[Transformer]:
    """The pipeline's stages in order, nested PipelineModels flattened."""
    from pyspark.ml import PipelineModel

    if isinstance(model, PipelineModel):
        return [s for stage in model.stages for s in flat_stages(stage)]
    return [model]


def _describe(stage: Transformer) -> str:
    return f"stage {type(stage).__name__} ({stage.uid})"


def _refuse(stage: Transformer, why: str) -> UsageError:
    return UsageError(f"{_describe(stage)} {why}: {REMEDY}")


def check_stages(stages: Sequence[Transformer], input_types: Mapping[str, str]) -> None:
    """Refuse the first stage onnxmltools has no converter for, or whose settings ONNX cannot reproduce.

    ``input_types`` maps signature columns to normalised Spark types (a StringIndexer needs string inputs).
    """
    from onnxmltools.convert.common._registration import _converter_pool
    from onnxmltools.convert.sparkml.ops_names import sparkml_operator_name_map

    for stage in stages:
        name = sparkml_operator_name_map.get(type(stage))
        if name is None or name not in _converter_pool:
            raise _refuse(stage, "has no ONNX converter in onnxmltools")
        why = _unsupported_setting(stage, name, input_types)
        if why:
            raise _refuse(stage, why)


def _unsupported_setting(stage: Transformer, name: str, input_types: Mapping[str, str]) -> str | None:
    """Why ONNX cannot reproduce this stage's settings, or None."""
    if stage.hasParam("handleInvalid") and stage.getOrDefault("handleInvalid") == "skip":
        return "drops rows (handleInvalid='skip'), which an ONNX graph cannot do"
    if name == INDEXER:
        floating = [c for c in _input_cols(stage) if input_types.get(c) in FLOATING]
        if floating:
            return f"indexes floating-point column '{floating[0]}', whose string form ONNX cannot reproduce"
    if name == OHE and stage.getHandleInvalid() == "keep" and not stage.getDropLast():
        return "keeps an extra slot for invalid indices (handleInvalid='keep', dropLast=false), which ONNX has not"
    return None


def _input_cols(stage: Transformer) -> list[str]:
    if stage.hasParam("inputCols") and stage.isDefined("inputCols") and stage.isSet("inputCols"):
        return list(stage.getOrDefault("inputCols"))
    return [stage.getOrDefault("inputCol")] if stage.hasParam("inputCol") and stage.isDefined("inputCol") else []


def indexed_integers(stages: Sequence[Transformer], input_types: Mapping[str, str]) -> set[str]:
    """Integral signature inputs that a StringIndexer reads: they enter the graph as int64 (Spark indexes their
    decimal string form, which is the integer's), and no other stage may read them."""
    indexed = {c for s in stages if _onnx_name(s) == INDEXER for c in _input_cols(s) if input_types.get(c) in INTEGRAL}
    for stage in stages:
        shared = sorted(set(_input_cols(stage)) & indexed) if _onnx_name(stage) != INDEXER else []
        if shared:
            raise _refuse(stage, f"reads '{shared[0]}', an integer column a StringIndexer also reads, "
                                 "which ONNX would need as two input types")
    return indexed


def _onnx_name(stage: Transformer) -> str | None:
    from onnxmltools.convert.sparkml.ops_names import sparkml_operator_name_map

    return sparkml_operator_name_map.get(type(stage))


def initial_types(inputs: Sequence[Mapping[str, Any]], int64: set[str] = frozenset()) -> list[tuple[str, Any]]:
    """onnxmltools input declarations for signature fields: ``[N, 1]`` float32 for numbers (int64 for the
    ``int64`` columns), string for strings."""
    from onnxmltools.convert.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    declared = []
    for f in inputs:
        kind = normalise_type(str(f["type"]))
        if f["name"] in int64:
            declared.append((f["name"], Int64TensorType([None, 1])))
        elif kind in FLOATING or kind in INTEGRAL:
            declared.append((f["name"], FloatTensorType([None, 1])))
        elif kind == "string":
            declared.append((f["name"], StringTensorType([None, 1])))
        else:
            raise UsageError(f"input '{f['name']}' has type {f['type']}, which the ONNX export does not take: {REMEDY}")
    return declared


def _one_hot_categories(operator: Any) -> list[list[int]]:
    """Categories kept by a OneHotEncoderModel: the dropped last category (dropLast) and invalid indices
    ('keep') map to the all-zero vector, which ONNX's OneHotEncoder gives for any value outside ``cats``
    (``zeros=1``). onnxmltools refuses the ('error', dropLast=true) default that sparkship's template trains."""
    op = operator.raw_operator
    drop = 1 if op.getDropLast() and op.getHandleInvalid() != "keep" else 0
    return [list(range(size - drop)) for size in op.categorySizes]


def _convert_one_hot(scope: Any, operator: Any, container: Any) -> None:
    n = operator.inputs[0].type.shape[0] or -1
    for i, cats in enumerate(_one_hot_categories(operator)):
        encoded = scope.get_unique_variable_name(f"encoded_feature_at_{i}")
        container.add_node("OneHotEncoder", [operator.inputs[i].full_name], [encoded], op_domain="ai.onnx.ml",
                           op_version=1, name=scope.get_unique_operator_name("OneHotEncoder"), cats_int64s=cats,
                           zeros=1)
        shape = scope.get_unique_variable_name(f"shape_at_{i}")
        container.add_initializer(shape, 7, [2], [n, len(cats)])  # 7: TensorProto.INT64
        container.add_node("Reshape", [encoded, shape], [operator.outputs[i].full_name], op_version=13)


def _one_hot_shapes(operator: Any) -> None:
    from onnxmltools.convert.common.data_types import FloatTensorType

    n = operator.inputs[0].type.shape[0]
    for output, cats in zip(operator.outputs, _one_hot_categories(operator)):
        output.type = FloatTensorType([n, len(cats)])


def _imputer(input_types: Mapping[str, str]) -> Callable[..., None]:
    """An ImputerModel converter: one ONNX Imputer per column. onnxmltools' own concatenates the columns and
    splits them with a Split attribute that current opsets dropped; and Spark casts the surrogate back to an
    integral input's type, which this reproduces (int truncation)."""
    def convert_imputer(scope: Any, operator: Any, container: Any) -> None:
        op = operator.raw_operator
        cols = op.getInputCols() if op.isSet("inputCols") else [op.getInputCol()]
        surrogates = op.surrogateDF.collect()[0]
        for col, source, target in zip(cols, operator.input_full_names, operator.output_full_names):
            value = float(surrogates[col])
            if input_types.get(col) in INTEGRAL:
                value = float(int(value))
            container.add_node("Imputer", source, target, op_domain="ai.onnx.ml",
                               name=scope.get_unique_operator_name("Imputer"), imputed_value_floats=[value],
                               replaced_value_float=float(op.getOrDefault("missingValue")))
    return convert_imputer


def _convert_string_indexer(scope: Any, operator: Any, container: Any) -> None:
    """StringIndexerModel: one LabelEncoder per column, with integer keys for an int64 input (see
    :func:`indexed_integers`); an unseen value gets -1, which the one-hot encoder turns into zeros as Spark's
    'keep' bucket is with dropLast."""
    from onnxmltools.convert.common.data_types import Int64TensorType

    for i, labels in enumerate(operator.raw_operator.labelsArray):
        source = operator.inputs[i]
        keys = ({"keys_int64s": [int(v) for v in labels]} if isinstance(source.type, Int64TensorType)
                else {"keys_strings": list(labels)})
        container.add_node("LabelEncoder", [source.full_name], [operator.outputs[i].full_name],
                           op_domain="ai.onnx.ml", op_version=2, name=scope.get_unique_operator_name("StringIndexer"),
                           values_int64s=list(range(len(labels))), default_int64=-1, **keys)


def _convert_logistic(scope: Any, operator: Any, container: Any) -> None:
    """LogisticRegressionModel: onnxmltools' converter is right for two classes; for more it applies a logistic
    per class and L1-normalises, where Spark's multinomial model takes the softmax of the margins."""
    from onnxmltools.convert.common._registration import _converter_pool

    op = operator.raw_operator
    if op.numClasses == 2:
        return _converter_pool[LOGISTIC](scope, operator, container)
    container.add_node("LinearClassifier", operator.inputs[0].full_name, operator.output_full_names[:2],
                       op_domain="ai.onnx.ml", name=scope.get_unique_operator_name("LinearClassifier"),
                       coefficients=op.coefficientMatrix.toArray().ravel().tolist(),
                       intercepts=op.interceptVector.toArray().tolist(), post_transform="SOFTMAX", multi_class=1,
                       classlabels_ints=list(range(op.numClasses)))
    return None


def _convert_gbt_regressor(scope: Any, operator: Any, container: Any) -> None:
    """GBTRegressionModel: the weighted sum of its trees. onnxmltools converts it with its GBT classifier
    converter, whose output is the argmax of [-sum, sum], a class index instead of the regression value."""
    from onnxmltools.convert.common.data_types import FloatTensorType
    from onnxmltools.convert.sparkml.operator_converters.decision_tree_regressor import (
        convert_decision_tree_regressor,
    )
    from onnxmltools.convert.sparkml.ops_names import get_sparkml_operator_name

    op = operator.raw_operator
    tree_outputs = []
    for tree in op.trees:
        tree_op = scope.declare_local_operator(get_sparkml_operator_name(type(tree)), tree)
        tree_op.raw_params = operator.raw_params
        tree_op.inputs = operator.inputs
        out = scope.declare_local_variable("tree_prediction", FloatTensorType())
        tree_op.outputs.append(out)
        convert_decision_tree_regressor(scope, tree_op, container)
        tree_op.is_evaluated = True
        tree_outputs.append(out.full_name)
    stacked = scope.get_unique_variable_name("tree_predictions")
    container.add_node("Concat", tree_outputs, stacked, name=scope.get_unique_operator_name("Concat"), axis=1)
    weights = scope.get_unique_variable_name("tree_weights")
    container.add_initializer(weights, 1, [len(op.treeWeights), 1], list(op.treeWeights))  # 1: FLOAT
    container.add_node("MatMul", [stacked, weights], operator.outputs[0].full_name,
                       name=scope.get_unique_operator_name("MatMul"))


def _gbt_regressor_shapes(operator: Any) -> None:
    from onnxmltools.convert.common.data_types import FloatTensorType

    operator.outputs[0].type = FloatTensorType([operator.inputs[0].type.shape[0], 1])


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A converter or shape calculator whose failure names the Spark stage it was converting."""
    def run(*args: Any) -> Any:
        operator = args[1] if len(args) == 3 else args[0]
        try:
            return fn(*args)
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - any converter failure is a stage ONNX cannot express here
            detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise _refuse(operator.raw_operator, f"failed to convert to ONNX ({detail})") from None
    return run


def _custom_functions(stages: Sequence[Transformer],
                      input_types: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    from onnxmltools.convert.common._registration import _converter_pool, _shape_calculator_pool
    from onnxmltools.convert.sparkml.ops_names import sparkml_operator_name_map

    names = {sparkml_operator_name_map[type(s)] for s in stages}
    own = {OHE: _convert_one_hot, IMPUTER: _imputer(input_types), GBT_REGRESSOR: _convert_gbt_regressor,
           INDEXER: _convert_string_indexer, LOGISTIC: _convert_logistic}
    own_shapes = {OHE: _one_hot_shapes, GBT_REGRESSOR: _gbt_regressor_shapes}
    converters = {n: _guarded(own.get(n) or _converter_pool[n]) for n in names}
    shapes = {n: _guarded(own_shapes.get(n) or _shape_calculator_pool[n])
              for n in names if n in own_shapes or n in _shape_calculator_pool}
    return converters, shapes


# --- tree splits on categorical features -------------------------------------------------------------------------


def _threshold_for(split: Mapping[str, Any]) -> tuple[float, bool] | None:
    """A continuous split equal to a categorical one on indices ``0..k-1``: ``(threshold, swap children)``,
    or None when the left categories are not a run at either end."""
    k = int(split["numCategories"])
    left = sorted(int(c) for c in split["leftCategoriesOrThreshold"])
    right = sorted(set(range(k)) - set(left))
    if left == list(range(len(left))):
        return len(left) - 0.5, False
    if right == list(range(len(right))):
        return len(right) - 0.5, True
    return None


def _continuous_node(stage: Transformer, node: dict[str, Any]) -> dict[str, Any]:
    split = node["split"]
    if node["leftChild"] < 0 or int(split["numCategories"]) < 0:
        return node
    found = _threshold_for(split)
    if found is None:
        raise _refuse(stage, f"splits feature {split['featureIndex']} on categories "
                             f"{sorted(split['leftCategoriesOrThreshold'])}, which no threshold expresses")
    threshold, swap = found
    left, right = (node["rightChild"], node["leftChild"]) if swap else (node["leftChild"], node["rightChild"])
    return {**node, "leftChild": left, "rightChild": right,
            "split": {**split, "leftCategoriesOrThreshold": [threshold], "numCategories": -1}}


def continuous_trees(stage: Transformer, scratch: str) -> Transformer:
    """``stage`` itself, or for a tree model with categorical splits an equal model whose splits are all
    thresholds (written and loaded back with Spark): onnxmltools' tree converter reads the first category of a
    categorical split as a threshold, which is wrong for a one-hot feature that goes left on 1. Sparkship's
    template one-hot encodes, and Spark trees treat one-hot slots as two-category features."""
    from pyspark.ml.tree import _DecisionTreeModel, _TreeEnsembleModel

    if not isinstance(stage, (_DecisionTreeModel, _TreeEnsembleModel)):
        return stage
    path = os.path.join(scratch, stage.uid)
    stage.write().overwrite().save(path)
    data = os.path.join(path, "data")
    table = pq.read_table(data)
    rows = table.to_pylist()
    ensemble = "nodeData" in table.column_names
    fixed = [{**r, "nodeData": _continuous_node(stage, r["nodeData"])} if ensemble else _continuous_node(stage, r)
             for r in rows]
    if fixed == rows:
        return stage
    shutil.rmtree(data)
    os.makedirs(data)
    pq.write_table(pa.Table.from_pylist(fixed, schema=table.schema), os.path.join(data, "part-00000.parquet"))
    return type(stage).load(path)


def convert(spark: SparkSession, model: PipelineModel, inputs: Sequence[Mapping[str, Any]], name: str) -> Any:
    """The ONNX ``ModelProto`` of ``model`` (stages checked first; a failure names its stage)."""
    from pyspark.ml import PipelineModel

    onnxmltools = require_onnx()
    stages = flat_stages(model)
    input_types = {str(f["name"]): normalise_type(str(f["type"])) for f in inputs}
    check_stages(stages, input_types)
    int64 = indexed_integers(stages, input_types)
    converters, shapes = _custom_functions(stages, input_types)
    with tempfile.TemporaryDirectory(prefix="sparkship-onnx-trees-") as scratch:
        model = PipelineModel([continuous_trees(s, scratch) for s in stages])
    with contextlib.redirect_stdout(io.StringIO()):  # a converter pprints its attributes; stdout carries --json
        return onnxmltools.convert_sparkml(model, name, initial_types(inputs, int64), spark_session=spark,
                                           custom_conversion_functions=converters,
                                           custom_shape_calculators=shapes)


def graph_io(onnx_model: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The graph's inputs and outputs as ``{"name", "onnx_type", "shape"}`` records."""
    import onnx

    def record(value: Any) -> dict[str, Any]:
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        return {"name": value.name, "onnx_type": onnx.TensorProto.DataType.Name(t.elem_type).lower(), "shape": dims}

    return [record(v) for v in onnx_model.graph.input], [record(v) for v in onnx_model.graph.output]


def export_onnx(spark: SparkSession, artifact_dir: str, out: str, check_table: str | None = None,
                check_rows: int = DEFAULT_ROWS) -> dict[str, Any]:
    """Write ``out/model.onnx`` and ``out/sparkship-onnx.json`` for the artifact, after checking ONNX Runtime's
    predictions against Spark's on a sample (:func:`sample_rows`, :func:`check`).

    Returns ``{"format", "path", "model", "inputs", "outputs", "checked_rows", "sample", "tolerance", "opset"}``.
    Raises :class:`UsageError` for a stage ONNX cannot express, :class:`PredictionMismatchError` when predictions
    differ; nothing is written then.
    """
    from pyspark.ml import PipelineModel

    require_onnx()
    check_out_dir(out)
    manifest = artifacts.verify(artifact_dir)
    inputs = list((manifest.get("signature") or {}).get("inputs") or [])
    if not inputs:
        raise UsageError("the model's manifest has no signature.inputs: retrain it with this sparkship version")
    model = PipelineModel.load(os.path.join(artifact_dir, artifacts.MODEL_DIR))
    onnx_model = convert(spark, model, inputs, str(manifest.get("name") or "sparkship"))
    graph_inputs, graph_outputs = graph_io(onnx_model)
    sample, source = sample_rows(spark, manifest, check_table, check_rows)
    checked = check(spark, model, onnx_model.SerializeToString(), sample, manifest, TOLERANCE)
    spark_types = {str(f["name"]): str(f["type"]) for f in inputs}
    sidecar = {
        "format": SIDECAR_FORMAT, "model": manifest.get("name"), "task": manifest.get("task"),
        "labels": manifest.get("labels"), "model_file": MODEL_FILE,
        "inputs": [{**g, "spark_type": spark_types.get(g["name"])} for g in graph_inputs],
        "outputs": graph_outputs, "outputs_checked": checked["outputs"],
        "missing_values": {"float": "NaN", "int64": "any integer that is not a category",
                           "string": "any string that is not a category, e.g. \"\""},
        "check": {"rows": checked["rows"], "sample": source, "tolerance": TOLERANCE},
        "versions": manifest.get("versions"), "training": manifest.get("training"),
    }
    _write(out, onnx_model.SerializeToString(), sidecar)
    return {"format": "onnx", "path": out, "model": manifest.get("name"), "inputs": sidecar["inputs"],
            "outputs": graph_outputs, "checked_rows": checked["rows"], "sample": source, "tolerance": TOLERANCE,
            "opset": {o.domain or "ai.onnx": o.version for o in onnx_model.opset_import}}


def _write(out: str, model_bytes: bytes, sidecar: Mapping[str, Any]) -> None:
    """Write both files into a sibling temporary folder, then move it into place (no half-written export)."""
    parent = os.path.dirname(out) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".sparkship-onnx-", dir=parent)
    try:
        with open(os.path.join(tmp, MODEL_FILE), "wb") as fh:
            fh.write(model_bytes)
        with open(os.path.join(tmp, SIDECAR_FILE), "w") as fh:
            json.dump(sidecar, fh, indent=2, default=str)
        if os.path.isdir(out):
            os.rmdir(out)  # check_out_dir allowed an empty folder
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- the check: ONNX Runtime against Spark's transform on the same rows -------------------------------------------


def sample_rows(spark: SparkSession, manifest: Mapping[str, Any], table: str | None,
                limit: int = DEFAULT_ROWS) -> tuple[list[tuple], str]:
    """Rows of the signature's inputs to score both ways, and where they came from.

    Up to ``limit`` rows of ``table`` (latest version), else of the training table at the version the model
    was trained on when it can still be read; plus rows built from the reference profile so that every bin
    edge, every category, an unseen category and (where training saw them) missing values are scored.
    """
    names = [str(f["name"]) for f in manifest["signature"]["inputs"]]
    training = manifest.get("training") or {}
    source, version = (table, None) if table else (training.get("table"), training.get("table_version"))
    rows: list[tuple] = []
    described = []
    if source and (table or tables.exists(spark, source)):
        df = tables.read(spark, source, version)
        missing = [n for n in names if n not in df.columns]
        if missing:
            raise SchemaMismatchError(f"{source} has no column {', '.join(missing)} of the model's inputs: "
                                      "pass --check-table with a table that has them")
        rows = [tuple(r) for r in df.select(*[f"`{n}`" for n in names]).limit(limit).collect()]
        described.append(f"{len(rows)} rows of {source}" + ("" if version is None else f" (version {version})"))
    profiled = profile_rows(manifest, names)
    if profiled:
        described.append(f"{len(profiled)} rows from the reference profile")
    if not rows and not profiled:
        raise UsageError("no rows to check the ONNX model against Spark: the training table is gone and the "
                         "manifest has no reference profile; pass --check-table TABLE")
    return rows + profiled, "; ".join(described)


def profile_rows(manifest: Mapping[str, Any], names: Sequence[str]) -> list[tuple]:
    """Rows that walk every input through its reference profile: numeric bin edges, categories plus
    :data:`UNSEEN`; then, per input with a null rate, a row where that input alone is missing."""
    features = ((manifest.get("reference_profile") or {}).get("features")) or {}
    if not features:
        return []
    types = {str(f["name"]): normalise_type(str(f["type"])) for f in manifest["signature"]["inputs"]}
    values: dict[str, list[Any]] = {}
    for n in names:
        entry = features.get(n) or {}
        categories = [c for c in (entry.get("categories") or {}) if not str(c).startswith("__")]
        if types[n] == "string":
            values[n] = categories + [UNSEEN]
        elif categories:  # an integer category column
            values[n] = [_typed(c, types[n]) for c in categories]
        else:
            values[n] = [_typed(e, types[n]) for e in entry.get("edges") or []] or [_typed(0.0, types[n])]
    width = max(len(v) for v in values.values())
    rows = [tuple(values[n][i % len(values[n])] for n in names) for i in range(width)]
    for j, n in enumerate(names):
        if (features.get(n) or {}).get("null_rate"):
            rows.append(tuple(None if k == j else rows[0][k] for k in range(len(names))))
    return rows


def _typed(value: Any, kind: str) -> Any:
    return int(round(float(value))) if kind in INTEGRAL else float(value)


def check(spark: SparkSession, model: PipelineModel, onnx_bytes: bytes, rows: Sequence[tuple],
          manifest: Mapping[str, Any], tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Score ``rows`` with Spark's ``transform`` and with ONNX Runtime and compare: labels (classification)
    exactly, probabilities and regression predictions within ``tolerance`` (relative above 1).

    Returns ``{"rows", "outputs"}``; raises :class:`PredictionMismatchError` naming the first differing row.
    """
    inputs = manifest["signature"]["inputs"]
    final = flat_stages(model)[-1]
    pred_col = final.getOrDefault("predictionCol") if final.hasParam("predictionCol") else "prediction"
    prob_col = final.getOrDefault("probabilityCol") if final.hasParam("probabilityCol") else None
    spark_out = _spark_outputs(spark, model, rows, inputs, pred_col, prob_col)
    ort_out = _ort_outputs(onnx_bytes, rows, inputs, [pred_col, prob_col])
    exact = manifest.get("task") == "classification"
    for name, want in spark_out.items():
        if name not in ort_out:
            raise PredictionMismatchError(f"the ONNX graph has no output '{name}' (it has {', '.join(ort_out)}); "
                                          f"nothing written: {REMEDY}")
        got = np.asarray(ort_out[name], dtype=np.float64).reshape(want.shape)
        if exact and name == pred_col:
            bad = np.flatnonzero(got != want)
        else:
            bad = np.flatnonzero(np.any(np.abs(got - want) > tolerance * np.maximum(1.0, np.abs(want)),
                                        axis=tuple(range(1, want.ndim))))
        if bad.size:
            i = int(bad[0])
            raise PredictionMismatchError(
                f"ONNX Runtime's '{name}' differs from Spark's on {bad.size} of {len(rows)} rows (first: row "
                f"{dict(zip([f['name'] for f in inputs], rows[i]))}: {got[i].tolist()} against "
                f"{want[i].tolist()}); nothing written: {REMEDY}")
    return {"rows": len(rows), "outputs": sorted(spark_out)}


def _spark_outputs(spark: SparkSession, model: PipelineModel, rows: Sequence[tuple],
                   inputs: Sequence[Mapping[str, Any]], pred_col: str, prob_col: str | None) -> dict[str, Any]:
    from pyspark.ml.functions import vector_to_array

    ddl = ", ".join(f"`{f['name']}` {f['type']}" for f in inputs)
    scored = model.transform(spark.createDataFrame(list(rows), ddl))
    cols = [pred_col] + ([prob_col] if prob_col and prob_col in scored.columns else [])
    got = scored.select(*[vector_to_array(c).alias(c) if c == prob_col else c for c in cols]).collect()
    if len(got) != len(rows):
        raise PredictionMismatchError(f"Spark's transform kept {len(got)} of {len(rows)} rows; "
                                      f"nothing written: {REMEDY}")
    return {c: np.array([r[c] for r in got], dtype=np.float64) for c in cols}


def ort_feed(rows: Sequence[tuple], inputs: Sequence[Mapping[str, Any]], wanted: Mapping[str, str]) -> dict[str, Any]:
    """ONNX Runtime inputs for ``rows``, for the graph inputs ``wanted`` (name -> ORT type): ``[N, 1]`` float32
    (missing: NaN), int64 (missing: the smallest int64, never a category) or string (missing: "")."""
    feed = {}
    for j, f in enumerate(inputs):
        if f["name"] not in wanted:
            continue
        column = [r[j] for r in rows]
        if wanted[f["name"]] == "tensor(int64)":
            low = np.iinfo(np.int64).min
            feed[f["name"]] = np.array([low if v is None else v for v in column], dtype=np.int64).reshape(-1, 1)
        elif wanted[f["name"]] == "tensor(string)":
            feed[f["name"]] = np.array(["" if v is None else str(v) for v in column], dtype=object).reshape(-1, 1)
        else:
            feed[f["name"]] = np.array([np.nan if v is None else v for v in column], dtype=np.float32).reshape(-1, 1)
    return feed


def _ort_outputs(onnx_bytes: bytes, rows: Sequence[tuple], inputs: Sequence[Mapping[str, Any]],
                 names: Sequence[str | None]) -> dict[str, Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs() if o.name in names]
    feed = ort_feed(rows, inputs, {i.name: i.type for i in session.get_inputs()})
    return dict(zip(wanted, session.run(wanted, feed)))


__all__ = ["MODEL_FILE", "SIDECAR_FILE", "TOLERANCE", "PredictionMismatchError", "check", "check_stages",
           "convert", "export_onnx", "ort_feed", "profile_rows", "require_onnx", "sample_rows"]
