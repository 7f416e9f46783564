"""The registration zoo, part 2: one model per estimator class of ``pyspark.ml.regression`` and
``clustering``; the clustering gate against a champion; one-line refusals.
Each is registered (through the API or the in-process CLI), scored with ``sparkship score`` (equal to its
own ``transform``), predicted without a JVM (parity <= 1e-9, classes exact) or refused, validated (its metric
equal to Spark's evaluator) and monitored; one case of each kind of output also fails a bound
just missed and is reported (tests/helpers/zoo.py)."""
from __future__ import annotations

import pytest
from pyspark.ml.evaluation import ClusteringEvaluator

import sparkship
from sparkship.registry import Registry
from tests.helpers.zoo import (  # noqa: F401 - the first two are the module's tests
    cli,
    test_a_plain_pyspark_model_registers_scores_and_predicts,
    test_a_registered_model_is_validated_monitored_and_reported,
    validate,
)
from tests.helpers.zoo_models import clusterer, lda_topic_model, unindexed_string_label_classifier

pytestmark = pytest.mark.seconds(280)

# The two checks every case runs (tests/helpers/zoo.py), over this module's group of cases (tests/registry/conftest.py).
ZOO_GROUP = "regressors_and_clusterers"


def test_the_clustering_gate_compares_silhouettes_with_the_champion(spark, zoo_data, zoo_settings, capsys):
    """A champion's silhouette is the bar: more clusters than the blobs is a regression (larger is better)."""
    df, table, holdout = zoo_data["df"], zoo_data["table"], zoo_data["holdout"]
    three, six = clusterer("KMeans", k=3, maxIter=10).fit(df), clusterer("KMeans", k=6, maxIter=10).fit(df)
    for model in (three, six):
        sparkship.register_model(model, "blobs", table=table, settings=zoo_settings)
    scores = {k: ClusteringEvaluator().evaluate(m.transform(zoo_data["holdout_df"])) for k, m in ((3, three), (6, six))}
    assert scores[6] < scores[3] - 0.02  # the premise: six clusters fit three blobs worse
    code, first = validate(zoo_settings, "blobs/1", holdout, "max_regression=0.01", capsys)
    assert (code, first["status"], first["champion_version"]) == (0, "PASS", None)
    assert cli(zoo_settings, "promote", "--model", "blobs/1", "--json") == 0
    code, second = validate(zoo_settings, "blobs/2", holdout, "max_regression=0.01", capsys)
    assert (code, second["status"], second["champion_version"]) == (1, "FAIL", 1)
    assert second["champion_metrics"]["silhouette"] == pytest.approx(scores[3], rel=1e-9)
    assert second["candidate_metrics"]["silhouette"] == pytest.approx(scores[6], rel=1e-9)
    assert "silhouette" in second["reasons"][0] and "champion" in second["reasons"][0]


def _error_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_refusals_name_the_remedy_in_one_line(spark, zoo_data, zoo_settings, zoo_fitted, capsys):
    """A string label that no stage of the model indexes; a topic model (LDA: no prediction); a clustering policy
    bounding a classifier's metric."""
    df, table, root = zoo_data["df"], zoo_data["table"], zoo_data["root"]
    folder = str(root / "string_label_unindexed")
    unindexed_string_label_classifier().fit(df).write().save(folder)
    capsys.readouterr()
    code = cli(zoo_settings, "register", "--name", "unindexed", "--path", folder, "--table", table, "--label", "ks")
    err = _error_lines(capsys)
    assert code != 0 and len(err) == 1 and "StringIndexer" in err[0] and "'ks'" in err[0], err
    assert "unindexed" not in [m["name"] for m in Registry(zoo_settings).list_models()]

    lda_folder = str(root / "lda")
    lda_topic_model().fit(df).write().save(lda_folder)
    capsys.readouterr()
    code = cli(zoo_settings, "register", "--name", "topics", "--path", lda_folder, "--table", table)
    err = _error_lines(capsys)
    assert code != 0 and len(err) == 1 and "prediction" in err[0], err
    assert "topics" not in [m["name"] for m in Registry(zoo_settings).list_models()]

    sparkship.register_model(zoo_fitted["kmeans"], "blobs_policy", table=table, settings=zoo_settings)
    capsys.readouterr()
    code = cli(zoo_settings, "validate", "--model", "blobs_policy/1", "--table", zoo_data["holdout"], "--policy",
               "f1>=0.5")
    err = _error_lines(capsys)
    assert code != 0 and len(err) == 1 and "clustering" in err[0] and "silhouette" in err[0], err
