"""sparkship from a notebook or a job: register a model fitted there, load it back, score tables, serve it.

Every function takes an optional ``settings`` (:class:`~sparkship.config.Settings`; default: resolved from the
environment, ``SPARKSHIP_HOME`` and friends, as the CLI does). References are strings (``NAME@ALIAS``,
``PATH@VERSION``...) or :mod:`sparkship.refs` values, parsed once here; Spark starts on the first call that needs it.

    >>> import sparkship
    >>> spark = sparkship.session()
    >>> mv = sparkship.register_model(fitted_model, "doc_churn", table=table, label="y")
    >>> mv.version, mv.task, round(mv.metrics["accuracy"], 1) >= 0.5
    (1, 'classification', True)
    >>> scorer = sparkship.scorer("doc_churn/1")
    >>> scorer.input_names
    ['c', 'x']
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sparkship.config import Settings
from sparkship.fitted import register_fitted
from sparkship.refs import ModelRef, TableRef, to_model_ref, to_table_ref
from sparkship.registry import Registry
from sparkship.registry_tables import ModelVersion
from sparkship.scoring import ScoreResult
from sparkship.scoring import score as score_table
from sparkship.serving import PipelineScorer, load
from sparkship.spark import get_spark

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel
    from pyspark.sql import SparkSession


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else Settings.resolve()


def session() -> SparkSession:
    """The active SparkSession (on Databricks, the runtime's), else a local one with Delta Lake.

    >>> session() is spark
    True
    """
    return get_spark()


def register_model(model: Any, name: str, *, table: str | TableRef, label: str | None = None, task: str | None = None,
                   run_id: str | None = None, settings: Settings | None = None) -> ModelVersion:
    """Register a fitted Spark ML model as the next version of ``name``, measured and profiled on ``table``.

    Args:
        model: a fitted ``PipelineModel``, a single fitted model (``LogisticRegressionModel``...), a
            ``CrossValidatorModel`` / ``TrainValidationSplitModel``, or the folder of one saved (also an MLflow
            model directory with the spark flavor).
        name: the model's name in the registry.
        table: the Delta table the model reads, ``PATH`` or ``PATH@VERSION``: it types the inputs, and the model
            is measured (with ``label``) and profiled for monitoring on it.
        label: the label column (numeric, or a string the pipeline's StringIndexer indexes); without it no metrics but
            clustering's silhouette.
        task: ``classification``, ``regression`` or ``clustering``: inferred from the model; give it only where
            the model cannot tell.
        run_id: a job run id recorded with the version (``NAME/run:ID`` finds it).
        settings: where the registry and the models are (default: from the environment).

    Returns:
        The registered version: ``.version``, ``.artifact``, ``.metrics``, ``.task``.

    >>> register_model(fitted_model, "doc_churn", table=table, task="regression")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sparkship.errors.UsageError: --task regression contradicts the model: its LogisticRegressionModel stage makes it ...
    """
    evaluated = to_table_ref(table, what="--table")
    return register_fitted(session(), _settings(settings), model, name, table=evaluated, label=label, task=task,
                           run_id=run_id)


def load_model(ref: str | ModelRef, settings: Settings | None = None) -> PipelineModel:
    """The fitted PipelineModel of a registered version (``NAME``, ``NAME/VERSION``, ``NAME@ALIAS``), verified.

    >>> [type(s).__name__ for s in load_model("doc_churn/1").stages]
    ['StringIndexerModel', 'VectorAssembler', 'LogisticRegressionModel']
    """
    model = to_model_ref(ref)
    session()
    return Registry(_settings(settings)).load_model(model)[1]


def score(model: str | ModelRef, input: str | TableRef, output: str | TableRef, keys: Sequence[str] | str, *,
          settings: Settings | None = None, **options: Any) -> ScoreResult:
    """Score the rows of ``input`` (``PATH[@VERSION]``) not scored yet by ``model`` into ``output``, as
    ``sparkship score`` does; ``options`` are :func:`sparkship.scoring.score`'s (``full``, ``include_features``,
    ``run_id``, ``replace_output``, ``wait_s``, ``auto_full``).

    >>> score("churn@champion", "/data/events", "/data/scores", "customer_id").scored     # doctest: +SKIP
    1200
    """
    parsed = (to_model_ref(model), to_table_ref(input, what="--input"), to_table_ref(output, what="--output"))
    return score_table(session(), _settings(settings), *parsed, keys, **options)


def scorer(ref: str | ModelRef, settings: Settings | None = None) -> PipelineScorer:
    """The JVM-free scorer of a registered version (no Spark needed to use it).

    Raises :class:`~sparkship.serving.UnsupportedModelError` naming the stage it cannot serve.

    >>> scorer("doc_churn/1").score_one({"x": 1.5, "c": "a"})["prediction"]
    1.0
    """
    mv = Registry(_settings(settings)).get(to_model_ref(ref))
    return load(mv.artifact)


__all__ = ["load_model", "register_model", "score", "scorer", "session"]
