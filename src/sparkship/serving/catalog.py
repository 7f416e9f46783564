"""Saved stage class name -> the JVM-free class that scores it."""
from __future__ import annotations

from sparkship.serving.features import FEATURE_STAGES
from sparkship.serving.hashing import FeatureHasher, HashingTF
from sparkship.serving.predictors import (
    DecisionTreeClassificationModel,
    DecisionTreeRegressionModel,
    GBTClassificationModel,
    GBTRegressionModel,
    LinearRegressionModel,
    LogisticRegressionModel,
    RandomForestClassificationModel,
    RandomForestRegressionModel,
)
from sparkship.serving.reader import StageMetadata
from sparkship.serving.rformula import ColumnPruner, RFormulaModel, TargetEncoderModel, VectorAttributeRewriter
from sparkship.serving.selection import SELECTION_STAGES
from sparkship.serving.sql import SQLTransformer
from sparkship.serving.stages import (
    Bucketizer,
    ImputerModel,
    MinMaxScalerModel,
    OneHotEncoderModel,
    Stage,
    StandardScalerModel,
    StringIndexerModel,
    UnsupportedModelError,
    VectorAssembler,
    VectorSizeHint,
)
from sparkship.serving.text import (
    CountVectorizerModel, IDFModel, NGram, RegexTokenizer, StopWordsRemover, Tokenizer, Word2VecModel,
)

STAGES: dict[str, type[Stage]] = {
    cls.spark_class: cls
    for cls in (
        ImputerModel, StringIndexerModel, OneHotEncoderModel, Bucketizer, VectorAssembler, StandardScalerModel,
        MinMaxScalerModel, LogisticRegressionModel, LinearRegressionModel, DecisionTreeClassificationModel,
        RandomForestClassificationModel, GBTClassificationModel, DecisionTreeRegressionModel,
        RandomForestRegressionModel, GBTRegressionModel, VectorSizeHint, *FEATURE_STAGES, *SELECTION_STAGES,
        Tokenizer, RegexTokenizer, StopWordsRemover, NGram, HashingTF, CountVectorizerModel, IDFModel,
        FeatureHasher, Word2VecModel, SQLTransformer, TargetEncoderModel, RFormulaModel, ColumnPruner,
        VectorAttributeRewriter,
    )
}


def build_stage(meta: StageMetadata) -> Stage:
    """The scorer class for a saved stage; :class:`UnsupportedModelError` naming the class if there is none."""
    cls = STAGES.get(meta.class_name)
    if cls is None:
        supported = ", ".join(sorted(c.rsplit(".", 1)[-1] for c in STAGES))
        raise UnsupportedModelError(
            f"stage {meta.uid} is a {meta.class_name}, which the JVM-free scorer does not support "
            f"(supported: PipelineModel, {supported})"
        )
    return cls(meta)
