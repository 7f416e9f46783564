"""Every docstring example under src/sparkship runs (examples that need a cluster, a registry or files are
marked ``# doctest: +SKIP`` where they stand)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import sparkship


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(sparkship.__path__, "sparkship."))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # an example that writes relative paths writes here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (see above)"


def test_the_examples_are_found() -> None:
    """Guards the collection itself: modules known to hold runnable examples are among those tested."""
    modules = _modules()
    assert {"sparkship.names", "sparkship.monitoring", "sparkship.spec", "sparkship.serving.batch"} <= set(modules)
    runnable = sum(
        1
        for name in modules
        for test in doctest.DocTestFinder().find(importlib.import_module(name))
        for example in test.examples
        if not example.options.get(doctest.SKIP)
    )
    assert runnable >= 30
