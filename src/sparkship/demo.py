"""The end-to-end demo on the embedded dataset: ``sparkship demo`` / ``make demo``.

Generates seeded churn data, imports it as a Delta table, trains a logistic regression and a random forest,
validates both, promotes the better one, scores a batch and then a newer (drifted) batch incrementally, runs
the drift monitor, writes the HTML report, serves the champion briefly and sends it one request. Every step is
timed; the summary is printed at the end.

    >>> from sparkship.demo import run_demo
    >>> summary = run_demo(spark, "/tmp/sparkship-demo")      # doctest: +SKIP
"""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import uvicorn

from sparkship import datasets, ingest
from sparkship.config import Settings
from sparkship.monitoring import monitor
from sparkship.policy import Rules, set_policy
from sparkship.promotion import promote
from sparkship.registry import Registry
from sparkship.report import write_report
from sparkship.scoring import score
from sparkship.serving.server import build
from sparkship.spec import parse_spec
from sparkship.training import train_and_register
from sparkship.validation import validate

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
MODEL = "churn"
TRAIN_ROWS, BATCH_ROWS = 20_000, 5_000


@dataclass
class Step:
    name: str
    seconds: float
    result: str


@dataclass
class DemoSummary:
    workdir: str
    steps: list[Step] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workdir": self.workdir,
            "total_seconds": round(sum(s.seconds for s in self.steps), 1),
            "steps": [{"step": s.name, "seconds": round(s.seconds, 1), "result": s.result} for s in self.steps],
        }

    def render(self) -> str:
        width = max(len(s.name) for s in self.steps)
        lines = [f"sparkship demo summary ({self.workdir})", ""]
        lines += [f"  {s.name.ljust(width)}  {s.seconds:6.1f} s  {s.result}" for s in self.steps]
        lines += ["", f"  {'total'.ljust(width)}  {sum(s.seconds for s in self.steps):6.1f} s"]
        return "\n".join(lines)


def _spec(table: str, algorithm: str, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": MODEL,
        "task": "classification",
        "table": table,
        "label": datasets.LABEL,
        "features": {"numeric": datasets.FEATURES_NUMERIC, "categorical": datasets.FEATURES_CATEGORICAL},
        "model": {"algorithm": algorithm, "params": params},
        "split": {"test_fraction": 0.2, "seed": 42},
        "validation": {"thresholds": {"areaUnderROC": {"min": 0.7}}, "max_regression": 0.02},
    }


def _write_csv(table: Any, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(table.column_names)
        for row in zip(*(table.column(c).to_pylist() for c in table.column_names)):
            writer.writerow(["" if v is None or v != v else v for v in row])  # None and NaN -> empty


@contextmanager
def _running_server(settings: Settings, ref: str) -> Iterator[str]:
    """The real FastAPI app under uvicorn on 127.0.0.1, in a thread, for the life of the block."""
    app, _ = build(ref, settings, poll_seconds=60)
    # uvicorn serves on the socket bound here: no window in which another process could take its port
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)


class _Demo:
    """The demo's state: where it works, and what each step hands to the next (trained versions, validations)."""

    def __init__(self, spark: SparkSession, workdir: str, train_rows: int, batch_rows: int) -> None:
        self.spark, self.workdir = spark, workdir
        self.train_rows, self.batch_rows = train_rows, batch_rows
        self.settings = Settings.resolve(home=workdir)
        self.registry = Registry(self.settings)
        self.summary = DemoSummary(workdir)
        self.data_dir, tables_dir = os.path.join(workdir, "data"), self.settings.tables_root
        self.training, self.holdout = f"{tables_dir}/churn_training", f"{tables_dir}/churn_holdout"
        self.customers, self.scores = f"{tables_dir}/churn_customers", f"{tables_dir}/churn_scores"
        self.trained: dict[str, dict[str, Any]] = {}
        self.validations: dict[str, Any] = {}

    def step(self, name: str, action: Callable[[], str]) -> None:
        log.info("demo: %s ...", name)
        start = time.perf_counter()
        result = action()
        self.summary.steps.append(Step(name, time.perf_counter() - start, result))
        log.info("demo: %s done in %.1f s: %s", name, self.summary.steps[-1].seconds, result)

    def generate(self) -> str:
        data_dir, train_rows, batch_rows = self.data_dir, self.train_rows, self.batch_rows
        holdout_rows = max(train_rows // 4, 1000)
        _write_csv(datasets.churn_rows(train_rows, seed=7), f"{data_dir}/training.csv")
        _write_csv(datasets.churn_rows(holdout_rows, seed=8, first_id=1_000_001), f"{data_dir}/holdout.csv")
        _write_csv(datasets.churn_rows(batch_rows, seed=9, first_id=2_000_001), f"{data_dir}/batch1.csv")
        _write_csv(datasets.churn_rows(batch_rows, seed=10, first_id=3_000_001, shift=1.0), f"{data_dir}/batch2.csv")
        return f"{train_rows:,} training, {holdout_rows:,} holdout and 2 x {batch_rows:,} new customers (CSV)"

    def import_tables(self) -> str:
        t = ingest.import_file(self.spark, f"{self.data_dir}/training.csv", self.training, mode="overwrite")
        ingest.import_file(self.spark, f"{self.data_dir}/holdout.csv", self.holdout, mode="overwrite")
        return f"{t['rows']:,} rows -> {self.training} (version {t['version']})"

    def train(self, algorithm: str, params: dict[str, Any]) -> Callable[[], str]:
        def action() -> str:
            spec = parse_spec(_spec(self.training, algorithm, params))
            out = train_and_register(self.spark, self.settings, spec, run_id="demo")
            self.trained[algorithm] = out
            m = out["metrics"]
            return f"{MODEL}/{out['version']}: AUC {m['areaUnderROC']:.3f}, accuracy {m['accuracy']:.3f}"
        return action

    def validate_both(self) -> str:
        set_policy(self.settings, MODEL, Rules({"areaUnderROC": {"min": 0.7}}, max_regression=0.02), source="demo")
        for algorithm, out in self.trained.items():
            self.validations[algorithm] = validate(self.spark, self.settings, f"{MODEL}/{out['version']}",
                                                   self.holdout, run_id="demo")
        return "; ".join(
            f"{MODEL}/{v.version} {v.status} (holdout AUC {v.candidate_metrics['areaUnderROC']:.3f})"
            for v in self.validations.values()
        )

    def promote_better(self) -> str:
        passed = [v for v in self.validations.values() if v.passed]
        if not passed:
            raise RuntimeError("no candidate passed validation")
        best = max(passed, key=lambda v: v.candidate_metrics["areaUnderROC"] or 0.0)
        change = promote(self.settings, f"{MODEL}/{best.version}", run_id="demo")
        algorithm = next(a for a, out in self.trained.items() if out["version"] == best.version)
        return f"{MODEL}@champion -> {change.version} ({algorithm})"

    def score_batch(self, csv_name: str) -> Callable[[], str]:
        def action() -> str:
            ingest.import_file(self.spark, f"{self.data_dir}/{csv_name}", self.customers, mode="append")
            r = score(self.spark, self.settings, f"{MODEL}@champion", self.customers, self.scores, [datasets.KEY],
                      include_features=True, run_id="demo")
            return (f"input v{r.input_version}: {r.rows_in:,} rows in = {r.scored:,} scored + "
                    f"{r.quarantined:,} quarantined -> {self.scores} v{r.output_version}")
        return action

    def run_monitor(self) -> str:
        result = monitor(self.spark, self.registry, f"{MODEL}@champion", self.scores, run_id="demo")
        flagged = sorted({f["feature"] for f in result.flagged})
        return f"{len(result.features)} columns monitored; drift flagged: {', '.join(flagged) or 'none'}"

    def run_report(self) -> str:
        out = os.path.join(self.workdir, "report.html")
        write_report(self.spark, self.registry, f"{MODEL}@champion", out, scores=self.scores)
        return f"{out} ({os.path.getsize(out) // 1024} KiB)"

    def serve_one_request(self) -> str:
        record = datasets.churn_rows(1, seed=11, first_id=4_000_001).to_pylist()[0]
        features = {k: v for k, v in record.items() if k not in (datasets.KEY, datasets.LABEL)}
        with _running_server(self.settings, f"{MODEL}@champion") as url:
            started = time.perf_counter()
            status, body = _post_json(f"{url}/predict", features)
            elapsed_ms = (time.perf_counter() - started) * 1000
        prediction = body["predictions"][0]
        probability = prediction["probability"][1]
        return (f"POST /predict -> {status}, prediction {prediction['prediction']:.0f} "
                f"(p(churn) = {probability:.3f}) in {elapsed_ms:.1f} ms")


def run_demo(spark: SparkSession, workdir: str, train_rows: int = TRAIN_ROWS,
             batch_rows: int = BATCH_ROWS) -> DemoSummary:
    """Run every step in ``workdir`` (emptied first) and return the timed summary."""
    workdir = os.path.abspath(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    demo = _Demo(spark, workdir, train_rows, batch_rows)
    demo.step("generate dataset", demo.generate)
    demo.step("import Delta tables", demo.import_tables)
    demo.step("train logistic regression", demo.train("logistic_regression", {"maxIter": 50, "regParam": 0.01}))
    demo.step("train random forest", demo.train("random_forest", {"numTrees": 30, "maxDepth": 6, "seed": 7}))
    demo.step("validate on holdout", demo.validate_both)
    demo.step("promote the better", demo.promote_better)
    demo.step("score batch 1 (full)", demo.score_batch("batch1.csv"))
    demo.step("score batch 2 (incremental)", demo.score_batch("batch2.csv"))
    demo.step("monitor drift", demo.run_monitor)
    demo.step("write report", demo.run_report)
    demo.step("serve + 1 request", demo.serve_one_request)
    return demo.summary


def _post_json(url: str, payload: dict[str, Any], timeout: float = 10) -> tuple[int, Any]:
    """POST ``payload`` as JSON with the standard library (the demo runs from the wheel, without dev tools)."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # raises HTTPError on 4xx/5xx
        return response.status, json.loads(response.read())


def default_workdir(settings: Settings) -> str:
    return os.path.join(settings.home, "demo")


__all__ = ["run_demo", "DemoSummary", "default_workdir"]
