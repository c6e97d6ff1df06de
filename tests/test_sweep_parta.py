"""bench/sweep_parta.py: a sweep point is the workflow's config with exactly its overrides, at the
level a job reads them (item, task or backend), so a point at the config's values is the job."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fundiff import tasks
from fundiff.config import load_yaml, validate_config

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("sweep_parta", ROOT / "bench/sweep_parta.py")
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)


@pytest.fixture(scope="module")
def config() -> dict:
    return validate_config(load_yaml(ROOT / "config.yaml"))


def test_grid_parses_numbers_and_names() -> None:
    grid = sweep.parse_grid(["guidance=3,7.5", "variance=posterior,model", "stride=15"])
    assert grid == {"guidance": [3, 7.5], "variance": ["posterior", "model"], "stride": [15]}
    with pytest.raises(SystemExit, match="key=v1,v2"):
        sweep.parse_grid(["guidance"])


def test_point_overrides_reach_the_jobs_params_and_nothing_else(config: dict) -> None:
    point = {"guidance": 7.0, "variance": "model", "stride": 15, "sigma": 2.0}
    cfg = sweep.point_config(config, "local", "hybrids", "eight_three", point)
    params = tasks.job_params(cfg, "local", "hybrids", "eight_three")
    assert params["settings"]["guidance"] == 7.0
    assert params["settings"]["item"]["sigma"] == 2.0
    assert params["backend"]["variance"] == "model"
    assert params["backend"]["timesteps"] == {"start": 990, "stride": 15}
    assert config["partA"]["local"]["variance"] == "posterior"  # the input is not modified
    # an item with its own scale gets the point's scale there (an item's beats its task's)
    cfg = sweep.point_config(config, "local", "anagrams", "six_nine_flip", {})
    cfg["partA"]["local"]["tasks"]["anagrams"]["illusions"]["six_nine_flip"]["guidance"] = 9.0
    cfg = sweep.point_config(cfg, "local", "anagrams", "six_nine_flip", {"guidance": 4.0})
    job = tasks.job_params(cfg, "local", "anagrams", "six_nine_flip")
    assert job["settings"]["item"]["guidance"] == 4.0


def test_markdown_table_has_a_row_per_point() -> None:
    rows = [
        {"task": "inpaint", "item": "mnist_4", "point": {"repaint_jumps": j}, "value": v,
         "ci95": [v - 0.1, v + 0.05], "baseline": 1.0, "seconds": 7.0}
        for j, v in ((0, 0.72), (5, 0.92))
    ]  # fmt: skip
    text = sweep.markdown(rows, ["repaint_jumps"])
    lines = text.strip().splitlines()
    assert lines[0].startswith("| task | item | repaint_jumps | rate |") and len(lines) == 4
    assert "| inpaint | mnist_4 | 5 | 0.92 | [0.82, 0.97] | 1.00 | 7.0 |" in text
