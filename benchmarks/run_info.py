"""What the benchmarks print about a run (the command, the date, the machine) and how they get an earlier
revision's source to compare against. This folder's own module, not a benchmark."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def header_lines(machine_extra: str) -> list[str]:
    """``command:``, ``date:`` and ``machine:`` lines; ``machine_extra`` ends the machine line (versions...)."""
    cpu, mem = platform.processor() or "?", "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
        with open("/proc/meminfo") as f:
            mem = f"{int(next(line for line in f if line.startswith('MemTotal')).split()[1]) / 2**20:.1f} GiB"
    except OSError:  # not Linux: keep platform's answer
        pass
    python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else "python"
    return [
        f"command: {python} {' '.join(sys.argv)}",
        f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"machine: {os.cpu_count()} cores, {cpu}, {mem} memory; {machine_extra}",
    ]


def cpu_seconds(pid: int | str, task: str | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (or of its thread ``task``) so far, from /proc."""
    path = f"/proc/{pid}/task/{task}/stat" if task else f"/proc/{pid}/stat"
    with open(path) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICK


def checkout_src(revision: str, work: str) -> str:
    """``src`` of ``revision``, extracted from git into ``work`` (the working tree is left alone)."""
    target = os.path.join(work, "baseline")
    os.makedirs(target)
    archive = subprocess.run(["git", "-C", REPO, "archive", revision, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", target], input=archive.stdout, check=True)
    return os.path.join(target, "src")


def run_children(commands: dict[str, list[str]], cwd: str | None = None) -> dict[str, dict]:
    """Run each way's command at once (so that they share the machine alike); each way's last printed line, a
    JSON object. Exits naming the way whose child failed."""
    procs = {way: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd)
             for way, argv in commands.items()}
    results = {}
    for way, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"{way}: the child failed (exit {proc.returncode})")
        results[way] = json.loads(out.strip().splitlines()[-1])
    return results
