"""The registration zoo, part 1: one model per estimator class of ``pyspark.ml.classification``.
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

pytestmark = pytest.mark.seconds(240)

# The two checks every case runs (tests/helpers/zoo.py), over this module's group of cases (tests/registry/conftest.py).
ZOO_GROUP = "classifiers"


