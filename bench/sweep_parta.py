"""Sweep Part A settings on a trained local model and judge every point: which guidance scale,
step count, step-noise rule or RePaint jumps make each trick succeed most often.

Each point runs the task's own recipe (``fundiff.parta``) with the workflow's params for that
item (``fundiff.tasks.job_params`` on the validated config plus the point's overrides), so a
sweep point is exactly what a job with that config would judge. Results: the headline rate
(anagrams/hybrids: both readings right; inpainting: source digit kept; translation: target
digit reached) with its Wilson interval and baseline, and seconds per point.

Usage (after a run has trained the model and the classifier)::

    python bench/sweep_parta.py [--backend local] [--n 64] [--tasks anagrams hybrids ...]
        [--grid guidance=3,5,7 stride=30,15 variance=posterior,model repaint_jumps=0,2]
        [--configfile X.yaml ...] [--out bench/results/sweep_parta.json] [--markdown FILE]

``--grid`` keys: ``guidance`` (the job's CFG scale: item, else task level), ``stride`` (of the
strided timesteps, 1000-step units), ``variance`` (backend keys) and any task setting (``repaint_jumps``, ``sigma`` of a hybrid
pair ...); every combination is run. Writes JSON (and a Markdown table with ``--markdown``).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from fundiff.writeup.evaluation import HEADLINE as WRITEUP_HEADLINE

ROOT = Path(__file__).resolve().parents[1]

#: the tasks a sweep tunes, and the judged number of each (the writeup's headline rate)
TUNED = ("anagrams", "hybrids", "inpaint", "translate")
HEADLINE = {task: WRITEUP_HEADLINE[task][0] for task in TUNED}
BACKEND_KEYS = ("variance",)


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``key=v1,v2`` strings -> {key: [values]} (numbers parsed, the rest kept as text)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, _, values = item.partition("=")
        if not values:
            raise SystemExit(f"--grid {item!r}: expected key=v1,v2")
        grid[key] = [
            json.loads(v) if v[:1].isdigit() or v[:1] == "-" else v for v in values.split(",")
        ]
    return grid


def point_config(config: dict, backend: str, task: str, item: str, point: dict) -> dict:
    """The config with one sweep point's overrides applied to ``backend`` / ``task`` / ``item``."""
    cfg = copy.deepcopy(config)
    bcfg = cfg["partA"][backend]
    tcfg = bcfg["tasks"][task]
    container = tcfg.get("illusions") or tcfg.get("pairs") or tcfg.get("items") or {}
    for key, value in point.items():
        if key == "guidance":  # the job's own scale: the item's if it has one, else the task's
            tcfg["guidance"] = value
            if "guidance" in container.get(item, {}):
                container[item]["guidance"] = value
        elif key in BACKEND_KEYS:
            bcfg[key] = value
        elif key == "stride":
            bcfg["timesteps"] = {
                "start": bcfg["timesteps"]["start"] // value * value,
                "stride": value,
            }
        elif key in tcfg:
            tcfg[key] = value
        else:  # an item setting (e.g. a hybrid pair's sigma)
            container[item][key] = value
    return cfg


def judge_point(
    config: dict, backend: str, task: str, item: str, denoiser: Any, judge: Any
) -> dict:
    from fundiff import parta, tasks

    params = tasks.job_params(config, backend, task, item)
    job, image, mask = parta.prepare_job(
        backend, params, denoiser, judge=judge, with_mask=tasks.get(task).mask
    )
    start = time.perf_counter()
    _, numbers = parta.recipe(task)(job, image, mask)
    seconds = time.perf_counter() - start
    judged = numbers["judged"]
    headline = judged[HEADLINE[task]]
    base = judged.get("baseline")
    return {
        "value": headline["value"],
        "k": headline["k"],
        "n": headline["n"],
        "ci95": headline["ci95"],
        "baseline": base["value"] if base else None,
        "seconds": round(seconds, 2),
    }


def markdown(rows: list[dict], grid_keys: list[str]) -> str:
    head = ["task", "item", *grid_keys, "rate", "95% CI", "baseline", "s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["task"], r["item"], *(str(r["point"].get(k, "")) for k in grid_keys)]
        lo, hi = r["ci95"]
        base = "" if r["baseline"] is None else f"{r['baseline']:.2f}"
        cells += [f"{r['value']:.2f}", f"[{lo:.2f}, {hi:.2f}]", base, f"{r['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backend", default="local", choices=["local", "local_fm"])
    ap.add_argument("--results", default="results", help="the run's results folder")
    ap.add_argument("--configfile", nargs="*", default=[], help="overlays on config.yaml")
    ap.add_argument("--tasks", nargs="*", default=list(HEADLINE))
    ap.add_argument("--items", nargs="*", default=None, help="only these items")
    ap.add_argument("--grid", nargs="*", default=["guidance=3,5,7"])
    ap.add_argument("--n", type=int, default=64, help="judged samples per point")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench/results/sweep_parta.json"))
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args(argv)

    from fundiff.backends import load_backend
    from fundiff.config import load_yaml, validate_config
    from fundiff.configfiles import merge_overlay
    from fundiff.evaluation import load_classifier
    from fundiff.runtime import start_job
    from fundiff.tasks import items as task_items

    start_job(args.threads)  # as the jobs run
    config = load_yaml(ROOT / "config.yaml")
    for extra in args.configfile:
        merge_overlay(config, load_yaml(extra))
    config = validate_config(config)
    bcfg = config["partA"][args.backend]
    results = Path(args.results)
    model = results / "partB" / bcfg["run"] / "model.safetensors"
    judge = load_classifier(results / "partB/classifier/model.safetensors")
    spec = config["partB"]["runs"][bcfg["run"]]
    schedule = {k: spec[k] for k in ("T", "beta_start", "beta_end")}
    denoiser = load_backend(args.backend, {"device": "cpu", "schedule": schedule}, {"model": model})
    grid = parse_grid(args.grid)
    keys = list(grid)
    rows = []
    for task in args.tasks:
        bcfg["tasks"][task]["judge_samples"] = args.n
        for item in task_items(bcfg, task):
            if args.items and item not in args.items:
                continue
            for values in itertools.product(*grid.values()):
                point = dict(zip(keys, values, strict=True))
                cfg = point_config(config, args.backend, task, item, point)
                got = judge_point(cfg, args.backend, task, item, denoiser, judge)
                rows.append({"task": task, "item": item, "point": point, **got})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
        "backend": args.backend,
        "model": str(model),
        "n": args.n,
        "grid": grid,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows, keys))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
