"""Named points where a test can hold a real process, to kill it there (``kill -9``) or let it go on.

Production code calls :func:`reached` at the points where a crash matters (between the commits of a
registration or of a scoring run). Nothing happens unless the environment names that point:

* ``SPARKSHIP_PAUSE_AT=<point>`` - the point to stop at;
* ``SPARKSHIP_PAUSE_FLAG=<file>`` - created when the point is reached (holding the process id); the process
  waits while it exists, so the test either kills the process tree or deletes the file to let it continue.

    >>> reached("register:renamed")  # no environment set: returns at once
"""
from __future__ import annotations

import os
import time

POINT_ENV = "SPARKSHIP_PAUSE_AT"
FLAG_ENV = "SPARKSHIP_PAUSE_FLAG"


def reached(point: str) -> None:
    """Stop here while the flag file exists, when the environment names ``point``; else return at once."""
    if os.environ.get(POINT_ENV) != point:
        return
    flag = os.environ.get(FLAG_ENV)
    if not flag:
        return
    with open(flag, "w") as fh:
        fh.write(str(os.getpid()))
    while os.path.exists(flag):
        time.sleep(0.02)
