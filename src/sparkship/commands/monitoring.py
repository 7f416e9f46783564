"""``sparkship monitor`` (drift tables; exit 2 when drift is flagged), ``sparkship retrain`` (the guard that allows
at most one retraining per window) and ``sparkship report`` (HTML page)."""
from __future__ import annotations

import argparse
from typing import Any

from sparkship import retrain
from sparkship.commands import CommandResult, Context, add_command, render_text
from sparkship.monitoring import monitor
from sparkship.refs import parse_ref, parse_table
from sparkship.registry import Registry
from sparkship.report import write_report

DRIFT_EXIT_CODE = 2
REFUSED_EXIT_CODE = 2


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        subparsers, common, "monitor", monitor_command,
        "per-window feature and prediction drift of a scores table against the model's training profile",
        description=(
            "Compute, per time window of scored_at and per feature, the population stability index (PSI) against "
            "the reference profile stored with the model, and null rates; write <scores>_profile_metrics and "
            "<scores>_drift_metrics (re-runs replace the same windows). Exit codes: 0 no drift, 2 drift flagged "
            "(PSI above --threshold; bad usage also exits 2 and prints an error), 1 other errors. In a Databricks "
            "job it also sets the task value drift (true/false); with --on-drift report, drift exits 0 so that "
            "a later task can act on that value (resources/monitoring.yml retrains)."
        ),
    )
    p.add_argument("--model", required=True, help="NAME, NAME/VERSION, NAME@ALIAS or NAME/run:RUN_ID")
    p.add_argument("--scores", required=True, help="scores table written by `sparkship score` (PATH[@VERSION])")
    p.add_argument("--window", default="1d", help="tumbling window on scored_at: 30m, 1h, 1d, 7d, 2w (default 1d)")
    p.add_argument("--threshold", type=float, default=0.2, help="flag a feature when its PSI is above this (0.2)")
    p.add_argument("--features-table", default=None,
                   help="table with the feature columns, joined on the scores' keys, when scoring did not "
                        "use --include-features")
    p.add_argument("--run-id", default=None, help="job run id recorded with the metrics (lineage)")
    p.add_argument("--no-write", action="store_true", help="compute and print only; write no table")
    p.add_argument("--on-drift", choices=("fail", "report"), default="fail",
                   help="fail: exit 2 when drift is flagged (default); report: exit 0, drift is in the output "
                        "and the task value")

    p = add_command(
        subparsers, common, "retrain", retrain_command,
        "decide whether a model may be retrained now: at most once per window, recorded as a registry event",
        description=(
            "The guard of the monitoring job's retraining: records retrain_requested and exits 0 when no "
            "retraining of the model was requested within --window, else records retrain_refused and exits 2. "
            "In a Databricks job it also sets the task value retrain (true/false)."
        ),
    )
    p.add_argument("--model", required=True, help="registered model NAME")
    p.add_argument("--window", default="7d", help="at most one retraining per window: 30m, 12h, 7d, 2w (default 7d)")
    p.add_argument("--reason", default="drift", help="why, recorded with the event (default drift)")
    p.add_argument("--run-id", default=None, help="job run id recorded with the event (lineage)")

    p = add_command(
        subparsers, common, "report", report_command,
        "one self-contained HTML page: metrics, curves, importances, validation and alias history, drift",
    )
    p.add_argument("--model", required=True, help="NAME, NAME/VERSION, NAME@ALIAS or NAME/run:RUN_ID")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--scores", default=None, help="scores table: add drift charts")
    p.add_argument("--table", default=None,
                   help="evaluate on this table (PATH[@VERSION]) instead of the training snapshot's test split")
    p.add_argument("--window", default="1d", help="drift window when the drift table has to be computed")
    p.add_argument("--threshold", type=float, default=0.2, help="PSI threshold drawn on the drift charts")


def monitor_command(ctx: Context, args: argparse.Namespace) -> CommandResult:
    model = parse_ref(args.model)
    scores = parse_table(args.scores, what="--scores")
    features = None if args.features_table is None else parse_table(args.features_table, what="--features-table")
    result = monitor(
        ctx.spark, Registry(ctx.settings), model, scores, window=args.window, threshold=args.threshold,
        features_table=features, run_id=args.run_id, write=not args.no_write,
    )
    payload = result.to_dict()
    rows = [
        {k: r[k] for k in ("window_start", "feature", "count", "psi", "null_rate", "reference_null_rate", "flagged")}
        for r in result.drift
    ]
    summary = [
        f"model {result.model}/{result.model_version}: {len(result.windows)} window(s) of {result.window}, "
        f"{len(result.flagged)} flagged (PSI > {result.threshold})",
        *[f"note: {n}" for n in result.notes],
    ]
    if result.drift_table:
        summary.append(f"wrote {result.drift_table} and {result.profile_table}")
    text = render_text(rows) + "\n" + "\n".join(summary)
    retrain.set_task_value("drift", "true" if result.flagged else "false")
    fail = result.flagged and args.on_drift == "fail"
    return CommandResult(payload, text=text, exit_code=DRIFT_EXIT_CODE if fail else 0)


def retrain_command(ctx: Context, args: argparse.Namespace) -> CommandResult:
    decision = retrain.request_retrain(Registry(ctx.settings), args.model, args.window, reason=args.reason,
                                       run_id=args.run_id)
    retrain.set_task_value("retrain", "true" if decision.allowed else "false")
    return CommandResult(decision.to_dict(), text=decision.message,
                         exit_code=0 if decision.allowed else REFUSED_EXIT_CODE)


def report_command(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    model = parse_ref(args.model)
    scores = None if args.scores is None else parse_table(args.scores, what="--scores")
    table = None if args.table is None else parse_table(args.table, what="--table")
    return write_report(
        ctx.spark, Registry(ctx.settings), model, args.out, scores=scores, table=table,
        window=args.window, threshold=args.threshold,
    )
