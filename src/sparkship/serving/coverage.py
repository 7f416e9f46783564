"""Which ``pyspark.ml`` classes the JVM-free scorer serves, and why the others are refused.

A class is *supported* when its saved class is in :data:`sparkship.serving.catalog.STAGES` (or is a container the
loader opens); an Estimator stands for the Model it fits (:data:`FITS_TO`); everything else is in :data:`REFUSED`
with the reason. ``scripts/scorer_coverage.py`` prints the table; which ``pyspark.ml`` modules count:
docs/DESIGN.md.

    >>> status("ALSModel", supported_classes(), set())[0]
    'refused'
"""
from __future__ import annotations

import importlib

from sparkship.serving.catalog import STAGES

MODULES = ("feature", "classification", "regression", "clustering", "recommendation", "fpm", "tuning")
TOP_LEVEL = ("Pipeline", "PipelineModel")

# Containers the loader opens itself (pipeline.py) rather than scoring as one stage.
CONTAINERS = frozenset({"PipelineModel", "CrossValidatorModel", "TrainValidationSplitModel"})

# Estimator -> the class its fit() returns, where that is not simply "<name>Model".
FITS_TO: dict[str, str] = {
    "Pipeline": "PipelineModel",
    "QuantileDiscretizer": "Bucketizer",
    "DecisionTreeClassifier": "DecisionTreeClassificationModel",
    "RandomForestClassifier": "RandomForestClassificationModel",
    "GBTClassifier": "GBTClassificationModel",
    "MultilayerPerceptronClassifier": "MultilayerPerceptronClassificationModel",
    "FMClassifier": "FMClassificationModel",
    "DecisionTreeRegressor": "DecisionTreeRegressionModel",
    "RandomForestRegressor": "RandomForestRegressionModel",
    "GBTRegressor": "GBTRegressionModel",
    "FMRegressor": "FMRegressionModel",
}

_SUMMARY = "a training/evaluation summary: kept in the driver's memory, never saved with a model"
_LSH = ("an LSH model is for approximate similarity joins and nearest-neighbour search; its transform output "
        "(an array of hash vectors) is not something the scorer serves")

REFUSED: dict[str, str] = {
    # recommendation / pattern mining: scoring needs data that is not in a row
    "ALSModel": "recommendation needs the fitted user and item factor tables joined to each (user, item) pair "
                "at scoring time, and cold-start rows handled per coldStartStrategy: a table join, not a row map",
    "FPGrowthModel": "association rules are applied by matching each basket against the whole frequent-itemset "
                     "table (a join over the fitted data), not a per-row function",
    "PrefixSpan": "an algorithm (findFrequentSequentialPatterns), not an Estimator or Transformer: nothing is saved",
    "PowerIterationClustering": "an algorithm (assignClusters) over a graph, not a Transformer: no model is saved",
    # topic models: inference is an iterative, randomly initialised optimisation per document
    "LDAModel": "topic inference (topicDistribution) runs a per-document variational EM from a random "
                "gamma initialisation seeded by Spark: not reproducible bit-for-bit outside Spark",
    "LocalLDAModel": "see LDAModel: per-document variational inference from a random start",
    "DistributedLDAModel": "see LDAModel; it also keeps the training corpus' graph, which is never served",
    "LDA": "fits an LDAModel (refused: see LDAModel)",
    # locality-sensitive hashing
    "BucketedRandomProjectionLSHModel": _LSH,
    "MinHashLSHModel": _LSH,
    # helpers that are never a saved stage
    "ParamGridBuilder": "builds a list of param maps for tuning; never saved",
}

_SUMMARY_SUFFIXES = ("Summary",)


def saved_as(name: str) -> str:
    """The class a saved, fitted stage has for pyspark class ``name`` (an Estimator's Model, else itself)."""
    return FITS_TO.get(name, name)


def status(name: str, supported: set[str], listed: set[str]) -> tuple[str, str]:
    """("supported" | "refused" | "missing", note) for pyspark.ml class ``name``.

    ``supported``: short class names the scorer serves; ``listed``: every name in the modules' ``__all__``
    (to tell an Estimator "X" with an "XModel" from a plain Transformer).
    """
    if name in supported:
        return "supported", ""
    if name in REFUSED:
        return "refused", REFUSED[name]
    if name.endswith(_SUMMARY_SUFFIXES):
        return "refused", _SUMMARY
    model = FITS_TO.get(name) or (f"{name}Model" if f"{name}Model" in listed else None)
    if model is not None:
        if model in supported:
            return "supported", f"an Estimator: saved as its fitted {model}"
        if model in REFUSED:
            return "refused", f"an Estimator: fits a {model} ({REFUSED[model]})"
    return "missing", "neither supported nor refused"


def supported_classes() -> set[str]:
    """Short class names the scorer serves: the catalog's stages and the containers the loader opens."""
    return {c.rsplit(".", 1)[-1] for c in STAGES} | set(CONTAINERS)


def pyspark_classes() -> dict[str, list[str]]:
    """Module -> the names in its ``__all__``, for the modules whose classes can be in a saved model (needs
    pyspark: used by the coverage script and test only)."""
    out = {m: list(importlib.import_module(f"pyspark.ml.{m}").__all__) for m in MODULES}
    out["pipeline"] = list(TOP_LEVEL)
    return out


def markdown_table(classes: dict[str, list[str]] | None = None) -> str:
    """The coverage table in Markdown: one row per class, grouped by module."""
    classes = classes or pyspark_classes()
    supported = supported_classes()
    listed = {n for names in classes.values() for n in names}
    lines = ["| module | class | scorer | note |", "|---|---|---|---|"]
    for module, names in classes.items():
        for name in names:
            state, note = status(name, supported, listed)
            mark = {"supported": "✅ supported", "refused": "⛔ refused", "missing": "❓ missing"}[state]
            lines.append(f"| {module} | {name} | {mark} | {note} |")
    return "\n".join(lines)
