"""Where the time of a SLURM run goes: per submission, from sbatch to Snakemake noticing the end.

Used by tests/test_slurm.py to record a run (FUNDIFF_SLURM_RECORD=path) and read back by
bench/bench_slurm.py. Sources, all with one-second resolution:

- the submitting Snakemake's output: "Job 3 has been submitted with SLURM jobid 12 (log: ...)"
  and "[Thu Dec  3 08:06:26 2026]" + "Finished jobid: 3 (Rule: foo)" when it noticed the end;
- `scontrol show job -o ID` (kept MinJobAge=300 s after the end): SubmitTime/StartTime/EndTime;
- the job's SLURM log (kept with --slurm-keep-successful-logs): the job's own Snakemake
  prints a "[timestamp]" before each `localrule` it runs and before each "Finished jobid".

Phases of one submission (seconds):
  queue     SubmitTime -> StartTime
  startup   StartTime  -> first rule starts inside the job (Snakemake starts twice in a job:
                          the jobstep executor, then `srun snakemake` that runs the rule)
  work      the time inside the rules (summed over the members of a group job)
  teardown  the rest of the job: both Snakemake processes exit, and in a group job the
            `srun snakemake` start of every member after the first
  detect    EndTime -> the submitting Snakemake reports the job finished (status polling)
overhead = startup + teardown + detect: the fixed cost of one submission. Queue time is kept
apart: on the test cluster it is mostly jobs waiting for the one (fake) GPU or the 2 CPUs.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)")
UNIT_OF_LOG = re.compile(r"/slurm_logs/(rule|group)_([A-Za-z0-9_]+)/")
STAMP = re.compile(r"^\s*\[(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\]", re.MULTILINE)
FINISHED = re.compile(r"^\s*Finished jobid: (\d+) \(Rule: (\w+)\)", re.MULTILINE)
LOCALRULE = re.compile(r"^\s*localrule (\w+):", re.MULTILINE)
PHASES = ("queue", "startup", "work", "teardown", "detect")


def _stamp(text: str) -> dt.datetime:
    return dt.datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")


def stamped_events(text: str, event: re.Pattern) -> list[tuple[dt.datetime, re.Match]]:
    """(time, match) for every `event` line; the time is the last "[...]" stamp before it."""
    stamps = [(m.start(), _stamp(m.group(1))) for m in STAMP.finditer(text)]
    events = []
    for m in event.finditer(text):
        before = [t for pos, t in stamps if pos < m.start()]
        if before:
            events.append((before[-1], m))
    return events


def scontrol_times(slurm_jobid: str) -> dict[str, dt.datetime] | None:
    """SubmitTime/StartTime/EndTime of a job the controller still knows, else None."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", slurm_jobid], capture_output=True, text=True, check=False
    ).stdout
    fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    try:
        return {
            k: dt.datetime.fromisoformat(fields[k]) for k in ("SubmitTime", "StartTime", "EndTime")
        }
    except (KeyError, ValueError):
        return None


def inner_rule_span(log_text: str) -> tuple[list[str], dt.datetime, float] | None:
    """(rules run, first rule start, seconds spent in the rules) inside a job, from its log.

    The job's jobstep Snakemake runs each job (each member of a group job, one after another)
    through its own `srun snakemake`, which shows it as `localrule` and reports "Finished
    jobid" when it is done; a rule's time is from its `localrule` stamp to the next
    "Finished" stamp. The Snakemake start-ups between group members are not work.
    """
    starts = stamped_events(log_text, LOCALRULE)
    finishes = [t for t, _m in stamped_events(log_text, FINISHED)]
    work = 0.0
    for t, _m in starts:
        after = [f for f in finishes if f >= t]
        if not after:
            return None
        work += (after[0] - t).total_seconds()
    if not starts:
        return None
    return [m.group(1) for _t, m in starts], starts[0][0], work


def submissions(output: str) -> list[dict]:
    """Every sbatch submission of a run, with its phases in seconds where they can be read."""
    noticed = stamped_events(output, FINISHED)
    rows = []
    for job, slurm_jobid, log in SUBMITTED.findall(output):
        unit = UNIT_OF_LOG.search(log)
        row: dict = {
            "slurm_jobid": slurm_jobid,
            "kind": unit.group(1) if unit else "?",
            "name": unit.group(2) if unit else "?",
        }
        times = scontrol_times(slurm_jobid)
        log_path = Path(log)
        span = inner_rule_span(log_path.read_text()) if log_path.is_file() else None
        if span:
            row["rules"] = span[0]
        if times and span:
            rules, rule_start, work = span
            # the submitting Snakemake's first "Finished" report, after the end, of a job this
            # submission ran (by jobid; group members by rule name)
            seen = [
                t
                for t, m in noticed
                if t >= times["EndTime"] and (m.group(1) == job or m.group(2) in rules)
            ]
            if seen:
                startup = (rule_start - times["StartTime"]).total_seconds()
                in_job = (times["EndTime"] - times["StartTime"]).total_seconds()
                row.update(
                    queue=(times["StartTime"] - times["SubmitTime"]).total_seconds(),
                    startup=startup,
                    work=work,
                    teardown=in_job - startup - work,
                    detect=(min(seen) - times["EndTime"]).total_seconds(),
                )
                row["overhead"] = row["startup"] + row["teardown"] + row["detect"]
        rows.append(row)
    return rows


def summarize(rows: list[dict], rule_jobs: int) -> dict:
    """Means per submission, and overhead summed over submissions per rule job."""
    timed = [r for r in rows if "overhead" in r]
    summary: dict = {"submissions": len(rows), "timed_submissions": len(timed)}
    if timed:
        for key in (*PHASES, "overhead"):
            summary[f"mean_{key}_s"] = round(sum(r[key] for r in timed) / len(timed), 1)
        summary["total_overhead_s"] = sum(r["overhead"] for r in timed)
        summary["overhead_per_rule_job_s"] = round(
            summary["total_overhead_s"] / max(rule_jobs, 1), 1
        )
    return summary
