"""The `sparkship` command run in the test's own process, on the suite's SparkSession.

A CLI process costs a JVM start (tens of CPU seconds); ``main(argv)`` in-process costs the command's own work.
What a user sees is the same: the exit code, standard output and standard error. An exception escaping ``main``
(which a real process would print as a traceback) is written to ``stderr`` as one, so a "no traceback" assertion
fails as it would against the process. The true end-to-end tests (the demo, kill -9 trials, Spark Connect, the
wheel in a fresh venv, the bundle CLI) still start real processes.

    >>> done = run_cli("--json", "models", "list", env={"SPARKSHIP_HOME": "/tmp/home"})    # doctest: +SKIP
    >>> done.returncode, done.json()                                                    # doctest: +SKIP
    (0, [])
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sparkship.cli import main


@dataclass(frozen=True)
class CliRun:
    """What a `sparkship` run left: like :class:`subprocess.CompletedProcess` (``returncode``, ``stdout``,
    ``stderr``)."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The JSON document of the last non-empty line of standard output (``--json`` prints one line)."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"no output from {self.args}; stderr:\n{self.stderr[-2000:]}"
        return json.loads(lines[-1])

    def error_lines(self) -> list[str]:
        """The ``sparkship...: error: ...`` lines of standard error (a command's or argparse's)."""
        return [line for line in self.stderr.splitlines() if line.startswith("sparkship") and ": error: " in line]


@contextlib.contextmanager
def _environment(env: Mapping[str, str | None] | None, cwd: str | os.PathLike[str] | None) -> Iterator[None]:
    """``env`` set (a ``None`` value unsets the variable) and ``cwd`` entered for the block, both restored after."""
    saved = {key: os.environ.get(key) for key in (env or {})}
    before = os.getcwd()
    try:
        for key, value in (env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(before)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _logging_to(stream: io.StringIO, quiet: bool) -> Iterator[None]:
    """The root logger writing to ``stream`` as the CLI's own set-up would to a process's stderr (pytest's logging
    plugin already holds the root logger, so ``main``'s ``logging.basicConfig`` does nothing in-process)."""
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def run_cli(*argv: str, env: Mapping[str, str | None] | None = None,
            cwd: str | os.PathLike[str] | None = None) -> CliRun:
    """Run ``sparkship ARGV`` in this process and return its exit code and output.

    Args:
        argv: the command line after ``sparkship``.
        env: environment variables for the run (``None`` unsets one); the process's are restored after.
        cwd: the working directory for the run.

    Returns:
        A :class:`CliRun`; argparse's exits (``--help``, usage errors) are exit codes, as in a process.
    """
    out, err = io.StringIO(), io.StringIO()
    quiet = "-q" in argv or "--quiet" in argv
    with _environment(env, cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            _logging_to(err, quiet):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse: --help and usage errors
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:  # noqa: BLE001 - a process would print it and exit 1: so does this
            traceback.print_exc()
            code = 1
    return CliRun(tuple(argv), code, out.getvalue(), err.getvalue())
