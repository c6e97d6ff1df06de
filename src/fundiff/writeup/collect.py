"""Collect: validate every listed figure and number file, route them into the section tree and
build the :class:`~fundiff.writeup.model.WriteupDoc` that the templates render."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fundiff.errors import FundiffError
from fundiff.writeup.evaluation import evaluation_section
from fundiff.writeup.layout import (
    BACKEND_SHORT,
    RUN_SHORT,
    Layout,
    caption_a,
    caption_b,
    display_size,
    epoch_of,
    figure_sort_key,
)
from fundiff.writeup.model import (
    FigureEntry,
    ResultKey,
    Section,
    Table,
    WriteupDoc,
    check_image,
    parse_result_path,
)
from fundiff.writeup.runtimes import read_benchmarks, run_span, runtime_tables
from fundiff.writeup.tables import (
    confusion_table,
    csv_table,
    eval_table,
    find_seeds,
    fmt,
    fmt_bytes,
    is_eval,
    json_tables,
    pct,
    pretty,
    read_json,
)


def _validate(fig_paths: Sequence[Path], num_paths: Sequence[Path]) -> tuple[dict, dict]:
    """Check every input; return (figure sizes, parsed numbers) or raise one error naming all."""
    problems: list[str] = []
    sizes: dict[Path, tuple[int, int]] = {}
    for p in fig_paths:
        try:
            sizes[p] = check_image(p)
        except FundiffError as exc:
            problems.append(str(exc))
    parsed: dict[Path, Any] = {}
    for p in num_paths:
        try:
            if p.suffix.lower() == ".json":
                parsed[p] = read_json(p)
            elif p.suffix.lower() == ".csv":
                parsed[p] = csv_table(p)
            elif not p.is_file():
                raise FundiffError(f"expected number file is missing: {p}")
            else:
                parsed[p] = None  # a data file (e.g. samples .npz): listed, not tabulated
        except FundiffError as exc:
            problems.append(str(exc))
    if problems:
        raise FundiffError(
            f"writeup: {len(problems)} expected input(s) missing or invalid:\n  - "
            + "\n  - ".join(problems)
        )
    hrefs: dict[str, Path] = {}
    for p in fig_paths:
        href = "figures/" + parse_result_path(p).rel
        if href in hrefs and hrefs[href] != p:
            raise FundiffError(f"figures {hrefs[href]} and {p} would both be copied to {href}")
        hrefs[href] = p
    return sizes, parsed


def _add_numbers(
    layout: Layout, num_paths: Sequence[Path], parsed: Mapping[Path, Any]
) -> dict[str, dict[int, Mapping[str, Any]]]:
    """Put number tables into sections; return the per-run eval results (run -> epoch -> eval)."""
    evals: dict[str, dict[int, Mapping[str, Any]]] = {}
    eval_files: dict[str, list[str]] = {}
    data_files: dict[int, tuple[Section, Table]] = {}
    for p in num_paths:
        k = parse_result_path(p)
        stem, epoch = epoch_of(k.name)
        obj = parsed[p]
        if k.part == "B" and stem == "eval" and epoch is not None and is_eval(obj):
            evals.setdefault(k.group, {})[epoch] = obj
            eval_files.setdefault(k.group, []).append(p.as_posix())
            continue
        sec = layout.section_for(k)
        if isinstance(obj, Table):
            if obj.columns[:3] == ["epoch", "steps", "mean loss"]:
                obj.title = f"Mean training loss per epoch ({RUN_SHORT.get(k.group, k.group)})"
            sec.tables.append(obj)
        elif obj is None:
            _sec, table = data_files.setdefault(
                id(sec), (sec, Table("Data files", ["file", "size"], []))
            )
            table.rows.append([p.as_posix(), fmt_bytes(p.stat().st_size)])
        elif is_eval(obj):
            t = eval_table({pretty(k.name): obj}, f"Judged accuracy: {pretty(k.name)}", "")
            t.source = p.as_posix()
            sec.tables.append(t)
        else:
            if k.part == "A":
                title = f"{pretty(k.name)} ({BACKEND_SHORT.get(k.group, k.group)})"
            elif k.group == "classifier":
                title = f"Classifier: {pretty(k.name)}"
            else:
                title = pretty(k.name)
            sec.tables.extend(json_tables(obj, title, p.as_posix()))
    for run, by_epoch in evals.items():
        t = eval_table(
            dict(sorted(by_epoch.items())),
            f"Judged accuracy of samples by the MNIST classifier ({RUN_SHORT.get(run, run)})",
        )
        t.source = ", ".join(sorted(eval_files[run]))
        sec = layout.section_for(ResultKey("B", run, "", "", ""))
        last = max(by_epoch)
        conf = confusion_table(
            by_epoch[last], f"Confusion of the judged samples after epoch {last} (counts)"
        )
        sec.tables[:0] = [t] + ([conf] if conf else [])
    for sec, table in data_files.values():
        sec.tables.append(table)
    return evals


def _add_figures(
    layout: Layout,
    fig_paths: Sequence[Path],
    sizes: Mapping[Path, tuple[int, int]],
    evals: Mapping[str, Mapping[int, Mapping[str, Any]]],
) -> list[FigureEntry]:
    """Put figures into sections in display order, with captions (judged accuracy quoted);
    returns the SDEdit curves (``<item>.curve.png``), which go to the Evaluation section."""
    curves: list[FigureEntry] = []
    for p in sorted(fig_paths, key=lambda q: figure_sort_key(parse_result_path(q))):
        k = parse_result_path(p)
        width, height = sizes[p]
        disp, pix = display_size(width)
        if k.part == "B":
            _stem, epoch = epoch_of(k.name)
            ev = evals.get(k.group, {}).get(epoch) if epoch is not None else None
            caption, kind = caption_b(k, pct(ev["accuracy"]) if ev else None)
        elif k.part == "A":
            caption, kind = caption_a(k), k.task
        else:
            caption, kind = f"{pretty(k.name)}.", "other"
        curve = k.part == "A" and k.name.endswith(".curve")
        if curve:
            caption = f"SDEdit curve: {caption_a(k)[:-1].replace('.curve', '')}, per noise level."
        (curves if curve else layout.section_for(k).figures).append(
            FigureEntry(
                source=p.as_posix(),
                href="figures/" + k.rel,
                caption=caption,
                kind=kind,
                width=width,
                height=height,
                display_width=disp,
                pixelated=pix,
                label=pretty(k.name),
            )
        )
    return curves


def collect(
    figures: Iterable[str | os.PathLike[str]],
    numbers: Iterable[str | os.PathLike[str]],
    *,
    config: Mapping[str, Any] | None = None,
    benchmarks: Mapping[str, str] | None = None,
    benchmark_root: str | os.PathLike[str] = ".",
    title: str = "Fun With Diffusion Models: results",
) -> WriteupDoc:
    """Validate inputs and assign every figure and number file to a section.

    Raises FundiffError listing *every* expected figure that is missing or not a valid image
    and every number file that is missing or unreadable (each named by its path). Runtimes come
    from the benchmark files of the rules in ``benchmarks`` (rule -> benchmark path pattern,
    relative to ``benchmark_root``; None: no runtimes), see :func:`read_benchmarks`.
    """
    fig_paths = [Path(f) for f in figures]
    num_paths = [Path(n) for n in numbers]
    sizes, parsed = _validate(fig_paths, num_paths)

    backends = {k.group for k in map(parse_result_path, fig_paths + num_paths) if k.part == "A"}
    layout = Layout(backends)
    evals = _add_numbers(layout, num_paths, parsed)
    curves = _add_figures(layout, fig_paths, sizes, evals)
    sections = layout.sections()
    evaluation = evaluation_section(parsed, curves)
    if not evaluation.is_empty():
        after_a = 1 if sections and sections[0] is layout.part_a else 0
        sections.insert(after_a, evaluation)

    config = dict(config or {})
    config_yaml = (
        yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True, width=100).rstrip()
        if config
        else "# (no configuration passed to the writeup)"
    )
    seeds = Table("Seeds", ["config key", "value"], [[k, fmt(v)] for k, v in find_seeds(config)])
    if not seeds.rows:
        seeds.note = "no key containing 'seed' in the configuration"

    jobs = read_benchmarks(benchmarks, benchmark_root) if benchmarks else []
    return WriteupDoc(
        title=title,
        sections=sections,
        config_yaml=config_yaml,
        seeds=seeds,
        runtimes=runtime_tables(jobs),
        run_span=run_span(jobs),
        n_figures=len(fig_paths),
        n_numbers=len(num_paths),
        jobs=jobs,
    )


def _plain(obj: Any) -> Any:
    """Convert Snakemake's config containers (and tuples, Paths) to plain YAML-safe types."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
