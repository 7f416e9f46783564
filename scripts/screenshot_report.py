"""Screenshot an HTML page (a sparkship report) with headless Chromium.

    python scripts/screenshot_report.py report.html report.png [--width 1280] [--height 3000]

Needs the ``chromium`` binary (Debian: ``apt-get install -y chromium``). Exits 1 if Chromium fails or writes
no image.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile


def screenshot(page: str, png: str, width: int = 1280, height: int = 3000, timeout: float = 120.0) -> str:
    """Render ``page`` in headless Chromium and save a ``width`` x ``height`` PNG to ``png``; return ``png``."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if binary is None:
        raise FileNotFoundError("no chromium binary on PATH (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        command = [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--no-first-run", "--mute-audio", f"--user-data-dir={profile}", f"--window-size={width},{height}",
            f"--screenshot={os.path.abspath(png)}", "file://" + os.path.abspath(page),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not os.path.exists(png) or os.path.getsize(png) == 0:
        raise RuntimeError(f"chromium exited {done.returncode} without a screenshot: {done.stderr[-2000:]}")
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page")
    parser.add_argument("png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args(argv)
    try:
        print(screenshot(args.page, args.png, args.width, args.height))
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"screenshot_report: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
