"""Models, manifests and policies for the validation gate's tests, and the metrics they are checked against,
computed independently of Spark (numpy)."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sparkship import artifacts, tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.policy import parse_rules, set_policy
from sparkship.registry import Registry

VALIDATION_SCHEMA = "x1 double, x2 double, y double, y_str string, t double"


def validation_rows(n: int, seed: int) -> list[tuple[float, float, float, str, float]]:
    """y depends mostly on x1 (so a model on x2 alone is weak but better than chance); t is linear + noise."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = (2.0 * x1 + 0.7 * x2 + rng.normal(scale=0.8, size=n) > 0).astype(float)
    t = 3.0 * x1 - 2.0 * x2 + rng.normal(scale=0.5, size=n)
    return [(float(a), float(b), float(c), "yes" if c else "no", float(d)) for a, b, c, d in zip(x1, x2, y, t)]


def manifest(name: str, task: str, label: str, inputs: list[str], thresholds: dict[str, Any] | None = None,
              max_regression: float | None = None, **extra: Any) -> dict[str, Any]:
    """A manifest as training writes it (docs/DESIGN.md), its spec carrying the validation rules."""
    outputs = [{"name": "prediction", "type": "double"}]
    if task == "classification":
        outputs.append({"name": "probability", "type": "array<double>"})
    algorithm = "logistic_regression" if task == "classification" else "linear_regression"
    spec = {"name": name, "task": task, "table": "/data/train@0", "label": label, "features": {"numeric": inputs},
            "model": {"algorithm": algorithm, "params": {}},
            "validation": {"thresholds": thresholds or {}, "max_regression": max_regression}}
    return {
        "name": name, "task": task, "label": label, "algorithm": algorithm, "spec": spec, "metrics": {},
        "signature": {"inputs": [{"name": c, "type": "double"} for c in inputs], "outputs": outputs},
        **extra,
    }


def register(settings: Settings, model: Any, manifest: dict[str, Any], run_id: str | None = None) -> int:
    staged = artifacts.stage(model, manifest, settings.models_root)
    return Registry(settings).register(manifest["name"], staged, run_id=run_id).version


def set_gate_policy(settings: Settings, name: str, rules: str) -> int:
    """Set ``name``'s gate policy from the rules' text; its version."""
    return set_policy(settings, name, parse_rules(rules), source="test")[0].version


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main([*argv, "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1])


def scored_frame(spark, model: Any, path: str, version: int | None) -> pd.DataFrame:
    from pyspark.ml.functions import vector_to_array

    out = model.transform(tables.read(spark, path, version=version))
    cols = [c for c in ("y", "y_str", "t", "prediction") if c in out.columns]
    if "probability" in out.columns:
        out = out.withColumn("p1", vector_to_array("probability")[1])
        cols.append("p1")
    return out.select(*cols).toPandas()


def auc(label: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC, ties counted half."""
    ranks = pd.Series(score).rank(method="average").to_numpy()
    pos = label == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def weighted_f1(label: np.ndarray, pred: np.ndarray) -> float:
    total = 0.0
    for c in np.unique(label):
        tp = np.sum((pred == c) & (label == c))
        precision = tp / max(np.sum(pred == c), 1)
        recall = tp / np.sum(label == c)
        f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
        total += f1 * np.mean(label == c)
    return float(total)


def classification_metrics(label: np.ndarray, pred: np.ndarray, p1: np.ndarray) -> dict[str, float]:
    p_true = np.where(label == 1, p1, 1 - p1)
    return {
        "areaUnderROC": auc(label, p1),
        "accuracy": float(np.mean(pred == label)),
        "f1": weighted_f1(label, pred),
        "logLoss": float(np.mean(-np.log(np.maximum(p_true, 1e-15)))),
    }

