"""Benchmark: SLURM submissions and overhead, the previous slurm-local profile vs the current one.

Two parts, both with the profile of an older commit ("before", default BASE_REV) and the
current `profiles/slurm-local` ("after"):

- planned: how many sbatch submissions a full run of configs/ci.yaml and of
  configs/course-fa24.yaml would make (a dry run; no cluster needed): every job that is not a
  local rule and not in a group job, plus one per group job;
- measured (root only; `--planned-only` skips it): the SLURM integration test's slice of the
  CI workflow on the local cluster (tests/slurm/cluster.sh), once per profile, recording jobs
  submitted, wall time and where each submission's time goes (tests/slurm_timing.py:
  queue, start-up, work, teardown, status-poll detection).

    sudo -E .venv/bin/python bench/bench_slurm.py                 # both, a few minutes per profile
    .venv/bin/python bench/bench_slurm.py --planned-only          # seconds
    sudo -E .venv/bin/python bench/bench_slurm.py --labels after  # re-measure one; keeps the other

Prints JSON to stdout and writes bench/results/slurm.json (one measured record per profile in
bench/results/slurm_<label>.json, reused by --labels).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
#: the last commit whose profiles/slurm-local submitted every job on its own
BASE_REV = "882e5ef"
PROFILE = "profiles/slurm-local"
CONFIGS = ("configs/ci.yaml", "configs/course-fa24.yaml")
TOP_BLOCK = re.compile(r"^(?:rule (\w+):|\[[^\]]*\] Group job (\w+) )", re.MULTILINE)
RULE_HEAD = re.compile(r"^rule (\w+):", re.MULTILINE)


def env() -> dict[str, str]:
    out = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    out["PYTHONPATH"] = f"{REPO / 'src'}{os.pathsep}{out.get('PYTHONPATH', '')}"
    return out


def profile_dirs(tmp: Path) -> dict[str, Path]:
    """{"before": old profile copied to tmp, "after": the current profile}."""
    old = subprocess.run(
        ["git", "show", f"{BASE_REV}:{PROFILE}/config.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (tmp / "before").mkdir()
    (tmp / "before" / "config.yaml").write_text(old)
    return {"before": tmp / "before", "after": REPO / PROFILE}


def local_rules() -> set[str]:
    """Rules that never go to SLURM: `all` and those declared `localrule: True`."""
    names = {"all"}
    for smk in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        text = smk.read_text()
        heads = list(RULE_HEAD.finditer(text))
        if not heads:
            continue
        ends = [h.start() for h in heads[1:]] + [len(text)]
        for head, end in zip(heads, ends, strict=True):
            body = text[head.end() : end]
            if re.search(r"^\s+localrule:\s*True", body, re.MULTILINE):
                names.add(head.group(1))
    return names


def planned_submissions(profile: Path, config: str) -> dict:
    """Submissions of a full run from a dry run: ungrouped non-local jobs + group jobs."""
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--workflow-profile", str(profile)]
        + ["--configfile", config],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise SystemExit(f"dry run failed ({profile}, {config}):\n{run.stderr[-3000:]}")
    text = run.stdout + run.stderr
    local = local_rules()
    rules = collections.Counter(m.group(1) for m in TOP_BLOCK.finditer(text) if m.group(1))
    groups = collections.Counter(m.group(2) for m in TOP_BLOCK.finditer(text) if m.group(2))
    members = len(re.findall(r"^    rule \w+:", text, re.MULTILINE))
    ungrouped = sum(n for r, n in rules.items() if r not in local)
    return {
        "submissions": ungrouped + sum(groups.values()),
        "ungrouped_jobs": ungrouped,
        "group_jobs": dict(groups),
        "grouped_rule_jobs": members,
        "local_jobs": sum(n for r, n in rules.items() if r in local),
    }


def measure(label: str, profile: Path) -> dict:
    """The integration test's SLURM slice with `profile`; its record (tests/test_slurm.py)."""
    record = RESULTS / f"slurm_{label}.json"
    record.unlink(missing_ok=True)
    started = dt.datetime.now().isoformat(timespec="seconds")
    test = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "slurm", "-q", "-x", "-p", "no:cacheprovider"]
        + ["tests/test_slurm.py", "-k", "test_all_jobs_complete_on_slurm"],
        cwd=REPO,
        env=dict(env(), FUNDIFF_SLURM_PROFILE=str(profile), FUNDIFF_SLURM_RECORD=str(record)),
        capture_output=True,
        text=True,
        check=False,
    )
    if not record.is_file():
        raise SystemExit(f"no record from the SLURM test ({label}):\n{test.stdout[-3000:]}")
    data = json.loads(record.read_text())
    data.update(label=label, started=started, test_passed=test.returncode == 0)
    record.write_text(json.dumps(data, indent=1))
    return data


def headline(rec: dict) -> dict:
    keys = ("slurm_wall_s", "local_wall_s", "jobs_total", "rule_jobs_on_slurm", "jobs_submitted")
    out = {k: rec.get(k) for k in keys}
    out.update(rec.get("summary", {}))
    out["started"] = rec.get("started")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--planned-only", action="store_true", help="dry runs only")
    parser.add_argument("--labels", default="before,after", help="profiles to measure")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg": os.getloadavg(),
        },
        "base_rev": BASE_REV,
    }
    with tempfile.TemporaryDirectory() as tmp:
        profiles = profile_dirs(Path(tmp))
        result["planned"] = {
            label: {cfg: planned_submissions(prof, cfg) for cfg in CONFIGS}
            for label, prof in profiles.items()
        }
        for cfg in CONFIGS:
            before = result["planned"]["before"][cfg]["submissions"]
            after = result["planned"]["after"][cfg]["submissions"]
            result["planned"][f"ratio {cfg}"] = round(before / after, 2)
        if not args.planned_only:
            measured = {}
            for label, prof in profiles.items():
                if label in args.labels.split(","):
                    measured[label] = measure(label, prof)
                elif (RESULTS / f"slurm_{label}.json").is_file():
                    measured[label] = json.loads((RESULTS / f"slurm_{label}.json").read_text())
            result["measured"] = {label: headline(rec) for label, rec in measured.items()}
    print(json.dumps(result, indent=1))
    (RESULTS / "slurm.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
