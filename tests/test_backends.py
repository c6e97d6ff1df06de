"""Backends: digit prompts of the local model, per-prompt DeepFloyd embeddings with one T5 load."""

from __future__ import annotations

from pathlib import Path

import pytest
from snakemake.utils import update_config

from fundiff import backends
from fundiff.config import all_prompts, load_yaml, prompt_key, task_prompts, validate_config
from fundiff.errors import FundiffError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("prompt", "digit"),
    [
        ("a 7", 7),
        ("seven", 7),
        ("digit 7", 7),
        ("the digit 7", 7),
        ("An 8", 8),
        ("3", 3),
        ("", None),
        ("  ", None),
        ("a zero", 0),
    ],
)
def test_digit_prompts(prompt: str, digit: int | None) -> None:
    assert backends.parse_digit_prompt(prompt) == digit


@pytest.mark.parametrize("prompt", ["a banana", "77", "a 7 and an 8", "digit"])
def test_unknown_digit_prompt_lists_accepted_forms(prompt: str) -> None:
    with pytest.raises(FundiffError, match="accepted forms: '' \\(unconditional\\), 'a 7'"):
        backends.parse_digit_prompt(prompt)


def test_job_prompts_cover_cfg_null_and_base() -> None:
    cfg = load_yaml(ROOT / "config.yaml")
    update_config(cfg, load_yaml(ROOT / "configs/course-fa24.yaml"))
    cfg = validate_config(cfg)
    bcfg = cfg["partA"]["deepfloyd"]
    assert task_prompts(bcfg, "anagrams", "old_man_campfire") == sorted(
        [
            "",
            "a high quality photo",
            "an oil painting of an old man",
            "an oil painting of people around a campfire",
        ]
    )
    assert task_prompts(bcfg, "one_step", "astronaut") == ["", "a high quality photo"]
    everything = all_prompts(bcfg)
    assert "a lithograph of a skull" in everything and "" in everything
    assert len({prompt_key(p) for p in everything}) == len(everything)
    assert prompt_key("a dog!") != prompt_key("a dog")
