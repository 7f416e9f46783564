"""Thin ``python_wheel_task`` entry points: each is ``sparkship <command>`` with the task's parameters.

A bundle task runs, for example, ``entry_point: sparkship-train`` with
``parameters: ["--spec", "/Workspace/.../churn.yml", "--run-id", "{{job.run_id}}"]``.
"""
from __future__ import annotations

import sys

from sparkship.cli import main


def _run(command: str) -> None:
    sys.exit(main([command, *sys.argv[1:]]))


def train() -> None:
    _run("train")


def validate() -> None:
    _run("validate")


def promote() -> None:
    _run("promote")


def score() -> None:
    _run("score")


def monitor() -> None:
    _run("monitor")


def retrain() -> None:
    """``sparkship retrain``: the monitoring job's guard, e.g. ``["--model", "churn", "--window", "7d"]``."""
    _run("retrain")


def register() -> None:
    """``sparkship register``: a model that an earlier task fitted, e.g. ``["--name", "churn", "--path",
    "/Volumes/main/ml/sparkship/fitted/churn/123", "--table", "main.ml.churn_training", "--label", "churned"]``."""
    _run("register")


def publish() -> None:
    """``sparkship publish``: e.g. ``["--model", "churn@champion", "--registered-model", "main.ml.churn"]``."""
    _run("publish")
