"""``resources.jobs``: each job in every target (overrides merged) that passed the CLI's schema
(:mod:`sparkship.bundle.schema`), its task graph and compute, and every ``python_wheel_task`` against the built
wheel: the entry point is declared and defined, and its parameters parse with the ``sparkship`` command-line
parser its caller passes in (``commands``: command name -> that command's parser).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkship import refs
from sparkship.bundle.artifacts import WheelInfo, artifact_dist_dirs
from sparkship.bundle.environments import check_compute, wheels_installed
from sparkship.bundle.loader import Bundle
from sparkship.bundle.problems import Problems, did_you_mean, item_label
from sparkship.errors import UsageError
from sparkship.spec_pipeline import load_any_spec

SAMPLE_RUN_ID = "123456789"
SAMPLE_USER = "someone@example.com"
_DYNAMIC_RUN_ID = re.compile(r"\{\{\s*job\.run_id\s*\}\}")
_FILE_PATH = "${workspace.file_path}"
CONDITION_OUTCOMES = ("true", "false")

# target -> job key -> (file, settings with the target's overrides merged)
ParsedJobs = dict[str, dict[str, tuple[str, dict[str, Any]]]]


@dataclass(frozen=True)
class WheelTaskRun:
    """A wheel task as it runs in one target: the ``sparkship`` command behind its entry point, parsed args."""

    target: str
    job: str
    task: str
    file: str
    where: str
    command: list[str]
    args: Any


def parse_jobs(bundle: Bundle, problems: Problems, broken: set[tuple[str | None, str, str]]) -> ParsedJobs:
    """The jobs of each target that the schema check found no fault in (``broken``), their task graph and compute
    checked; a broken job is left out, so nothing is reported again through it."""
    parsed: ParsedJobs = {}
    for target in bundle.targets or {"": {}}:
        parsed[target] = {}
        for key, (file, config) in bundle.target_resources("jobs", target).items():
            _check_override_tasks(bundle, problems, key, target)
            if (None, "jobs", key) in broken or (target, "jobs", key) in broken:
                continue
            parsed[target][key] = (file, config)
            _check_graph(problems, file, f"resources.jobs.{key}", config, target or None)
            check_compute(problems, _compute_file(bundle, key, target, file), f"resources.jobs.{key}", config,
                          target or None)
    return parsed


def _check_override_tasks(bundle: Bundle, problems: Problems, key: str, target: str) -> None:
    """A target's override of a task the job does not define would deploy a task of its own, doing nothing."""
    base = bundle.jobs.get(key)
    override = (((bundle.targets.get(target) or {}).get("resources") or {}).get("jobs") or {}).get(key)
    if base is None or not isinstance(override, dict):
        return
    defined = {t.get("task_key") for t in base.config.get("tasks") or [] if isinstance(t, dict)}
    for i, task in enumerate(override.get("tasks") or []):
        if isinstance(task, dict) and task.get("task_key") not in defined:
            problems.add(_compute_file(bundle, key, target, base.file),
                         f"resources.jobs.{key}.tasks[{item_label(task, i)}]",
                         f"target override of task {task.get('task_key')!r}, which {base.file} does not define "
                         f"(its tasks: {', '.join(map(str, defined))})", target)


def _compute_file(bundle: Bundle, key: str, target: str, file: str) -> str:
    """Where a target sets a job's compute: the file whose override of the job sets its tasks (another file may
    override the job's other settings, e.g. pause its trigger), else any override of the job, else its own file."""
    if target and ((bundle.targets.get(target) or {}).get("resources") or {}).get("jobs", {}).get(key):
        job = f"resources.jobs.{key}"
        return bundle.target_file(target, f"{job}.tasks", fallback=bundle.target_file(target, job))
    return file


def _check_graph(problems: Problems, file: str, where: str, job: dict[str, Any], target: str | None) -> None:
    """Unique task keys; dependencies on tasks the job has; ``outcome`` only after a condition task."""
    tasks = [t for t in job.get("tasks") or [] if isinstance(t, dict)]
    by_key = {t.get("task_key"): t for t in tasks}
    keys = [t.get("task_key") for t in tasks]
    for i, task in enumerate(tasks):
        task_where = f"{where}.tasks[{item_label(task, i)}]"
        if keys.count(task.get("task_key")) > 1:
            problems.add(file, task_where, "task_key used by more than one task", target)
        for dep in task.get("depends_on") or []:
            upstream = by_key.get(dep.get("task_key"))
            if upstream is None:
                problems.add(file, f"{task_where}.depends_on",
                             f"depends on task {dep.get('task_key')!r}, which the job does not have", target)
            elif "outcome" in dep and not upstream.get("condition_task"):
                problems.add(file, f"{task_where}.depends_on", f"outcome {dep['outcome']!r} on task "
                             f"{dep['task_key']!r}, which is not a condition task", target)
            elif "outcome" in dep and str(dep["outcome"]) not in CONDITION_OUTCOMES:
                problems.add(file, f"{task_where}.depends_on", f"outcome must be 'true' or 'false', got "
                             f"{dep['outcome']!r}", target)


def wheel_tasks(job: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """``(index, task)`` of the job's ``python_wheel_task`` tasks."""
    return [(i, t) for i, t in enumerate(job.get("tasks") or []) if isinstance(t, dict) and t.get("python_wheel_task")]


def has_wheel_tasks(parsed: ParsedJobs) -> bool:
    return any(wheel_tasks(config) for jobs in parsed.values() for _, config in jobs.values())


def command_for(entry_value: str) -> list[str] | None:
    """The ``sparkship`` argv prefix an entry point runs (see sparkship.entrypoints), None if not ours.

    >>> command_for("sparkship.entrypoints:train"), command_for("sparkship.cli:run"), command_for("x:y")
    (['train'], [], None)
    """
    module, _, attr = entry_value.partition(":")
    if entry_value == "sparkship.cli:run":
        return []
    if module == "sparkship.entrypoints" and attr:
        return [attr]
    return None


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_wheel_tasks(bundle: Bundle, parsed: ParsedJobs, wheel: WheelInfo, problems: Problems,
                      commands: Mapping[str, argparse.ArgumentParser] | None) -> list[WheelTaskRun] | None:
    """Check every wheel task of every target against ``wheel``; return the runs whose parameters parse, or None
    when some task's run is not known (its parameters do not parse, or no ``commands`` to parse them with)."""
    parser = CliParser(commands) if commands is not None else None
    complete = parser is not None
    runs: list[WheelTaskRun] = []
    for target, jobs in parsed.items():
        for key, (file, job) in jobs.items():
            for i, task in wheel_tasks(job):
                where = f"resources.jobs.{key}.tasks[{item_label(task, i)}]"
                command = _check_entry_point(bundle, problems, file, _compute_file(bundle, key, target, file), where,
                                             job, task, wheel, target)
                args = None if command is None or parser is None else \
                    _parse_parameters(bundle, problems, parser, file, where, task, command, target)
                if args is None:
                    complete = False
                    continue
                runs.append(WheelTaskRun(target, key, str(task.get("task_key")), file, where, command, args))
                _check_values(bundle, problems, file, key, where, job, args, target)
    return runs if complete else None


def _check_entry_point(
    bundle: Bundle, problems: Problems, file: str, compute_file: str, where: str, job: dict[str, Any],
    task: dict[str, Any], wheel: WheelInfo, target: str,
) -> list[str] | None:
    """The package and entry point are the wheel's, the wheel is installed; returns the sparkship command."""
    pwt, tgt = task["python_wheel_task"], target or None
    package, entry = pwt.get("package_name"), pwt.get("entry_point")
    if _normalise(str(package)) != _normalise(wheel.name):
        problems.add(file, f"{where}.python_wheel_task.package_name",
                     f"package {package!r} is not the bundle's wheel package {wheel.name!r}", tgt)
        return None
    wheel_file = Path(wheel.path).name
    if entry not in wheel.entry_points:
        problems.add(file, f"{where}.python_wheel_task.entry_point",
                     f"entry point {entry!r} is not declared by the built wheel {wheel_file}"
                     f"{did_you_mean(entry, wheel.entry_points)}; "
                     f"it declares: {', '.join(sorted(wheel.entry_points))}", tgt)
        return None
    _check_installed(bundle, problems, compute_file, where, job, task, tgt)
    value = wheel.entry_points[entry]
    if not wheel.defines(value):
        problems.add(file, f"{where}.python_wheel_task.entry_point",
                     f"entry point {entry!r} runs {value}, which the built wheel {wheel_file} does not define", tgt)
        return None
    command = command_for(value)
    if command is None:
        problems.add(file, f"{where}.python_wheel_task.entry_point",
                     f"{entry!r} runs {value}, not a sparkship command: parameters not checked", tgt)
    return command


def _check_installed(bundle: Bundle, problems: Problems, file: str, where: str, job: dict[str, Any],
                     task: dict[str, Any], target: str | None) -> None:
    installed = wheels_installed(job, task)
    dists = artifact_dist_dirs(bundle)
    source_dir = (bundle.root / file).parent
    if not installed:
        how = ("its environment's dependencies: [../dist/*.whl]" if task.get("environment_key")
               else "libraries: [{whl: ../dist/*.whl}]")
        problems.add(file, f"{where}.libraries", f"installs no wheel: add {how} (relative to this file)", target)
    elif dists and not any((source_dir / p).resolve().parent in dists for p in installed):
        problems.add(file, f"{where}.libraries", f"wheel path(s) {installed} do not point at the artifact's dist/ "
                     f"folder ({os.path.relpath(next(iter(dists)), source_dir)}/*.whl)", target)


def _parse_parameters(
    bundle: Bundle, problems: Problems, parser: CliParser, file: str, where: str, task: dict[str, Any],
    command: list[str], target: str,
) -> Any:
    """The task's parameters, as the job would pass them in ``target``, parsed by the ``sparkship`` CLI."""
    pwt, tgt = task["python_wheel_task"], target or None
    entry = pwt.get("entry_point")
    raw = [str(p) for p in pwt.get("parameters") or []]
    raw += [f"--{k}={v}" for k, v in (pwt.get("named_parameters") or {}).items()]
    sample = {"workspace.current_user.short_name": "someone", "workspace.current_user.userName": SAMPLE_USER}
    file_path = f"/Workspace/Users/{SAMPLE_USER}/.bundle/{bundle.name}/{target}/files"
    params = []
    for p in raw:
        value = bundle.resolve(p, target, sample)
        # Files the bundle syncs: they must exist here, under the bundle root.
        for match in re.finditer(r"\$\{workspace\.file_path\}/([^\s,]+)", value):
            if not (bundle.root / match.group(1)).exists():
                problems.add(file, f"{where}.python_wheel_task.parameters",
                             f"{match.group(1)} (passed as {_FILE_PATH}/{match.group(1)}) does not exist in the bundle",
                             tgt)
        params.append(_DYNAMIC_RUN_ID.sub(SAMPLE_RUN_ID, value.replace(_FILE_PATH, file_path)))
    shown = " ".join(["sparkship", *command])
    if command and command[0] not in parser.commands:
        problems.add(file, f"{where}.python_wheel_task.entry_point", f"{entry} runs `{shown}`, a command this "
                     f"sparkship does not have (commands: {', '.join(sorted(parser.commands))})", tgt)
        return None
    args, error = parser.parse([*command, *params])
    if error:
        problems.add(file, f"{where}.python_wheel_task.parameters",
                     f"{entry} ({shown}) rejects its parameters: {error}", tgt)
    return args


def _check_values(bundle: Bundle, problems: Problems, file: str, key: str, where: str, job: dict[str, Any],
                  args: Any, target: str) -> None:
    """Values the command would refuse at run time: model references, and a spec the bundle ships."""
    model = getattr(args, "model", None)
    trained: set[str] = set()
    if isinstance(model, str) or getattr(args, "spec", None):
        trained = {spec.name for spec in load_shipped_specs(bundle, problems, file, key, job, target)}
    if not isinstance(model, str):
        return
    try:
        ref = refs.parse_ref(model)
    except UsageError as exc:
        problems.add(file, f"{where}.python_wheel_task.parameters", f"--model {model!r}: {exc}", target or None)
        return
    if trained and ref.name not in trained:
        problems.add(file, f"{where}.python_wheel_task.parameters", f"--model {model!r} names model {ref.name!r}, but "
                     f"this job's training spec trains {', '.join(sorted(trained))}", target or None)


def shipped_specs(bundle: Bundle, job: dict[str, Any], target: str) -> list[tuple[int, dict[str, Any], Path]]:
    """``(index, task, local path)`` of each ``--spec ${workspace.file_path}/...`` the job's tasks pass."""
    found = []
    for i, task in wheel_tasks(job):
        params = [bundle.resolve(str(p), target) for p in task["python_wheel_task"].get("parameters") or []]
        for flag, value in zip(params, params[1:]):
            if flag == "--spec" and value.startswith(f"{_FILE_PATH}/"):
                found.append((i, task, bundle.root / value[len(_FILE_PATH) + 1:]))
    return found


def load_shipped_specs(bundle: Bundle, problems: Problems, file: str, key: str, job: dict[str, Any],
                       target: str) -> list[Any]:
    """The training specs job ``key`` ships, either form (:func:`sparkship.spec_pipeline.load_any_spec`; a
    factory is not imported: the user's package is not installed where the bundle is checked), problems reported."""
    specs = []
    for i, task, local in shipped_specs(bundle, job, target):
        if not local.exists():
            continue  # reported with the parameters
        try:
            if str(local) not in bundle.specs:  # each job of each target ships the same few specs: read each once
                try:
                    bundle.specs[str(local)] = load_any_spec(str(local), import_factory=False)
                except UsageError as exc:
                    bundle.specs[str(local)] = exc
            loaded = bundle.specs[str(local)]
            if isinstance(loaded, UsageError):
                raise loaded
            specs.append(loaded)
        except UsageError as exc:
            message = str(exc).removeprefix(f"{local}: ")  # load_spec names the file; so do we, shorter
            problems.add(file, f"resources.jobs.{key}.tasks[{item_label(task, i)}].python_wheel_task.parameters",
                         f"--spec {os.path.relpath(local, bundle.root)}: {message}", target or None)
    return specs


class CliParser:
    """``sparkship``'s own command parsers (name -> parser, from the caller), turning argparse's exit into an
    error message."""

    def __init__(self, commands: Mapping[str, argparse.ArgumentParser]) -> None:
        self._commands = commands
        self.commands = set(commands)

    def parse(self, argv: list[str]) -> tuple[Any, str | None]:
        if not argv or argv[0] not in self._commands:
            return None, f"no command {argv[0] if argv else ''!r} (commands: {', '.join(sorted(self.commands))})"
        err, out = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                return self._commands[argv[0]].parse_args(argv[1:]), None
        except SystemExit:
            lines = [line for line in err.getvalue().strip().splitlines() if line.strip()]
            message = lines[-1] if lines else "rejected"
            return None, re.sub(r"^sparkship(?: [\w-]+)*: error: ", "", message)
