"""The embedded default dataset: synthetic, seeded customer churn data with numeric and categorical features,
nulls, NaN and a binary label. Used by ``sparkship demo``, the examples and the tests.

    >>> rows = churn_rows(1000, seed=7)
    >>> sorted(rows.column_names)[:3]
    ['age', 'churned', 'customer_id']
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

PLANS = ["basic", "standard", "premium"]
REGIONS = ["north", "south", "east", "west"]
FEATURES_NUMERIC = ["age", "tenure_months", "monthly_charges", "support_calls"]
FEATURES_CATEGORICAL = ["plan", "region"]
LABEL = "churned"
KEY = "customer_id"


def churn_rows(n: int, seed: int = 7, first_id: int = 1, shift: float = 0.0) -> pa.Table:
    """``n`` customers as an Arrow table.

    Args:
        seed: the random seed; the same (n, seed, first_id, shift) gives the same rows.
        first_id: the first ``customer_id`` (ids are consecutive), so batches do not collide.
        shift: 0 for the training distribution; > 0 moves ages and charges up and plans towards basic,
            as a drifted population would (1.0 is a large shift).
    """
    rng = np.random.default_rng(seed)
    age = rng.normal(42 + 12 * shift, 12, n).clip(18, 90).round()
    tenure = rng.gamma(2.0, 14.0, n).clip(0, 120).round()
    plan_p = np.array([0.45, 0.35, 0.20]) if shift == 0 else np.array([0.45 + 0.3 * min(shift, 1), 0.35, 0.20])
    plan = rng.choice(PLANS, n, p=plan_p / plan_p.sum())
    region = rng.choice(REGIONS, n, p=[0.3, 0.3, 0.25, 0.15])
    base_charge = np.select([plan == "basic", plan == "standard"], [30.0, 55.0], 85.0)
    charges = (base_charge + rng.normal(10 * shift, 8, n)).clip(5, None).round(2)
    calls = rng.poisson(1.2 + 0.02 * np.maximum(0, 60 - tenure), n)
    logit = (
        -1.2
        + 0.55 * calls
        - 0.045 * tenure
        + 0.018 * (charges - 50)
        + np.select([plan == "basic", plan == "premium"], [0.5, -0.6], 0.0)
        + 0.4 * (region == "south")
        + 0.9 * ((age < 28) & (calls >= 2))  # an interaction a tree can find and a linear model cannot
    )
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    # Missing data, as real extracts have it: null ages, NaN charges, null plans.
    age_mask = rng.random(n) < 0.04
    charges = np.where(rng.random(n) < 0.02, np.nan, charges)
    plan_mask = rng.random(n) < 0.03
    return pa.table(
        {
            KEY: pa.array(np.arange(first_id, first_id + n), pa.int64()),
            "age": pa.array(age, pa.float64(), mask=age_mask),
            "tenure_months": pa.array(tenure, pa.float64()),
            "monthly_charges": pa.array(charges, pa.float64()),
            "support_calls": pa.array(calls, pa.int32()),
            "plan": pa.array(plan.astype(object), pa.string(), mask=plan_mask),
            "region": pa.array(region.astype(object), pa.string()),
            LABEL: pa.array(churned, pa.int32()),
        }
    )
