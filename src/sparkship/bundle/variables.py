"""The ``variables`` section, and every ``${...}`` reference in every file of the bundle."""
from __future__ import annotations

from sparkship.bundle.loader import BUNDLE_FILE, REFERENCE, Bundle
from sparkship.bundle.problems import Problems, did_you_mean, unknown_keys, walk

VARIABLE_KEYS = frozenset({"default", "description", "lookup", "type"})
VARIABLE_TYPES = ("complex",)
REFERENCE_ROOTS = ("var", "bundle", "workspace", "resources", "artifacts")


def check_variables(bundle: Bundle, problems: Problems) -> None:
    """Each definition has known keys; each ``${var.x}`` is defined; each ``${...}`` has a known root."""
    for name, (file, definition) in bundle.variables.items():
        if not isinstance(definition, dict):
            problems.add(file, f"variables.{name}", "expected a mapping with 'default' and/or 'description', 'lookup'")
            continue
        problems.extend(unknown_keys(file, f"variables.{name}", definition, VARIABLE_KEYS))
        if "type" in definition and definition["type"] not in VARIABLE_TYPES:
            problems.add(file, f"variables.{name}.type", f"expected {', '.join(VARIABLE_TYPES)}, got {definition['type']!r}")
    for file, data in bundle.files.items():
        for where, text in walk(data):
            for match in REFERENCE.finditer(text):
                _check_reference(bundle, problems, file, where, match.group(1))


def _check_reference(bundle: Bundle, problems: Problems, file: str, where: str, expr: str) -> None:
    root = expr.split(".")[0]
    if root not in REFERENCE_ROOTS:
        problems.add(file, where, f"unknown reference ${{{expr}}}: references start with "
                     f"{', '.join(r + '.' for r in REFERENCE_ROOTS)}{did_you_mean(root, REFERENCE_ROOTS)}")
    elif root == "var":
        name = expr.split(".")[1] if "." in expr else ""
        if name not in bundle.variables:
            problems.add(file, where, f"undefined variable ${{{expr}}}{did_you_mean(name, bundle.variables)}; "
                         f"define it under 'variables' in {BUNDLE_FILE}")
