"""Saved stage class name -> the JVM-free class that scores it."""
from __future__ import annotations

from sparkship.serving.features import FEATURE_STAGES
from sparkship.serving.hashing import FeatureHasher, HashingTF
from sparkship.serving.classifiers import (
    FMClassificationModel,
    LinearSVCModel,
    MultilayerPerceptronClassificationModel,
    NaiveBayesModel,
    OneVsRestModel,
)
from sparkship.serving.clustering import BisectingKMeansModel, GaussianMixtureModel, KMeansModel
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
from sparkship.serving.regressors import (
    AFTSurvivalRegressionModel,
    FMRegressionModel,
    GeneralizedLinearRegressionModel,
    IsotonicRegressionModel,
)
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
from sparkship.serving.wrappers import CrossValidatorModel, TrainValidationSplitModel

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
        NaiveBayesModel, LinearSVCModel, MultilayerPerceptronClassificationModel, FMClassificationModel,
        OneVsRestModel, GeneralizedLinearRegressionModel, IsotonicRegressionModel, AFTSurvivalRegressionModel,
        FMRegressionModel, KMeansModel, BisectingKMeansModel, GaussianMixtureModel,
    )
}

# Wrappers scored through a model saved inside them (Spark's and pyspark's writers name them differently).
WRAPPERS = {name: cls for cls in (CrossValidatorModel, TrainValidationSplitModel)
            for name in (cls.spark_class, cls.python_class)}


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
    return cls(meta)
