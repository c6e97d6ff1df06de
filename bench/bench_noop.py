"""Benchmark: how fast Snakemake starts on this workflow when there is nothing (new) to do.

In a fresh copy of the working tree (tracked + untracked files), measured against baselines
taken in the same run on the same (possibly loaded) machine:

- baseline: `python -c pass` and `snakemake --version` (Python and Snakemake's own start-up);
- dry_run: `snakemake -n` on configs/course-fa24.yaml (target < 3 s);
- noop: `snakemake --cores 2 --configfile configs/ci.yaml` right after a complete CI run of
  the same copy, with nothing left to do (target < 5 s). `--skip-run` leaves this out
  (the complete tiny run takes minutes on 2 cores);
- parse_imports: the modules `python -X importtime` shows for the course dry run: no torch,
  diffusers, transformers or accelerate (tests/test_parse_imports.py enforces it), and the
  slowest top-level imports.

Each timing is the best of REPEATS wall-clock runs. SLURM installed but not running makes every
Snakemake start wait ~10 s for `scontrol` (docs/slurm.md): that probe is timed too, and a
shim that fails at once is put first on PATH for the timings (`--no-shim` keeps the real one).

    .venv/bin/python bench/bench_noop.py [--skip-run] [--no-shim]

Prints JSON to stdout and writes bench/results/noop.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
REPEATS = 3
HEAVY = ("torch", "diffusers", "transformers", "accelerate")
TARGETS_S = {"dry_run": 3.0, "noop": 5.0}


def copy_tree(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, files.split("\0")):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def env(shim: Path | None) -> dict[str, str]:
    out = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    path = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    out["PATH"] = f"{shim}{os.pathsep}{path}" if shim else path
    out["PYTHONPATH"] = f"{REPO / 'src'}{os.pathsep}{out.get('PYTHONPATH', '')}"
    return out


def timed(cmd: list[str], cwd: Path, environ: dict, repeats: int = REPEATS) -> dict:
    """Best and all wall times (s) of `cmd`; fails loudly if it fails."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run = subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if run.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stdout[-2000:]}{run.stderr[-3000:]}")
    return {"best_s": round(min(times), 2), "all_s": [round(t, 2) for t in times], "out": run}


def import_profile(cwd: Path, environ: dict) -> dict:
    """Heavy modules imported by a course dry run, and the slowest top-level imports."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "snakemake", "-n"]
        + ["--configfile", "configs/course-fa24.yaml"],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
    )
    rows = re.findall(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", run.stderr)
    modules = {name for _self, _cum, _ind, name in rows}
    top = sorted(((int(cum), name) for _s, cum, ind, name in rows if not ind), reverse=True)
    return {
        "heavy_imported": sorted(m for m in modules if m.split(".")[0] in HEAVY),
        "fundiff_modules": sorted(m for m in modules if m.startswith("fundiff")),
        "slowest_top_level_ms": {name: round(us / 1000) for us, name in top[:8]},
    }


def slurm_probe_s() -> float | None:
    """Seconds `scontrol show config` takes (None: no scontrol on PATH)."""
    if not shutil.which("scontrol"):
        return None
    start = time.perf_counter()
    subprocess.run(["scontrol", "show", "config"], capture_output=True, check=False, timeout=60)
    return round(time.perf_counter() - start, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-run", action="store_true", help="no complete CI run / no-op")
    parser.add_argument("--no-shim", action="store_true", help="keep the real scontrol")
    args = parser.parse_args()
    snakemake = [sys.executable, "-m", "snakemake"]
    result: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_before": os.getloadavg(),
        },
        "targets_s": TARGETS_S,
        "scontrol_probe_s": slurm_probe_s(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        ws = copy_tree(Path(tmp) / "repo")
        shim = None
        if not args.no_shim:
            shim = Path(tmp) / "shim"
            shim.mkdir()
            (shim / "scontrol").write_text("#!/bin/sh\nexit 1\n")
            (shim / "scontrol").chmod(0o755)
        environ = env(shim)
        base = {
            "python": timed([sys.executable, "-c", "pass"], ws, environ),
            "snakemake_version": timed([*snakemake, "--version"], ws, environ),
        }
        result["baseline"] = {
            k: {"best_s": v["best_s"], "all_s": v["all_s"]} for k, v in base.items()
        }
        start_up = base["snakemake_version"]["best_s"]
        dry = timed([*snakemake, "-n", "--configfile", "configs/course-fa24.yaml"], ws, environ)
        result["dry_run"] = {
            "best_s": dry["best_s"],
            "all_s": dry["all_s"],
            "over_snakemake_start_s": round(dry["best_s"] - start_up, 2),
            "ratio_to_snakemake_start": round(dry["best_s"] / start_up, 2),
            "ok": dry["best_s"] < TARGETS_S["dry_run"],
        }
        result["parse_imports"] = import_profile(ws, environ)
        if not args.skip_run:
            subprocess.run(
                [sys.executable, "-m", "fundiff.tiny_if", str(ws / "tiny_if")],
                env=environ,
                check=True,
                capture_output=True,
            )
            full = [*snakemake, "--cores", "2", "--configfile", "configs/ci.yaml"]
            start = time.perf_counter()
            subprocess.run([*full, "-q"], cwd=ws, env=environ, check=True, capture_output=True)
            result["complete_ci_run_s"] = round(time.perf_counter() - start, 1)
            noop = timed(full, ws, environ)
            text = noop["out"].stdout + noop["out"].stderr
            result["noop"] = {
                "best_s": noop["best_s"],
                "all_s": noop["all_s"],
                "over_snakemake_start_s": round(noop["best_s"] - start_up, 2),
                "ratio_to_snakemake_start": round(noop["best_s"] / start_up, 2),
                "nothing_to_do": "Nothing to be done" in text,
                "ok": noop["best_s"] < TARGETS_S["noop"],
            }
    result["machine"]["load_avg_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "noop.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
