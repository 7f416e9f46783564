"""kill -9 of a `sparkship score` run that follows updates, deletes and appends through the Change Data Feed: the
rerun's output equals a full scoring of the input.

The killed run is a real process; the first run and the rerun are in-process (``main``) on the suite's session.
"""
from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable

import pytest

from sparkship.cli import main
from tests.helpers.changes import apply_change, assert_output_is_full_scoring, make_input
from tests.helpers.reliability import kill_paused, kill_score_when, start_paused
from tests.helpers.scoring import MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.seconds(270)]


@pytest.mark.parametrize("point", ["score:output", "random"])
@pytest.mark.parametrize("stream", [False, True], ids=["batch", "stream"])
def test_kill_9_of_a_change_feed_run_then_a_rerun_equals_a_full_scoring(spark, fitted, settings, tmp_path, engine,
                                                                        point, stream):
    """Updates, deletes and appends through the Change Data Feed; the run is killed at a kill point (or after a
    random delay into its work), and the rerun's output equals a full scoring of the input."""
    if stream and engine != "native":
        pytest.skip("streaming runs need the native engine (delta-spark)")
    src, out, ckpt = str(tmp_path / "events"), str(tmp_path / "scores"), str(tmp_path / "ckpt")
    make_input(spark, src, engine)
    args = ["--model", MODEL, "--input", src, "--output", out, "--keys", "id"]
    args += ["--stream", "--checkpoint", ckpt] if stream else []
    assert main(["score", *args, "-q"]) == 0
    for change in ("update", "delete", "append", "merge"):
        apply_change(spark, src, engine, change)
    argv = [sys.executable, "-m", "sparkship.cli", "score", *args]
    env = {"SPARKSHIP_HOME": settings.home}
    log_path = str(tmp_path / "killed.log")
    if point == "random":
        delay = random.Random(os.getpid()).uniform(0.1, 1.0)
        kill_score_when(settings.home, args, log_path,
                        _after(log_path, "scoring " if not stream else "streaming ", delay))
    else:
        kill_paused(start_paused(argv, point, str(tmp_path / "flag"), env=env, log_path=log_path))
    assert main(["score", *args, "-q"]) == 0
    assert_output_is_full_scoring(spark, fitted, src, out)


def _after(log_path: str, text: str, delay_s: float) -> Callable[[], bool]:
    """Ready ``delay_s`` seconds after ``text`` appears in the log."""
    seen: list[float] = []

    def ready() -> bool:
        if not seen and text in open(log_path).read():
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= delay_s
    return ready
