"""Judged Part A metrics (issue 14): each recipe's JSON ``judged`` numbers and its .npz sets,
on the oracle denoiser of test_parta with a fake judge that reads every image as one digit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_parta import RES, SCHEMA_TASKS, image, job_for, validated
from torch import Tensor, nn

from fundiff import parta, tasks
from fundiff.evaluation import judged_name

N = 5  # judged samples per job here (the schema's default is 64)


class FixedJudge(nn.Module):
    """Reads every image as ``digit`` (logits (B, 10)); counts its calls and images."""

    def __init__(self, digit: int) -> None:
        super().__init__()
        self.digit, self.calls, self.seen = digit, 0, 0
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        self.seen += len(x)
        logits = torch.zeros(len(x), 10)
        logits[:, self.digit] = 10.0
        return logits


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return validated()


def judged_job(
    config: dict[str, Any], key: str, item: str, judge: nn.Module | None, digit: int | None = 7
) -> parta.Job:
    job = job_for(config, key, item, image())
    job.settings["judge_samples"] = N
    job.judge, job.digit = judge, digit
    return job


def run(job: parta.Job, key: str, item: str, tmp: Path, with_mask: bool = False) -> dict:
    x0, mask = image(), None
    if with_mask:
        mask = torch.zeros(1, 1, RES, RES)
        mask[..., RES // 2 :] = 1
    needs_image = tasks.get(key).image is not None
    return parta.run_task(
        key,
        job,
        x0 if needs_image else None,
        mask,
        tmp / f"{item}.png",
        item=item,
        judged_dir=tmp / f"{item}_judged",
        curve_png=tmp / f"{item}.curve.png" if tasks.get(key).curve else None,
    )


def saved(tmp: Path, key: str, item: str, view: str) -> dict[str, np.ndarray]:
    with np.load(tmp / f"{item}_judged" / judged_name(key, item, view)) as z:
        return {k: z[k] for k in z.files}


def test_every_judged_task_declares_what_it_measures_and_its_sample_count() -> None:
    judged = [k for k, t in tasks.TASKS.items() if t.judge]
    assert set(judged) == {
        "sdedit", "sdedit_drawn", "inpaint", "translate", "anagrams", "hybrids", "logo"
    }  # fmt: skip
    for key in judged:
        assert tasks.get(key).measures and tasks.get(key).metrics == ("judged",)
        assert SCHEMA_TASKS[key]["properties"]["judge_samples"]["default"] == 64
    assert [k for k, t in tasks.TASKS.items() if t.curve] == ["sdedit", "sdedit_drawn"]
    cfg = validated("ci.yaml")
    assert cfg["partA"]["local"]["tasks"]["anagrams"]["judge_samples"] == 8
    assert validated()["partA"]["local"]["tasks"]["inpaint"]["judge_samples"] == 64
    assert validated()["inputs"]["mnist_7"]["digit"] == 7


@pytest.mark.parametrize("key", ["sdedit", "sdedit_drawn"])
def test_sdedit_curve_per_level_keep_source_distance_and_sets(
    config: dict[str, Any], key: str, tmp_path: Path
) -> None:
    item = config["partA"]["local"]["tasks"][key]["images"][0]
    judge = FixedJudge(7)
    numbers = run(judged_job(config, key, item, judge), key, item, tmp_path)
    levels = config["partA"]["local"]["tasks"][key]["i_starts"]
    j = numbers["judged"]
    assert len(j["keep_source"]) == len(levels) == len(numbers["mse_to_source"])
    assert all(r["value"] == 1.0 and r["n"] == N for r in j["keep_source"])
    assert j["levels"] == numbers["levels"] and numbers["levels"] == sorted(numbers["levels"])[::-1]
    assert judge.calls == 1 and judge.seen == N * len(levels)  # one batched judge call
    # the oracle denoises back to the source: tiny distance at every level
    assert max(numbers["mse_to_source"]) < 1e-3
    assert (tmp_path / f"{item}.curve.png").stat().st_size > 1000
    files = sorted(p.name for p in (tmp_path / f"{item}_judged").iterdir())
    assert len(files) == len(levels)
    z = saved(tmp_path, key, item, f"level{j['levels'][0]:g}")
    assert z["images"].shape == (N, RES, RES) and z["images"].dtype == np.uint8
    assert (z["labels"] == 7).all()
    wrong = run(judged_job(config, key, item, FixedJudge(3)), key, item, tmp_path / "w")
    assert all(r["value"] == 0.0 for r in wrong["judged"]["keep_source"])


def test_inpainting_source_class_outside_mask_and_hole_baseline(
    config: dict[str, Any], tmp_path: Path
) -> None:
    numbers = run(judged_job(config, "inpaint", "mnist_7", FixedJudge(7)), "inpaint", "mnist_7",
                  tmp_path, with_mask=True)  # fmt: skip
    j = numbers["judged"]
    assert j["source_class"]["n"] == N and j["source_class"]["value"] == 1.0
    assert j["baseline"]["n"] == 1 and j["lift"] == 1.0
    assert 0 <= j["mse_outside_mask"] < 1e-3
    assert numbers["n"] == config["partA"]["local"]["tasks"]["inpaint"]["n"]  # figure unchanged
    assert saved(tmp_path, "inpaint", "mnist_7", "inpainted")["images"].shape[0] == N
    assert saved(tmp_path, "inpaint", "mnist_7", "baseline")["images"].shape[0] == 1


def test_translation_target_vs_plain_samples_and_curve(
    config: dict[str, Any], tmp_path: Path
) -> None:
    item = next(iter(config["partA"]["local"]["tasks"]["translate"]["items"]))
    judge = FixedJudge(1)  # seven_to_one: every result reads as the target
    numbers = run(judged_job(config, "translate", item, judge), "translate", item, tmp_path)
    j = numbers["judged"]
    assert j["target_class"]["value"] == 1.0 and j["target_class"]["n"] == N
    assert j["baseline"]["n"] == N and j["lift"] == 1.0
    assert j["level"] == max(numbers["levels"])
    assert all(r["value"] == 1.0 for r in j["curve"]["reach_target"])
    assert all(r["value"] == 0.0 for r in j["curve"]["keep_source"])  # source 7, read as 1
    assert saved(tmp_path, "translate", item, "baseline")["labels"].tolist() == [1] * N


def test_anagram_both_views_vs_plain_sample_baseline(
    config: dict[str, Any], tmp_path: Path
) -> None:
    judge = FixedJudge(6)  # six_nine_flip: upright right, flipped (9) wrong
    numbers = run(judged_job(config, "anagrams", "six_nine_flip", judge), "anagrams",
                  "six_nine_flip", tmp_path)  # fmt: skip
    j, shown = numbers["judged"], config["partA"]["local"]["tasks"]["anagrams"]["n"]
    n = max(N, shown)  # judged: at least the figure's seeds
    assert j["upright"]["value"] == 1.0 and j["view"]["value"] == 0.0
    assert j["success"] == {**j["success"], "value": 0.0, "k": 0, "n": n}
    assert j["baseline"]["n"] == n and j["baseline"]["value"] == 0.0 and j["lift"] is None
    assert numbers["n"] == shown
    # the JSON records the scale the job sampled with: the task's own, not passed as a backend key
    own = config["partA"]["local"]["tasks"]["anagrams"]["guidance"]
    assert own is not None and own != config["partA"]["local"]["guidance"]
    assert numbers["guidance"] == own
    for view in ("upright", "view", "baseline_upright", "baseline_view"):
        assert saved(tmp_path, "anagrams", "six_nine_flip", view)["images"].shape[0] == n


def test_hybrid_both_readings_vs_baseline(config: dict[str, Any], tmp_path: Path) -> None:
    item, pair = next(iter(config["partA"]["local"]["tasks"]["hybrids"]["pairs"].items()))
    high = int(pair["high"].split()[-1])
    numbers = run(judged_job(config, "hybrids", item, FixedJudge(high)), "hybrids", item, tmp_path)
    j, n = numbers["judged"], max(N, config["partA"]["local"]["tasks"]["hybrids"]["n"])
    assert j["near"]["value"] == 1.0 and j["far"]["value"] == 0.0 and j["success"]["value"] == 0.0
    assert j["baseline"]["n"] == n
    for view in ("far", "near", "baseline_far", "baseline_near"):
        assert saved(tmp_path, "hybrids", item, view)["labels"].shape == (n,)


def test_without_a_judge_or_digit_the_metric_is_na_and_no_set_is_saved(
    config: dict[str, Any], tmp_path: Path
) -> None:
    numbers = run(judged_job(config, "sdedit", "mnist_7", None), "sdedit", "mnist_7", tmp_path)
    assert numbers["judged"]["judged"] is False and numbers["judged"]["value"] is None
    assert list((tmp_path / "mnist_7_judged").iterdir()) == []
    assert (tmp_path / "mnist_7.curve.png").exists()  # distance only
    job = judged_job(config, "inpaint", "mnist_7", FixedJudge(7), digit=None)
    no_digit = run(job, "inpaint", "mnist_7", tmp_path / "d", with_mask=True)
    assert "digit" in no_digit["judged"]["note"] and no_digit["judged"]["n"] == 0
