"""The writeup (and the Snakemake report) in a real headless Chromium, offline.

Checks that every image decodes (naturalWidth > 0) and that the page requested nothing but
``file://`` URLs, and saves full-page screenshots for people to look at: in the folder named by
``$FUNDIFF_SCREENSHOTS`` when set, else in the test's tmp dir (nothing is written into the
checkout):

* ``writeup_screenshot.png``: the writeup of a synthetic results tree;
* ``ci_writeup_screenshot.png``: the writeup of the CI workflow run (``ci_workspace``);
* ``ci_report_screenshot.png``: the Snakemake report of that run.

Chromium is Debian's ``chromium``, installed by ``tests/install_chromium.sh`` (run here when
missing and we are root). Without it the tests skip, except under ``CI=true``, where they fail.
Run: ``pytest -m browser tests/test_browser.py``.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from fundiff.writeup import build_writeup

from _cdp import Chromium, PageReport, find_chromium
from _writeup_synth import BENCHMARKS, make_synthetic_results

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"


def _unavailable(msg: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but the browser test cannot run: {msg}")
    pytest.skip(msg)


def _chromium_binary() -> str:
    path = find_chromium()
    if path:
        return path
    if os.geteuid() != 0:
        _unavailable(
            "headless Chromium is not installed and we are not root to install it; "
            "run `sudo tests/install_chromium.sh` (apt-get install chromium)"
        )
    proc = subprocess.run(
        ["bash", str(ROOT / "tests" / "install_chromium.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    path = find_chromium()
    if not path:
        _unavailable(
            f"tests/install_chromium.sh failed ({proc.returncode}): "
            f"{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}"
        )
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    with Chromium(_chromium_binary()) as chromium:
        yield chromium


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: ``$FUNDIFF_SCREENSHOTS`` if set, else this test's tmp dir."""
    chosen = os.environ.get("FUNDIFF_SCREENSHOTS")
    return Path(chosen) if chosen else tmp_path / "screenshots"


def _assert_offline(report: PageReport, allowed: tuple[str, ...] = ("file:",)) -> None:
    outside = [u for u in report.requests if not u.startswith(allowed)]
    assert not outside, f"{report.url} requested non-local URLs: {outside}"


def _assert_images_loaded(report: PageReport, expected: int | None = None) -> None:
    broken = [i for i in report.images if not i["complete"] or i["naturalWidth"] <= 0]
    assert not broken, f"{report.url}: images that did not load: {broken}"
    if expected is not None:
        assert len(report.images) == expected


def _check_screenshot(path: Path, min_height: int) -> None:
    with Image.open(path) as im:
        im.load()
        assert im.width >= 1000 and im.height >= min_height, im.size
        # not a blank page: more than a handful of colours
        assert len(im.convert("RGB").resize((256, 256)).getcolors(65536) or []) > 50


def test_harness_detects_external_requests_and_broken_images(tmp_path, browser) -> None:
    """Control: a page that tries the network and has a broken image fails both checks."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!doctype html><title>bad</title><img src="https://example.org/x.png">'
        '<img src="missing.png">'
    )
    report = browser.load(page)
    assert any(u.startswith("https://example.org/") for u in report.requests)
    with pytest.raises(AssertionError, match="non-local"):
        _assert_offline(report)
    with pytest.raises(AssertionError, match="did not load"):
        _assert_images_loaded(report)


def test_synthetic_writeup_renders_offline(tmp_path, monkeypatch, browser, shots) -> None:
    monkeypatch.chdir(tmp_path)
    figures, numbers = make_synthetic_results(tmp_path, backends=("deepfloyd", "local"))
    build_writeup(
        figures,
        numbers,
        out_md="results/writeup/index.md",
        out_html="results/writeup/index.html",
        template_dir=ROOT / "report",
        config={"seed": 180, "partA": {"deepfloyd": {"stage1": "DeepFloyd/IF-I-L-v1.0"}}},
        benchmarks=BENCHMARKS,
    )
    report = browser.load(tmp_path / "results" / "writeup" / "index.html")
    assert report.title == "Fun With Diffusion Models: results"
    _assert_offline(report)
    _assert_images_loaded(report, expected=len(figures))
    assert not report.failed and not report.exceptions
    shot = browser.screenshot(shots / "writeup_screenshot.png")
    _check_screenshot(shot, min_height=min(report.height, 32000))


@pytest.mark.slow
def test_workflow_writeup_renders_offline(ci_workspace: Path, browser, shots) -> None:
    """The writeup of the CI workflow run renders offline in Chromium."""
    page = ci_workspace / "results" / "writeup" / "index.html"
    report = browser.load(page)
    _assert_offline(report)
    _assert_images_loaded(report)
    assert report.images, "the writeup shows no figure"
    figures = sorted(p for p in (page.parent / "figures").rglob("*") if p.is_file())
    assert len(report.images) == len(figures)
    browser.screenshot(shots / "ci_writeup_screenshot.png")


@pytest.mark.slow
def test_snakemake_report_renders_offline(
    ci_workspace: Path, tmp_path: Path, browser, shots
) -> None:
    """Snakemake's own report of the CI run (self-contained app) loads without network or errors."""
    with zipfile.ZipFile(ci_workspace / "results" / "report.zip") as z:
        z.extractall(tmp_path)
    page = next(tmp_path.rglob("report.html"))
    report = browser.load(page, settle=2.0)
    # embedded resources may use data:/blob: URLs; nothing may leave the machine
    _assert_offline(report, allowed=("file:", "data:", "blob:", "about:"))
    _assert_images_loaded(report)
    assert not report.exceptions, report.exceptions
    browser.screenshot(shots / "ci_report_screenshot.png")
