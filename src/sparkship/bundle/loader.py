"""Reading a bundle: ``databricks.yml`` and the files its ``include`` globs match, merged as the CLI merges them.

    >>> bundle = load_bundle(".")                                   # doctest: +SKIP
    >>> sorted(bundle.jobs), bundle.resolve("${var.scores_table}", "prod")     # doctest: +SKIP
    (['monitoring', 'scoring', 'scoring_on_change', 'training'], 'main.sparkship_prod.churn_scores')
"""
from __future__ import annotations

import copy
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sparkship.bundle.problems import Problem
from sparkship.errors import NotFoundError, UsageError

BUNDLE_FILE = "databricks.yml"
REFERENCE = re.compile(r"\$\{([^}]*)\}")


def env_variable(name: str) -> str:
    """The environment variable that sets bundle variable ``name`` at deploy time (as ``--var`` does)."""
    return f"BUNDLE_VAR_{name}"


class BundleError(UsageError):
    """The bundle cannot be read at all (no databricks.yml, invalid YAML)."""


@dataclass(frozen=True)
class ResourceSource:
    """A resource as the bundle defines it: its kind (``jobs``), key, the file it is in, and its settings."""

    kind: str
    key: str
    file: str
    config: dict[str, Any]

    @property
    def where(self) -> str:
        return f"resources.{self.kind}.{self.key}"


JobSource = ResourceSource  # the name earlier code used


@dataclass
class Bundle:
    """The parsed bundle: databricks.yml merged with its includes, each section remembering its file."""

    root: Path
    config: dict[str, Any]
    variables: dict[str, tuple[str, Any]] = field(default_factory=dict)  # name -> (file, definition)
    targets: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, dict[str, ResourceSource]] = field(default_factory=dict)  # kind -> key -> source
    files: dict[str, Any] = field(default_factory=dict)  # relative path -> parsed YAML
    target_files: dict[str, list[str]] = field(default_factory=dict)  # target -> files that set it
    problems: list[Problem] = field(default_factory=list)  # found while loading (duplicate definitions)
    specs: dict[str, Any] = field(default_factory=dict)  # training spec path -> spec (or why it cannot be read)
    _values: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # target -> variable_values

    @property
    def name(self) -> str:
        bundle = self.config.get("bundle")
        return str(bundle.get("name", "")) if isinstance(bundle, dict) else ""

    @property
    def jobs(self) -> dict[str, ResourceSource]:
        return self.resources.get("jobs", {})

    @property
    def monitors(self) -> dict[str, ResourceSource]:
        return self.resources.get("quality_monitors", {})

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
        """Variable values for a target: defaults, then the target's overrides, then ``BUNDLE_VAR_<name>`` from
        the environment, as the CLI takes them (a lookup stays unresolved)."""
        if target in self._values:
            return dict(self._values[target])
        values: dict[str, Any] = {}
        for name, (_, definition) in self.variables.items():
            values[name] = definition.get("default") if isinstance(definition, dict) else definition
        overrides = (self.targets.get(target) or {}).get("variables") or {}
        for name, value in overrides.items():
            if isinstance(value, dict) and "default" in value:
                value = value["default"]
            values[name] = value
        for name in self.variables:
            if env_variable(name) in os.environ:
                values[name] = os.environ[env_variable(name)]
        self._values[target] = values
        return dict(values)

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
            resolved = REFERENCE.sub(substitute, value)
            if resolved == value:
                break
            value = resolved
        return value

    def resource_config(self, kind: str, key: str, target: str | None) -> dict[str, Any]:
        """A resource's settings with the target's ``resources.<kind>.<key>`` overrides merged in.

        A resource that only a target defines (e.g. a prod-only quality monitor) is its override alone.
        """
        base = self.resources.get(kind, {}).get(key)
        resources = ((self.targets.get(target) or {}) if target else {}).get("resources") or {}
        override = (resources.get(kind) or {}).get(key)
        if base is None and override is None:
            raise NotFoundError(f"the bundle defines no {kind[:-1].replace('_', ' ')} {key!r}; "
                                f"{kind}: {', '.join(self.resources.get(kind, {})) or '(none)'}")
        if base is None:
            return override
        return merge(base.config, override) if override else base.config

    def job_config(self, key: str, target: str | None) -> dict[str, Any]:
        """A job's settings with the target's ``resources.jobs.<key>`` overrides merged in."""
        return self.resource_config("jobs", key, target)

    def target_resources(self, kind: str, target: str) -> dict[str, tuple[str, dict[str, Any]]]:
        """``key -> (file, settings)`` of every resource of ``kind`` deployed to ``target`` (overrides merged)."""
        keys = dict.fromkeys(self.resources.get(kind, {}))
        override = ((self.targets.get(target) or {}).get("resources") or {}).get(kind) or {}
        keys.update(dict.fromkeys(override))
        out = {}
        for key in keys:
            source = self.resources.get(kind, {}).get(key)
            file = source.file if source else self.target_file(target, f"resources.{kind}.{key}")
            out[str(key)] = (file, self.resource_config(kind, str(key), target))
        return out

    def target_file(self, target: str, path: str = "", fallback: str = BUNDLE_FILE) -> str:
        """The file that sets ``targets.<target>.<path>`` (the first that does; else ``fallback``)."""
        for file in self.target_files.get(target, []):
            node: Any = ((self.files.get(file) or {}).get("targets") or {}).get(target)
            for part in [p for p in path.split(".") if p]:
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                return file
        return fallback


def load_bundle(root: str | os.PathLike[str] = ".") -> Bundle:
    """Read ``<root>/databricks.yml`` and the files its ``include`` globs match.

    Raises :class:`BundleError` when a file is missing or not valid YAML (naming the file and line).
    """
    root_path = Path(root).resolve()
    main_file = root_path / BUNDLE_FILE
    if not main_file.is_file():
        raise BundleError(f"{main_file} does not exist: run from the bundle's folder or pass --root")
    config = read_yaml(main_file, BUNDLE_FILE)
    if not isinstance(config, dict):
        raise BundleError(f"{BUNDLE_FILE}: expected a mapping at the top level")
    bundle = Bundle(root=root_path, config=config)
    bundle.files[BUNDLE_FILE] = config
    _absorb(bundle, BUNDLE_FILE, config)
    for rel in _included_files(bundle):
        data = read_yaml(root_path / rel, rel)
        bundle.files[rel] = data
        if data is None:
            continue
        if not isinstance(data, dict):
            bundle.problems.append(Problem(rel, "", "expected a mapping at the top level"))
            continue
        _absorb(bundle, rel, data)
    return bundle


def _included_files(bundle: Bundle) -> list[str]:
    include = bundle.config.get("include") or []
    if not isinstance(include, list):
        bundle.problems.append(Problem(BUNDLE_FILE, "include", "expected a list of glob patterns"))
        return []
    files: list[str] = []
    for pattern in include:
        matches = sorted(glob.glob(str(bundle.root / str(pattern))))
        if not matches:
            bundle.problems.append(Problem(BUNDLE_FILE, "include", f"pattern {pattern!r} matches no file"))
        for path in matches:
            rel = os.path.relpath(path, bundle.root)
            if rel not in files and rel != BUNDLE_FILE:
                files.append(rel)
    return files


def read_yaml(path: Path, rel: str) -> Any:
    """Parse one YAML file; :class:`BundleError` names the file, line and column when it is not valid."""
    try:
        # libyaml's loader where PyYAML has it (several times faster), else the pure-Python one
        return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise BundleError(f"{rel}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None


def _absorb(bundle: Bundle, rel: str, data: dict[str, Any]) -> None:
    """Merge one file's sections into the bundle, recording duplicate definitions (the CLI's schema checks the
    keys and types: :mod:`sparkship.bundle.schema`)."""
    _absorb_variables(bundle, rel, data.get("variables") or {})
    targets = data.get("targets") or {}
    if not isinstance(targets, dict):
        bundle.problems.append(Problem(rel, "targets", "expected a mapping of target name -> settings"))
        targets = {}
    for name, target in targets.items():
        bundle.targets[str(name)] = merge(bundle.targets.get(str(name)) or {}, target or {})
        bundle.target_files.setdefault(str(name), []).append(rel)
    resources = data.get("resources") or {}
    if not isinstance(resources, dict):
        bundle.problems.append(Problem(rel, "resources", "expected a mapping of resource kind -> resources"))
        return
    for kind, items in resources.items():
        _absorb_resources(bundle, rel, str(kind), items)


def _absorb_variables(bundle: Bundle, rel: str, variables: Any) -> None:
    if not isinstance(variables, dict):
        bundle.problems.append(Problem(rel, "variables", "expected a mapping of variable name -> definition"))
        return
    for name, definition in variables.items():
        if name in bundle.variables:
            bundle.problems.append(Problem(rel, f"variables.{name}", f"also defined in {bundle.variables[name][0]}"))
        bundle.variables[str(name)] = (rel, definition)


def _absorb_resources(bundle: Bundle, rel: str, kind: str, items: Any) -> None:
    if not isinstance(items, dict):
        bundle.problems.append(Problem(rel, f"resources.{kind}", "expected a mapping of resource key -> settings"))
        return
    known = bundle.resources.setdefault(kind, {})
    for key, config in items.items():
        if key in known:
            bundle.problems.append(Problem(rel, f"resources.{kind}.{key}", f"also defined in {known[key].file}"))
        known[str(key)] = ResourceSource(kind, str(key), rel, config if isinstance(config, dict) else {})


def merge(base: Any, override: Any) -> Any:
    """Deep merge as bundle targets do: mappings by key, task/cluster/environment lists by their key, else replace.

    >>> merge({"tasks": [{"task_key": "a", "x": 1}]}, {"tasks": [{"task_key": "a", "y": 2}, {"task_key": "b"}]})
    {'tasks': [{'task_key': 'a', 'x': 1, 'y': 2}, {'task_key': 'b'}]}
    """
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(override, list):
        for id_key in ("task_key", "job_cluster_key", "environment_key"):
            if all(isinstance(x, dict) and id_key in x for x in base + override):
                merged = {x[id_key]: x for x in base}
                for x in override:
                    merged[x[id_key]] = merge(merged.get(x[id_key], {}), x)
                return list(merged.values())
    return copy.deepcopy(override)
