"""The ``sparkship score`` tasks of each target, beyond what its parser checks: a stream (``--stream``) has a
``--checkpoint`` and a ``--trigger`` its compute and job can run, and no output is written both by a stream and by
batch runs, nor two streams by one checkpoint.

A stream keeps its progress through the input in its checkpoint; a batch run keeps it in ``<output>_state``.
Neither sees what the other scored, so an output written both ways would get rows rescored or skipped.
"""
from __future__ import annotations

from typing import Any

from sparkship.bundle.environments import compute_of
from sparkship.bundle.jobs import ParsedJobs, WheelTaskRun
from sparkship.bundle.problems import Problems

AVAILABLE_NOW, PROCESSING_TIME = "available-now", "processing-time="


def check_score_tasks(parsed: ParsedJobs, runs: list[WheelTaskRun], problems: Problems) -> None:
    """Check every ``sparkship score`` run of every target (``runs``: the wheel tasks whose parameters parse)."""
    for target, jobs in parsed.items():
        scoring = [r for r in runs if r.target == target and r.command == ["score"] and r.job in jobs]
        for run in scoring:
            job = jobs[run.job][1]
            task = next((t for t in job.get("tasks") or [] if isinstance(t, dict) and t.get("task_key") == run.task),
                        {})
            _check_stream(problems, run, job, task)
        _check_shared(problems, scoring)


def _where(run: WheelTaskRun) -> str:
    return f"{run.where}.python_wheel_task.parameters"


def _check_stream(problems: Problems, run: WheelTaskRun, job: dict[str, Any], task: dict[str, Any]) -> None:
    args, tgt = run.args, run.target or None
    if not args.stream:
        if args.checkpoint:
            problems.add(run.file, _where(run), "--checkpoint without --stream: only a stream keeps a checkpoint "
                         "(a batch run keeps its progress in <output>_state)", tgt)
        return
    if not args.checkpoint:
        problems.add(run.file, _where(run), "--stream needs --checkpoint PATH: where the stream keeps its progress "
                     "through the input (e.g. ${var.scoring_checkpoint})", tgt)
    trigger = str(args.trigger)
    interval = trigger[len(PROCESSING_TIME):].strip() if trigger.startswith(PROCESSING_TIME) else ""
    if trigger != AVAILABLE_NOW and not interval:
        problems.add(run.file, _where(run), f"--trigger {trigger!r}: expected {AVAILABLE_NOW} or "
                     f"{PROCESSING_TIME}INTERVAL (e.g. {PROCESSING_TIME}1 minute)", tgt)
    elif trigger != AVAILABLE_NOW and compute_of(task) == "serverless":
        problems.add(run.file, _where(run), f"--trigger {trigger}: serverless compute runs {AVAILABLE_NOW} "
                     "streams only", tgt)
    elif trigger != AVAILABLE_NOW and (job.get("schedule") or job.get("trigger")):
        started_by = "schedule" if job.get("schedule") else "trigger"
        problems.add(run.file, _where(run), f"--trigger {trigger} runs until stopped, but the job is started by its "
                     f"{started_by}, a run at a time: use {AVAILABLE_NOW} (or make the job continuous)", tgt)


def _check_shared(problems: Problems, scoring: list[WheelTaskRun]) -> None:
    """A stream whose output a batch task also writes, or whose checkpoint another stream also uses."""
    for run in (r for r in scoring if r.args.stream):
        tgt = run.target or None
        batches = [b for b in scoring if not b.args.stream and b.args.output == run.args.output]
        if batches:
            problems.add(run.file, _where(run), f"--output {run.args.output} is also written by batch scoring "
                         f"({', '.join(f'{b.job}.{b.task}' for b in batches)}): the stream's progress is its "
                         f"checkpoint, the batch's {run.args.output}_state, and neither sees what the other "
                         "scored; give the stream an output of its own", tgt)
        sharing = [s for s in scoring if s is not run and s.args.stream and run.args.checkpoint
                   and s.args.checkpoint == run.args.checkpoint and s.args.output != run.args.output]
        if sharing:
            problems.add(run.file, _where(run), f"--checkpoint {run.args.checkpoint} is also the checkpoint of "
                         f"{', '.join(f'{s.job}.{s.task}' for s in sharing)}, which writes another output: each "
                         "stream needs a checkpoint of its own", tgt)
