"""Step runtimes from Snakemake's file persistence (``.snakemake/metadata``).

One JSON record per output file, named by ``base64.urlsafe_b64encode(output_path)`` and split
into ``@``-prefixed directory chunks when longer than the file-name limit (Snakemake 9,
``persistence/file.py``).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fundiff.writeup.model import StepTiming, Table


def _decode_record_name(rel_parts: Sequence[str]) -> str | None:
    """Invert Snakemake's ``FilePersistence._record_path`` (urlsafe base64, '@' chunk dirs)."""
    chunks = [p[1:] if p.startswith("@") else p for p in rel_parts[:-1]] + [rel_parts[-1]]
    b64 = "".join(chunks)
    try:
        return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _dir_prefix(folder: str | os.PathLike[str] | None) -> str | None:
    """``folder`` relative to the current directory, as a posix prefix ending in '/'."""
    if folder is None or str(folder) in ("", "."):
        return None
    path = os.path.relpath(folder) if os.path.isabs(folder) else os.path.normpath(folder)
    return Path(path).as_posix().rstrip("/") + "/"


def read_runtimes(
    metadata_dir: str | os.PathLike[str],
    *,
    under: str | os.PathLike[str] | None = None,
    exclude: str | os.PathLike[str] | None = None,
) -> list[StepTiming]:
    """Finished jobs recorded in Snakemake's ``.snakemake/metadata`` (file persistence).

    Records of the same job (one per output file; same rule, ``job_hash`` and start time) are
    merged. ``under`` keeps only outputs whose path (relative to the current directory) lies
    below that folder, and ``exclude`` drops those below another (e.g. the writeup's own
    folder, whose previous record is stale while it is being rebuilt). Incomplete, corrupt or undecodable records are skipped. Returns jobs
    sorted by start time; an absent folder gives an empty list.
    """
    root = Path(metadata_dir)
    if not root.is_dir():
        return []
    prefix, skip = _dir_prefix(under), _dir_prefix(exclude)
    jobs: dict[tuple[Any, ...], dict[str, Any]] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for fn in filenames:
            rec_path = Path(dirpath) / fn
            rel = rec_path.relative_to(root).parts
            target = _decode_record_name(rel)
            if target is None:
                continue
            try:
                rec = json.loads(rec_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                continue
            start, end, rule = rec.get("starttime"), rec.get("endtime"), rec.get("rule")
            if rec.get("incomplete") or start is None or end is None or not rule:
                continue
            if os.path.isabs(target):
                try:
                    target = os.path.relpath(target)
                except ValueError:
                    pass
            target = Path(target).as_posix()
            if prefix is not None and not target.startswith(prefix):
                continue
            if skip is not None and target.startswith(skip):
                continue
            key = (rule, rec.get("job_hash"), round(float(start), 3))
            job = jobs.setdefault(
                key, {"rule": rule, "outputs": [], "start": float(start), "end": float(end)}
            )
            job["outputs"].append(target)
            job["end"] = max(job["end"], float(end))
    timings = [
        StepTiming(j["rule"], tuple(sorted(j["outputs"])), j["start"], j["end"])
        for j in jobs.values()
    ]
    return sorted(timings, key=lambda t: (t.start, t.rule, t.outputs))


def fmt_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def fmt_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def runtime_tables(timings: Sequence[StepTiming]) -> list[Table]:
    """Two tables: per rule (jobs, total, mean, max) and per job (rule, output, start, duration)."""
    if not timings:
        return []
    per_rule: dict[str, list[float]] = {}
    for t in timings:
        per_rule.setdefault(t.rule, []).append(t.duration)
    first_start = {r: min(t.start for t in timings if t.rule == r) for r in per_rule}
    rule_rows = [
        [
            rule,
            str(len(d)),
            fmt_seconds(sum(d)),
            fmt_seconds(sum(d) / len(d)),
            fmt_seconds(max(d)),
        ]
        for rule, d in sorted(per_rule.items(), key=lambda kv: first_start[kv[0]])
    ]
    total = sum(t.duration for t in timings)
    rule_rows.append(["all rules", str(len(timings)), fmt_seconds(total), "", ""])
    job_rows = [
        [
            t.rule,
            t.outputs[0] + (f" (+{len(t.outputs) - 1})" if len(t.outputs) > 1 else ""),
            fmt_time(t.start),
            fmt_seconds(t.duration),
        ]
        for t in timings
    ]
    return [
        Table("Runtime per rule", ["rule", "jobs", "total", "mean", "max"], rule_rows),
        Table("Runtime per job", ["rule", "output", "start", "duration"], job_rows),
    ]
