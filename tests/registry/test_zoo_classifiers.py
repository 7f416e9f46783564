"""The registration zoo, part 1: one model per estimator class of ``pyspark.ml.classification``.
Each is registered (through the API or the in-process CLI), scored with ``sparkship score`` (equal to its
own ``transform``), predicted without a JVM (parity <= 1e-9, classes exact) or refused, validated (its metric
equal to Spark's evaluator), monitored and reported (tests/helpers/zoo.py)."""
from __future__ import annotations

import pytest

from tests.helpers.zoo import check_registered_scored_and_served, check_validated_monitored_reported
from tests.helpers.zoo_models import cases_of

pytestmark = pytest.mark.seconds(240)

CASES = cases_of("classifiers")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_plain_pyspark_model_registers_scores_and_predicts(case, spark, zoo_data, zoo_settings, zoo_fitted,
                                                             zoo_registered, capsys):
    check_registered_scored_and_served(case, zoo_fitted[case.name], zoo_registered(case, capsys), spark, zoo_data,
                                       zoo_settings, capsys)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_registered_model_is_validated_monitored_and_reported(case, spark, zoo_data, zoo_settings, zoo_fitted,
                                                                zoo_registered, capsys):
    check_validated_monitored_reported(case, zoo_fitted[case.name], zoo_registered(case, capsys), zoo_data,
                                       zoo_settings, capsys)
