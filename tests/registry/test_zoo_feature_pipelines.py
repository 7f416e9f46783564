"""The registration zoo, part 3: feature-stage combinations, text, tuning wrappers, a string-label
multiclass and an unservable stage; every estimator class is covered by some case of the zoo.
Each is registered (through the API or the in-process CLI), scored with ``sparkship score`` (equal to its
own ``transform``), predicted without a JVM (parity <= 1e-9, classes exact) or refused, validated (its metric
equal to Spark's evaluator) and monitored; one case of each kind of output also fails a bound
just missed and is reported (tests/helpers/zoo.py)."""
from __future__ import annotations

import pytest

from tests.helpers.zoo import (  # noqa: F401 - the module's tests
    test_a_plain_pyspark_model_registers_scores_and_predicts,
    test_a_registered_model_is_validated_monitored_and_reported,
)
from tests.helpers.zoo_models import CASES as ALL_CASES
from tests.helpers.zoo_models import ESTIMATORS, GROUPS, NOT_DEPLOYABLE, estimator_classes, used_classes

pytestmark = pytest.mark.seconds(330)

# The two checks every case runs (tests/helpers/zoo.py), over this module's group of cases (tests/registry/conftest.py).
ZOO_GROUP = "feature_pipelines"


def test_every_case_has_an_estimator_and_every_estimator_class_is_covered(spark):
    assert [c.name for c in ALL_CASES] == list(ESTIMATORS) and len(ALL_CASES) >= 30
    assert [c for group in GROUPS.values() for c in group] == ALL_CASES  # the three modules run every case once
    used = set().union(*(used_classes(make()) for make in ESTIMATORS.values()))
    missing = estimator_classes() - NOT_DEPLOYABLE - used
    assert not missing, f"estimator classes no case fits: {sorted(missing)}"
