"""The ``artifacts`` section, and the wheel it builds: build it, read what it declares (no install needed)."""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sparkship.bundle.loader import BUNDLE_FILE, Bundle
from sparkship.bundle.problems import Problems
from sparkship.errors import NotFoundError, SparkshipError, UsageError

log = logging.getLogger(__name__)

# Not part of the wheel and possibly large (virtual environments, data, build leftovers).
_BUILD_IGNORE = shutil.ignore_patterns(
    ".*", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", "tests", "benchmarks", "spark-warehouse",
    "metastore_db", "out",
)


def check_artifacts(bundle: Bundle, problems: Problems) -> None:
    """Each artifact's ``path`` is a folder of the bundle (its keys and ``type`` are the schema's to check)."""
    artifacts = bundle.config.get("artifacts")
    for name, artifact in (artifacts if isinstance(artifacts, dict) else {}).items():
        if not isinstance(artifact, dict):
            continue
        path = bundle.root / str(artifact.get("path", "."))
        if not path.is_dir():
            problems.add(BUNDLE_FILE, f"artifacts.{name}.path",
                         f"{artifact.get('path')!r} is not a folder under {bundle.root}")


def artifact_dist_dirs(bundle: Bundle) -> set[Path]:
    """The ``dist/`` folders the bundle's wheel artifacts are built into."""
    return {
        (bundle.root / str(a.get("path", ".")) / "dist").resolve()
        for a in (bundle.config.get("artifacts") or {}).values()
        if isinstance(a, dict) and a.get("type") == "whl"
    }


def build_artifact(bundle: Bundle, out_dir: str) -> Path:
    """Build the bundle's (first) wheel artifact into ``out_dir``."""
    artifacts = bundle.config.get("artifacts") or {}
    whl = [a for a in artifacts.values() if isinstance(a, dict) and a.get("type") == "whl"]
    if not whl:
        raise UsageError("python_wheel_task jobs need an artifact with type: whl")
    return build_wheel(bundle.root / str(whl[0].get("path", ".")), out_dir)


@dataclass(frozen=True)
class WheelInfo:
    """What a built wheel declares: its distribution name, version, console-script entry points and modules."""

    path: str
    name: str
    version: str
    entry_points: dict[str, str]  # name -> "module:attr"

    defined: frozenset[str] = frozenset()  # the entry points whose module defines the attribute

    def defines(self, entry_value: str) -> bool:
        """Whether the wheel's module for ``module:attr`` defines ``attr`` at top level (read, not imported)."""
        return entry_value in self.defined


def _defined_entry_points(archive: zipfile.ZipFile, values: Iterable[str]) -> frozenset[str]:
    """The ``module:attr`` values whose module, in the wheel, defines ``attr`` at top level (parsed with ast)."""
    names, defined = set(archive.namelist()), set()
    for value in values:
        module, _, attr = value.partition(":")
        member = module.replace(".", "/")
        source = next((f"{member}{s}" for s in (".py", "/__init__.py") if f"{member}{s}" in names), None)
        if source is None:
            continue
        tree = ast.parse(archive.read(source))
        top = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        top |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        top |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
        if attr.split(".")[0] in top:
            defined.add(value)
    return frozenset(defined)


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
        return WheelInfo(str(path), dist.metadata["Name"], dist.version, scripts,
                         _defined_entry_points(archive, scripts.values()))


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
        cmd = _build_command(source, out)
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


def _build_command(source: Path, out: Path) -> list[str]:
    """``python -m build`` where the ``build`` package is installed (the 'bundle' extra), else ``pip wheel``."""
    if importlib.util.find_spec("build") is not None:
        return [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)]
    return [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)]
