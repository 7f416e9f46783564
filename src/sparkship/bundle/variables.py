"""The ``variables`` section, and every ``${...}`` reference in every file of the bundle."""
from __future__ import annotations

from sparkship.bundle.loader import BUNDLE_FILE, REFERENCE, Bundle
from sparkship.bundle.problems import Problems, did_you_mean, walk

REFERENCE_ROOTS = ("var", "bundle", "workspace", "resources", "artifacts")


def check_variables(bundle: Bundle, problems: Problems) -> None:
    """Each ``${var.x}`` is defined; each ``${...}`` has a known root (the schema checks the definitions)."""
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
