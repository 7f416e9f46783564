"""The bundle's registration job run here, task by task, as the job defines it: its notebook (Databricks source
format) fits a model on a churn training table, and its wheel task's entry point registers the saved folder with
the task's own parameters (the volume paths pointed at a temporary folder, the job parameters at their defaults).
Databricks' notebook globals are the only stand-ins: ``spark`` is the test's session, ``dbutils.widgets`` hands
the notebook the task's base_parameters as a job run does."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from sparkship import entrypoints, tables
from sparkship.bundle import load_bundle
from sparkship.config import Settings
from sparkship.datasets import churn_rows
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from tests.helpers.paths import ROOT
from tests.helpers.registering import BINARY

pytestmark = pytest.mark.seconds(50)


RUN_ID = "4242"


class _Widgets:
    """Databricks' ``dbutils.widgets`` as a job run fills them: each from the task's base_parameters."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def text(self, name: str, default: str, label: str | None = None) -> None:
        self.values.setdefault(name, default)

    def get(self, name: str) -> str:
        return self.values[name]


class _DBUtils:
    def __init__(self, values: dict[str, str]) -> None:
        self.widgets = _Widgets(values)


def _as_run(bundle: Any, job: dict[str, Any], value: str, local: dict[str, str]) -> str:
    """``value`` as the job run passes it in dev, with the volume's variables replaced by local folders."""
    for name, path in local.items():
        value = value.replace(f"${{var.{name}}}", path)
    value = bundle.resolve(value, "dev").replace("{{job.run_id}}", RUN_ID)
    for param in job["parameters"]:
        value = value.replace(f"{{{{job.parameters.{param['name']}}}}}", local.get(param["name"], param["default"]))
    return value


def test_the_notebook_fits_and_the_wheel_task_registers_what_it_saved(spark, tmp_path, monkeypatch):
    bundle = load_bundle(ROOT)
    job = bundle.job_config("registration", "dev")
    tasks = {t["task_key"]: t for t in job["tasks"]}
    assert tasks["register"]["depends_on"] == [{"task_key": "fit"}]
    table = str(tmp_path / "churn_training")
    tables.write(spark.createDataFrame(churn_rows(400, seed=3).to_pandas()), table, mode="overwrite")
    home = str(tmp_path / "volume")
    local = {"home": home, "registry_root": f"{home}/registry", "models_root": f"{home}/models",
             "training_table": table}

    fit = tasks["fit"]["notebook_task"]
    widgets = {k: _as_run(bundle, job, str(v), local) for k, v in fit["base_parameters"].items()}
    notebook = (ROOT / "resources" / "registration.yml").parent / f"{fit['notebook_path']}"
    source = notebook.read_text()
    assert source.startswith("# Databricks notebook source\n")
    exec(compile(source, str(notebook), "exec"), {"spark": spark, "dbutils": _DBUtils(widgets)})
    assert Path(widgets["output"], "metadata").is_dir()

    params = [_as_run(bundle, job, str(p), local) for p in tasks["register"]["python_wheel_task"]["parameters"]]
    assert params[params.index("--path") + 1] == widgets["output"]
    monkeypatch.setattr(sys, "argv", [tasks["register"]["python_wheel_task"]["entry_point"], *params])
    with pytest.raises(SystemExit) as exit_code:
        entrypoints.register()
    assert exit_code.value.code == 0

    settings = Settings.resolve(home=home, registry_root=local["registry_root"], models_root=local["models_root"])
    name = bundle.resolve("${var.model_name}", "dev")
    mv, manifest = Registry(settings).manifest(parse_ref(f"{name}/run:{RUN_ID}"))
    assert (mv.version, mv.task, sorted(mv.metrics)) == (1, "classification", BINARY)
    assert manifest["training"]["table"] == table and manifest["servable"] is True
    assert manifest["registered"]["stages"][-1] == "RandomForestClassificationModel"
