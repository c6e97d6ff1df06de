"""Tests of fundiff.writeup on synthetic figures and numbers, plus one toy Snakemake workflow
(runtime table from real benchmark files)."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from test_workflow import job_counts

from fundiff.errors import FundiffError
from fundiff.writeup import (
    build_writeup,
    check_image,
    csv_table,
    eval_table,
    find_seeds,
    json_tables,
    loss_table,
    parse_result_path,
    read_benchmark,
    read_benchmarks,
)
from fundiff.writeup.runtimes import fmt_time, pattern_regex

from _writeup_synth import BENCHMARKS, make_synthetic_results, write_benchmark
from conftest import run_snakemake

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "report"
CONFIG = {
    "seed": 180,
    "device": "auto",
    "partA": {"deepfloyd": {"stage1": "DeepFloyd/IF-I-L-v1.0", "seed_offset": 3}},
    "partB": {"runs": {"ddpm_class": {"epochs": 20, "lr": 1e-3}}},
    "data": {"mnist": {"urls": ["https://example.org/mnist/"], "local_dir": "/data/mnist"}},
}


class _Links(HTMLParser):
    """Collects every src/href attribute of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data") and value is not None:
                self.links.append((tag, name, value))


def _build(root: Path, monkeypatch: pytest.MonkeyPatch, **kw) -> tuple[list[str], list[str]]:
    monkeypatch.chdir(root)
    figures, numbers = make_synthetic_results(root, **kw)
    build_writeup(
        figures,
        numbers,
        out_md="results/writeup/index.md",
        out_html="results/writeup/index.html",
        template_dir=TEMPLATES,
        config=CONFIG,
        benchmarks=BENCHMARKS,
    )
    return figures, numbers


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str], list[str]]:
    figures, numbers = _build(tmp_path, monkeypatch)
    return tmp_path / "results" / "writeup", figures, numbers


def test_md_and_html_written_with_every_figure(built) -> None:
    out, figures, _numbers = built
    md = (out / "index.md").read_text()
    html = (out / "index.html").read_text()
    for fig in figures:
        href = "figures/" + fig.split("results/", 1)[1]
        assert (out / href).is_file(), href
        assert f"]({href})" in md, href
        assert f'src="{href}"' in html, href
        assert (out / href).read_bytes() == Path(fig).read_bytes()


def test_sections_follow_course_order(built) -> None:
    out, _f, _n = built
    md = (out / "index.md").read_text()
    headings = re.findall(r"^#{2,4} (.+)$", md, flags=re.M)
    expected = [
        "Contents",
        "Part A: the power of diffusion models (DeepFloyd IF)",
        "0. Setup: sampling from text prompts",
        "1.1 Implementing the forward process",
        "1.2 Classical denoising",
        "1.3 One-step denoising",
        "1.4 Iterative denoising",
        "1.5 Diffusion model sampling",
        "1.6 Classifier-free guidance (CFG)",
        "1.7 Image-to-image translation (SDEdit)",
        "1.7.1 Editing hand-drawn and web images",
        "1.7.2 Inpainting",
        "1.7.3 Text-conditional image-to-image translation",
        "1.8 Visual anagrams",
        "1.9 Hybrid images",
        "Bells & whistles: course logo",
        "Part B: training diffusion models on MNIST",
        "1. Single-step denoising UNet",
        "1.2 Using the UNet to train a denoiser: noising",
        "1.2.1 Training a single-step denoiser (σ = 0.5)",
        "1.2.2 Out-of-distribution testing",
        "1.2.3 Denoising pure noise",
        "2. Diffusion models: DDPM (fall 2024)",
        "2.1–2.3 Time-conditioned UNet",
        "2.4–2.5 Class-conditioned UNet with CFG",
        "2. Flow matching (fall 2025)",
        "2.1–2.3 Time-conditioned UNet",
        "2.4–2.6 Class-conditioned UNet with CFG",
        "2.6 Getting rid of the LR scheduler",
        "Evaluation: the judging classifier",
        "Configuration and seeds",
        "Runtime of each step",
    ]
    assert headings == expected
    # figures land in their section: the OOD grid under 1.2.2, FM samples under flow matching
    ood = md.index("#### 1.2.2 Out-of-distribution")
    assert ood < md.index("figures/partB/single_step/ood.png") < md.index("#### 1.2.3 Denoising")
    fm = md.index("### 2. Flow matching")
    assert md.index("figures/partB/fm_class/samples_epoch10.png") > fm
    assert md.index("figures/partB/ddpm_class/samples_epoch20.png") < fm
    # epochs in numeric order (10 after 5)
    assert md.index("fm_time/samples_epoch5.png") < md.index("fm_time/samples_epoch10.png")


def test_tables_of_numbers(built) -> None:
    out, _f, _n = built
    md = (out / "index.md").read_text()
    html = (out / "index.html").read_text()
    # mean loss per epoch, from losses.csv
    csv_path = Path("results/partB/ddpm_time/losses.csv")
    rows = list(csv.DictReader(csv_path.open()))
    e1 = [float(r["loss"]) for r in rows if r["epoch"] == "1"]
    mean1 = sum(e1) / len(e1)
    assert "Mean training loss per epoch (DDPM, time-conditioned)" in md
    assert f"| 1 | {len(e1)} | {mean1:.4g} |" in md
    # judged accuracy overall and per digit, one row per epoch
    assert "Judged accuracy of samples by the MNIST classifier (DDPM, class-conditioned)" in md
    ev = json.loads(Path("results/partB/ddpm_class/eval_epoch20.json").read_text())
    row = f"| 20 | {100 * ev['accuracy']:.1f} % | 1000 | 5 | 30 | " + " | ".join(
        f"{100 * ev['per_digit'][str(d)]:.1f} %" for d in range(10)
    )
    assert row in md
    # accuracy quoted in the sample caption
    assert (
        f"Samples after epoch 20 (DDPM, class-conditioned). Judged accuracy {100 * ev['accuracy']:.1f} %."
        in md
    )
    # anagram success vs baseline and blur PSNR (generic JSON renderers)
    assert "| success_rate | 0.62 |" in md and "| baseline_success_rate | 0.11 |" in md
    assert "| judge.model | clip |" in md
    # blur: parallel lists -> one row per timestep, dict entries spread into columns
    assert (
        "| timesteps | best.kernel_size | best.sigma | best.psnr | noisy_psnr |\n"
        "| --- | --- | --- | --- | --- |\n"
        "| 250 | 5 | 1.5 | 19.8 | 14.2 |"
    ) in md
    assert "| task | blur |" in md
    # one-step: a matrix noise level x method
    assert "|  | psnr_noisy | psnr_one_step |" in md and "| 500 | 10.1 | 20.3 |" in md
    assert "| prompts | an oil painting of an old man, an oil painting of people" in md
    # confusion matrix of the last judged epoch
    assert "Confusion of the judged samples after epoch 20 (counts)" in md
    # classifier metrics as an accuracy table
    assert "Judged accuracy: metrics" in md
    # seeds and config (YAML), runtimes per rule from the benchmark files
    assert "| seed | 180 |" in md and "| partA.deepfloyd.seed_offset | 3 |" in md
    assert "stage1: DeepFloyd/IF-I-L-v1.0" in md
    assert "| train_partb | 1 | 20 min 34.5 s |" in md
    assert "| plot_loss | 2 | 4.5 s |" in md
    assert "old_rule" not in md  # a benchmark file of no rule of the workflow
    assert md.count("|") > 200 and "<table>" in html


def test_html_is_self_contained_and_relative(built) -> None:
    out, _f, _n = built
    html = (out / "index.html").read_text()
    parser = _Links()
    parser.feed(html)
    assert parser.links
    for tag, attr, value in parser.links:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", value, re.I), (tag, attr, value)
        assert not value.startswith(("/", "\\")) and ".." not in value, (tag, attr, value)
        if not value.startswith("#"):
            assert (out / value).is_file(), value
        else:
            assert f'id="{value[1:]}"' in html, value
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert "url(" not in html and "@import" not in html
    # nothing in the page points outside: no http(s) URL other than inside the config text
    outside_pre = re.sub(r"<pre>.*?</pre>", "", html, flags=re.S)
    assert not re.search(r"https?://", outside_pre)
    assert str(out.parent.parent) not in html  # no absolute path of the build folder
    md = (out / "index.md").read_text()
    for link in re.findall(r"\]\(([^)]+)\)", md):
        assert link.startswith(("figures/", "#")), link


def test_missing_figure_fails_naming_it(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    figures, numbers = make_synthetic_results(tmp_path)
    gone = "results/partB/fm_class/samples_epoch5.png"
    Path(gone).unlink()
    with pytest.raises(FundiffError, match=re.escape(gone)):
        build_writeup(
            figures,
            numbers,
            out_md="w/index.md",
            out_html="w/index.html",
            template_dir=TEMPLATES,
        )
    assert not Path("w/index.html").exists() and not Path("w/index.md").exists()


@pytest.mark.parametrize("damage", ["truncate", "text", "empty"])
def test_corrupt_figure_fails_naming_it(tmp_path, monkeypatch, damage: str) -> None:
    monkeypatch.chdir(tmp_path)
    figures, numbers = make_synthetic_results(tmp_path)
    bad = Path("results/partA/deepfloyd/a1_8_anagrams/rot90.png")
    data = bad.read_bytes()
    bad.write_bytes(
        {"truncate": data[: len(data) // 2], "text": b"not a png\n", "empty": b""}[damage]
    )
    with pytest.raises(FundiffError, match=re.escape(str(bad))):
        build_writeup(
            figures, numbers, out_md="w/index.md", out_html="w/index.html", template_dir=TEMPLATES
        )


def test_all_problems_named_at_once(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    figures, numbers = make_synthetic_results(tmp_path)
    Path(figures[0]).unlink()
    Path(numbers[0]).write_text("{not json")
    with pytest.raises(FundiffError) as err:
        build_writeup(
            figures + ["results/partB/fm_time/loss_extra.png"],
            numbers,
            out_md="w/index.md",
            out_html="w/index.html",
            template_dir=TEMPLATES,
        )
    msg = str(err.value)
    assert figures[0] in msg and numbers[0] in msg and "loss_extra.png" in msg
    assert "3 expected input(s)" in msg


def test_unknown_results_are_shown_not_dropped(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    figures, numbers = make_synthetic_results(tmp_path)
    extra = {
        "results/partA/deepfloyd/a2_new_trick/x.png": "Other: a2 new trick",
        "results/partB/ema_run/samples_epoch3.png": "ema run",
        "results/partB/figures/mean_digit.png": "Other Part B results",
        "results/misc/thing.png": "Other results",
    }
    for p in extra:
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), "gray").save(p)
    Path("results/partB/ema_run/notes.json").write_text(json.dumps({"why": "test", "k": [1, 2]}))
    build_writeup(
        figures + list(extra),
        numbers + ["results/partB/ema_run/notes.json"],
        out_md="w/index.md",
        out_html="w/index.html",
        template_dir=TEMPLATES,
    )
    md = Path("w/index.md").read_text()
    for p, heading in extra.items():
        assert f"# {heading}" in md, heading
        assert "figures/" + p.split("results/", 1)[1].replace("misc/", "other/") in md, p
    assert "| why | test |" in md and "| k | 1, 2 |" in md


def test_two_backends_get_subsections(tmp_path, monkeypatch) -> None:
    _build(tmp_path, monkeypatch, backends=("local_fm", "local", "deepfloyd"))
    md = Path("results/writeup/index.md").read_text()
    sdedit = md.index("### 1.7 Image-to-image translation (SDEdit)")
    nxt = md.index("### 1.7.1")
    block = md[sdedit:nxt]
    # the course's model, then the default DDPM, then the flow model (not alphabetical titles)
    heads = [line for line in block.splitlines() if line.startswith("#### ")]
    assert heads == [
        "#### DeepFloyd IF",
        "#### Local backend: the MNIST DDPM",
        "#### Local backend: the MNIST flow-matching model",
    ]
    assert "figures/partA/local/a1_7_sdedit/own1.png" in block
    assert "## Part A: the power of diffusion models\n" in md


def test_rebuild_drops_stale_figures(tmp_path, monkeypatch) -> None:
    figures, numbers = _build(tmp_path, monkeypatch)
    stale = Path("results/writeup/figures/partB/old_run/loss.png")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    build_writeup(
        figures,
        numbers,
        out_md="results/writeup/index.md",
        out_html="results/writeup/index.html",
        template_dir=TEMPLATES,
    )
    assert not stale.exists()
    assert Path("results/writeup/figures/partB/fm_class/loss.png").is_file()


def test_outputs_must_share_a_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FundiffError, match="same folder"):
        build_writeup([], [], out_md="a/index.md", out_html="b/index.html", template_dir=TEMPLATES)


def test_parse_result_path_allows_prefixes() -> None:
    k = parse_result_path("results/ci/partA/local/a1_7_sdedit/mnist_7.png")
    assert (k.part, k.group, k.task, k.name) == ("A", "local", "a1_7_sdedit", "mnist_7")
    assert k.rel == "partA/local/a1_7_sdedit/mnist_7.png"
    k = parse_result_path("/abs/results/partB/fm_class/samples_epoch10.png")
    assert (k.part, k.group, k.name, k.rel) == (
        "B",
        "fm_class",
        "samples_epoch10",
        "partB/fm_class/samples_epoch10.png",
    )
    assert parse_result_path("x/y.png").rel == "other/y.png"


def test_check_image_sizes(tmp_path) -> None:
    p = tmp_path / "a.gif"
    frames = [Image.new("L", (28, 28), v) for v in (0, 128, 255)]
    frames[0].save(p, save_all=True, append_images=frames[1:])
    assert check_image(p) == (28, 28)
    svg = tmp_path / "b.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="20px" height="10"/>')
    assert check_image(svg) == (20, 10)
    with pytest.raises(FundiffError, match="unsupported"):
        (tmp_path / "c.pdf").write_bytes(b"%PDF")
        check_image(tmp_path / "c.pdf")


def test_loss_table_means_and_lr(tmp_path) -> None:
    p = tmp_path / "losses.csv"
    p.write_text("epoch,step,loss,lr\n1,1,1.0,0.01\n1,2,0.5,0.01\n2,3,0.25,0.001\n10,4,0.1,1e-4\n")
    t = loss_table(p)
    assert t.columns == ["epoch", "steps", "mean loss", "last loss", "lr"]
    assert t.rows == [
        ["1", "2", "0.75", "0.5", "0.01"],
        ["2", "1", "0.25", "0.25", "0.001"],
        ["10", "1", "0.1", "0.1", "1.000e-04"],
    ]
    (tmp_path / "bad.csv").write_text("step,value\n1,2\n")
    with pytest.raises(FundiffError, match=r"bad.csv lacks column\(s\) \['epoch'"):
        loss_table(tmp_path / "bad.csv")
    (tmp_path / "nan.csv").write_text("epoch,step,loss,lr\n1,1,oops,0.1\n")
    with pytest.raises(FundiffError, match="nan.csv line 2: bad number"):
        loss_table(tmp_path / "nan.csv")


def test_loss_table_reads_through_storage_read_losses(tmp_path, monkeypatch) -> None:
    """One loss-CSV reader in the project: the writeup tabulates what storage.read_losses says."""
    import fundiff.storage

    p = tmp_path / "losses.csv"
    p.write_text("epoch,step,loss,lr\n1,1,1.0,0.01\n")
    seen: list[Path] = []

    def fake(path):
        seen.append(Path(path))
        return [{"epoch": 3, "step": 7, "loss": 0.5, "lr": 0.2}]

    monkeypatch.setattr(fundiff.storage, "read_losses", fake)
    assert loss_table(p).rows == [["3", "1", "0.5", "0.5", "0.2"]]
    assert seen == [p]


def test_csv_table_routes_only_full_loss_files(tmp_path) -> None:
    p = tmp_path / "scores.csv"
    p.write_text("epoch,loss\n1,0.5\n")  # not a losses.csv (no step, lr): shown verbatim
    t = csv_table(p)
    assert t.columns == ["epoch", "loss"] and t.rows == [["1", "0.5"]]


def test_json_tables_shapes() -> None:
    (t,) = json_tables([{"a": 1, "b": 2.5}, {"a": 3, "c": "x"}], "rows")
    assert t.columns == ["a", "b", "c"] and t.rows == [["1", "2.5", ""], ["3", "", "x"]]
    (t,) = json_tables({"x": {"y": {"z": 1}}, "l": list(range(20))}, "nested")
    assert t.rows == [["x.y.z", "1"], ["l", "[20 values]"]]
    (t,) = json_tables(0.123456, "scalar")
    assert t.rows == [["0.1235"]]
    kv, rows = json_tables(
        {"ts": [1, 2], "best": [{"p": 1.0}, {"p": 2.0, "q": 3}], "alone": [5, 6, 7], "s": "x"},
        "par",
    )
    assert kv.rows == [["alone", "5, 6, 7"], ["s", "x"]] and kv.title == "par"
    assert rows.columns == ["ts", "best.p", "best.q"] and rows.title == ""
    assert rows.rows == [["1", "1", ""], ["2", "2", "3"]]


def test_eval_table_handles_unscored() -> None:
    t = eval_table({"3": {"accuracy": None, "n": 40, "per_digit": {"0": None, "1": 0.5}}}, "e")
    assert t.columns == ["epoch", "accuracy", "n", "0", "1"]
    assert t.rows == [["3", "–", "40", "–", "50.0 %"]]


def test_find_seeds() -> None:
    assert find_seeds(CONFIG) == [("seed", 180), ("partA.deepfloyd.seed_offset", 3)]
    assert find_seeds({"runs": [{"seed": 1}, {"x": 2}]}) == [("runs[0].seed", 1)]


def test_runtime_tables_from_benchmark_files(tmp_path, monkeypatch) -> None:
    """Each synthetic benchmark file is one job: counted once, summed, its rule from the pattern."""
    _build(tmp_path, monkeypatch)
    md = Path("results/writeup/index.md").read_text()
    html = Path("results/writeup/index.html").read_text()
    # 6 files match a rule (the 7th, of a rule no longer in the workflow, does not); the
    # anagram job ran twice (repeat: 2 rows, 1 s + 3 s); summed 12.5+82+1234.5+2+2.5+4 s
    assert "| all rules | 6 | 22 min 17.5 s |" in md
    assert "| fetch_mnist | 1 | 12.5 s | 12.5 s | 12.5 s | 310 MB |" in md
    assert "| plot_loss | 2 | 4.5 s | 2.2 s | 2.5 s | 150 MB |" in md  # one row NA: the other's
    assert "| parta_anagrams | 1 | 4.0 s | 4.0 s | 4.0 s | 500 MB |" in md
    t0 = 1_750_000_000.0
    assert (
        f"| parta_anagrams | backend=deepfloyd, item=rot90 | {fmt_time(t0 + 1340)} "
        "| 4.0 s (2 runs) | 500 MB |"
    ) in md
    assert f"| plot_loss | run=ddpm_class | {fmt_time(t0 + 1333)} | 2.0 s | – |" in md
    assert f"| fetch_mnist | – | {fmt_time(t0 + 12.5)} | 12.5 s | 310 MB |" in md
    # first start (mnist: finished 12.5 s after t0, took 12.5 s) to last finish (t0 + 1340)
    span = (
        f"6 jobs between {fmt_time(t0)} and {fmt_time(t0 + 1340)} "
        "(22 min 20.0 s wall clock, 22 min 17.5 s summed)"
    )
    assert span in md and span in html
    # rules in order of their first job's start
    order = [md.index(f"| {r} | ") for r in ("fetch_mnist", "train_classifier", "train_partb")]
    assert order == sorted(order)


def test_read_benchmarks_counts_each_file_once(tmp_path) -> None:
    bench = tmp_path / "benchmarks"
    write_benchmark(bench / "train_unet/a.tsv", 10.0, 100.0, 1000.0)
    write_benchmark(bench / "train_unet/b.tsv", 20.0, None, 990.0)
    patterns = {"train": "benchmarks/train_unet/{run}.tsv", "all_of_them": "benchmarks/{x}"}
    jobs = read_benchmarks(patterns, root=tmp_path)
    # both patterns match; the more literal one wins, and no file is counted twice
    assert [(j.rule, j.job, j.seconds, j.max_rss_mb) for j in jobs] == [
        ("train", "run=b", 20.0, None),  # started at 970, before a (990)
        ("train", "run=a", 10.0, 100.0),
    ]
    assert jobs[0].path == "benchmarks/train_unet/b.tsv" and jobs[1].start == 990.0
    # a rerun overwrites its file: still one job, with the latest duration
    write_benchmark(bench / "train_unet/a.tsv", 30.0, 100.0, 2000.0)
    assert sorted(j.seconds for j in read_benchmarks(patterns, root=tmp_path)) == [20.0, 30.0]
    assert read_benchmarks({"x": "nowhere/{a}.tsv"}, root=tmp_path) == []
    tie = {"one": "benchmarks/train_unet/{a}.tsv", "two": "benchmarks/train_unet/{b}.tsv"}
    with pytest.raises(FundiffError, match="a.tsv matches rules 'two' and 'one'"):
        read_benchmarks(tie, root=tmp_path)


def test_pattern_regex_handles_constraints() -> None:
    regex, names, literal = pattern_regex(
        "benchmarks/sample/{run,single_step|fm_class}_{epoch,\\d{2}}_{run}.tsv"
    )
    assert names == ["run", "epoch"] and literal == len("benchmarks/sample/__.tsv")
    m = regex.match("benchmarks/sample/fm_class_12_fm_class.tsv")
    assert m and m.group("epoch") == "12"
    assert not regex.match("benchmarks/sample/fm_class_123_fm_class.tsv")
    assert not regex.match("benchmarks/sample/fm_class_12_single_step.tsv")  # same wildcard twice
    assert pattern_regex("a{{b}}/{x}.tsv")[0].match("a{b}/y.tsv")
    with pytest.raises(FundiffError, match="unclosed"):
        pattern_regex("benchmarks/{run.tsv")


def test_read_benchmark_format_and_errors(tmp_path) -> None:
    p = tmp_path / "b.tsv"
    write_benchmark(p, [1.5, 2.5], 64.0, 0.0)
    assert read_benchmark(p) == (4.0, 64.0, 2)
    p.write_text("seconds\n1\n")
    with pytest.raises(FundiffError, match=re.escape(str(p)) + ".*not a Snakemake benchmark"):
        read_benchmark(p)
    p.write_text("s\th:m:s\tmax_rss\nlong\t0:00:01\tNA\n")
    with pytest.raises(FundiffError, match=re.escape(str(p)) + " line 2"):
        read_benchmark(p)
    p.write_text("")
    with pytest.raises(FundiffError, match=re.escape(str(p))):
        read_benchmark(p)


def test_no_benchmarks_says_so(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    figures, numbers = make_synthetic_results(tmp_path)
    doc = build_writeup(
        figures, numbers, out_md="w/index.md", out_html="w/index.html", template_dir=TEMPLATES
    )
    assert doc.jobs == [] and doc.runtimes == [] and doc.run_span == ""
    assert (
        "_No Snakemake benchmark files were found for these results._"
        in Path("w/index.md").read_text()
    )


TOY_SNAKEFILE = r"""
REPO = "@REPO@"


configfile: f"{REPO}/config.yaml"


include: f"{REPO}/rules/common.smk"


# the toy's own targets replace the workflow's (rule writeup reads them when report.smk is included)
def all_figures():
    return [f"{R}/partB/toy/fig_{i}.png" for i in (1, 2, 3)]


def all_numbers():
    return [f"{R}/partB/toy/metrics.json"]


include: f"{REPO}/rules/report.smk"


rule all:
    input:
        all_figures(),
        all_numbers(),
        f"{R}/writeup/index.html",


rule toy_fig:
    input:
        "fig.png",
    output:
        f"{R}/partB/toy/fig_{{i}}.png",
    log:
        "logs/toy_fig/{i}.log",
    benchmark:
        "benchmarks/toy_fig/{i}.tsv"
    shell:
        "cp {input} {output} 2> {log}"


# Two outputs: the metadata reader of old counted a third of such jobs twice.
rule toy_two_outputs:
    output:
        json=f"{R}/partB/toy/metrics.json",
        model=f"{R}/partB/toy/model.bin",
    log:
        "logs/toy_two_outputs.log",
    benchmark:
        "benchmarks/toy_two_outputs.tsv"
    shell:
        "echo '{{\"psnr\": 20.5}}' > {output.json}; echo x > {output.model}; sleep 0.2"
"""


def _rule_counts(md: str) -> dict[str, int]:
    """The writeup's 'Runtime per rule' table as {rule: jobs}."""
    table = md.split("**Runtime per rule**", 1)[1].split("\n\n", 2)[1]
    counts = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        counts[cells[0]] = int(cells[1])
    return counts


def test_toy_workflow_runtime_counts_jobs_that_ran(tmp_path) -> None:
    """Real Snakemake: the runtime table counts exactly the jobs that ran, once each, also after
    a partial rerun (the jobs that did not rerun keep their earlier benchmark files)."""
    for shared in ("report", "schemas", "inputs"):  # templates; config validation
        (tmp_path / shared).symlink_to(REPO / shared)
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE.replace("@REPO@", str(REPO)))
    Image.new("RGB", (48, 32), (200, 60, 40)).save(tmp_path / "fig.png")

    proc = run_snakemake(tmp_path, "--cores", "2", timeout=600)
    ran = job_counts(proc.stdout + proc.stderr)
    assert ran.pop("writeup") == 1 and ran.pop("all") == 1, ran
    assert ran == {"toy_fig": 3, "toy_two_outputs": 1}
    md = (tmp_path / "results/writeup/index.md").read_text()
    assert _rule_counts(md) == {**ran, "all rules": 4}
    assert "4 jobs between" in md and "| writeup |" not in md

    # one job reruns; a stale file of a rule that no longer exists lies around
    write_benchmark(tmp_path / "benchmarks/old_rule.tsv", 5.0, 1.0, 0.0)
    proc = run_snakemake(tmp_path, "--cores", "2", "--forcerun", "toy_two_outputs", timeout=600)
    assert job_counts(proc.stdout + proc.stderr) == {
        "all": 1,
        "toy_two_outputs": 1,
        "writeup": 1,
    }
    md = (tmp_path / "results/writeup/index.md").read_text()
    assert _rule_counts(md) == {"toy_fig": 3, "toy_two_outputs": 1, "all rules": 4}
    rerun = (tmp_path / "benchmarks/toy_two_outputs.tsv").stat().st_mtime
    assert f"| toy_two_outputs | – | {fmt_time(rerun)} |" in md


def test_backend_order_is_the_course_model_then_ddpm_then_flow_then_unknown() -> None:
    from fundiff.writeup.layout import backend_order

    names = ["zeta", "local_fm", "alpha", "local", "deepfloyd"]
    assert sorted(names, key=backend_order) == [
        "deepfloyd",
        "local",
        "local_fm",
        "alpha",
        "zeta",
    ]
