"""Every class of pyspark.ml's feature/classification/regression/clustering/recommendation/fpm/tuning modules
(and Pipeline/PipelineModel) is either served by the JVM-free scorer (serving.catalog.STAGES) or refused with a
reason (serving.coverage.REFUSED); docs/SCORER_COVERAGE.md's table is generated from the same lists."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sparkship.serving import coverage
from tests.helpers.paths import ROOT, SCRIPTS

# The issue's target list (issue 14): each must be served once every helper's stages are merged.
TARGET = """Binarizer Bucketizer QuantileDiscretizer MaxAbsScaler RobustScaler Normalizer PCA PolynomialExpansion
ElementwiseProduct DCT VectorSlicer ChiSqSelector UnivariateFeatureSelector VarianceThresholdSelector Interaction
VectorIndexer IndexToString VectorSizeHint VectorAssembler Tokenizer RegexTokenizer StopWordsRemover NGram HashingTF
CountVectorizer IDF FeatureHasher Word2Vec TargetEncoder RFormula SQLTransformer Imputer StringIndexer OneHotEncoder
StandardScaler MinMaxScaler NaiveBayes LinearSVC MultilayerPerceptronClassifier FMClassifier OneVsRest
LogisticRegression DecisionTreeClassifier RandomForestClassifier GBTClassifier DecisionTreeRegressor
RandomForestRegressor GBTRegressor GeneralizedLinearRegression IsotonicRegression AFTSurvivalRegression FMRegressor
LinearRegression KMeans BisectingKMeans GaussianMixture CrossValidator CrossValidatorModel TrainValidationSplit
TrainValidationSplitModel Pipeline PipelineModel""".split()


@pytest.fixture(scope="module")
def classes() -> dict[str, list[str]]:
    return coverage.pyspark_classes()


def _statuses(classes):
    supported = coverage.supported_classes()
    listed = {n for names in classes.values() for n in names}
    return {n: coverage.status(n, supported, listed) for names in classes.values() for n in names}


def test_every_pyspark_ml_class_is_supported_or_refused(classes):
    missing = sorted(n for n, (state, _) in _statuses(classes).items() if state == "missing")
    assert not missing, f"neither in catalog.STAGES nor in coverage.REFUSED: {', '.join(missing)}"


def test_the_issue_target_list_is_supported(classes):
    statuses = _statuses(classes)
    assert set(TARGET) <= set(statuses), sorted(set(TARGET) - set(statuses))
    not_served = sorted(n for n in TARGET if statuses[n][0] != "supported")
    assert not not_served, f"target classes not served: {', '.join(not_served)}"


def test_refusals_name_real_classes_and_are_not_also_supported(classes):
    listed = {n for names in classes.values() for n in names}
    assert set(coverage.REFUSED) <= listed, sorted(set(coverage.REFUSED) - listed)
    assert not set(coverage.REFUSED) & coverage.supported_classes()
    assert all(len(reason) > 20 for reason in coverage.REFUSED.values())
    for estimator, model in coverage.FITS_TO.items():
        assert estimator in listed and (model in listed or model == "Bucketizer"), (estimator, model)


def test_the_script_prints_the_table_and_checks(classes):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    script = str(SCRIPTS / "scorer_coverage.py")
    out = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True, env=env, timeout=120)
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and not line.startswith("| module")]
    assert len(rows) == sum(len(v) for v in classes.values())
    assert "| recommendation | ALSModel | ⛔ refused | recommendation needs" in out.stdout
    assert "| feature | VectorAssembler | ✅ supported |" in out.stdout
    missing = [n for n, (s, _) in _statuses(classes).items() if s == "missing"]
    assert out.returncode == (1 if missing else 0), out.stderr
