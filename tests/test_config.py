"""Config validation: defaults filled, one clear line naming the key for every bad value."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
from snakemake.utils import update_config

from fundiff.config import load_yaml, slug, validate_config
from fundiff.errors import FundiffError

ROOT = Path(__file__).resolve().parents[1]


def default() -> dict:
    return load_yaml(ROOT / "config.yaml")


def test_default_config_gets_schema_defaults() -> None:
    cfg = validate_config(default())
    run = cfg["partB"]["runs"]["ddpm_class"]
    assert run["T"] == 300 and run["beta_start"] == 1e-4 and run["p_uncond"] == 0.1
    assert cfg["partA"]["deepfloyd"]["stage1"] == "DeepFloyd/IF-I-L-v1.0"
    # defaults are copies: filling one backend's tasks does not alias the other's
    local, df = cfg["partA"]["local"]["tasks"], cfg["partA"]["deepfloyd"]["tasks"]
    assert local["sdedit"]["i_starts"] is not df["sdedit"]["i_starts"]
    assert df["text_to_image"]["prompts"][0] == "an oil painting of a snowy mountain village"


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_presets_validate(preset: str) -> None:
    cfg = default()
    update_config(cfg, load_yaml(ROOT / "configs" / preset))
    validate_config(cfg)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (
            lambda c: c["partB"]["runs"]["ddpm_class"].update(epochs=-1),
            "partB.runs.ddpm_class.epochs",
        ),
        (lambda c: c["partA"]["local"].update(guidance="high"), "partA.local.guidance"),
        (lambda c: c.update(device="tpu"), "device"),
        (lambda c: c["partA"]["local"].update(colour=1), "partA.local.colour"),
        (
            lambda c: c["partB"]["runs"]["ddpm_class"].update(objective="gan"),
            "partB.runs.ddpm_class.objective",
        ),
        (lambda c: c["partB"]["runs"].update(my_run={"objective": "ddpm"}), "partB.runs"),
        (
            lambda c: c["partA"]["local"]["tasks"]["sdedit"].update(images=["nope"]),
            "partA.local.tasks.sdedit.images[0]",
        ),
        (
            lambda c: c["partA"]["local"]["tasks"]["inpaint"].update(images=["mnist_0"]),
            "partA.local.tasks.inpaint.images[0]",
        ),
        (lambda c: c["partA"]["local"].update(run="ddpm_time"), "partA.local.run"),
        (
            lambda c: c["partB"]["runs"]["ddpm_time"].update(snapshot_epochs=[99]),
            "partB.runs.ddpm_time.snapshot_epochs",
        ),
        (
            lambda c: c["partA"]["local"]["tasks"]["sdedit"].update(i_starts=[40]),
            "partA.local.tasks.sdedit.i_starts",
        ),
        (
            lambda c: c["partA"]["local"]["tasks"]["anagrams"]["illusions"].update(
                x={"prompts": ["a 1", "a 2"], "view": "negate"}
            ),
            "partA.local.tasks.anagrams.illusions.x.view",
        ),
        (
            lambda c: c["partA"]["local"]["tasks"]["cfg"].update(prompt="a banana"),
            "partA.local.tasks.cfg.prompt",
        ),
        (
            lambda c: c["inputs"]["drawn_3"].update(path="inputs/drawings/nope.png"),
            "inputs.drawn_3.path",
        ),
    ],
)
def test_bad_values_name_the_key(edit, key: str) -> None:
    cfg = default()
    edit(cfg)
    with pytest.raises(FundiffError) as err:
        validate_config(cfg)
    message = str(err.value)
    assert message.startswith(f"config key {key}"), message
    assert "\n" not in message


def test_validation_does_not_touch_a_valid_config_twice() -> None:
    once = validate_config(default())
    twice = validate_config(copy.deepcopy(once))
    assert once == twice


def test_slug() -> None:
    assert slug("an oil painting of an old man!") == "an_oil_painting_of_an_old_man"
    assert slug("") == "null"
    assert slug("A 7") == "a_7"


def test_validated_config_is_in_canonical_key_order() -> None:
    """The same settings in another key order give identical params (no spurious reruns)."""
    a = validate_config(default())
    raw = default()
    shuffled = {k: raw[k] for k in reversed(list(raw))}
    shuffled["partB"]["runs"] = {
        k: raw["partB"]["runs"][k] for k in reversed(list(raw["partB"]["runs"]))
    }
    b = validate_config(shuffled)
    assert repr(a) == repr(b)
    assert list(a) == sorted(a) and list(a["partB"]["runs"]) == sorted(a["partB"]["runs"])


def test_config_and_prompts_are_torch_free() -> None:
    """Parse-time modules import without torch (and config no longer imports backends)."""
    code = (
        "import sys; from fundiff.config import load_yaml, validate_config; "
        f"validate_config(load_yaml({str(ROOT / 'config.yaml')!r})); "
        "bad = {'torch', 'fundiff.backends'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ})
