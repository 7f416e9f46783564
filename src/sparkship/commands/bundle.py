"""``sparkship bundle check`` (offline checks of databricks.yml + resources/) and ``sparkship jobs run``.

``check`` hands the bundle checker the parsers of sparkship's own commands (``subparsers.choices``, filled in as
every command registers), so that each ``python_wheel_task``'s parameters are parsed the way the task will run.
"""
from __future__ import annotations

import argparse
from typing import Any

from sparkship.bundle import check_bundle
from sparkship.commands import CommandResult, Context, add_command
from sparkship.errors import UsageError
from sparkship.extras import require
from sparkship.jobs_api import describe, run_job


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    group = subparsers.add_parser("bundle", help="check the Databricks asset bundle offline")
    sub = group.add_subparsers(dest="bundle_command", metavar="ACTION")
    sub.required = True
    p = add_command(
        sub, common, "check", check, "check databricks.yml and resources/ offline, in every target: the structure "
        "against the Databricks CLI's bundle schema (vendored; variables checked where they are used), then "
        "variables, targets, task graphs, classic and serverless compute, quality monitors, and that each "
        "python_wheel_task's entry point and parameters are accepted by the built wheel (building it needs the "
        "'bundle' extra)",
    )
    p.set_defaults(sparkship_commands=subparsers.choices)
    p.add_argument("--root", default=".", help="folder holding databricks.yml (default: the current folder)")
    p.add_argument("--wheel", default=None, help="check this built wheel instead of building one")

    group = subparsers.add_parser("jobs", help="run the bundle's jobs deployed in a Databricks workspace")
    sub = group.add_subparsers(dest="jobs_command", metavar="ACTION")
    sub.required = True
    p = add_command(
        sub, common, "run", run, "trigger a deployed bundle job (databricks-sdk; DATABRICKS_HOST/TOKEN or a "
        "~/.databrickscfg profile) and optionally follow it; exit 0 when the run succeeded, 1 otherwise",
    )
    p.add_argument("job_key", metavar="JOB_KEY", help="the job's key under resources.jobs (e.g. training)")
    p.add_argument("--target", "-t", default=None, help="bundle target (default: the default target)")
    p.add_argument("--wait", action="store_true", help="follow the run until it is over")
    p.add_argument("--root", default=".", help="folder holding databricks.yml (default: the current folder)")
    p.add_argument("--profile", default=None, help="~/.databrickscfg profile (default: the SDK's own choice)")
    p.add_argument("--poll-seconds", type=float, default=10.0, help="seconds between state polls (default 10)")
    p.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")


def check(ctx: Context, args: argparse.Namespace) -> CommandResult:
    if args.wheel is None:  # building the bundle's wheel needs `build` (the 'bundle' extra), before anything is read
        require("build", extra="bundle", command="sparkship bundle check")
    report = check_bundle(args.root, wheel=args.wheel, commands=args.sparkship_commands)
    if report.ok:
        jobs = ", ".join(f"{k} ({len(t)} task{'s' if len(t) != 1 else ''})" for k, t in report.jobs.items())
        targets = ", ".join(f"{t} ({report.compute.get(t, 'no jobs')})" for t in report.targets)
        monitors = ", ".join(f"{k} ({', '.join(t)})" for k, t in report.monitors.items()) or "none"
        text = (f"bundle {report.bundle}: OK ({report.schema})\ntargets: {targets}\njobs: {jobs}\n"
                f"quality monitors: {monitors}"
                + (f"\nwheel: {report.wheel}" if report.wheel else ""))
    else:
        text = f"bundle {report.bundle or report.root}: {len(report.problems)} problem(s)\n" + "\n".join(
            f"  {p}" for p in report.problems)
    return CommandResult(report.to_dict(), text=text, exit_code=0 if report.ok else 1)


def run(ctx: Context, args: argparse.Namespace) -> CommandResult:
    if args.poll_seconds <= 0:
        raise UsageError(f"--poll-seconds must be > 0, got {args.poll_seconds:g}")
    result = run_job(args.job_key, args.target, root=args.root, wait=args.wait, poll_seconds=args.poll_seconds,
                     timeout_seconds=args.timeout, profile=args.profile)
    failed = args.wait and not result.succeeded
    return CommandResult(result.to_dict(), text=describe(result), exit_code=1 if failed else 0)
