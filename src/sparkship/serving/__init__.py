"""Score saved Spark ML PipelineModels without a JVM (pyarrow + numpy), in-process or over HTTP.

    >>> from sparkship.serving import load
    >>> scorer = load("/path/to/pipeline_model")                  # doctest: +SKIP
    >>> scorer.score_one({"age": 41.0, "plan": "pro"})            # doctest: +SKIP
    {'prediction': 1.0, 'probability': [0.21, 0.79], 'rawPrediction': [-1.32, 1.32]}

Nothing in this package imports pyspark.
"""
from __future__ import annotations

from sparkship.serving.base import UnsupportedModelError
from sparkship.serving.pipeline import PipelineScorer, ScoreResult, derive_signature, load
from sparkship.serving.signature import Field, InvalidRecordError, Signature

__all__ = [
    "Field", "InvalidRecordError", "PipelineScorer", "ScoreResult", "Signature", "UnsupportedModelError",
    "derive_signature", "load",
]
