"""Model wrappers of a saved pipeline, named as in Spark: ``CrossValidatorModel`` and
``TrainValidationSplitModel`` score exactly as their ``bestModel`` (saved in the ``bestModel/`` folder; the
``subModels/`` that ``persistSubModels`` adds, and the saved ``estimator``/``evaluator``, play no part in
transform()). :func:`sparkship.serving.pipeline.load_stages` puts the best model's stages in their place.

    >>> from sparkship.serving import load
    >>> load("/tmp/cv_model").describe()["stages"]        # doctest: +SKIP
    [{'uid': 'VectorAssembler_1f0e', 'class': 'VectorAssembler'}, {'uid': 'LogisticRegression_9a3b', ...}]
"""
from __future__ import annotations

import os
from typing import ClassVar

from sparkship.errors import NotFoundError
from sparkship.serving.reader import StageMetadata


class _TuningModel:
    """A tuning model: transform() is its best model's transform()."""

    spark_class: ClassVar[str] = ""
    python_class: ClassVar[str] = ""

    @staticmethod
    def model_dir(meta: StageMetadata) -> str:
        """The folder of the saved best model."""
        path = os.path.join(meta.path, "bestModel")
        if not os.path.isdir(path):
            raise NotFoundError(f"{meta.path}: the saved {meta.short_class} has no bestModel/ folder")
        return path


class CrossValidatorModel(_TuningModel):
    spark_class = "org.apache.spark.ml.tuning.CrossValidatorModel"
    python_class = "pyspark.ml.tuning.CrossValidatorModel"


class TrainValidationSplitModel(_TuningModel):
    spark_class = "org.apache.spark.ml.tuning.TrainValidationSplitModel"
    python_class = "pyspark.ml.tuning.TrainValidationSplitModel"


# Wrappers scored through a model saved inside them (Spark's and pyspark's writers name them differently).
WRAPPERS: dict[str, type[_TuningModel]] = {
    name: cls
    for cls in (CrossValidatorModel, TrainValidationSplitModel)
    for name in (cls.spark_class, cls.python_class)
}
