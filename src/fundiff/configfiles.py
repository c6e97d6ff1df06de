"""Config files and overlays: strict YAML, overlay merging, ``--config`` values, the workdir.

Snakemake builds ``config`` itself (``configfile:`` in the Snakefile, then every
``--configfile`` overlay deep-merged over it, then ``--config key=value``), but

* its YAML loader keeps the last of two duplicate keys without a word,
* a deep merge can add or change keys, never drop an item of a preset, and
* ``--config`` reads nested values with YAML's BaseLoader, so in
  ``--config partA='{"enabled": false}'`` the ``false`` arrives as the *string* ``'false'``.

So ``rules/common.smk`` rebuilds ``config`` with :func:`assemble_config`: the same files in the
same order, read by :func:`load_yaml` (a duplicate key is an error naming it), merged by
:func:`merge_overlay` (a mapping holding ``_replace: true`` replaces the mapping below it
instead of merging into it), and the ``--config`` values typed by the schema
(:func:`coerce_cli_values`: a string where the schema wants no string is read as YAML).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fundiff.errors import FundiffError

#: An overlay mapping holding this key set to true replaces the mapping below it.
REPLACE = "_replace"


#: libyaml's parser where PyYAML was built with it (the wheels are): ~10x faster than the
#: pure-Python one on the schema and the presets, which every Snakemake start reads
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """A SafeLoader that refuses a mapping with the same key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise FundiffError(
                    f"{node.start_mark.name}: duplicate key {key!r} on lines {seen[key]} and "
                    f"{line} (YAML would silently keep the last one; remove one of them)"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) mapping; bad syntax or a duplicate key is a FundiffError naming the file."""
    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.load(stream, Loader=_StrictLoader) or {}  # noqa: S506 (a SafeLoader)
    except OSError as err:
        raise FundiffError(f"{path}: cannot read ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise FundiffError(f"{path}: invalid YAML ({err})") from err
    if not isinstance(data, dict):
        raise FundiffError(f"{path}: the top level must be a mapping")
    return data


def _is_replace(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def strip_markers(value: Any) -> Any:
    """A deep copy of ``value`` without ``_replace`` keys."""
    if isinstance(value, Mapping):
        return {k: strip_markers(v) for k, v in value.items() if k != REPLACE}
    if isinstance(value, list):
        return [strip_markers(v) for v in value]
    return copy.deepcopy(value)


def merge_overlay(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``overlay`` into ``base`` in place (and return it), like Snakemake's update_config.

    Mappings merge key by key; anything else (lists included) is replaced. A mapping of the
    overlay holding ``_replace: true`` replaces the mapping of ``base`` as a whole, e.g. to keep
    only one's own anagram illusions instead of adding them to the preset's.
    """
    for key, value in overlay.items():
        if key == REPLACE:
            continue
        old = base.get(key)
        if (
            isinstance(value, Mapping)
            and isinstance(old, dict)
            and not _is_replace(value.get(REPLACE))
        ):
            merge_overlay(old, value)
        else:
            base[key] = strip_markers(value)
    return base


def _types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def coerce_cli_values(value: Any, schema: Mapping[str, Any]) -> Any:
    """Type the strings Snakemake's ``--config`` leaves below the top level, guided by ``schema``.

    A string where the schema allows no string (``'false'`` for a boolean, ``'5.0'`` for a
    number, ``'{...}'`` for a mapping) is read as YAML; strings where a string is allowed (a
    prompt ``'7'``) stay strings. Keys the schema does not know are left for validation to name.
    """
    if isinstance(value, Mapping):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, sub in value.items():
            if key == REPLACE:
                out[key] = _is_replace(sub)
                continue
            sub_schema = props.get(key, extra if isinstance(extra, Mapping) else {})
            out[key] = coerce_cli_values(sub, sub_schema)
        return out
    if isinstance(value, list):
        return [coerce_cli_values(v, schema.get("items", {})) for v in value]
    if isinstance(value, str) and _types(schema) and "string" not in _types(schema):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return coerce_cli_values(parsed, schema) if isinstance(parsed, (dict, list)) else parsed
    return value


def assemble_config(
    base_files: Sequence[str | Path],
    overlay_files: Sequence[str | Path],
    cli: Mapping[str, Any],
    schema: Mapping[str, Any],
) -> dict[str, Any]:
    """The config Snakemake would build, with strict files, ``_replace`` and typed ``--config``.

    Args:
        base_files: the Snakefile's ``configfile:`` files (skipped with --replace-workflow-config).
        overlay_files: ``--configfile`` files, in command-line order.
        cli: the ``--config`` values as Snakemake parsed them.
        schema: the config schema with ``$ref``s inlined (see :func:`fundiff.config.load_schema`).
    """
    config: dict[str, Any] = {}
    for path in [*base_files, *overlay_files]:
        merge_overlay(config, load_yaml(path))
    merge_overlay(config, coerce_cli_values(dict(cli), schema))
    return config


def check_workdir(basedir: str | Path, cwd: str | Path | None = None) -> None:
    """Refuse to run from another directory than the workflow's (relative paths would break).

    ``config.yaml``, ``inputs/...`` and ``results/`` are relative to the workflow directory;
    from elsewhere Snakemake would read another config (or none) and fail with a misleading
    schema error.
    """
    here = Path(cwd if cwd is not None else os.getcwd()).resolve()
    base = Path(basedir).resolve()
    if here != base:
        raise FundiffError(
            f"run snakemake from the workflow directory {base} (cd there, or add "
            f"--directory {base}); the config's paths (config.yaml, inputs/, results/) are "
            f"relative to it, and this is {here}"
        )


def workflow_config_sources(workflow: Any) -> tuple[list[str], list[str], dict[str, Any]]:
    """(base files, overlay files, ``--config`` values) of a running Snakemake 9 workflow.

    Snakemake keeps ``--configfile`` paths first in ``workflow.configfiles``, then appends the
    Snakefile's ``configfile:`` paths; ``--replace-workflow-config`` drops the latter.
    """
    settings = workflow.config_settings
    overlays = [str(p) for p in workflow.overwrite_configfiles or []]
    base = [str(p) for p in workflow.configfiles[len(overlays) :]]
    if settings.replace_workflow_config:
        base = []
    return base, overlays, dict(settings.config or {})
