"""The HTML model report on real trained models, a real scoring run and headless Chromium."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from sparkship import report, tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.errors import NotFoundError, UsageError
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from tests.helpers.paths import SCRIPTS

pytestmark = pytest.mark.seconds(36)

SCHEMA = "id long, age double, income double, plan string, churned string, spend double"
SCRIPT = str(SCRIPTS / "screenshot_report.py")


def _rows(n: int, seed: int, age_shift: float = 0.0) -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, n) + age_shift
    income = rng.lognormal(10, 0.5, n)
    plan = rng.choice(["basic", "pro", "enterprise"], p=[0.5, 0.3, 0.2], size=n)
    churned = rng.random(n) < 1 / (1 + np.exp(-(0.1 * (age - 40) + 1.0 * (plan == "pro") - 0.4)))
    spend = 20 + 0.5 * age + 15 * (plan == "enterprise") + rng.normal(0, 3, n)
    return [
        (i, None if i % 37 == 0 else float(age[i]), float(income[i]), str(plan[i]), "yes" if churned[i] else "no",
         float(spend[i]))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def env(spark, tmp_path_factory) -> dict[str, Any]:
    """A random forest on a string label and a linear regression, both trained and registered by sparkship;
    the forest validated, promoted, and used by a real scoring run over shifted data."""
    from sparkship.policy import Rules
    from sparkship.scoring import score
    from sparkship.spec import parse_spec
    from sparkship.training import register_result, train
    from sparkship.validation import validate

    root = tmp_path_factory.mktemp("report")
    settings = Settings.resolve(home=str(root / "home"))
    table = str(root / "customers")
    tables.write(spark.createDataFrame(_rows(800, seed=1), SCHEMA), table, mode="overwrite")
    features = {"numeric": ["age", "income"], "categorical": ["plan"]}
    for name, task, label, algorithm, params in (
        ("churn", "classification", "churned", "random_forest", {"numTrees": 8, "maxDepth": 4, "seed": 3}),
        ("spend", "regression", "spend", "linear_regression", {"regParam": 0.01}),
    ):
        spec = parse_spec({"name": name, "task": task, "table": table, "label": label, "features": features,
                           "model": {"algorithm": algorithm, "params": params},
                           "split": {"test_fraction": 0.3, "seed": 11}})
        register_result(settings, train(spark, spec))
    registry = Registry(settings)
    validate(spark, settings, "churn/1", table, rules=Rules(permissive=True))
    registry.set_alias("churn", "champion", 1, reason="first model")
    incoming = str(root / "incoming")
    tables.write(spark.createDataFrame(_rows(500, seed=2, age_shift=15.0), SCHEMA), incoming, mode="overwrite")
    scores = str(root / "scores")
    score(spark, settings, "churn@champion", incoming, scores, "id", include_features=True)
    return {"root": root, "settings": settings, "registry": registry, "table": table, "scores": scores}


@pytest.fixture(scope="module")
def churn_page(spark, env) -> tuple[str, dict[str, Any]]:
    out = str(env["root"] / "churn.html")
    summary = report.write_report(spark, env["registry"], "churn@champion", out, scores=env["scores"])
    with open(out, encoding="utf-8") as fh:
        return fh.read(), summary


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)]


def test_classification_report_has_every_section_and_real_plots(env, churn_page) -> None:
    page, summary = churn_page
    assert summary["sections"] == ["model", "metrics", "curves", "classes", "importances", "validation", "aliases",
                                   "drift"]
    for section in summary["sections"]:
        assert f"<section id='{section}'>" in page
    images = _pngs(page)
    # ROC, PR, confusion matrix, importances, PSI, null rates: all real PNGs, no external resource.
    assert len(images) == 6 and all(i.startswith(b"\x89PNG\r\n\x1a\n") and len(i) > 5000 for i in images)
    assert "http://" not in page and "https://" not in page
    assert ">PASS<" in page or ">FAIL<" in page
    assert ">champion<" in page and "first model" in page
    assert "plan=pro" in page and ">age<" in page
    flagged = re.search(r"<span class='flag'>(\d+) flagged</span>", page)
    assert flagged and int(flagged.group(1)) >= 1  # the scored rows are 15 years older than the training rows
    assert summary["bytes"] == len(page.encode("utf-8"))


def _sklearn_metrics(rows: list[Any], task: str) -> dict[str, float]:
    """The manifest's metrics recomputed with scikit-learn from (label, prediction, probability) rows, using
    the definitions of Spark's evaluators: weighted F1, log loss clipped at 1e-15, PR area by trapezoids."""
    from sklearn import metrics as skm

    y = np.array([r[0] for r in rows], dtype=float)
    pred = np.array([r[1] for r in rows], dtype=float)
    if task == "regression":
        return {"rmse": float(np.sqrt(skm.mean_squared_error(y, pred))), "mae": skm.mean_absolute_error(y, pred),
                "r2": skm.r2_score(y, pred)}
    prob = np.array([r[2] for r in rows], dtype=float)
    out = {"accuracy": skm.accuracy_score(y, pred), "f1": skm.f1_score(y, pred, average="weighted"),
           "logLoss": float(np.mean(-np.log(np.clip(prob[np.arange(len(y)), y.astype(int)], 1e-15, 1.0))))}
    if prob.shape[1] == 2:
        precision, recall, _ = skm.precision_recall_curve(y, prob[:, 1])
        out["areaUnderROC"] = skm.roc_auc_score(y, prob[:, 1])
        # Spark's curve starts at (recall 0, precision of the highest-scored group); sklearn's at (0, 1).
        out["areaUnderPR"] = skm.auc(np.r_[0.0, recall[:-1][::-1]], np.r_[precision[-2], precision[:-1][::-1]])
    return out


def test_manifest_metrics_match_scikit_learn_on_the_same_test_split(spark, env) -> None:
    """Training's metrics (Spark evaluators, written to the manifest) against scikit-learn on the predictions
    the report recomputes on the held-out split: an independent implementation of every metric."""
    from pyspark.ml.functions import vector_to_array

    registry = env["registry"]
    for ref, task in (("churn/1", "classification"), ("spend/1", "regression")):
        _, model = registry.load_model(parse_ref(ref))
        manifest = registry.manifest(parse_ref(ref))[1]
        ev = report.evaluation(spark, model, manifest)
        try:
            columns = [ev.label_col, "prediction"]
            if task == "classification":
                columns.append(vector_to_array("probability").alias("probability"))
            rows = ev.predictions.select(*columns).collect()
        finally:
            ev.predictions.unpersist()
        assert len(rows) == manifest["training"]["rows_test"] > 100
        expected = _sklearn_metrics(rows, task)
        assert manifest["metrics"].keys() == expected.keys()
        for name, value in expected.items():
            assert manifest["metrics"][name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
        assert ev.metrics == pytest.approx(manifest["metrics"], rel=1e-9)


def test_drift_shows_the_shifted_age_and_reads_the_drift_table_once_written(spark, env) -> None:
    from sparkship.monitoring import monitor

    mv = env["registry"].get(parse_ref("churn/1"))
    computed, source = report.drift_rows(spark, env["registry"], mv, env["scores"], "1d", 0.2)
    assert source.startswith("computed from")
    flagged = {r["feature"] for r in computed if r["flagged"]}
    assert "age" in flagged and not flagged & {"income", "plan"}  # older customers; the prediction may follow
    monitor(spark, env["registry"], "churn/1", env["scores"], run_id="m1")
    stored, source = report.drift_rows(spark, env["registry"], mv, env["scores"], "1d", 0.2)
    assert source.startswith("from ") and source.endswith("_drift_metrics")
    assert [(r["feature"], r["psi"], r["run_id"]) for r in stored] == [(r["feature"], r["psi"], "m1") for r in computed]


def test_feature_names_follow_the_assembler_and_one_hot_widths(spark, env) -> None:
    from pyspark.ml.feature import StringIndexerModel

    _, model = env["registry"].load_model(parse_ref("churn/1"))
    df = tables.read(spark, env["table"]).limit(5)
    labels = next(s for s in model.stages if isinstance(s, StringIndexerModel)).labelsArray[0]
    # StringIndexer keeps unseen values as one more index; the encoder's dropLast drops that last slot.
    expected = ["age", "income", *[f"plan={v}" for v in labels]]
    assert report.feature_names(model, model.transform(df)) == expected
    kind, pairs = report.importances(model, model.transform(df))
    assert kind == "importance" and [n for n, _ in pairs] == expected
    assert sum(v for _, v in pairs) == pytest.approx(1.0)


def test_regression_report_from_the_cli(env, capsys) -> None:
    out = str(env["root"] / "spend.html")
    assert main(["report", "--model", "spend/1", "--out", out, "--home", env["settings"].home, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sections"] == ["model", "metrics", "residuals", "importances", "validation", "aliases"]
    with open(out, encoding="utf-8") as fh:
        page = fh.read()
    assert "Feature coefficients" in page and "never validated" in page and "no aliases" in page
    assert len(_pngs(page)) == 2


def test_bad_input_is_refused_before_any_work(spark, env) -> None:
    registry = env["registry"]
    with pytest.raises(UsageError, match="does not exist"):
        report.write_report(spark, registry, "churn/1", str(env["root"] / "missing" / "r.html"))
    with pytest.raises(UsageError, match="html"):
        report.write_report(spark, registry, "churn/1", str(env["root"] / "r.pdf"))
    with pytest.raises(NotFoundError, match="no Delta table"):
        report.write_report(spark, registry, "churn/1", str(env["root"] / "r.html"), table=str(env["root"] / "nope"))
    assert not os.path.exists(env["root"] / "r.html")


def _browser_required() -> bool:
    """Where the browser is meant to be installed (CI, or `make test` setting SPARKSHIP_REQUIRE_BROWSER=1), a
    missing Chromium fails the test instead of skipping it unseen."""
    return os.environ.get("SPARKSHIP_REQUIRE_BROWSER", "") == "1" or os.environ.get("CI", "").lower() in ("1", "true")


def test_report_renders_in_headless_chromium(env, churn_page, tmp_path) -> None:
    from matplotlib.image import imread

    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):  # as the script
        message = "chromium is not installed (Debian: apt-get install -y chromium); cannot screenshot"
        if _browser_required():
            pytest.fail(message + " - SPARKSHIP_REQUIRE_BROWSER=1 or CI is set, so the browser is required")
        pytest.skip(message)

    page = tmp_path / "report.html"
    page.write_text(churn_page[0], encoding="utf-8")
    png = tmp_path / "report.png"
    done = subprocess.run([sys.executable, SCRIPT, str(page), str(png), "--width", "1200", "--height", "2400"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    pixels = imread(str(png))[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    not_white = (pixels < 0.97).any(axis=2).mean()
    # A blank or unstyled page has a handful of colours; plots and the styled page have hundreds.
    assert len(colours) > 200 and not_white > 0.1
