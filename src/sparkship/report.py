"""A model report: one self-contained HTML page with its plots embedded as PNG data URIs.

It covers the model's lineage, metrics, curves or residuals, feature importances or coefficients, the validation
and alias histories, and drift when a scores table is given, evaluated on the training snapshot's test split or
on ``table=``. Curves come from Spark aggregations, never from collecting the rows (details: docs/DESIGN.md).

    >>> summary = write_report(spark, Registry(settings), "churn@champion", "report.html")   # doctest: +SKIP
    >>> summary["sections"]                                                                # doctest: +SKIP
    ['model', 'metrics', 'curves', 'importances', 'validation', 'aliases']
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sparkship import monitoring, tables, training
from sparkship.errors import NotFoundError, UsageError
from sparkship.fitted import flat_stages, predictor
from sparkship.metrics import clustering_metrics
from sparkship.refs import ModelRef, TableRef, to_model_ref, to_table_ref
from sparkship.registering import spec_of
from sparkship.spark import cached, uncached

# pyspark is an optional dependency (the `local` extra; Databricks ships its own): functions import it where used.
if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame, SparkSession

    from sparkship.registry import ModelVersion, Registry
    from sparkship.spec import TrainingSpec

log = logging.getLogger(__name__)

CURVE_BINS = 1000
RESIDUAL_SAMPLE = 2000
TOP_FEATURES = 20
_SUFFIXES = ("__imputed", "__ohe", "__idx")


# --- the evaluation data ---------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """The model's predictions on the evaluation data, and what that data is."""

    predictions: DataFrame
    label_col: str  # "" for a clustering model
    description: str
    metrics: dict[str, float]
    prediction_col: str = "prediction"


def held_out_rows(spark: SparkSession, spec: TrainingSpec, version: int,
                  labels: Sequence[str] | None) -> DataFrame:
    """The test split training made of ``spec.table`` at ``version`` (same rows, same columns, same seed)."""
    return training.held_out_rows(spark, spec, version, labels)


def _pinned(spark: SparkSession, table: TableRef) -> tuple[str, int]:
    path, version = table.location, table.version
    if not tables.exists(spark, path):
        raise NotFoundError(f"no Delta table at {path}")
    return path, version if version is not None else int(tables.version(spark, path) or 0)


def clustering_evaluation(spark: SparkSession, model: PipelineModel, manifest: dict[str, Any],
                          table: TableRef | None = None) -> Evaluation:
    """A clustering model's clusters and silhouette on every row of ``table``, else of the table and version it
    was registered with (a clustering model has no held-out split: it was fitted without a label)."""
    lineage = manifest.get("training") or {}
    if table is None and (lineage.get("table") is None or lineage.get("table_version") is None):
        raise UsageError("the manifest records no table and version: pass --table PATH[@V]")
    path, version = _pinned(spark, table) if table is not None else (lineage["table"], int(lineage["table_version"]))
    found = predictor(flat_stages(model))
    if found is None:
        raise UsageError(f"{manifest.get('name')} has no clustering stage to report on")
    predictions = cached(model.transform(tables.read(spark, path, version=version)))
    metrics = clustering_metrics(predictions, found.getFeaturesCol(), found.getPredictionCol())
    return Evaluation(predictions, "", f"every row of {path}@{version}", metrics, found.getPredictionCol())


def evaluation(
    spark: SparkSession, model: PipelineModel, manifest: dict[str, Any], table: TableRef | None = None
) -> Evaluation:
    """Predictions and metrics on the training snapshot's test split, or on every labelled row of ``table``
    (a clustering model: :func:`clustering_evaluation`)."""
    if manifest.get("task") == "clustering":
        return clustering_evaluation(spark, model, manifest, table)
    spec = spec_of(manifest, str(manifest.get("name")))
    labels = manifest.get("labels")
    if table is not None:
        path, version = _pinned(spark, table)
        spec = spec.with_table(f"{path}@{version}")
        raw = tables.read(spark, path, version=version)
        data, label_is_string = training.labelled_rows(raw, spec, labels, f"table {path}@{version}")
        description = f"every labelled row of {path}@{version}"
    else:
        lineage = manifest.get("training") or {}
        if lineage.get("table") is None or lineage.get("table_version") is None:
            raise UsageError("the manifest records no training table and version: pass --table PATH[@V]")
        path, version = lineage["table"], int(lineage["table_version"])
        spec = spec.with_table(f"{path}@{version}")
        data = held_out_rows(spark, spec, version, labels)
        label_is_string = labels is not None
        description = (f"test split of {path}@{version} (test_fraction {spec.split.test_fraction}, "
                       f"seed {spec.split.seed})")
    label_col = training.label_column(spec, label_is_string)
    data = cached(data)
    # evaluate() labels and indexes the rows itself: hand it the rows as they were before indexing.
    raw_rows = data.drop(label_col) if label_col != spec.label else data
    metrics = training.evaluate(model, raw_rows, spec, labels)
    predictions = cached(model.transform(data))
    return Evaluation(predictions, label_col, description, metrics)


# --- plots -----------------------------------------------------------------------------------------------------


def _figure(width: float = 6.4, height: float = 4.0) -> Figure:
    from matplotlib.figure import Figure  # no pyplot: no global state, the Agg canvas by default

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def png_data_uri(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _binary_curves(ev: Evaluation) -> dict[str, Any]:
    """ROC and PR points from positive/negative counts per score bin (one Spark aggregation)."""
    import numpy as np
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    score = vector_to_array(F.col("probability"))[1]
    positive = F.col(ev.label_col) == 1.0
    rows = (
        ev.predictions.groupBy(F.least(F.floor(score * CURVE_BINS), F.lit(CURVE_BINS - 1)).alias("bin"))
        .agg(F.sum(positive.cast("long")).alias("pos"), F.sum((~positive).cast("long")).alias("neg"))
        .collect()
    )
    rows.sort(key=lambda r: -r["bin"])  # highest scores first: lowering the threshold bin by bin
    tp = np.cumsum([r["pos"] for r in rows], dtype=float)
    fp = np.cumsum([r["neg"] for r in rows], dtype=float)
    p, n = (tp[-1], fp[-1]) if len(rows) else (0.0, 0.0)
    tpr = np.concatenate([[0.0], tp / p if p else tp * 0])
    fpr = np.concatenate([[0.0], fp / n if n else fp * 0])
    precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1)])
    return {"fpr": fpr, "tpr": tpr, "recall": tpr, "precision": precision, "positives": p, "negatives": n}


def _curve_plots(ev: Evaluation) -> list[tuple[str, str]]:
    c = _binary_curves(ev)
    roc = _figure(5, 4)
    ax = roc.add_subplot()
    ax.plot(c["fpr"], c["tpr"], color="#1f77b4", lw=2, label=f"AUC {ev.metrics.get('areaUnderROC', float('nan')):.3f}")
    ax.plot([0, 1], [0, 1], color="#999999", ls="--", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right")
    pr = _figure(5, 4)
    ax = pr.add_subplot()
    ax.plot(c["recall"], c["precision"], color="#d62728", lw=2,
            label=f"AUC-PR {ev.metrics.get('areaUnderPR', float('nan')):.3f}")
    base = c["positives"] / max(c["positives"] + c["negatives"], 1)
    ax.axhline(base, color="#999999", ls="--", lw=1, label=f"positive rate {base:.2f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left")
    return [("ROC curve", png_data_uri(roc)), ("Precision-recall curve", png_data_uri(pr))]


def _confusion_plot(ev: Evaluation, labels: Sequence[str] | None) -> tuple[str, str]:
    import numpy as np
    from pyspark.sql import functions as F

    counts = ev.predictions.groupBy(F.col(ev.label_col).alias("y"), F.col("prediction").alias("p")).count().collect()
    k = int(max([r["y"] for r in counts] + [r["p"] for r in counts])) + 1
    matrix = np.zeros((k, k))
    for r in counts:
        matrix[int(r["y"]), int(r["p"])] = r["count"]
    names = list(labels) if labels and len(labels) == k else [str(i) for i in range(k)]
    fig = _figure(4.5, 4)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, f"{int(v)}", ha="center", va="center", color="black" if v < matrix.max() / 2 else "white")
    ax.set(xticks=range(k), yticks=range(k), xticklabels=names, yticklabels=names, xlabel="predicted",
           ylabel="actual", title="Confusion matrix")
    return "Confusion matrix", png_data_uri(fig)


def _counts(ev: Evaluation, column: str) -> dict[float, int]:
    from pyspark.sql import functions as F

    rows = ev.predictions.groupBy(F.col(f"`{column}`").alias("v")).count().collect()
    return {float(r["v"]): int(r["count"]) for r in rows if r["v"] is not None}


def _share_rows(counts: dict[float, int], names: Sequence[str] | None, key: str) -> list[dict[str, Any]]:
    total = max(sum(counts.values()), 1)
    return [{key: names[int(v)] if names and 0 <= int(v) < len(names) else f"{v:g}", "rows": n, "share": n / total}
            for v, n in sorted(counts.items())]


def _class_distribution(ev: Evaluation, labels: Sequence[str] | None) -> Section:
    """Rows per class, actual and predicted, on the evaluation data."""
    actual, predicted = _counts(ev, ev.label_col), _counts(ev, ev.prediction_col)
    rows = [{"class": labels[int(v)] if labels and 0 <= int(v) < len(labels) else f"{v:g}",
             "actual rows": actual.get(v, 0), "predicted rows": predicted.get(v, 0)}
            for v in sorted({*actual, *predicted})]
    return Section("classes", "Class distribution", [_table(rows, ["class", "actual rows", "predicted rows"])])


def _cluster_section(ev: Evaluation) -> Section:
    """Rows per cluster (a bar plot and a table) and the silhouette."""
    rows = _share_rows(_counts(ev, ev.prediction_col), None, "cluster")
    fig = _figure(6.4, 3.2)
    ax = fig.add_subplot()
    ax.bar([r["cluster"] for r in rows], [r["rows"] for r in rows], color="#1f77b4")
    ax.set(xlabel="cluster", ylabel="rows", title=f"Cluster sizes (silhouette {ev.metrics.get('silhouette', 0):.3f})")
    return Section("clusters", "Cluster sizes", [_images([("Cluster sizes", png_data_uri(fig))]),
                                                 _table(rows, ["cluster", "rows", "share"])])


def _evaluation_sections(model: PipelineModel, manifest: dict[str, Any], ev: Evaluation) -> list[Section]:
    """Metrics, then per task: curves and class distribution, cluster sizes, or residuals; then importances."""
    recorded = manifest.get("metrics") or {}
    names = list(dict.fromkeys([*recorded, *ev.metrics]))
    sections = [Section("metrics", "Metrics", [
        f"<p>Recomputed on the {html.escape(ev.description)}.</p>",
        _table([{"metric": n, "recorded at training": recorded.get(n), "recomputed": ev.metrics.get(n)}
                for n in names], ["metric", "recorded at training", "recomputed"]),
    ])]
    task, labels = manifest.get("task"), manifest.get("labels")
    if task == "classification":
        found = predictor(flat_stages(model))
        images = []
        if int(getattr(found, "numClasses", 0) or 0) == 2 and "probability" in ev.predictions.columns:
            images += _curve_plots(ev)
        images.append(_confusion_plot(ev, labels))
        sections += [Section("curves", "ROC and precision-recall curves", [_images(images)]),
                     _class_distribution(ev, labels)]
    elif task == "clustering":
        sections.append(_cluster_section(ev))
    else:
        sections.append(Section("residuals", "Residuals", [_images(_residual_plots(ev))]))
    found_importances = importances(model, ev.predictions)
    if found_importances is not None:
        kind, pairs = found_importances
        top = sorted(pairs, key=lambda p: abs(p[1]), reverse=True)[:TOP_FEATURES]
        sections.append(Section("importances", f"Feature {kind}s", [
            _images([_importance_plot(kind, pairs)]),
            _table([{"feature": n, kind: v} for n, v in top], ["feature", kind]),
        ]))
    return sections


def _residual_plots(ev: Evaluation) -> list[tuple[str, str]]:
    from pyspark.sql import functions as F

    residual = (F.col(ev.label_col) - F.col("prediction")).alias("residual")
    data = ev.predictions.select(F.col("prediction"), residual)
    total = data.count()
    sample = data.sample(fraction=min(1.0, RESIDUAL_SAMPLE / max(total, 1)), seed=0).collect()
    fig = _figure(9, 3.8)
    left, right = fig.subplots(1, 2)
    left.scatter([r["prediction"] for r in sample], [r["residual"] for r in sample], s=6, alpha=0.5, color="#1f77b4")
    left.axhline(0, color="#d62728", lw=1)
    left.set(xlabel="prediction", ylabel="label - prediction", title=f"Residuals ({len(sample)} of {total} rows)")
    edges = [float(x) for x in data.select(F.min("residual"), F.max("residual")).first()]
    lo, hi = (edges[0], edges[1]) if edges[0] < edges[1] else (edges[0] - 0.5, edges[0] + 0.5)
    width = (hi - lo) / 40
    hist = data.groupBy(F.least(F.floor((F.col("residual") - lo) / width), F.lit(39)).alias("b")).count().collect()
    right.bar([lo + (r["b"] + 0.5) * width for r in hist], [r["count"] for r in hist], width=width, color="#2ca02c")
    right.set(xlabel="label - prediction", ylabel="rows", title="Residual distribution")
    return [("Residuals", png_data_uri(fig))]


# --- importances -----------------------------------------------------------------------------------------------


def feature_names(model: PipelineModel, predictions: DataFrame) -> list[str]:
    """Names of the assembled vector's slots, as input features (``age``, ``plan=pro``).

    Spark's ML attributes on the VectorAssembler's output say which input column (and which one-hot category)
    each slot holds; the pipeline's column suffixes (``__imputed``, ``__ohe``) are mapped back to the feature.
    """
    from pyspark.ml.feature import VectorAssembler

    assemblers = [s for s in model.stages if isinstance(s, VectorAssembler)]
    if not assemblers:
        return []
    va = assemblers[-1]
    attrs = predictions.schema[va.getOutputCol()].metadata.get("ml_attr", {})
    slots = sorted((a for group in attrs.get("attrs", {}).values() for a in group), key=lambda a: a["idx"])
    inputs = sorted(va.getInputCols(), key=len, reverse=True)  # longest first: 'plan_type' before 'plan'

    def source(column: str) -> str:
        for suffix in _SUFFIXES:
            if column.endswith(suffix):
                return column[: -len(suffix)]
        return column

    names = []
    for a in slots:
        name = a.get("name", f"f{a['idx']}")
        column = next((c for c in inputs if name == c or name.startswith(c + "_")), None)
        if column is None:
            names.append(name)
        elif name == column:
            names.append(source(column))
        else:
            names.append(f"{source(column)}={name[len(column) + 1:]}")
    return names or [f"f{i}" for i in range(int(attrs.get("num_attrs", 0)))]


def importances(model: PipelineModel, predictions: DataFrame) -> tuple[str, list[tuple[str, float]]] | None:
    """``("importance" | "coefficient", [(feature, value), ...])`` of the final stage, or None."""
    estimator = model.stages[-1]
    if hasattr(estimator, "featureImportances"):
        kind, values = "importance", list(estimator.featureImportances.toArray())
    # The matrix first: hasattr reads a multinomial model's coefficients, which raises a Spark error there
    elif hasattr(estimator, "coefficientMatrix") and estimator.coefficientMatrix.numRows > 1:
        matrix = estimator.coefficientMatrix.toArray()
        kind, values = "coefficient (largest |class coefficient|)", list(abs(matrix).max(axis=0))
    elif hasattr(estimator, "coefficients"):
        kind, values = "coefficient", list(estimator.coefficients.toArray())
    else:
        return None
    names = feature_names(model, predictions)
    if len(names) != len(values):
        names = [f"f{i}" for i in range(len(values))]
    return kind, [(n, float(v)) for n, v in zip(names, values)]


def _importance_plot(kind: str, pairs: list[tuple[str, float]]) -> tuple[str, str]:
    top = sorted(pairs, key=lambda p: abs(p[1]), reverse=True)[:TOP_FEATURES][::-1]
    fig = _figure(6.4, max(2.5, 0.3 * len(top) + 1))
    ax = fig.add_subplot()
    ax.barh([n for n, _ in top], [v for _, v in top], color=["#1f77b4" if v >= 0 else "#d62728" for _, v in top])
    ax.set(xlabel=kind, title=f"Feature {kind.split(' ')[0]}s (top {len(top)})")
    return f"Feature {kind}s", png_data_uri(fig)


# --- drift -----------------------------------------------------------------------------------------------------


def drift_rows(
    spark: SparkSession, registry: Registry, mv: ModelVersion, scores: str | TableRef, window: str, threshold: float
) -> tuple[list[dict[str, Any]], str]:
    """Drift rows of ``mv`` from ``<scores>_drift_metrics`` if it exists, else computed now (nothing written)."""
    from pyspark.sql import functions as F

    source = to_table_ref(scores, what="--scores")
    path = source.location
    drift_path = monitoring.output_tables(path)[1]
    if tables.exists(spark, drift_path):
        df = tables.read(spark, drift_path).where(
            (F.col("model_name") == mv.name) & (F.col("model_version") == mv.version)
        )
        rows = [r.asDict() for r in df.orderBy("window_start", "feature").collect()]
        if rows:
            return rows, f"from {drift_path}"
    result = monitoring.monitor(spark, registry, ModelRef(mv.name, version=mv.version), source, window=window,
                                threshold=threshold, write=False)
    return [dict(r, window_start=datetime.fromisoformat(r["window_start"])) for r in result.drift], (
        f"computed from {path} (window {window}; no drift table yet)"
    )


def _drift_plots(rows: list[dict[str, Any]], threshold: float) -> list[tuple[str, str]]:
    windows = sorted({r["window_start"] for r in rows})
    features = list(dict.fromkeys(r["feature"] for r in rows))
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
              "#17becf"]
    latest = [r for r in rows if r["window_start"] == windows[-1]]
    fig = _figure(9, 3.8)
    left, right = fig.subplots(1, 2)
    for i, feature in enumerate(features):
        points = [(r["window_start"], r["psi"]) for r in rows if r["feature"] == feature and r["psi"] is not None]
        left.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=colors[i % len(colors)],
                  label=feature)
    left.axhline(threshold, color="#d62728", ls="--", lw=1, label=f"threshold {threshold}")
    left.set(ylabel="PSI", title="PSI per window")
    left.tick_params(axis="x", labelrotation=30)
    left.legend(fontsize=7)
    psis = [r["psi"] or 0.0 for r in latest]
    right.barh([r["feature"] for r in latest], psis,
               color=["#d62728" if r["flagged"] else "#2ca02c" for r in latest])
    right.axvline(threshold, color="#d62728", ls="--", lw=1)
    right.set(xlabel="PSI", title=f"Latest window ({_when(windows[-1])})")
    out = [("Drift (PSI)", png_data_uri(fig))]
    fig = _figure(6.4, 3.2)
    ax = fig.add_subplot()
    ys = range(len(latest))
    ax.barh([y + 0.2 for y in ys], [r["null_rate"] for r in latest], height=0.4, color="#ff7f0e", label="latest")
    ax.barh([y - 0.2 for y in ys], [r["reference_null_rate"] for r in latest], height=0.4, color="#7f7f7f",
            label="reference")
    ax.set(yticks=list(ys), yticklabels=[r["feature"] for r in latest], xlabel="null rate",
           title="Null rate: latest window vs training")
    ax.legend()
    out.append(("Null rates", png_data_uri(fig)))
    return out


# --- HTML ------------------------------------------------------------------------------------------------------


@dataclass
class Section:
    id: str
    title: str
    body: list[str] = field(default_factory=list)


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list):
        return json.dumps(value, default=str)
    if isinstance(value, datetime):
        return _when(value)
    return "" if value is None else str(value)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str], empty: str = "none") -> str:
    if not rows:
        return f"<p class='empty'>({html.escape(empty)})</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _images(images: list[tuple[str, str]]) -> str:
    return "<div class='plots'>" + "".join(
        f"<figure><img alt='{html.escape(t)}' src='{uri}'><figcaption>{html.escape(t)}</figcaption></figure>"
        for t, uri in images
    ) + "</div>"


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;background:#f6f7f9}
header{background:#1f3b5a;color:#fff;padding:18px 32px}header h1{margin:0;font-size:24px}
header p{margin:4px 0 0;color:#cfdbe8}nav{padding:8px 32px;background:#e6ebf1}
nav a{margin-right:14px;color:#1f3b5a}main{padding:8px 32px 32px}
section{background:#fff;border-radius:8px;padding:12px 20px;margin:16px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{font-size:18px;color:#1f3b5a}table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d7dde4;padding:4px 8px;text-align:left;vertical-align:top}th{background:#eef2f6}
.plots{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}figcaption{font-size:12px;color:#555}
img{max-width:100%;border:1px solid #e3e6ea}.empty{color:#777}.flag{color:#b00020;font-weight:bold}
"""


def render(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The page: a header, a table of contents, one ``<section id=...>`` per section."""
    nav = "".join(f"<a href='#{s.id}'>{html.escape(s.title)}</a>" for s in sections)
    body = "".join(
        f"<section id='{s.id}'><h2>{html.escape(s.title)}</h2>{''.join(s.body)}</section>" for s in sections
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main></body></html>"
    )


# --- the report ------------------------------------------------------------------------------------------------


def build_report(
    spark: SparkSession,
    registry: Registry,
    ref: ModelRef,
    *,
    scores: TableRef | None = None,
    table: TableRef | None = None,
    window: str = "1d",
    threshold: float = 0.2,
) -> tuple[str, list[str]]:
    """``(html, section ids)`` of the report for model ``ref``."""
    started = time.perf_counter()
    mv, model = registry.load_model(ref)
    manifest = registry.manifest(ModelRef(mv.name, version=mv.version))[1]
    task = manifest.get("task")
    lineage = manifest.get("training") or {}
    sections = [Section("model", "Model", [_table([{
        "model": mv.ref, "task": task, "algorithm": manifest.get("algorithm"), "label": manifest.get("label"),
        "created_at": manifest.get("created_at"), "training table": lineage.get("table"),
        "table version": lineage.get("table_version"), "rows (train / test)":
            f"{lineage.get('rows_train')} / {lineage.get('rows_test')}", "run id": mv.run_id,
        "spark": (manifest.get("versions") or {}).get("spark"),
    }], ["model", "task", "algorithm", "label", "created_at", "training table", "table version",
         "rows (train / test)", "run id", "spark"])])]

    ev = evaluation(spark, model, manifest, table)
    try:
        log.info("evaluated %s on %s (%.1f s)", mv.ref, ev.description, time.perf_counter() - started)
        sections += _evaluation_sections(model, manifest, ev)
    finally:
        uncached(ev.predictions)

    validated = registry.events(mv.name, "validated")
    sections.append(Section("validation", "Validation history", [_table([
        {"version": e["version"], "at": e["at"], "status": e["details"].get("status"),
         "table": f"{e['details'].get('table')}@{e['details'].get('table_version')}",
         "metrics": e["details"].get("candidate_metrics"), "champion": e["details"].get("champion_version"),
         "reasons": "; ".join(e["details"].get("reasons") or [])}
        for e in validated
    ], ["version", "at", "status", "table", "metrics", "champion", "reasons"], "never validated")]))
    sections.append(Section("aliases", "Alias history", [_table(
        registry.alias_history(mv.name),
        ["moved_at", "alias", "version", "previous_version", "action", "reason", "forced", "run_id"], "no aliases",
    )]))

    if scores is not None:
        rows, source = drift_rows(spark, registry, mv, scores, window, threshold)
        flagged = [r for r in rows if r["flagged"]]
        sections.append(Section("drift", "Drift", [
            f"<p>PSI per window and feature, {html.escape(source)}. "
            f"<span class='{'flag' if flagged else ''}'>{len(flagged)} flagged</span> above the threshold.</p>",
            _images(_drift_plots(rows, threshold)),
            _table(rows[-40:], ["window_start", "feature", "count", "psi", "null_rate", "reference_null_rate",
                                "flagged"]),
        ]))
    subtitle = f"{task} · {manifest.get('algorithm')} · report generated {_when(datetime.now(timezone.utc))}"
    log.info("report for %s built in %.1f s", mv.ref, time.perf_counter() - started)
    return render(f"sparkship model report: {mv.ref}", subtitle, sections), [s.id for s in sections]


def write_report(
    spark: SparkSession,
    registry: Registry,
    ref: str | ModelRef,
    out: str,
    *,
    scores: str | TableRef | None = None,
    table: str | TableRef | None = None,
    window: str = "1d",
    threshold: float = 0.2,
) -> dict[str, Any]:
    """Build the report of ``ref`` and write it to ``out`` (checked before any Spark work).

    The references may be strings (parsed here, errors naming ``--scores`` and ``--table``) or parsed ones.
    """
    model = to_model_ref(ref)
    drift_source = None if scores is None else to_table_ref(scores, what="--scores")
    evaluated = None if table is None else to_table_ref(table, what="--table")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise UsageError(f"--out {out}: folder {folder} does not exist")
    if not out.lower().endswith((".html", ".htm")):
        raise UsageError(f"--out {out}: the report is an HTML page; name it *.html")
    page, ids = build_report(spark, registry, model, scores=drift_source, table=evaluated, window=window,
                             threshold=threshold)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(page)
    mv = registry.get(model)
    return {"out": os.path.abspath(out), "model": mv.name, "model_version": mv.version, "sections": ids,
            "bytes": len(page.encode("utf-8"))}
