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
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from fundiff.errors import FundiffError
from fundiff.prompts import parse_digit_prompt, prompt_key, slug  # noqa: F401 (re-exported)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
BACKENDS = ("local", "deepfloyd")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a syntax error is a FundiffError naming the file."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise FundiffError(f"{path}: invalid YAML ({err})") from err
    if not isinstance(data, dict):
        raise FundiffError(f"{path}: the top level must be a mapping")
    return data


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
    """The config schema with every ``$ref`` inlined."""
    schema = load_yaml(path)
    return _inline_refs(schema, schema.get("$defs", {}))


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


def validate_config(
    config: dict[str, Any], schema_path: str | Path = SCHEMA_PATH
) -> dict[str, Any]:
    """Fill defaults into ``config`` in place, validate it, and return it.

    Raises:
        FundiffError: one line naming the first offending key.
    """
    schema = load_schema(schema_path)
    _fill_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        path = list(error.absolute_path)
        if error.validator == "additionalProperties":
            path += re.findall(r"'([^']+)'", error.message)[:1]
            raise FundiffError(f"config key {_key(path)}: unknown key (check its spelling)")
        raise FundiffError(f"config key {_key(path)}: {error.message}")
    _check_cross_references(config)
    ordered = canonical(config)
    config.clear()
    config.update(ordered)
    return config


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
        if not (part_a.get("enabled") and bcfg.get("enabled")):
            continue
        prefix = f"partA.{backend}"
        tasks = bcfg["tasks"]

        def need_image(name: str | None, key: str, *, mask: bool = False) -> None:
            if name is None:
                raise FundiffError(f"config key {key}: an input image name is required")
            if name not in inputs:
                known = ", ".join(sorted(inputs)) or "none"
                raise FundiffError(
                    f"config key {key}: unknown input image {name!r} (inputs: {known})"
                )
            if mask and not inputs[name].get("mask"):
                raise FundiffError(
                    f"config key {key}: input {name!r} has no mask (set inputs.{name}.mask)"
                )
            for field in ("path", "mask") if mask else ("path",):
                if not Path(inputs[name][field]).is_file():
                    raise FundiffError(
                        f"config key inputs.{name}.{field}: {inputs[name][field]} does not exist"
                    )

        uses_test_image = [
            t for t in ("forward", "blur", "one_step", "iterative") if tasks[t]["enabled"]
        ]
        if uses_test_image:
            need_image(bcfg.get("test_image"), f"{prefix}.test_image")
        for task in ("sdedit", "sdedit_drawn", "inpaint"):
            if tasks[task]["enabled"]:
                for i, name in enumerate(tasks[task]["images"]):
                    need_image(name, f"{prefix}.tasks.{task}.images[{i}]", mask=task == "inpaint")
        if tasks["translate"]["enabled"]:
            for item, spec in tasks["translate"]["items"].items():
                need_image(spec["image"], f"{prefix}.tasks.translate.items.{item}.image")
        if tasks["logo"]["enabled"]:
            need_image(tasks["logo"]["image"], f"{prefix}.tasks.logo.image")
        strided = len(range(bcfg["timesteps"]["start"], -1, -bcfg["timesteps"]["stride"]))
        for task in ("sdedit", "sdedit_drawn", "translate", "logo"):
            for level in tasks[task]["i_starts"]:
                if tasks[task]["enabled"] and level >= strided - 1:
                    raise FundiffError(
                        f"config key {prefix}.tasks.{task}.i_starts: {level} is past the last of "
                        f"the {strided} strided timesteps"
                    )
        if backend == "local":
            _check_digit_prompts(bcfg, prefix)
            for name, item in tasks["anagrams"]["illusions"].items():
                if tasks["anagrams"]["enabled"] and item["view"] == "negate":
                    raise FundiffError(
                        f"config key {prefix}.tasks.anagrams.illusions.{name}.view: negate needs "
                        "images centred on 0 (DeepFloyd); MNIST pixels lie in [0, 1]"
                    )
            run = bcfg["run"]
            spec = runs.get(run)
            if spec is None or not spec.get("enabled", True):
                raise FundiffError(
                    f"config key partA.local.run: Part B run {run!r} is not configured/enabled"
                )
            if spec["objective"] != "ddpm" or spec["conditioning"] != "class":
                raise FundiffError(
                    f"config key partA.local.run: {run!r} must be a class-conditioned ddpm run"
                )
    for name, spec in runs.items():
        for epoch in spec.get("snapshot_epochs", []):
            if epoch > spec["epochs"]:
                raise FundiffError(
                    f"config key partB.runs.{name}.snapshot_epochs: epoch {epoch} > epochs {spec['epochs']}"
                )
        expected = {"single_step": "none", "pure_noise": "none"}.get(spec["objective"])
        if expected and spec["conditioning"] != "none":
            raise FundiffError(
                f"config key partB.runs.{name}.conditioning: must be none for {spec['objective']}"
            )
        if spec["objective"] in ("ddpm", "fm") and spec["conditioning"] == "none":
            raise FundiffError(
                f"config key partB.runs.{name}.conditioning: time or class for {spec['objective']}"
            )


def _check_digit_prompts(bcfg: dict[str, Any], prefix: str) -> None:
    """Every prompt of the local backend must name a digit (or be '' = unconditional)."""
    tasks = bcfg["tasks"]
    prompts: list[tuple[str, str]] = [(f"{prefix}.base_prompt", bcfg["base_prompt"])]
    prompts += [
        (f"{prefix}.tasks.text_to_image.prompts[{i}]", p)
        for i, p in enumerate(tasks["text_to_image"]["prompts"])
    ]
    for task in ("cfg", "sdedit", "sdedit_drawn", "inpaint"):
        if tasks[task]["prompt"] is not None:
            prompts.append((f"{prefix}.tasks.{task}.prompt", tasks[task]["prompt"]))
    prompts.append((f"{prefix}.tasks.logo.prompt", tasks["logo"]["prompt"]))
    for name, item in tasks["translate"]["items"].items():
        prompts.append((f"{prefix}.tasks.translate.items.{name}.prompt", item["prompt"]))
    for name, item in tasks["anagrams"]["illusions"].items():
        prompts += [
            (f"{prefix}.tasks.anagrams.illusions.{name}.prompts[{i}]", p)
            for i, p in enumerate(item["prompts"])
        ]
    for name, item in tasks["hybrids"]["pairs"].items():
        prompts += [(f"{prefix}.tasks.hybrids.pairs.{name}.{k}", item[k]) for k in ("low", "high")]
    for key, prompt in prompts:
        if key.endswith("logo.prompt") and not tasks["logo"]["enabled"]:
            continue
        try:
            parse_digit_prompt(prompt)
        except FundiffError as err:
            raise FundiffError(f"config key {key}: {err}") from None


def task_prompts(bcfg: Mapping[str, Any], task: str, item: str | None) -> list[str]:
    """The prompts one Part A job conditions on: '' (CFG), the base prompt, and its own."""
    tasks, base = bcfg["tasks"], bcfg["base_prompt"]
    tcfg = tasks[task]
    own: list[str] = []
    if task == "text_to_image":
        own = [p for p in tcfg["prompts"] if slug(p) == item]
    elif task in ("cfg", "sdedit", "sdedit_drawn", "inpaint"):
        own = [tcfg["prompt"] if tcfg["prompt"] is not None else base]
    elif task == "translate":
        own = [tcfg["items"][item]["prompt"]]
    elif task == "anagrams":
        own = list(tcfg["illusions"][item]["prompts"])
    elif task == "hybrids":
        own = [tcfg["pairs"][item]["low"], tcfg["pairs"][item]["high"]]
    elif task == "logo":
        own = [tcfg["prompt"]]
    return sorted({"", base, *own})


def all_prompts(bcfg: Mapping[str, Any]) -> list[str]:
    """Every prompt the enabled tasks of a backend condition on (sorted, with '')."""
    tasks, prompts = bcfg["tasks"], {"", bcfg["base_prompt"]}
    items = {
        "text_to_image": [slug(p) for p in tasks["text_to_image"]["prompts"]],
        "translate": list(tasks["translate"]["items"]),
        "anagrams": list(tasks["anagrams"]["illusions"]),
        "hybrids": list(tasks["hybrids"]["pairs"]),
    }
    for task, tcfg in tasks.items():
        if tcfg.get("enabled", True):
            for item in items.get(task, [None]):
                prompts |= set(task_prompts(bcfg, task, item))
    return sorted(prompts)


def figure_epochs(spec: Mapping[str, Any]) -> list[int]:
    """Epochs of a Part B run shown in figures: its snapshot epochs plus the final one."""
    return sorted(set(spec["snapshot_epochs"]) | {spec["epochs"]})
