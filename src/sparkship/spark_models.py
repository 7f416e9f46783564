"""Loading a saved Spark ML model into the active session, whichever kind of session saved it.

On a classic session Spark's own reader is used. On Spark Connect, pyspark 4.0 hands a PipelineModel saved by
Spark's Scala writer (any pipeline of JVM stages, e.g. one saved on a classic cluster, or the nested pipeline
of a Python-saved one) to the classic JVM reader: where a JVM is at hand (a local Connect server) the stages
come back as JVM objects that Connect's ``transform`` cannot use, elsewhere the load fails. The files of a
pipeline are the same whoever wrote them, so here a pipeline is walked stage by stage and each stage is
loaded by its own class, which reads through Connect.

    >>> load_pipeline("/models/churn/3/model")                 # doctest: +SKIP
    PipelineModel_5d2f...
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from sparkship.spark import is_connect

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel, Transformer
    from pyspark.sql import SparkSession

PIPELINE_CLASSES = ("org.apache.spark.ml.PipelineModel", "pyspark.ml.pipeline.PipelineModel",
                    "pyspark.ml.PipelineModel")


def load_pipeline(path: str, spark: SparkSession | None = None) -> PipelineModel:
    """The PipelineModel saved at ``path``, usable by ``spark`` (default: the active session).

    Args:
        path: a folder written by ``PipelineModel.write().save``.
        spark: the session that will transform with it; a Spark Connect session loads stage by stage.

    Returns:
        The fitted pipeline.
    """
    # pyspark is imported here, not at module level: `import sparkship` works without it (serving, the bundle).
    from pyspark.ml import PipelineModel
    from pyspark.sql import SparkSession

    session = spark or SparkSession.getActiveSession()
    if session is None or not is_connect(session):
        return PipelineModel.load(path)
    stage = _load_connect(path, session)
    return stage if isinstance(stage, PipelineModel) else PipelineModel(stages=[stage])


def _load_connect(path: str, spark: SparkSession) -> Transformer:
    from pyspark.ml import PipelineModel
    from pyspark.ml.pipeline import PipelineSharedReadWrite
    from pyspark.ml.util import DefaultParamsReader

    metadata: dict[str, Any] = DefaultParamsReader.loadMetadata(path, spark)
    if metadata["class"] not in PIPELINE_CLASSES:
        return DefaultParamsReader.loadParamsInstance(path, spark)
    uids = metadata["paramMap"]["stageUids"]
    stages_dir = os.path.join(path, "stages")
    stages = [_load_connect(PipelineSharedReadWrite.getStagePath(uid, i, len(uids), stages_dir), spark)
              for i, uid in enumerate(uids)]
    return PipelineModel(stages=stages)._resetUid(metadata["uid"])
