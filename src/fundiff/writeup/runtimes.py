"""Step runtimes from the ``benchmark:`` files that Snakemake writes for every job.

Every model-running rule declares ``benchmark: "benchmarks/<...>.tsv"`` (its log path with
``logs/`` -> ``benchmarks/`` and ``.log`` -> ``.tsv``), so each job of the workflow owns exactly one
benchmark file, written when the job succeeds and overwritten when it reruns. The writeup job
receives ``{rule name: benchmark pattern}`` for every rule (``rules/report.smk``) and, at run time,
finds the files under each pattern's folder:

* a job that ran in an earlier invocation and did not rerun still has its file: counted;
* a job that reran has one file with its latest run: counted once;
* a file that matches no rule of the workflow (e.g. of a rule since renamed) is ignored;
* a job without a file (e.g. its outputs predate benchmarks) is not counted.

Snakemake's TSV format (``snakemake/benchmark.py``): a header ``s  h:m:s  max_rss  max_vms ...``
and one row per repeat; ``s`` = wall-clock seconds, ``max_rss`` = peak resident memory in MB
(``NA`` when the job ended before the first sample). The file's mtime is when the job finished.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from fundiff.errors import FundiffError
from fundiff.writeup.model import JobRuntime, Table

#: Regex of a wildcard whose pattern gives no constraint (Snakemake's default).
_DEFAULT_WILDCARD = ".+"


def pattern_regex(pattern: str) -> tuple[re.Pattern[str], list[str], int]:
    """Compile a Snakemake file pattern to an anchored regex.

    ``pattern`` uses ``{name}`` and ``{name,regex}`` wildcards (the constraint may itself hold
    braces, e.g. ``{n,\\d{2}}``); ``{{``/``}}`` are literal braces. Returns ``(regex, wildcard
    names in order, number of literal characters)``; the last ranks overlapping patterns (the
    more literal one is the more specific, as in Snakemake).
    """
    out: list[str] = []
    names: list[str] = []
    literal = 0
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith(("{{", "}}"), i):
            out.append(re.escape(c))
            literal += 1
            i += 2
            continue
        if c != "{":
            out.append(re.escape(c))
            literal += 1
            i += 1
            continue
        depth, j = 1, i + 1
        while j < len(pattern) and depth:
            depth += {"{": 1, "}": -1}.get(pattern[j], 0)
            j += 1
        if depth:
            raise FundiffError(f"benchmark pattern {pattern!r} has an unclosed '{{'")
        name, _, constraint = pattern[i + 1 : j - 1].partition(",")
        name = name.strip()
        if name in names:
            out.append(f"(?P={name})")
        else:
            names.append(name)
            out.append(f"(?P<{name}>{constraint.strip() or _DEFAULT_WILDCARD})")
        i = j
    try:
        return re.compile("".join(out) + r"\Z"), names, literal
    except re.error as exc:
        raise FundiffError(f"benchmark pattern {pattern!r} is not a valid pattern: {exc}") from exc


def read_benchmark(path: str | os.PathLike[str]) -> tuple[float, float | None, int]:
    """``(seconds, max_rss_mb, repeats)`` of one Snakemake benchmark TSV.

    Seconds are summed over the rows (one per ``repeat``); max RSS is the largest numeric
    ``max_rss`` (None when every row says ``NA``/``-``). A file that is not in Snakemake's format
    raises FundiffError naming it.
    """
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FundiffError(f"benchmark file {p} is not readable: {exc}") from exc
    if not rows or "s" not in rows[0] or "max_rss" not in rows[0]:
        raise FundiffError(
            f"benchmark file {p} is not a Snakemake benchmark (expected a header 's<TAB>h:m:s"
            "<TAB>max_rss...' and one row per run)"
        )
    seconds, rss = 0.0, []
    for n, row in enumerate(rows, start=2):
        try:
            seconds += float(row["s"])
        except (TypeError, ValueError) as exc:
            raise FundiffError(f"benchmark file {p} line {n}: bad seconds ({exc})") from exc
        try:
            rss.append(float(row["max_rss"]))
        except (TypeError, ValueError):
            pass  # "NA": the job ended before the first memory sample
    return seconds, (max(rss) if rss else None), len(rows)


def read_benchmarks(
    patterns: Mapping[str, str], root: str | os.PathLike[str] = "."
) -> list[JobRuntime]:
    """Every job's runtime from the benchmark files that match ``patterns`` (rule -> pattern).

    Pattern paths are relative to ``root`` (the workflow's working directory) unless absolute.
    Each file counts once, for the rule whose pattern matches it most specifically (most
    literal characters; a tie between two rules raises FundiffError naming both). Returns jobs
    sorted by start time (finish time minus duration), then rule and job.
    """
    compiled = {rule: pattern_regex(str(pat)) for rule, pat in patterns.items()}
    folders = {str(pat).split("{", 1)[0].rpartition("/")[0] for pat in patterns.values()}
    root = Path(root)
    candidates: set[str] = set()
    for folder in folders:
        absolute = os.path.isabs(folder)
        for dirpath, _dirnames, filenames in os.walk(Path(folder) if absolute else root / folder):
            for fn in filenames:
                f = Path(dirpath, fn)
                candidates.add(f.as_posix() if absolute else f.relative_to(root).as_posix())
    jobs = []
    for path in sorted(candidates):
        matches = []
        for rule, (regex, names, literal) in compiled.items():
            m = regex.match(path)
            if m:
                matches.append((literal, rule, ", ".join(f"{n}={m.group(n)}" for n in names)))
        if not matches:
            continue
        matches.sort(reverse=True)
        if len(matches) > 1 and matches[0][0] == matches[1][0]:
            raise FundiffError(
                f"benchmark file {path} matches rules {matches[0][1]!r} and {matches[1][1]!r} "
                "equally: give their benchmark: paths distinct folders"
            )
        _literal, rule, job = matches[0]
        full = Path(path) if os.path.isabs(path) else root / path
        seconds, rss, repeats = read_benchmark(full)
        jobs.append(JobRuntime(rule, job, path, seconds, full.stat().st_mtime, rss, repeats))
    return sorted(jobs, key=lambda j: (j.start, j.rule, j.job))


def fmt_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def fmt_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _fmt_mb(mb: float | None) -> str:
    return "–" if mb is None else f"{mb:.0f} MB"


def run_span(jobs: Sequence[JobRuntime]) -> str:
    """One line: how many jobs, from the first start to the last finish, summed seconds."""
    if not jobs:
        return ""
    start = min(j.start for j in jobs)
    end = max(j.finished for j in jobs)
    summed = sum(j.seconds for j in jobs)
    return (
        f"{len(jobs)} jobs between {fmt_time(start)} and {fmt_time(end)} "
        f"({fmt_seconds(end - start)} wall clock, {fmt_seconds(summed)} summed)"
    )


def runtime_tables(jobs: Sequence[JobRuntime]) -> list[Table]:
    """Two tables: per rule (jobs, total, mean, max, peak memory; then the sum over all rules)
    and per job (rule, wildcards, finish time, duration, peak memory)."""
    if not jobs:
        return []
    per_rule: dict[str, list[JobRuntime]] = {}
    for j in jobs:  # sorted by start: rules in order of their first job
        per_rule.setdefault(j.rule, []).append(j)
    rule_rows = []
    for rule, js in per_rule.items():
        secs = [j.seconds for j in js]
        rss = [j.max_rss_mb for j in js if j.max_rss_mb is not None]
        rule_rows.append(
            [
                rule,
                str(len(js)),
                fmt_seconds(sum(secs)),
                fmt_seconds(sum(secs) / len(secs)),
                fmt_seconds(max(secs)),
                _fmt_mb(max(rss) if rss else None),
            ]
        )
    total = sum(j.seconds for j in jobs)
    rule_rows.append(["all rules", str(len(jobs)), fmt_seconds(total), "", "", ""])
    job_rows = [
        [
            j.rule,
            j.job or "–",
            fmt_time(j.finished),
            fmt_seconds(j.seconds) + (f" ({j.repeats} runs)" if j.repeats > 1 else ""),
            _fmt_mb(j.max_rss_mb),
        ]
        for j in jobs
    ]
    note = (
        f"From the {len(jobs)} Snakemake benchmark files of this workflow's jobs "
        "(each job counted once; memory = peak resident set size)."
    )
    return [
        Table(
            "Runtime per rule",
            ["rule", "jobs", "total", "mean", "max", "peak memory"],
            rule_rows,
            note=note,
        ),
        Table(
            "Runtime per job",
            ["rule", "job", "finished", "duration", "peak memory"],
            job_rows,
        ),
    ]
