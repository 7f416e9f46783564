"""Offline checks of the Databricks asset bundle (``databricks.yml`` + ``resources/*.yml``), before a deploy.

What is checked, each problem naming the file and where in it:

- every job parses with the ``databricks-bundles`` dataclasses (``Job.from_dict`` rejects unknown fields);
- the top-level sections that library does not model: ``bundle``, ``include``, ``artifacts``, ``variables``,
  ``targets`` (known keys, modes, exactly one default target);
- every ``${var.x}`` is defined, and every ``${...}`` starts with a known root (var, bundle, workspace, ...);
- every ``python_wheel_task`` names the package and an entry point that the *built* wheel declares, installs
  the bundle's wheel, and passes parameters that entry point's ``sparkship`` command accepts (per target,
  after substituting variables and sample values for ``{{job.run_id}}`` and workspace paths);
- ``--model`` references parse, and a training spec shipped with the bundle loads and names the same model.

    >>> report = check_bundle(".")                                   # doctest: +SKIP
    >>> report.ok, [str(p) for p in report.problems]                      # doctest: +SKIP
    (True, [])
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import glob
import importlib.metadata
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from sparkship.errors import NotFoundError, SparkshipError, UsageError

log = logging.getLogger(__name__)

BUNDLE_FILE = "databricks.yml"
# Keys the Databricks CLI accepts (bundle config schema); anything else is a typo.
TOP_KEYS = frozenset({
    "artifacts", "bundle", "environments", "experimental", "include", "permissions", "presets", "python",
    "resources", "run_as", "scripts", "sync", "targets", "variables", "workspace",
})
INCLUDED_FILE_KEYS = TOP_KEYS - {"bundle", "include"}
BUNDLE_KEYS = frozenset({"name", "cluster_id", "compute_id", "databricks_cli_version", "deployment", "git", "uuid"})
TARGET_KEYS = frozenset({
    "artifacts", "bundle", "cluster_id", "compute_id", "default", "git", "mode", "permissions", "presets",
    "resources", "run_as", "sync", "variables", "workspace",
})
TARGET_MODES = ("development", "production")
VARIABLE_KEYS = frozenset({"default", "description", "lookup", "type"})
ARTIFACT_KEYS = frozenset({"build", "dynamic_version", "executable", "files", "path", "type"})
ARTIFACT_TYPES = ("whl", "jar")
REFERENCE_ROOTS = ("var", "bundle", "workspace", "resources", "artifacts")
SAMPLE_RUN_ID = "123456789"
SAMPLE_USER = "someone@example.com"

_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_DYNAMIC_RUN_ID = re.compile(r"\{\{\s*job\.run_id\s*\}\}")


class BundleError(UsageError):
    """The bundle cannot be read at all (no databricks.yml, invalid YAML)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the bundle: the file, where in it (a dotted path), and what."""

    file: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.message}" if self.where else f"{self.file}: {self.message}"


@dataclass(frozen=True)
class JobSource:
    """A job as the bundle defines it: its resource key, the file it is in, and its settings."""

    key: str
    file: str
    config: dict[str, Any]


@dataclass
class Bundle:
    """The parsed bundle: databricks.yml merged with its includes, each section remembering its file."""

    root: Path
    config: dict[str, Any]
    variables: dict[str, tuple[str, Any]] = field(default_factory=dict)  # name -> (file, definition)
    targets: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, JobSource] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)  # relative path -> parsed YAML
    problems: list[Problem] = field(default_factory=list)  # found while loading (unknown keys, duplicates)

    @property
    def name(self) -> str:
        bundle = self.config.get("bundle")
        return str(bundle.get("name", "")) if isinstance(bundle, dict) else ""

    def default_target(self) -> str | None:
        defaults = [t for t, cfg in self.targets.items() if isinstance(cfg, dict) and cfg.get("default") is True]
        return defaults[0] if len(defaults) == 1 else None

    def target(self, name: str | None) -> tuple[str, dict[str, Any]]:
        """``(name, config)`` of a target; ``None`` means the default one. Raises ``NotFoundError``."""
        name = name or self.default_target()
        if name is None:
            raise UsageError(f"{BUNDLE_FILE}: no default target; pass one of: {', '.join(self.targets)}")
        if name not in self.targets:
            raise NotFoundError(f"{BUNDLE_FILE}: no target {name!r}; targets: {', '.join(self.targets) or '(none)'}")
        return name, self.targets[name] or {}

    def variable_values(self, target: str) -> dict[str, Any]:
        """Variable values for a target: defaults, then the target's overrides (a lookup stays unresolved)."""
        values: dict[str, Any] = {}
        for name, (_, definition) in self.variables.items():
            values[name] = definition.get("default") if isinstance(definition, dict) else definition
        overrides = (self.targets.get(target) or {}).get("variables") or {}
        for name, value in overrides.items():
            if isinstance(value, dict) and "default" in value:
                value = value["default"]
            values[name] = value
        return values

    def resolve(self, value: str, target: str, extra: dict[str, str] | None = None) -> str:
        """Substitute ``${var.x}``, ``${bundle.target}``, ``${bundle.name}`` and any ``extra`` references.

        Other references (``${workspace.file_path}``, ``${resources...}``) are left as they are.

        >>> b = Bundle(Path("."), {"bundle": {"name": "demo"}}, variables={"a": ("x", {"default": "/v/${var.b}"}),
        ...            "b": ("x", {"default": "${bundle.target}"})}, targets={"dev": {}})
        >>> b.resolve("${var.a}/t", "dev")
        '/v/dev/t'
        """
        values = self.variable_values(target)
        known = {"bundle.target": target, "bundle.name": self.name, **(extra or {})}

        def substitute(match: re.Match[str]) -> str:
            expr = match.group(1)
            if expr.startswith("var."):
                name = expr.split(".")[1]
                if name in values and values[name] is not None and not isinstance(values[name], (dict, list)):
                    return str(values[name])
                return match.group(0)
            return known.get(expr, match.group(0))

        for _ in range(20):  # variables may reference variables; a cycle stops here unresolved
            resolved = _REFERENCE.sub(substitute, value)
            if resolved == value:
                break
            value = resolved
        return value

    def job_config(self, key: str, target: str) -> dict[str, Any]:
        """A job's settings with the target's ``resources.jobs.<key>`` overrides merged in."""
        if key not in self.jobs:
            raise NotFoundError(f"the bundle defines no job {key!r}; jobs: {', '.join(self.jobs) or '(none)'}")
        override = (((self.targets.get(target) or {}).get("resources") or {}).get("jobs") or {}).get(key)
        return _merge(self.jobs[key].config, override) if override else self.jobs[key].config


def load_bundle(root: str | os.PathLike[str] = ".") -> Bundle:
    """Read ``<root>/databricks.yml`` and the files its ``include`` globs match.

    Raises :class:`BundleError` when a file is missing or not valid YAML (naming the file and line).

    >>> bundle = load_bundle(".")                                   # doctest: +SKIP
    >>> sorted(bundle.jobs)                      # doctest: +SKIP
    ['monitoring', 'scoring', 'training']
    """
    root_path = Path(root).resolve()
    main_file = root_path / BUNDLE_FILE
    if not main_file.is_file():
        raise BundleError(f"{main_file} does not exist: run from the bundle's folder or pass --root")
    config = _read_yaml(main_file, BUNDLE_FILE)
    if not isinstance(config, dict):
        raise BundleError(f"{BUNDLE_FILE}: expected a mapping at the top level")
    bundle = Bundle(root=root_path, config=config)
    bundle.files[BUNDLE_FILE] = config
    _absorb(bundle, BUNDLE_FILE, config, TOP_KEYS)
    include = config.get("include") or []
    if not isinstance(include, list):
        bundle.problems.append(Problem(BUNDLE_FILE, "include", "expected a list of glob patterns"))
        include = []
    for pattern in include:
        matches = sorted(glob.glob(str(root_path / str(pattern))))
        if not matches:
            bundle.problems.append(Problem(BUNDLE_FILE, "include", f"pattern {pattern!r} matches no file"))
        for path in matches:
            rel = os.path.relpath(path, root_path)
            if rel in bundle.files:
                continue
            data = _read_yaml(Path(path), rel)
            bundle.files[rel] = data
            if data is None:
                continue
            if not isinstance(data, dict):
                bundle.problems.append(Problem(rel, "", "expected a mapping at the top level"))
                continue
            _absorb(bundle, rel, data, INCLUDED_FILE_KEYS)
    return bundle


def _read_yaml(path: Path, rel: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise BundleError(f"{rel}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None


def _absorb(bundle: Bundle, rel: str, data: dict[str, Any], allowed: frozenset[str]) -> None:
    """Merge one file's sections into the bundle, recording unknown keys and duplicate definitions."""
    for key in data:
        if key not in allowed:
            bundle.problems.append(Problem(rel, str(key), f"unknown top-level key{_did_you_mean(key, allowed)}"))
    variables = data.get("variables") or {}
    if not isinstance(variables, dict):
        bundle.problems.append(Problem(rel, "variables", "expected a mapping of variable name -> definition"))
        variables = {}
    for name, definition in variables.items():
        if name in bundle.variables:
            bundle.problems.append(Problem(rel, f"variables.{name}", f"also defined in {bundle.variables[name][0]}"))
        bundle.variables[str(name)] = (rel, definition)
    targets = data.get("targets") or {}
    if not isinstance(targets, dict):
        bundle.problems.append(Problem(rel, "targets", "expected a mapping of target name -> settings"))
        targets = {}
    for name, target in targets.items():
        bundle.targets[str(name)] = _merge(bundle.targets.get(str(name)) or {}, target or {})
    resources = data.get("resources") or {}
    jobs = resources.get("jobs") if isinstance(resources, dict) else None
    for key, job in (jobs or {}).items():
        if key in bundle.jobs:
            bundle.problems.append(Problem(rel, f"resources.jobs.{key}", f"also defined in {bundle.jobs[key].file}"))
        bundle.jobs[str(key)] = JobSource(str(key), rel, job if isinstance(job, dict) else {})


def _merge(base: Any, override: Any) -> Any:
    """Deep merge as bundle targets do: mappings by key, task and cluster lists by their key, else replace."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = _merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(override, list):
        for id_key in ("task_key", "job_cluster_key", "environment_key"):
            if all(isinstance(x, dict) and id_key in x for x in base + override):
                merged = {x[id_key]: x for x in base}
                for x in override:
                    merged[x[id_key]] = _merge(merged.get(x[id_key], {}), x)
                return list(merged.values())
    return copy.deepcopy(override)


def _did_you_mean(word: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------------------------- the built wheel


@dataclass(frozen=True)
class WheelInfo:
    """What a built wheel declares: its distribution name, version and console-script entry points."""

    path: str
    name: str
    version: str
    entry_points: dict[str, str]  # name -> "module:attr"


def read_wheel(path: str | os.PathLike[str]) -> WheelInfo:
    """Read the name, version and ``console_scripts`` from a wheel's ``.dist-info`` (no install needed).

    >>> read_wheel("dist/sparkship-0.1.0-py3-none-any.whl").entry_points["sparkship-train"]   # doctest: +SKIP
    'sparkship.entrypoints:train'
    """
    if not os.path.isfile(path):
        raise NotFoundError(f"wheel {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"{path} is not a wheel (not a zip archive)")
    with zipfile.ZipFile(path) as archive:
        infos = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if not infos:
            raise UsageError(f"{path} is not a wheel: no *.dist-info/METADATA inside")
        info_dir = zipfile.Path(archive, infos[0].rsplit("/", 1)[0] + "/")
        dist = importlib.metadata.PathDistribution(info_dir)  # type: ignore[arg-type]
        scripts = {ep.name: ep.value for ep in dist.entry_points.select(group="console_scripts")}
        return WheelInfo(str(path), dist.metadata["Name"], dist.version, scripts)


# Not part of the wheel and possibly large (virtual environments, data, build leftovers).
_BUILD_IGNORE = shutil.ignore_patterns(
    ".*", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", "tests", "benchmarks", "spark-warehouse",
    "metastore_db", "out",
)


def build_wheel(project_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Build the project's wheel into ``out_dir`` and return its path.

    The project is copied to a scratch folder first, so the build leaves no ``build/`` or ``*.egg-info``
    behind in the source tree. Uses ``python -m build --wheel --no-isolation`` (the current environment's
    setuptools; no download), or ``pip wheel --no-deps`` where ``build`` is not installed.

    >>> build_wheel(".", "/tmp/wheels").name                             # doctest: +SKIP
    'sparkship-0.1.0-py3-none-any.whl'
    """
    project = Path(project_dir).resolve()
    if not (project / "setup.py").is_file() and not (project / "pyproject.toml").is_file():
        raise NotFoundError(f"{project} has no setup.py or pyproject.toml: cannot build the wheel")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sparkship-wheel-") as scratch:
        source = Path(scratch) / "src"
        shutil.copytree(project, source, ignore=_BUILD_IGNORE)
        try:
            import build  # noqa: F401  (only to know which builder is available)

            cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)]
        except ImportError:
            cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)]
        log.info("building the wheel: %s", " ".join(cmd[1:4]))
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=scratch)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SparkshipError(f"building the wheel of {project} failed ({' '.join(cmd[1:4])}):\n{tail}")
    wheels = sorted(out.glob("*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise SparkshipError(f"building the wheel of {project} produced no .whl in {out}")
    log.info("built %s in %.1f s", wheels[-1].name, time.monotonic() - started)
    return wheels[-1]


# ------------------------------------------------------------------------------------------------- the check


@dataclass
class BundleReport:
    """The outcome of :func:`check_bundle`; ``ok`` when there are no problems."""

    root: str
    bundle: str
    targets: list[str]
    jobs: dict[str, list[str]]  # job key -> task keys
    wheel: str | None
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "root": self.root,
            "bundle": self.bundle,
            "targets": self.targets,
            "jobs": self.jobs,
            "wheel": self.wheel,
            "problems": [str(p) for p in self.problems],
        }


class _Problems:
    """Problems in first-seen order; one found in only some targets says which."""

    def __init__(self, targets: list[str]) -> None:
        self._all_targets = targets
        self._seen: dict[tuple[str, str, str], list[str] | None] = {}

    def add(self, file: str, where: str, message: str, target: str | None = None) -> None:
        key = (file, where, message)
        if target is None:
            self._seen[key] = None
        elif key not in self._seen:
            self._seen[key] = [target]
        elif self._seen[key] is not None and target not in self._seen[key]:  # type: ignore[operator]
            self._seen[key].append(target)  # type: ignore[union-attr]

    def extend(self, problems: list[Problem]) -> None:
        for p in problems:
            self.add(p.file, p.where, p.message)

    def result(self) -> list[Problem]:
        out = []
        for (file, where, message), targets in self._seen.items():
            if targets is not None and sorted(targets) != sorted(self._all_targets):
                message = f"{message} (target{'s' if len(targets) > 1 else ''} {', '.join(targets)})"
            out.append(Problem(file, where, message))
        return out


def check_bundle(root: str | os.PathLike[str] = ".", wheel: str | os.PathLike[str] | None = None) -> BundleReport:
    """Check the bundle in ``root`` offline; ``wheel`` skips the build and checks that wheel instead.

    Raises :class:`BundleError` only when the YAML cannot be read; everything else is a :class:`Problem`
    in the report.
    """
    bundle = load_bundle(root)
    targets = list(bundle.targets)
    problems = _Problems(targets)
    problems.extend(bundle.problems)
    _check_bundle_section(bundle, problems)
    _check_artifacts(bundle, problems)
    _check_variables(bundle, problems)
    _check_targets(bundle, problems)
    jobs_ok = _check_jobs(bundle, problems)

    wheel_info: WheelInfo | None = None
    if any(_wheel_tasks(bundle.jobs[k].config) for k in jobs_ok):
        with tempfile.TemporaryDirectory(prefix="sparkship-bundle-check-") as scratch:
            try:
                wheel_info = read_wheel(wheel) if wheel is not None else read_wheel(_build_artifact(bundle, scratch))
            except SparkshipError as exc:
                problems.add(BUNDLE_FILE, "artifacts", str(exc))
    if wheel_info is not None:
        _check_wheel_tasks(bundle, jobs_ok, wheel_info, problems)

    return BundleReport(
        root=str(bundle.root),
        bundle=bundle.name,
        targets=targets,
        jobs={k: [str(t.get("task_key")) for t in (j.config.get("tasks") or []) if isinstance(t, dict)]
              for k, j in bundle.jobs.items()},
        wheel=Path(wheel_info.path).name if wheel_info else None,
        problems=problems.result(),
    )


def _check_bundle_section(bundle: Bundle, problems: _Problems) -> None:
    section = bundle.config.get("bundle")
    if not isinstance(section, dict) or not section.get("name"):
        problems.add(BUNDLE_FILE, "bundle.name", "missing: every bundle needs a name")
        return
    _unknown_keys(problems, BUNDLE_FILE, "bundle", section, BUNDLE_KEYS)


def _unknown_keys(problems: "_Problems", file: str, where: str, mapping: dict, known: Any) -> None:
    for key in mapping:
        if key not in known:
            problems.add(file, f"{where}.{key}", f"unknown key{_did_you_mean(key, known)}")


def _check_artifacts(bundle: Bundle, problems: _Problems) -> None:
    artifacts = bundle.config.get("artifacts") or {}
    if not isinstance(artifacts, dict):
        problems.add(BUNDLE_FILE, "artifacts", "expected a mapping of artifact name -> settings")
        return
    for name, artifact in artifacts.items():
        where = f"artifacts.{name}"
        if not isinstance(artifact, dict):
            problems.add(BUNDLE_FILE, where, "expected a mapping with type, build and path")
            continue
        _unknown_keys(problems, BUNDLE_FILE, where, artifact, ARTIFACT_KEYS)
        if artifact.get("type") not in ARTIFACT_TYPES:
            problems.add(BUNDLE_FILE, f"{where}.type", f"expected one of {', '.join(ARTIFACT_TYPES)}, got {artifact.get('type')!r}")
        path = bundle.root / str(artifact.get("path", "."))
        if not path.is_dir():
            problems.add(BUNDLE_FILE, f"{where}.path", f"{artifact.get('path')!r} is not a folder under {bundle.root}")


def _walk(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a parsed YAML value, with its dotted path."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            label = v.get("task_key") or v.get("job_cluster_key") if isinstance(v, dict) else None
            yield from _walk(v, f"{where}[{label if label else i}]")
    elif isinstance(value, str):
        yield where, value


def _check_variables(bundle: Bundle, problems: _Problems) -> None:
    for name, (file, definition) in bundle.variables.items():
        if not isinstance(definition, dict):
            problems.add(file, f"variables.{name}", "expected a mapping with 'default' and/or 'description', 'lookup'")
            continue
        _unknown_keys(problems, file, f"variables.{name}", definition, VARIABLE_KEYS)
    defined = set(bundle.variables)
    for file, data in bundle.files.items():
        for where, text in _walk(data):
            for match in _REFERENCE.finditer(text):
                expr = match.group(1)
                root = expr.split(".")[0]
                if root not in REFERENCE_ROOTS:
                    problems.add(file, where, f"unknown reference ${{{expr}}}: references start with "
                                 f"{', '.join(r + '.' for r in REFERENCE_ROOTS)}{_did_you_mean(root, REFERENCE_ROOTS)}")
                elif root == "var":
                    name = expr.split(".")[1] if "." in expr else ""
                    if name not in defined:
                        problems.add(file, where, f"undefined variable ${{{expr}}}{_did_you_mean(name, defined)}; "
                                     f"define it under 'variables' in {BUNDLE_FILE}")


def _check_targets(bundle: Bundle, problems: _Problems) -> None:
    if not bundle.targets:
        problems.add(BUNDLE_FILE, "targets", "no targets: define at least dev (mode: development, default: true)")
        return
    defaults = []
    for name, target in bundle.targets.items():
        where = f"targets.{name}"
        if not isinstance(target, dict):
            problems.add(BUNDLE_FILE, where, "expected a mapping of target settings")
            continue
        _unknown_keys(problems, BUNDLE_FILE, where, target, TARGET_KEYS)
        if "mode" in target and target["mode"] not in TARGET_MODES:
            problems.add(BUNDLE_FILE, f"{where}.mode",
                         f"invalid mode {target['mode']!r}: expected one of {', '.join(TARGET_MODES)}")
        if "default" in target and not isinstance(target["default"], bool):
            problems.add(BUNDLE_FILE, f"{where}.default", f"expected true or false, got {target['default']!r}")
        if target.get("default") is True:
            defaults.append(name)
        overrides = target.get("variables") or {}
        if not isinstance(overrides, dict):
            problems.add(BUNDLE_FILE, f"{where}.variables", "expected a mapping of variable name -> value")
            overrides = {}
        for var in overrides:
            if var not in bundle.variables:
                problems.add(BUNDLE_FILE, f"{where}.variables.{var}",
                             f"sets a variable that is not defined{_did_you_mean(var, bundle.variables)}")
        for var, (file, definition) in bundle.variables.items():
            if isinstance(definition, dict) and "default" not in definition and "lookup" not in definition \
                    and var not in overrides:
                problems.add(file, f"variables.{var}", f"has no default and target {name!r} does not set it")
    if len(defaults) != 1:
        problems.add(BUNDLE_FILE, "targets", "exactly one target must have default: true, found "
                     + (", ".join(defaults) if defaults else "none"))


def _task_label(task: Any, index: int) -> str:
    return str(task.get("task_key")) if isinstance(task, dict) and task.get("task_key") else str(index)


def _dataclass_error(exc: Exception) -> str:
    text = str(exc)
    missing = re.search(r"(\w+)\.__init__\(\) missing \d+ required keyword-only arguments?: (.+)", text)
    if missing:
        return f"{missing.group(1)} is missing required field(s) {missing.group(2)}"
    return text


def _check_jobs(bundle: Bundle, problems: _Problems) -> list[str]:
    """Parse each job (per target, with its overrides) with databricks-bundles; return the keys that parse."""
    from databricks.bundles.jobs import Job, Task

    ok = []
    for key, source in bundle.jobs.items():
        base = f"resources.jobs.{key}"
        parsed = True
        for target in bundle.targets or {"": {}}:
            config = bundle.job_config(key, target) if target else source.config
            try:
                Job.from_dict(config)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                parsed = False
                where = base
                # Narrow the message down to the task at fault, where it is one task.
                for i, task in enumerate(config.get("tasks") or []):
                    try:
                        Task.from_dict(task)
                    except (TypeError, ValueError) as task_exc:
                        where, exc = f"{base}.tasks[{_task_label(task, i)}]", task_exc
                        break
                problems.add(source.file, where, _dataclass_error(exc), target or None)
        if not parsed:
            continue
        tasks = source.config.get("tasks") or []
        keys = [t.get("task_key") for t in tasks]
        clusters = {c.get("job_cluster_key") for c in source.config.get("job_clusters") or []}
        for i, task in enumerate(tasks):
            where = f"{base}.tasks[{_task_label(task, i)}]"
            if keys.count(task.get("task_key")) > 1:
                problems.add(source.file, where, "task_key used by more than one task")
            for dep in task.get("depends_on") or []:
                if dep.get("task_key") not in keys:
                    problems.add(source.file, f"{where}.depends_on",
                                 f"depends on task {dep.get('task_key')!r}, which the job does not have")
            if task.get("job_cluster_key") and task["job_cluster_key"] not in clusters:
                problems.add(source.file, f"{where}.job_cluster_key",
                             f"job cluster {task['job_cluster_key']!r} is not in the job's job_clusters")
        ok.append(key)
    return ok


def _wheel_tasks(job: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, t) for i, t in enumerate(job.get("tasks") or []) if isinstance(t, dict) and t.get("python_wheel_task")]


def _build_artifact(bundle: Bundle, out_dir: str) -> Path:
    artifacts = bundle.config.get("artifacts") or {}
    whl = [a for a in artifacts.values() if isinstance(a, dict) and a.get("type") == "whl"]
    if not whl:
        raise UsageError("python_wheel_task jobs need an artifact with type: whl")
    return build_wheel(bundle.root / str(whl[0].get("path", ".")), out_dir)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _command_for(entry_value: str) -> list[str] | None:
    """The ``sparkship`` argv prefix an entry point runs (see sparkship.entrypoints), None if not ours."""
    module, _, attr = entry_value.partition(":")
    if entry_value == "sparkship.cli:run":
        return []
    if module == "sparkship.entrypoints" and attr:
        return [attr]
    return None


def _artifact_dist(bundle: Bundle) -> set[Path]:
    return {
        (bundle.root / str(a.get("path", ".")) / "dist").resolve()
        for a in (bundle.config.get("artifacts") or {}).values()
        if isinstance(a, dict) and a.get("type") == "whl"
    }


def _wheels_installed(job: dict[str, Any], task: dict[str, Any]) -> list[str]:
    paths = [lib["whl"] for lib in task.get("libraries") or [] if isinstance(lib, dict) and lib.get("whl")]
    for env in job.get("environments") or []:
        if env.get("environment_key") == task.get("environment_key"):
            paths += [d for d in (env.get("spec") or {}).get("dependencies") or [] if str(d).endswith(".whl")]
    return paths


def _check_wheel_tasks(bundle: Bundle, job_keys: list[str], wheel: WheelInfo, problems: _Problems) -> None:
    parser = _Parser()
    sample = {"workspace.current_user.short_name": "someone", "workspace.current_user.userName": SAMPLE_USER}
    dists = _artifact_dist(bundle)
    wheel_file = Path(wheel.path).name
    for key in job_keys:
        source = bundle.jobs[key]
        for i, task in _wheel_tasks(source.config):
            where = f"resources.jobs.{key}.tasks[{_task_label(task, i)}].python_wheel_task"
            pwt = task["python_wheel_task"]
            package, entry = pwt.get("package_name"), pwt.get("entry_point")
            if _normalise(str(package)) != _normalise(wheel.name):
                problems.add(source.file, f"{where}.package_name",
                             f"package {package!r} is not the bundle's wheel package {wheel.name!r}")
                continue
            if entry not in wheel.entry_points:
                problems.add(source.file, f"{where}.entry_point",
                             f"entry point {entry!r} is not declared by the built wheel {wheel_file}"
                             f"{_did_you_mean(entry, wheel.entry_points)}; it declares: {', '.join(sorted(wheel.entry_points))}")
                continue
            installed = _wheels_installed(source.config, task)
            source_dir = (bundle.root / source.file).parent
            if not installed:
                problems.add(source.file, f"{where[: -len('.python_wheel_task')]}.libraries",
                             "installs no wheel: add libraries: [{whl: ../dist/*.whl}] (relative to this file)")
            elif dists and not any((source_dir / p).resolve().parent in dists for p in installed):
                problems.add(source.file, f"{where[: -len('.python_wheel_task')]}.libraries",
                             f"wheel path(s) {installed} do not point at the artifact's dist/ folder "
                             f"({os.path.relpath(next(iter(dists)), source_dir)}/*.whl)")
            command = _command_for(wheel.entry_points[entry])
            if command is None:
                problems.add(source.file, f"{where}.entry_point",
                             f"{entry!r} runs {wheel.entry_points[entry]}, not a sparkship command: parameters not checked")
                continue
            for target in bundle.targets:
                _check_parameters(bundle, key, target, i, command, entry, parser, sample, problems)


def _check_parameters(
    bundle: Bundle, key: str, target: str, index: int, command: list[str], entry: str, parser: "_Parser",
    sample: dict[str, str], problems: _Problems,
) -> None:
    source = bundle.jobs[key]
    job = bundle.job_config(key, target)
    task = (job.get("tasks") or [])[index]
    where = f"resources.jobs.{key}.tasks[{_task_label(task, index)}].python_wheel_task"
    pwt = task["python_wheel_task"]
    raw = [str(p) for p in pwt.get("parameters") or []]
    raw += [f"--{k}={v}" for k, v in (pwt.get("named_parameters") or {}).items()]
    file_path = f"/Workspace/Users/{SAMPLE_USER}/.bundle/{bundle.name}/{target}/files"
    params = []
    for p in raw:
        value = bundle.resolve(p, target, sample)
        # Files the bundle syncs: they must exist here, under the bundle root.
        for match in re.finditer(r"\$\{workspace\.file_path\}/([^\s,]+)", value):
            if not (bundle.root / match.group(1)).exists():
                problems.add(source.file, f"{where}.parameters",
                             f"{match.group(1)} (passed as ${{workspace.file_path}}/{match.group(1)}) "
                             f"does not exist in the bundle", target)
        value = value.replace("${workspace.file_path}", file_path)
        params.append(_DYNAMIC_RUN_ID.sub(SAMPLE_RUN_ID, value))
    args, error = parser.parse([*command, *params])
    if error:
        shown = " ".join(["sparkship", *command])
        problems.add(source.file, f"{where}.parameters",
                     f"{entry} ({shown}) rejects its parameters: {error}", target)
        return
    _check_values(bundle, key, target, where, args, file_path, problems)


def _check_values(
    bundle: Bundle, key: str, target: str, where: str, args: Any, file_path: str, problems: _Problems
) -> None:
    """Values the command would refuse at run time: model references, and a spec the bundle ships."""
    from sparkship import names

    source = bundle.jobs[key]
    model = getattr(args, "model", None)
    if isinstance(model, str):
        try:
            ref = names.parse_ref(model)
        except UsageError as exc:
            problems.add(source.file, f"{where}.parameters", f"--model {model!r}: {exc}", target)
        else:
            trained = _spec_names(bundle, key, target, file_path, problems)
            if trained and ref.name not in trained:
                problems.add(source.file, f"{where}.parameters",
                             f"--model {model!r} names model {ref.name!r}, but this job's training spec trains "
                             f"{', '.join(sorted(trained))!s}", target)
    spec = getattr(args, "spec", None)
    if isinstance(spec, str):
        _spec_names(bundle, key, target, file_path, problems)


def _spec_names(bundle: Bundle, key: str, target: str, file_path: str, problems: _Problems) -> set[str]:
    """Model names trained by the job's ``--spec`` files that the bundle ships (loaded with sparkship.spec)."""
    from sparkship.spec import load_spec

    names: set[str] = set()
    job = bundle.job_config(key, target)
    for i, task in _wheel_tasks(job):
        params = [bundle.resolve(str(p), target) for p in task["python_wheel_task"].get("parameters") or []]
        for flag, value in zip(params, params[1:]):
            if flag != "--spec" or not value.startswith("${workspace.file_path}/"):
                continue
            local = bundle.root / value[len("${workspace.file_path}/"):]
            if not local.exists():
                continue  # reported with the parameters
            try:
                names.add(load_spec(str(local)).name)
            except UsageError as exc:
                message = str(exc).removeprefix(f"{local}: ")  # load_spec names the file; so do we, shorter
                problems.add(bundle.jobs[key].file,
                             f"resources.jobs.{key}.tasks[{_task_label(task, i)}].python_wheel_task.parameters",
                             f"--spec {os.path.relpath(local, bundle.root)}: {message}", target)
    return names


class _Parser:
    """``sparkship``'s own argument parser, turning argparse's exit into an error message."""

    def __init__(self) -> None:
        from sparkship.cli import build_parser

        self._parser = build_parser()

    def parse(self, argv: list[str]) -> tuple[Any, str | None]:
        err, out = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                return self._parser.parse_args(argv), None
        except SystemExit:
            lines = [line for line in err.getvalue().strip().splitlines() if line.strip()]
            message = lines[-1] if lines else "rejected"
            return None, re.sub(r"^sparkship(?: [\w-]+)*: error: ", "", message)


def deployed_job_name(bundle: Bundle, key: str, target: str | None, short_name: str | None = None) -> str:
    """The name a job gets in the workspace when the bundle is deployed to ``target``.

    Development mode prefixes ``[dev <short user name>] `` (``presets.name_prefix`` replaces that prefix).

    >>> deployed_job_name(load_bundle("."), "training", "dev", "jane_doe")           # doctest: +SKIP
    '[dev jane_doe] sparkship-churn-training'
    """
    target, settings = bundle.target(target)
    extra = {"workspace.current_user.short_name": short_name} if short_name else {}
    name = bundle.resolve(str(bundle.job_config(key, target).get("name") or key), target, extra)
    prefix = (settings.get("presets") or {}).get("name_prefix")
    if prefix is None and settings.get("mode") == "development":
        if not short_name:
            raise UsageError(f"target {target!r} is in development mode: the job name needs the user's short name")
        prefix = f"[dev {short_name}] "
    name = (bundle.resolve(str(prefix), target, extra) if prefix else "") + name
    if "${" in name:
        raise UsageError(f"cannot work out the deployed name of job {key!r}: {name!r} has unresolved references")
    return name


def needs_short_name(bundle: Bundle, key: str, target: str | None) -> bool:
    """Whether :func:`deployed_job_name` needs the current user's short name for this job and target."""
    target, settings = bundle.target(target)
    raw = str(bundle.job_config(key, target).get("name") or "") + str((settings.get("presets") or {}).get("name_prefix") or "")
    in_dev = settings.get("mode") == "development" and (settings.get("presets") or {}).get("name_prefix") is None
    return in_dev or "workspace.current_user" in bundle.resolve(raw, target)


def short_user_name(user_name: str) -> str:
    """The short name Databricks derives from a user name (as the CLI does for the dev prefix).

    >>> short_user_name("Jane.Doe@example.com")
    'jane_doe'
    """
    local = user_name.split("@", 1)[0].lower()
    return re.sub(r"_+", "_", re.sub(r"[^\w]|_", "_", local)).strip("_")


__all__ = [
    "Bundle",
    "BundleError",
    "BundleReport",
    "JobSource",
    "Problem",
    "WheelInfo",
    "build_wheel",
    "check_bundle",
    "deployed_job_name",
    "load_bundle",
    "needs_short_name",
    "read_wheel",
    "short_user_name",
]
