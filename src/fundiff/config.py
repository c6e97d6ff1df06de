"""Configuration: schema validation with defaults, and cross-key checks.

``validate_config`` is what ``rules/common.smk`` calls before any job is planned. It

1. inlines the schema's ``$ref``s so every default is visible where it applies,
2. fills in defaults (deep copies: no two keys share one default object),
3. validates against the JSON schema, and
4. checks what a schema cannot: names that must exist in the inputs manifest, the Part B run
   that serves as the local Part A model, snapshot epochs within the run.

Every failure is one ``FundiffError`` line naming the key, e.g.
``config key partB.runs.ddpm_class.epochs: -1 is less than the minimum of 1``.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema

from fundiff import tasks as registry
from fundiff.configfiles import load_yaml
from fundiff.errors import FundiffError
from fundiff.prompts import parse_digit_prompt, prompt_key, slug  # noqa: F401 (re-exported)
from fundiff.tasks import LOCAL_BACKENDS, all_prompts, task_prompts  # noqa: F401 (re-exported)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
BACKENDS = ("local", "local_fm", "deepfloyd")
#: the Part B objective each local backend's model is trained with
LOCAL_OBJECTIVES = {"local": "ddpm", "local_fm": "fm"}
#: keys of partA.local that partA.local_fm does not inherit
NOT_INHERITED = ("enabled", "run")


def _inline_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    """Replace ``{"$ref": "#/$defs/x", ...}`` by the definition merged with its siblings."""
    if isinstance(node, dict):
        if "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/$defs/"):
                raise FundiffError(f"schema: unsupported $ref {ref}")
            merged = dict(_inline_refs(defs[ref.removeprefix("#/$defs/")], defs))
            merged.update({k: _inline_refs(v, defs) for k, v in node.items() if k != "$ref"})
            return merged
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The config schema with every ``$ref`` inlined; ``partA.local_fm`` gets every property
    of ``partA.local`` that it does not declare itself (the schema file states only those)."""
    raw = load_yaml(path)
    schema = _inline_refs(raw, raw.get("$defs", {}))
    backends = schema.get("properties", {}).get("partA", {}).get("properties", {})
    if "local" in backends and "local_fm" in backends:
        own = backends["local_fm"]["properties"]
        backends["local_fm"]["properties"] = {
            **copy.deepcopy(backends["local"]["properties"]),
            **own,
        }
    return schema


def _fill_defaults(instance: Any, schema: Mapping[str, Any]) -> None:
    """Recursively set missing keys to (copies of) their schema defaults."""
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra)


def _key(path: Iterator[Any]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _strict_integer(checker: Any, instance: Any) -> bool:
    """JSON Schema counts 2.0 as an integer; range(2.0) does not: only Python ints are."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)


def _check_finite(node: Any, path: tuple[Any, ...] = ()) -> None:
    """Every number in the config is finite: NaN passes every schema bound (all compare False)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            _check_finite(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_finite(value, (*path[:-1], f"{path[-1]}[{i}]") if path else (f"[{i}]",))
    elif isinstance(node, float) and not math.isfinite(node):
        raise FundiffError(f"config key {_key(path)}: {node} is not a finite number")


def _schema_error(error: jsonschema.ValidationError) -> FundiffError:
    """One line naming the key of a schema violation."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        path += re.findall(r"'([^']+)'", error.message)[:1]
        return FundiffError(f"config key {_key(path)}: unknown key (check its spelling)")
    if "propertyNames" in error.schema_path:
        path.append(error.instance)
        if error.validator == "pattern":
            return FundiffError(
                f"config key {_key(path)}: invalid name {error.instance!r}; names become file "
                "names: letters, digits and _ only, starting with a letter or digit"
            )
    return FundiffError(f"config key {_key(path)}: {error.message}")


def validate_config(
    config: dict[str, Any], schema_path: str | Path = SCHEMA_PATH
) -> dict[str, Any]:
    """Fill defaults into ``config`` in place, validate it, and return it.

    Raises:
        FundiffError: one line naming the first offending key.
    """
    schema = load_schema(schema_path)
    # first without partA.local_fm's inherited copy, so a bad value written under partA.local
    # is named there, then with it (the keys given under partA.local_fm)
    own = copy.deepcopy(config)
    if isinstance(own.get("partA"), dict):
        own["partA"].pop("local_fm", None)
    inherit_local(config)
    for instance in (own, config):
        _fill_defaults(instance, schema)
        _check_finite(instance)
        error = jsonschema.exceptions.best_match(_Validator(schema).iter_errors(instance))
        if error is not None:
            raise _schema_error(error)
    _check_cross_references(config)
    ordered = canonical(config)
    config.clear()
    config.update(ordered)
    return config


def inherit_local(config: dict[str, Any]) -> None:
    """``partA.local_fm`` = ``partA.local`` (all but ``enabled`` and ``run``) overlaid with the
    keys given under ``partA.local_fm``, in place, before defaults are filled.

    So the flow model runs exactly the DDPM's tricks and settings unless a key says otherwise
    (e.g. ``partA.local_fm.guidance``), and the DDPM vs FM comparison compares models only.
    """
    from fundiff.configfiles import merge_overlay

    part_a = config.get("partA")
    if not isinstance(part_a, dict) or not isinstance(part_a.get("local", {}), dict):
        return
    own = part_a.get("local_fm") or {}
    if not isinstance(own, dict):
        return  # the schema names the key
    base = {
        k: copy.deepcopy(v) for k, v in part_a.get("local", {}).items() if k not in NOT_INHERITED
    }
    merge_overlay(base, own)
    part_a["local_fm"] = base


def canonical(obj: Any) -> Any:
    """A copy with every mapping's keys sorted (lists keep their order).

    Snakemake compares a job's params by their text, so the same settings written in another
    key order would look changed and rerun jobs for nothing; a canonical config avoids that.
    """
    if isinstance(obj, Mapping):
        return {k: canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    return obj


def _check_cross_references(config: dict[str, Any]) -> None:
    inputs = config.get("inputs", {})
    for name, spec in inputs.items():
        for field in ("path", "mask"):
            if spec.get(field) and not re.match(r"^[\w./-]+$", spec[field]):
                raise FundiffError(f"config key inputs.{name}.{field}: unusual characters in path")
    part_a = config.get("partA", {})
    runs = config.get("partB", {}).get("runs", {})
    for backend in BACKENDS:
        bcfg = part_a.get(backend, {})
        if part_a.get("enabled") and bcfg.get("enabled"):
            _check_backend(backend, bcfg, inputs, runs)
    _check_runs(runs)


def _need_image(
    inputs: Mapping[str, Any], name: str | None, key: str, *, mask: bool = False
) -> None:
    """``name`` is in the inputs manifest (with a mask if needed) and its files exist."""
    if name is None:
        raise FundiffError(f"config key {key}: an input image name is required")
    if name not in inputs:
        known = ", ".join(sorted(inputs)) or "none"
        raise FundiffError(f"config key {key}: unknown input image {name!r} (inputs: {known})")
    if mask and not inputs[name].get("mask"):
        raise FundiffError(f"config key {key}: input {name!r} has no mask (set inputs.{name}.mask)")
    for field in ("path", "mask") if mask else ("path",):
        if not Path(inputs[name][field]).is_file():
            raise FundiffError(
                f"config key inputs.{name}.{field}: {inputs[name][field]} does not exist"
            )


def _check_backend(
    backend: str, bcfg: dict[str, Any], inputs: Mapping[str, Any], runs: Mapping[str, Any]
) -> None:
    """Checks of one enabled Part A backend that a schema cannot express."""
    prefix = f"partA.{backend}"
    tasks = bcfg["tasks"]
    on = {task for task, tcfg in tasks.items() if tcfg["enabled"]}
    for task in registry.TASKS:
        for key, name in registry.image_refs(bcfg, task):
            _need_image(inputs, name, f"{prefix}.{key}", mask=registry.get(task).mask)
    T = 1000
    if backend in LOCAL_BACKENDS:
        T = _check_local_model(bcfg, prefix, runs, LOCAL_OBJECTIVES[backend])
    strided = _strided_count(bcfg["timesteps"], T, prefix)
    for task in sorted(t for t in on if "i_starts" in tasks[t]):
        for level in tasks[task]["i_starts"]:
            if level >= strided - 1:
                raise FundiffError(
                    f"config key {prefix}.tasks.{task}.i_starts: {level} is past the last of "
                    f"the {strided} strided timesteps"
                )
    if "iterative" in on and tasks["iterative"]["i_start"] >= strided - 1:
        raise FundiffError(
            f"config key {prefix}.tasks.iterative.i_start: {tasks['iterative']['i_start']} is "
            f"outside 0..{strided - 2} (indices into the {strided} strided timesteps)"
        )
    odd = [(f"{prefix}.tasks.blur.kernel_sizes", k) for k in tasks["blur"]["kernel_sizes"]]
    odd = odd if "blur" in on else []
    if "hybrids" in on:
        odd += [
            (f"{prefix}.tasks.hybrids.pairs.{n}.kernel", p["kernel"])
            for n, p in tasks["hybrids"]["pairs"].items()
        ]
    for key, size in odd:
        if size is not None and size % 2 == 0:
            raise FundiffError(f"config key {key}: {size} is even; a Gaussian kernel size is odd")
    _check_file_names(backend, bcfg, prefix)


def _check_local_model(
    bcfg: dict[str, Any], prefix: str, runs: Mapping[str, Any], objective: str
) -> int:
    """A local backend's model run (a class-conditioned ``objective`` run), views and prompts;
    returns the model's T (for the flow model: of the schedule its velocity is read on)."""
    _check_digit_prompts(bcfg, prefix)
    anagrams = bcfg["tasks"]["anagrams"]
    for name, item in anagrams["illusions"].items():
        if anagrams["enabled"] and item["view"] == "negate":
            raise FundiffError(
                f"config key {prefix}.tasks.anagrams.illusions.{name}.view: negate needs "
                "images centred on 0 (DeepFloyd); MNIST pixels lie in [0, 1]"
            )
    run = bcfg["run"]
    spec = runs.get(run)
    if spec is None or not spec.get("enabled", True):
        raise FundiffError(f"config key {prefix}.run: Part B run {run!r} is not configured/enabled")
    if spec["objective"] != objective or spec["conditioning"] != "class":
        raise FundiffError(
            f"config key {prefix}.run: {run!r} must be a class-conditioned {objective} run"
        )
    return spec["T"]


def _strided_count(timesteps: Mapping[str, int], T: int, prefix: str) -> int:
    """How many strided timesteps a backend with ``T`` training steps samples on.

    The list ``start, start - stride, ..., 0`` is given in 1000-step units and scaled to T with
    repeats merged, as :func:`fundiff.schedules.scale_timesteps` does.
    """
    start, stride = timesteps["start"], timesteps["stride"]
    if start % stride:
        raise FundiffError(
            f"config key {prefix}.timesteps.stride: start {start} is not a multiple of stride "
            f"{stride} (the strided list must end at t = 0)"
        )
    return len({min(math.floor(t * T / 1000 + 0.5), T - 1) for t in range(start, -1, -stride)})


def _check_file_names(backend: str, bcfg: Mapping[str, Any], prefix: str) -> None:
    """Prompts that name files (A0 items, DeepFloyd embeddings) map to distinct names."""
    t2i = bcfg["tasks"]["text_to_image"]
    if t2i["enabled"]:
        _unique_names(t2i["prompts"], slug, f"{prefix}.tasks.text_to_image.prompts")
    if backend == "deepfloyd":
        _unique_names(all_prompts(bcfg), prompt_key, prefix, indexed=False)


def _unique_names(prompts: list[str], name_of: Any, key: str, *, indexed: bool = True) -> None:
    seen: dict[str, str] = {}
    for i, prompt in enumerate(prompts):
        name = name_of(prompt)
        where = f"{key}[{i}]" if indexed else key
        if name in seen:
            what = (
                f"prompt {prompt!r} is listed twice"
                if seen[name] == prompt
                else f"prompts {seen[name]!r} and {prompt!r} map to the same file name {name!r}; reword one"
            )
            raise FundiffError(f"config key {where}: {what}")
        seen[name] = prompt


def _check_runs(runs: Mapping[str, Any]) -> None:
    """Part B run checks across keys."""
    for name, spec in runs.items():
        key = f"partB.runs.{name}"
        for epoch in spec.get("snapshot_epochs", []):
            if epoch > spec["epochs"]:
                raise FundiffError(
                    f"config key {key}.snapshot_epochs: epoch {epoch} > epochs {spec['epochs']}"
                )
        expected = {"single_step": "none", "pure_noise": "none"}.get(spec["objective"])
        if expected and spec["conditioning"] != "none":
            raise FundiffError(
                f"config key {key}.conditioning: must be none for {spec['objective']}"
            )
        if spec["objective"] in ("ddpm", "fm") and spec["conditioning"] == "none":
            raise FundiffError(
                f"config key {key}.conditioning: time or class for {spec['objective']}"
            )
        if spec["beta_start"] > spec["beta_end"]:
            raise FundiffError(
                f"config key {key}.beta_start: {spec['beta_start']} > beta_end "
                f"{spec['beta_end']}; the linear schedule rises from beta_start to beta_end"
            )


def _check_digit_prompts(bcfg: dict[str, Any], prefix: str) -> None:
    """Every prompt a job of the local backend uses must name a digit ('' = unconditional);
    prompts of disabled tasks (e.g. the schema's default text prompts) are not used."""
    prompts = [("base_prompt", bcfg["base_prompt"])]
    for key in registry.TASKS:
        if bcfg["tasks"][key]["enabled"]:
            prompts += registry.prompt_refs(bcfg, key)
    for key, prompt in prompts:
        if prompt is None:  # the base prompt
            continue
        try:
            parse_digit_prompt(prompt)
        except FundiffError as err:
            raise FundiffError(f"config key {prefix}.{key}: {err}") from None


def figure_epochs(spec: Mapping[str, Any]) -> list[int]:
    """Epochs of a Part B run shown in figures: its snapshot epochs plus the final one."""
    return sorted(set(spec["snapshot_epochs"]) | {spec["epochs"]})


def check_device(device: str) -> None:
    """The configured accelerator exists; ``auto`` and ``cpu`` cost nothing (no torch import).

    Raises:
        FundiffError naming the ``device`` key when CUDA (or the CUDA index, or MPS) is missing,
        so the run stops before any job instead of with an AssertionError inside one.
    """
    if device in ("auto", "cpu"):
        return
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            raise FundiffError("config key device: 'mps' but this torch sees no MPS device")
        return
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        build = "" if torch.version.cuda else f" (torch {torch.__version__} is a CPU-only build)"
        seen = f"only {count} CUDA device(s)" if count else "no CUDA device"
        raise FundiffError(
            f"config key device: {device!r} but torch sees {seen}{build}; "
            "use device: auto or cpu, or run on a machine with that GPU"
        )
