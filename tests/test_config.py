"""Config validation: defaults filled, one clear line naming the key for every bad value."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from snakemake.utils import update_config

from fundiff.config import load_schema, load_yaml, slug, validate_config
from fundiff.configfiles import assemble_config, check_workdir, coerce_cli_values, merge_overlay
from fundiff.errors import FundiffError

from conftest import copy_repo, tool_env

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
        # every number finite (NaN passes every schema bound)
        (lambda c: c["partA"]["local"].update(guidance=float("nan")), "partA.local.guidance"),
        (
            lambda c: c["partA"]["deepfloyd"].update(guidance=float("inf")),
            "partA.deepfloyd.guidance",
        ),
        (
            lambda c: c["partB"]["runs"]["fm_class"].update(lr=float("nan")),
            "partB.runs.fm_class.lr",
        ),
        (
            lambda c: c["partB"].update(noising_sigmas=[0.1, float("-inf")]),
            "partB.noising_sigmas[1]",
        ),
        # integers are ints (range(2.0) fails at run time)
        (
            lambda c: c["partB"]["runs"]["ddpm_class"].update(epochs=2.0),
            "partB.runs.ddpm_class.epochs",
        ),
        # seeds every RNG accepts
        (lambda c: c.update(seed=2**64), "seed"),
        (lambda c: c.update(seed=-1), "seed"),
        # item names become file names
        (
            lambda c: c["partA"]["local"]["tasks"]["translate"]["items"].update(
                {"a/b": {"image": "mnist_7", "prompt": "a 1"}}
            ),
            "partA.local.tasks.translate.items.a/b",
        ),
        (
            lambda c: c["partA"]["local"]["tasks"]["anagrams"]["illusions"].update(
                {"my illusion": {"prompts": ["a 1", "a 7"]}}
            ),
            "partA.local.tasks.anagrams.illusions.my illusion",
        ),
        (
            lambda c: c["partA"]["local"]["tasks"]["hybrids"]["pairs"].update(
                {"..": {"low": "a 1", "high": "a 7"}}
            ),
            "partA.local.tasks.hybrids.pairs...",
        ),
        (lambda c: c["inputs"].update(_x={"path": "inputs/digits/x.png"}), "inputs._x"),
        # run-time-only failures, now caught before any job
        (
            lambda c: c["partB"]["runs"]["ddpm_time"].update(beta_start=0.03),
            "partB.runs.ddpm_time.beta_start",
        ),
        (
            lambda c: c["partB"]["runs"]["ddpm_time"].update(beta_end=1.5),
            "partB.runs.ddpm_time.beta_end",
        ),
        (
            lambda c: c["partA"]["local"]["tasks"]["iterative"].update(i_start=33),
            "partA.local.tasks.iterative.i_start",
        ),
        (
            lambda c: c["partA"]["local"]["tasks"]["blur"].update(kernel_sizes=[3, 4]),
            "partA.local.tasks.blur.kernel_sizes",
        ),
        (
            lambda c: c["partA"]["local"]["tasks"]["hybrids"]["pairs"]["eight_three"].update(
                sigma=0
            ),
            "partA.local.tasks.hybrids.pairs.eight_three.sigma",
        ),
        (
            lambda c: c["partA"]["local"]["tasks"]["hybrids"]["pairs"]["eight_three"].update(
                kernel=8
            ),
            "partA.local.tasks.hybrids.pairs.eight_three.kernel",
        ),
        (
            lambda c: c["partA"]["local"]["timesteps"].update(stride=40),
            "partA.local.timesteps.stride",
        ),
        # prompts that would write the same file
        (
            lambda c: c["partA"]["local"]["tasks"]["text_to_image"].update(prompts=["a 3", "A 3!"]),
            "partA.local.tasks.text_to_image.prompts[1]",
        ),
        (
            lambda c: c["partA"]["local"]["tasks"]["sdedit"].update(images=["mnist_7", "mnist_7"]),
            "partA.local.tasks.sdedit.images",
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


def test_local_prompts_are_digits_where_a_job_uses_them() -> None:
    """An enabled task's prompt must name a digit; a disabled task's prompts are not used."""
    from fundiff.config import all_prompts

    cfg = default()
    tasks = cfg["partA"]["local"]["tasks"]
    tasks["cfg"]["prompt"] = "a banana"
    with pytest.raises(FundiffError, match=r"^config key partA.local.tasks.cfg.prompt: unknown"):
        validate_config(copy.deepcopy(cfg))
    tasks["cfg"]["enabled"] = False
    tasks["text_to_image"] = {"enabled": False}  # the schema's default prompts are text
    local = validate_config(cfg)["partA"]["local"]
    assert "a man wearing a hat" in local["tasks"]["text_to_image"]["prompts"]
    assert "a banana" not in all_prompts(local)


def test_config_and_prompts_are_torch_free() -> None:
    """Parse-time modules import without torch (and config no longer imports backends)."""
    code = (
        "import sys; from fundiff.config import load_yaml, validate_config; "
        f"validate_config(load_yaml({str(ROOT / 'config.yaml')!r})); "
        "bad = {'torch', 'fundiff.backends'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ})


def test_deepfloyd_prompts_sharing_an_embedding_file_are_refused(monkeypatch) -> None:
    """Embedding files are named slug + hash; should two names ever meet, both prompts are named."""
    import fundiff.config as config_module

    cfg = default()
    update_config(cfg, load_yaml(ROOT / "configs/ci.yaml"))
    illusions = cfg["partA"]["deepfloyd"]["tasks"]["anagrams"]["illusions"]
    illusions["shout"] = {"prompts": ["a lithograph of a skull", "A lithograph of a skull!"]}
    validate_config(copy.deepcopy(cfg))  # distinct hashes: fine
    monkeypatch.setattr(config_module, "prompt_key", slug)  # force the collision
    with pytest.raises(FundiffError, match=r"^config key partA.deepfloyd: prompts .*skull.*skull"):
        validate_config(cfg)


def test_missing_cuda_is_a_config_error_naming_device(monkeypatch) -> None:
    import torch

    from fundiff.config import check_device

    check_device("cpu")
    check_device("auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FundiffError, match=r"^config key device: 'cuda' but torch sees no CUDA"):
        check_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_device("cuda:0")
    with pytest.raises(FundiffError, match=r"^config key device: 'cuda:1' but torch sees only 1"):
        check_device("cuda:1")
    from fundiff.runtime import resolve_device

    with pytest.raises(FundiffError, match=r"^config key device: 'cuda:2'"):
        resolve_device("cuda:2")  # inside a job too (a cluster node without the GPU)


def test_duplicate_yaml_keys_are_errors_naming_the_key(tmp_path: Path) -> None:
    top = tmp_path / "top.yaml"
    top.write_text("seed: 1\ndevice: cpu\nseed: 2\n")
    with pytest.raises(FundiffError, match=r"top.yaml.*duplicate key 'seed' on lines 1 and 3"):
        load_yaml(top)
    nested = tmp_path / "nested.yaml"
    nested.write_text("partA:\n  local:\n    guidance: 1\n    guidance: 2\n")
    with pytest.raises(
        FundiffError, match=r"nested.yaml.*duplicate key 'guidance' on lines 3 and 4"
    ):
        load_yaml(nested)
    flow = tmp_path / "flow.json"
    flow.write_text('{"partB": {"runs": {"fm_time": {}, "fm_time": {}}}}')
    with pytest.raises(FundiffError, match="duplicate key 'fm_time'"):
        load_yaml(flow)
    (tmp_path / "ok.yaml").write_text("a: {x: 1}\nb: {x: 1}\n")  # same key in two mappings
    assert load_yaml(tmp_path / "ok.yaml") == {"a": {"x": 1}, "b": {"x": 1}}


def test_config_files_are_parsed_by_libyaml_like_the_pure_python_loader() -> None:
    """Every Snakemake start reads the schema and the presets: libyaml's parser where PyYAML
    has it (~10x faster), with the same result as PyYAML's own SafeLoader."""
    import yaml

    from fundiff.configfiles import _StrictLoader

    if yaml.__with_libyaml__:
        assert issubclass(_StrictLoader, yaml.CSafeLoader)
    for path in [ROOT / "schemas/config.schema.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]:
        with open(path, encoding="utf-8") as f:
            assert load_yaml(path) == (yaml.load(f, Loader=yaml.SafeLoader) or {}), path  # noqa: S506


def test_overlays_merge_and_replace_marked_mappings() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "items": {"one": {"p": 1}, "two": {"p": 2}}}
    merge_overlay(base, {"a": {"y": [3]}, "items": {"three": {"p": 3}}})
    assert base == {
        "a": {"x": 1, "y": [3]},  # lists are replaced as a whole
        "items": {"one": {"p": 1}, "two": {"p": 2}, "three": {"p": 3}},
    }
    merge_overlay(base, {"items": {"_replace": True, "mine": {"p": 9, "_replace": True}}})
    assert base["items"] == {"mine": {"p": 9}}  # markers never reach the config


def test_cli_strings_are_typed_by_the_schema() -> None:
    """Snakemake reads nested --config values as strings ('false'); the schema types them."""
    schema = load_schema()
    cli = {
        "partA": {"enabled": "false", "local": {"guidance": "7.5", "base_prompt": "7"}},
        "partB": {"runs": "{fm_time: {objective: fm, conditioning: time, epochs: 2}}"},
        "seed": 3,
    }
    typed = coerce_cli_values(cli, schema)
    assert typed["partA"] == {"enabled": False, "local": {"guidance": 7.5, "base_prompt": "7"}}
    assert typed["partB"]["runs"]["fm_time"]["epochs"] == 2 and typed["seed"] == 3


def test_assemble_config_reads_files_strictly_then_the_cli(tmp_path: Path) -> None:
    overlay = tmp_path / "over.yaml"
    overlay.write_text(
        "partA:\n  local:\n    tasks:\n      anagrams:\n        illusions:\n"
        "          _replace: true\n          one_seven: {prompts: ['a 1', 'a 7']}\n"
    )
    cfg = assemble_config(
        [ROOT / "config.yaml"], [overlay], {"partB": {"enabled": "false"}}, load_schema()
    )
    assert list(cfg["partA"]["local"]["tasks"]["anagrams"]["illusions"]) == ["one_seven"]
    assert cfg["partB"]["enabled"] is False and cfg["seed"] == 180
    validate_config(cfg)
    overlay.write_text("seed: 1\nseed: 2\n")
    with pytest.raises(FundiffError, match="over.yaml.*duplicate key 'seed'"):
        assemble_config([ROOT / "config.yaml"], [overlay], {}, load_schema())


def test_running_from_another_directory_says_where_to_run(tmp_path: Path) -> None:
    check_workdir(ROOT, cwd=ROOT)
    with pytest.raises(FundiffError, match=f"run snakemake from the workflow directory {ROOT}"):
        check_workdir(ROOT, cwd=tmp_path)


# ------------------------------------------------------------- the config as Snakemake reads it


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository to dry-run in (dry runs write .snakemake/)."""
    return copy_repo(tmp_path_factory.mktemp("cfg") / "repo")


def dry_run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", *args]
    return subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess, text: str) -> str:
    """The run failed, with exactly one line containing ``text``."""
    out = proc.stdout + proc.stderr
    lines = [line for line in out.splitlines() if text in line]
    assert proc.returncode != 0 and len(lines) == 1, out
    return lines[0]


def test_cuda_without_cuda_stops_before_any_job(workspace: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = one_error_line(dry_run(workspace, "--config", "device=cuda"), "config key device")
    assert "no CUDA device" in line


def test_duplicate_key_in_a_configfile_is_named(workspace: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "dup.yaml"
    overlay.write_text("partB:\n  enabled: false\n  enabled: true\n")
    line = one_error_line(dry_run(workspace, "--configfile", str(overlay)), "duplicate key")
    assert "dup.yaml" in line and "'enabled' on lines 2 and 3" in line


def test_nan_on_the_command_line_is_named(workspace: Path) -> None:
    one_error_line(dry_run(workspace, "--config", "seed=nan"), "config key seed:")
    proc = dry_run(workspace, "--config", 'partA={"local": {"guidance": .inf}}')
    assert "is not a finite number" in one_error_line(proc, "config key partA.local.guidance")


def test_overlay_replaces_a_marked_mapping(workspace: Path, tmp_path: Path) -> None:
    """``_replace: true`` keeps only the overlay's illusions (a deep merge would add them)."""
    overlay = tmp_path / "mine.yaml"
    overlay.write_text(
        "partA:\n  local:\n    tasks:\n      anagrams:\n        illusions:\n"
        "          _replace: true\n          one_seven: {prompts: ['a 1', 'a 7'], view: rot90cw}\n"
    )
    proc = dry_run(workspace, "--forceall", "--configfile", str(overlay))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one illusion on each local model (partA.local_fm inherits partA.local's tasks)
    assert re.search(r"^parta_anagrams\s+2$", proc.stdout, re.M), proc.stdout[-3000:]


def test_running_from_another_directory_says_where_to_run_from(
    workspace: Path, tmp_path: Path
) -> None:
    ci = str(workspace / "configs/ci.yaml")
    proc = dry_run(tmp_path, "-s", str(workspace / "Snakefile"), "--configfile", ci)
    line = one_error_line(proc, "run snakemake from the workflow directory")
    assert str(workspace.resolve()) in line
    proc = dry_run(tmp_path, "-s", str(workspace / "Snakefile"), "-d", str(workspace))
    assert proc.returncode == 0, proc.stderr[-3000:]
