"""The ``bundle`` and ``targets`` sections, and the names a target gives the jobs it deploys."""
from __future__ import annotations

import os
import re

from sparkship.bundle.loader import BUNDLE_FILE, Bundle, env_variable
from sparkship.bundle.problems import Problems, did_you_mean
from sparkship.errors import UsageError

TARGET_MODES = ("development", "production")


def check_bundle_section(bundle: Bundle, problems: Problems) -> None:
    """``bundle:`` has a name (the schema checks its other keys)."""
    section = bundle.config.get("bundle")
    if not isinstance(section, dict) or not section.get("name"):
        problems.add(BUNDLE_FILE, "bundle.name", "missing: every bundle needs a name")


def check_targets(bundle: Bundle, problems: Problems,
                  broken: set[tuple[str | None, str, str]] | None = None) -> None:
    """Known modes (also through a variable), at most one default target, and variables that exist and get a
    value (the schema checks the keys and types)."""
    if not bundle.targets:
        problems.add(BUNDLE_FILE, "targets", "no targets: define at least dev (mode: development, default: true)")
        return
    defaults = []
    for name, target in bundle.targets.items():
        file, where = bundle.target_file(name), f"targets.{name}"
        if not isinstance(target, dict):
            problems.add(file, where, "expected a mapping of target settings")
            continue
        mode = bundle.resolve(str(target["mode"]), name) if "mode" in target else None
        if mode is not None and mode not in TARGET_MODES:
            problems.add(bundle.target_file(name, "mode"), f"{where}.mode",
                         f"invalid mode {mode!r}: expected one of {', '.join(TARGET_MODES)}")
        if target.get("default") is True:
            defaults.append(name)
        _check_target_variables(bundle, problems, name, target, broken or set())
    if len(defaults) > 1:
        problems.add(BUNDLE_FILE, "targets", f"more than one default target ({', '.join(defaults)}): mark one "
                     "with default: true")


def _check_target_variables(bundle: Bundle, problems: Problems, name: str, target: dict,
                            broken: set[tuple[str | None, str, str]]) -> None:
    """Variables a target sets are defined; each one without a default gets a value (unless its definition is
    already reported broken)."""
    where = f"targets.{name}.variables"
    overrides = target.get("variables") or {}
    if not isinstance(overrides, dict):
        problems.add(bundle.target_file(name, "variables"), where, "expected a mapping of variable name -> value")
        overrides = {}
    for var in overrides:
        if var not in bundle.variables:
            problems.add(bundle.target_file(name, f"variables.{var}"), f"{where}.{var}",
                         f"sets a variable that is not defined{did_you_mean(var, bundle.variables)}")
    for var, (file, definition) in bundle.variables.items():
        if isinstance(definition, dict) and "default" not in definition and "lookup" not in definition \
                and var not in overrides and (None, "variables", var) not in broken \
                and env_variable(var) not in os.environ:
            problems.add(file, f"variables.{var}", f"has no default and target {name!r} does not set it")


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
    presets = settings.get("presets") or {}
    raw = str(bundle.job_config(key, target).get("name") or "") + str(presets.get("name_prefix") or "")
    in_dev = settings.get("mode") == "development" and presets.get("name_prefix") is None
    return in_dev or "workspace.current_user" in bundle.resolve(raw, target)


def short_user_name(user_name: str) -> str:
    """The short name Databricks derives from a user name (as the CLI does for the dev prefix).

    >>> short_user_name("Jane.Doe@example.com")
    'jane_doe'
    """
    local = user_name.split("@", 1)[0].lower()
    return re.sub(r"_+", "_", re.sub(r"[^\w]|_", "_", local)).strip("_")
