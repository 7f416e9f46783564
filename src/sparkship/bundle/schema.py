"""The bundle's structure as the Databricks CLI sees it: every file checked against the CLI's own JSON schema.

``cli_schema.json`` beside this module is the output of ``databricks bundle schema`` of the CLI named in its
``$comment`` (refresh it with ``scripts/refresh_bundle_schema.py``). ``databricks.yml`` and every included file
have the same root schema. Each value may be a ``${var.x}`` reference where a typed value is expected (the schema
says so with a ``oneOf``), so a variable is also checked where it is used, with its value in each target, as the
CLI does once it has substituted it (``num_workers: ${var.n}`` with ``n: two``). Unknown fields, wrong types and
values, and missing required fields are warnings of the CLI, which ``--strict`` (and this check) turns into
failures; a few rules the CLI enforces in code, not in the schema, are here too (:func:`check_cli_rules`).

    >>> [p for _, p, _ in structure_errors({"bundle": {"name": "x", "engine": "direct"}})]
    []
    >>> structure_errors({"workspace": {"root_pth": "/x"}})
    [(('workspace', 'root_pth'), 'unknown field', 'root_path')]
"""
from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema

from sparkship.bundle.loader import Bundle
from sparkship.bundle.problems import Problems, did_you_mean, item_label

SCHEMA_FILE = Path(__file__).with_name("cli_schema.json")
# Bundle-level permission levels (the CLI refuses others; a resource's own permissions follow its schema enum).
BUNDLE_PERMISSION_LEVELS = ("CAN_MANAGE", "CAN_VIEW", "CAN_RUN")
ARTIFACT_TYPES = ("whl", "jar")  # the schema says string; the CLI warns of other values
PAUSE_STATUSES = ("PAUSED", "UNPAUSED")  # presets.trigger_pause_status: a string in the schema, checked by the CLI
_PURE_VAR = re.compile(r"\$\{var\.([\w-]+)\}")
_TYPE_WORDS = {"integer": "int", "number": "float", "boolean": "bool", "string": "string", "object": "map",
               "array": "sequence"}
_PARSE_WORDS = {"integer": "an integer", "number": "a number", "boolean": "a bool"}
_PARSES = {"integer": re.compile(r"[+-]?\d+"), "number": re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"),
           "boolean": re.compile(r"true|false", re.IGNORECASE)}

Path_ = tuple[Any, ...]  # a location in a parsed file: keys and list indexes


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    _python_patterns(schema)
    return jsonschema.Draft202012Validator(schema)


def cli_version() -> str:
    """The CLI whose schema is vendored, e.g. ``databricks bundle schema of Databricks CLI v1.14.0-dev``."""
    return str(json.loads(SCHEMA_FILE.read_text()).get("$comment", "unknown"))


def _python_patterns(node: Any) -> None:
    """Rewrite the schema's Unicode classes (Go's ``\\p{L}``, ``\\p{N}``) into ones Python's ``re`` knows."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                node[key] = (value.replace(r"[\p{L}\p{N}]", r"[^\W_]").replace(r"\p{L}", r"[^\W\d_]")
                             .replace(r"\p{N}", r"\d"))
            else:
                _python_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _python_patterns(value)


def structure_errors(data: Any) -> list[tuple[Path_, str, str]]:
    """``(path, message, hint)`` for each place where ``data`` (one parsed file) breaks the CLI's schema.

    ``hint`` is the closest known field for an unknown one, else ``''``.
    """
    out: list[tuple[Path_, str, str]] = []
    for error in _validator().iter_errors(data):
        out.extend(_explain(error))
    if isinstance(data, dict):  # the root schema lets any top-level key through; the CLI warns of unknown ones
        known = list(_validator().schema["properties"])
        out += [((key,), "unknown field", _close(key, known)) for key in data if key not in known]
    return sorted(set(out), key=lambda e: [str(p) for p in e[0]])


def _explain(error: jsonschema.ValidationError) -> Iterator[tuple[Path_, str, str]]:
    """The leaf causes of one schema error, worded as the CLI words them."""
    path = tuple(error.absolute_path)
    if error.validator in ("oneOf", "anyOf") and error.context:
        # Every typed value is oneOf [the type itself, a ${...} reference]; explain against the type itself.
        primary = [e for e in error.context if e.relative_schema_path and e.relative_schema_path[0] == 0]
        mismatch = next((e for e in primary if e.validator == "type" and not e.relative_path), None)
        if mismatch is not None:
            yield from _type_error(path, error.instance, mismatch.validator_value)
            return
        for sub in primary:
            yield from _explain(sub)
        return
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties") or {})
        for key in error.instance:
            if key not in known:
                close = did_you_mean(key, known)
                yield (*path, key), "unknown field", close.split("'")[1] if close else ""
    elif error.validator == "required":
        name = str(error.message).split("'")[1] if "'" in str(error.message) else str(error.message)
        yield path, f'required field "{name}" is not set', ""
    elif error.validator == "enum":
        values = [str(v) for v in error.validator_value]
        yield path, f"invalid value {error.instance!r}: expected one of {', '.join(values)}", \
            _close(error.instance, values)
    elif error.validator == "type":
        yield from _type_error(path, error.instance, error.validator_value)
    else:
        yield path, str(error.message), ""


def _type_error(path: Path_, instance: Any, expected: Any) -> Iterator[tuple[Path_, str, str]]:
    expected = expected if isinstance(expected, str) else str(expected[0])
    if isinstance(instance, str) and expected in _PARSES:
        if _PARSES[expected].fullmatch(instance.strip()):
            return  # the CLI converts a string that parses ("2" where an int is expected)
        yield path, f"cannot parse {instance!r} as {_PARSE_WORDS[expected]}", ""
        return
    found = {bool: "bool", int: "int", float: "float", str: "string", dict: "map", list: "sequence"}.get(
        type(instance), "null" if instance is None else type(instance).__name__)
    yield path, f"expected {_TYPE_WORDS.get(expected, expected)}, found {found}", ""


def _close(word: Any, choices: list[str]) -> str:
    close = did_you_mean(word, choices)
    return close.split("'")[1] if close else ""


def _where(data: Any, path: Path_) -> str:
    """A path as sparkship names it: dotted keys, list items by their ``*_key`` (``tasks[train]``)."""
    text, node = "", data
    for part in path:
        if isinstance(part, int):
            text += f"[{item_label(node[part], part) if isinstance(node, list) and part < len(node) else part}]"
        else:
            text += f".{part}" if text else str(part)
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    return text


def _has(node: Any, part: Any) -> bool:
    return part in node if isinstance(node, dict) else isinstance(part, int) and 0 <= part < len(node)


def _message(error: tuple[Path_, str, str]) -> str:
    """The error's text, with the closest known name where there is one."""
    _, text, hint = error
    return f"{text} (did you mean {hint!r}?)" if hint else text


def check_structure(bundle: Bundle, problems: Problems) -> set[tuple[str | None, str, str]]:
    """Check every file of the bundle against the schema, then each variable where it is used, per target.

    Returns the resources found broken, ``(target or None for all, kind, key)``: the other checks skip them, so
    that one mistake is reported once and not again through what follows from it.
    """
    broken: set[tuple[str | None, str, str]] = set()
    for file, data in bundle.files.items():
        if data is None:
            continue
        for error in structure_errors(data):
            if not _bundle_permission_level(error[0]):  # the CLI's own, narrower rule: check_cli_rules
                problems.add(file, _where(data, error[0]), _message(error))
            broken |= _broken(error[0])
    for target in bundle.targets or {}:
        values = _variable_values(bundle, target)
        for file, data in bundle.files.items():
            if isinstance(data, dict):
                broken |= _check_variable_uses(problems, file, data, target, values)
    return broken


def _bundle_permission_level(path: Path_) -> bool:
    """Whether ``path`` is the level of a bundle-level permission (``permissions[i].level``, also a target's)."""
    return (len(path) == 3 and path[0] == "permissions" and path[2] == "level") or (
        len(path) == 5 and path[0] == "targets" and path[2] == "permissions" and path[4] == "level")


def _broken(path: Path_, target: str | None = None) -> set[tuple[str | None, str, str]]:
    """The resource an error at ``path`` is in (``resources.<kind>.<key>`` or a target's override of it), or the
    variable (``(None, "variables", name)``)."""
    if len(path) >= 2 and path[0] == "variables":
        return {(None, "variables", str(path[1]))}
    if len(path) >= 5 and path[0] == "targets" and path[2] == "resources":
        return {(str(path[1]), str(path[3]), str(path[4]))}
    if len(path) >= 3 and path[0] == "resources":
        return {(target, str(path[1]), str(path[2]))}
    return set()


def _variable_values(bundle: Bundle, target: str) -> dict[str, Any]:
    """Each variable's value in ``target``, references in it resolved (a value that is not text stays as is)."""
    return {name: bundle.resolve(value, target) if isinstance(value, str) else value
            for name, value in bundle.variable_values(target).items()}


def _check_variable_uses(problems: Problems, file: str, data: dict[str, Any], target: str,
                         values: dict[str, Any]) -> set[tuple[str | None, str, str]]:
    """Substitute each ``${var.x}`` that is a whole value (outside other targets' sections) and check the result
    against the schema where a substitution was made."""
    scoped = {k: v for k, v in data.items() if k != "targets"}
    if isinstance(data.get("targets"), dict) and target in data["targets"]:
        scoped["targets"] = {target: data["targets"][target]}
    used: dict[Path_, str] = {}
    resolved = _substitute(copy.deepcopy(scoped), values, (), used)
    broken: set[tuple[str | None, str, str]] = set()
    if not used:
        return broken
    for error in structure_errors(resolved):
        source = next((used[p] for p in used if error[0][:len(p)] == p), None)
        if source is not None:
            problems.add(file, _where(data, error[0]), f"{_message(error)} (from ${{var.{source}}})", target)
            broken |= _broken(error[0], target)
    return broken


def _substitute(node: Any, values: dict[str, Any], path: Path_, used: dict[Path_, str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, values, (*path, k), used) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values, (*path, i), used) for i, v in enumerate(node)]
    match = _PURE_VAR.fullmatch(node) if isinstance(node, str) else None
    if match and match.group(1) in values and values[match.group(1)] is not None:
        value = values[match.group(1)]
        if not (isinstance(value, str) and "${" in value):
            used[path] = match.group(1)
            return value
    return node


def check_cli_rules(bundle: Bundle, problems: Problems) -> None:
    """Rules the CLI enforces beyond its schema: bundle-level permission levels, ``run_as`` naming one identity,
    a secret's value given by a variable without a default, a known ``presets.trigger_pause_status``, no
    bundle-level ``run_as`` in a target that deploys a quality monitor (errors there); an artifact ``type`` it
    knows, ``sync`` patterns that match files (warnings)."""
    for file, data in bundle.files.items():
        if not isinstance(data, dict):
            continue
        sections = [("", data)] + [(f"targets.{t}.", s) for t, s in (data.get("targets") or {}).items()
                                   if isinstance(s, dict)]
        for prefix, section in sections:
            _check_permissions(problems, file, f"{prefix}permissions", section.get("permissions"))
            run_as = section.get("run_as")
            if isinstance(run_as, dict) and run_as.get("user_name") and run_as.get("service_principal_name"):
                problems.add(file, f"{prefix}run_as", "cannot set both user_name and service_principal_name: "
                             "a bundle runs as one identity")
            _check_secrets(bundle, problems, file, prefix, section.get("resources"))
            _check_artifact_types(problems, file, prefix, section.get("artifacts"))
            _check_sync(bundle, problems, file, prefix, section.get("sync"))
            presets = section.get("presets")
            status = presets.get("trigger_pause_status") if isinstance(presets, dict) else None
            if isinstance(status, str) and "${" not in status and status not in PAUSE_STATUSES:
                problems.add(file, f"{prefix}presets.trigger_pause_status", f"invalid value {status!r}: expected "
                             f"one of {', '.join(PAUSE_STATUSES)}{did_you_mean(status, PAUSE_STATUSES)}")
    for target in bundle.targets:
        run_as = (bundle.targets.get(target) or {}).get("run_as") or bundle.config.get("run_as")
        monitors = bundle.target_resources("quality_monitors", target)
        if isinstance(run_as, dict) and any(run_as.values()) and monitors:
            file = next(iter(monitors.values()))[0]
            problems.add(file, f"resources.quality_monitors.{next(iter(monitors))}", "quality_monitors do not "
                         "support a bundle run_as other than the deploying user: set run_as on each job instead",
                         target)


def _check_secrets(bundle: Bundle, problems: Problems, file: str, prefix: str, resources: Any) -> None:
    secrets = resources.get("secrets") if isinstance(resources, dict) else None
    for key, secret in (secrets if isinstance(secrets, dict) else {}).items():
        value = secret.get("value") if isinstance(secret, dict) else None
        match = _PURE_VAR.fullmatch(value.strip()) if isinstance(value, str) else None
        where_ = f"{prefix}resources.secrets.{key}.value"
        if isinstance(value, str) and match is None:
            problems.add(file, where_, "a secret's value must be a variable reference (${var.x}, set at deploy "
                         "time), never written in the bundle")
        elif match and _has_value_in_bundle(bundle, match.group(1)):
            problems.add(file, where_, f"the secret's variable {match.group(1)!r} must have no default (its "
                         "value is given at deploy time: --var or BUNDLE_VAR_...)")


def _has_value_in_bundle(bundle: Bundle, name: str) -> bool:
    """Whether the bundle itself gives variable ``name`` a value: a default, or a target's value."""
    definition = (bundle.variables.get(name) or ("", {}))[1]
    return (isinstance(definition, dict) and "default" in definition) or any(
        name in ((t or {}).get("variables") or {}) for t in bundle.targets.values() if isinstance(t, dict))


def _check_artifact_types(problems: Problems, file: str, prefix: str, artifacts: Any) -> None:
    for name, artifact in (artifacts if isinstance(artifacts, dict) else {}).items():
        kind = artifact.get("type") if isinstance(artifact, dict) else None
        if isinstance(kind, str) and "${" not in kind and kind not in ARTIFACT_TYPES:
            problems.add(file, f"{prefix}artifacts.{name}.type", f"invalid value {kind!r}: expected one of "
                         f"{', '.join(ARTIFACT_TYPES)}{did_you_mean(kind, ARTIFACT_TYPES)}")


def _check_sync(bundle: Bundle, problems: Problems, file: str, prefix: str, sync: Any) -> None:
    """Each ``sync`` include/exclude pattern, relative to the file that sets it, matches some file."""
    base = (bundle.root / file).parent
    for field in ("include", "exclude"):
        patterns = sync.get(field) if isinstance(sync, dict) else None
        for i, pattern in enumerate(patterns if isinstance(patterns, list) else []):
            text = str(pattern).lstrip("/")
            matches = base.glob(text) if "/" in text else base.rglob(text)
            if "${" not in text and next(iter(matches), None) is None:
                problems.add(file, f"{prefix}sync.{field}[{i}]", f"pattern {pattern!r} matches no file under "
                             f"{base.relative_to(bundle.root) if base != bundle.root else 'the bundle root'}")


def _check_permissions(problems: Problems, file: str, where_: str, permissions: Any) -> None:
    for i, permission in enumerate(permissions if isinstance(permissions, list) else []):
        level = permission.get("level") if isinstance(permission, dict) else None
        if isinstance(level, str) and "${" not in level and level not in BUNDLE_PERMISSION_LEVELS:
            problems.add(file, f"{where_}[{i}].level", f"invalid permission level {level!r}: expected one of "
                         f"{', '.join(BUNDLE_PERMISSION_LEVELS)}{did_you_mean(level, BUNDLE_PERMISSION_LEVELS)}")


__all__ = ["SCHEMA_FILE", "check_cli_rules", "check_structure", "cli_version", "structure_errors"]
