"""Render a :class:`~fundiff.writeup.model.WriteupDoc` to Markdown and HTML (Jinja templates)
and write the self-contained writeup folder (``index.md``, ``index.html``, ``figures/``)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from fundiff.errors import FundiffError
from fundiff.writeup.collect import collect
from fundiff.writeup.model import Section, Table, WriteupDoc


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_alt(text: Any) -> str:
    """Text safe inside Markdown image alt brackets."""
    return re.sub(r"([\[\]\\])", r"\\\1", _md_cell(text))


def _md_table(t: Table) -> str:
    """A Table as a GitHub-flavoured Markdown block (title line, pipe table, note)."""
    out: list[str] = []
    if t.title:
        src = f" (`{t.source}`)" if t.source else ""
        out += [f"**{_md_cell(t.title)}**{src}", ""]
    if t.rows:
        out.append("| " + " | ".join(_md_cell(c) for c in t.columns) + " |")
        out.append("|" + "|".join(" --- " for _ in t.columns) + "|")
        out += ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in t.rows]
        out.append("")
    if t.note:
        out += [f"_{_md_cell(t.note)}_", ""]
    return "\n".join(out)


def iter_sections(sections: Sequence[Section]) -> Iterable[Section]:
    for s in sections:
        yield s
        yield from iter_sections(s.children)


def render(doc: WriteupDoc, template_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """Render ``(markdown, html)`` from ``writeup.md.j2`` and ``writeup.html.j2`` in template_dir."""
    tdir = Path(template_dir)
    for name in ("writeup.md.j2", "writeup.html.j2"):
        if not (tdir / name).is_file():
            raise FundiffError(f"writeup template missing: {tdir / name}")
    loader = jinja2.FileSystemLoader(str(tdir))
    common = {"undefined": jinja2.StrictUndefined, "trim_blocks": True, "lstrip_blocks": True}
    md_env = jinja2.Environment(loader=loader, autoescape=False, **common)
    md_env.filters["md_cell"] = _md_cell
    md_env.filters["md_table"] = _md_table
    md_env.filters["md_alt"] = _md_alt
    html_env = jinja2.Environment(loader=loader, autoescape=True, **common)
    toc = list(iter_sections(doc.sections))
    ctx = {"doc": doc, "toc": toc}
    try:
        md = md_env.get_template("writeup.md.j2").render(**ctx)
        html = html_env.get_template("writeup.html.j2").render(**ctx)
    except jinja2.TemplateError as exc:
        raise FundiffError(f"writeup template in {tdir} failed to render: {exc}") from exc
    md = re.sub(r"\n{3,}", "\n\n", md)
    return md.strip() + "\n", html


def build_writeup(
    figures: Iterable[str | os.PathLike[str]],
    numbers: Iterable[str | os.PathLike[str]],
    *,
    out_md: str | os.PathLike[str],
    out_html: str | os.PathLike[str],
    template_dir: str | os.PathLike[str],
    config: Mapping[str, Any] | None = None,
    benchmarks: Mapping[str, str] | None = None,
    title: str = "Fun With Diffusion Models: results",
) -> WriteupDoc:
    """Validate, copy figures into ``<dir of out_html>/figures/``, render and write both files.

    ``out_md`` and ``out_html`` must be in the same folder (their relative figure links are
    shared). The ``figures/`` folder there is owned by the writeup and rebuilt from scratch, so
    figures no longer listed do not linger. ``benchmarks`` maps rule names to their
    ``benchmark:`` path patterns (relative to the current directory, the workflow's): the
    runtime table shows every job whose benchmark file is there (None: no runtime table).
    Returns the rendered document model.
    """
    out_md, out_html = Path(out_md), Path(out_html)
    if out_md.parent.resolve() != out_html.parent.resolve():
        raise FundiffError(
            f"writeup outputs {out_md} and {out_html} must be in the same folder (shared figures/)"
        )
    figures, numbers = list(figures), list(numbers)
    out_dir = out_html.parent
    doc = collect(figures, numbers, config=config, benchmarks=benchmarks, title=title)
    md, html = render(doc, template_dir)

    fig_dir = out_dir / "figures"
    if fig_dir.exists():
        shutil.rmtree(fig_dir)
    for sec in iter_sections(doc.sections):
        for fig in sec.figures:
            dest = out_dir / fig.href
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fig.source, dest)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_md.write_text(md, encoding="utf-8")
    out_html.write_text(html, encoding="utf-8")
    return doc
