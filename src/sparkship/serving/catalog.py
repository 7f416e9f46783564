"""Saved stage class name -> the JVM-free class that scores it.

Stage classes register themselves (:func:`sparkship.serving.base.register_stage`); this module imports the
modules that hold them, once, so that every class is registered before a model is loaded. A stage that holds
other stages (OneVsRest, RFormula) gets :func:`build_stage` passed in to build them.

    >>> STAGES["org.apache.spark.ml.feature.VectorAssembler"].__name__
    'VectorAssembler'
"""
from __future__ import annotations

import importlib

from sparkship.serving.base import STAGES, Stage, UnsupportedModelError
from sparkship.serving.reader import StageMetadata
from sparkship.serving.wrappers import WRAPPERS

# The modules whose stage classes register themselves when imported.
STAGE_MODULES = (
    "stages", "scalers", "features", "selection", "text", "hashing", "sql", "rformula", "predictors",
    "classifiers", "regressors", "clustering", "xgboost_stage",
)
for _module in STAGE_MODULES:
    importlib.import_module(f"sparkship.serving.{_module}")

__all__ = ["STAGES", "STAGE_MODULES", "WRAPPERS", "build_stage", "inner_model_dir"]


def inner_model_dir(meta: StageMetadata) -> str | None:
    """For a wrapper (CrossValidatorModel, TrainValidationSplitModel) the folder of the model it scores with."""
    cls = WRAPPERS.get(meta.class_name)
    return cls.model_dir(meta) if cls is not None else None


def build_stage(meta: StageMetadata) -> Stage:
    """The scorer class for a saved stage; :class:`UnsupportedModelError` naming the class if there is none."""
    cls = STAGES.get(meta.class_name)
    if cls is None:
        supported = ", ".join(sorted(c.rsplit(".", 1)[-1] for c in STAGES))
        raise UnsupportedModelError(
            f"stage {meta.uid} is a {meta.class_name}, which the JVM-free scorer does not support "
            f"(supported: PipelineModel, CrossValidatorModel, TrainValidationSplitModel, {supported})"
        )
    return cls.load(meta, build_stage)
