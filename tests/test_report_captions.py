"""The report side against real Snakemake 9: caption templates, workflow.rst and rule `writeup`.

A toy workflow includes the real ``rules/common.smk`` (config, target lists, params functions)
and ``rules/report.smk``, but makes every figure by copying a PNG and every number file with a
few lines of Python, so it runs in seconds. Then ``snakemake --report`` renders every caption
with the real params of its rule, and the writeup reads the benchmark files of the toy Part A and
number jobs (the other toy rules write none).
"""

from __future__ import annotations

import html
import json
import re
import zipfile
from pathlib import Path

import pytest

from fundiff.writeup import PART_A_TASKS

from conftest import ROOT, run_snakemake

CAPTIONS = ROOT / "report" / "captions"

# A `run:` job costs a whole Snakemake re-parse (~10 s here); a tiny script costs ~0.3 s.
TOY_NUMBERS = """
import json, sys
from pathlib import Path
import numpy as np

out = sys.argv[1]
if out.endswith(".csv"):
    rows = ["epoch,step,loss,lr"] + [f"{e},{s},{1.0 / s:.5f},0.001" for e in (1, 2) for s in (2 * e - 1, 2 * e)]
    Path(out).write_text("\\n".join(rows) + "\\n")
elif out.endswith(".npz"):
    np.savez(out, images=np.zeros((2, 28, 28), np.uint8))
elif "eval_epoch" in out or out.endswith("metrics.json"):
    per = {str(d): 0.5 + d / 40 for d in range(10)}
    Path(out).write_text(json.dumps({"accuracy": 0.7, "per_digit": per, "n": 20}))
else:
    Path(out).write_text(json.dumps({"psnr": {"250": 20.5, "500": 15.25}, "toy": True}))
"""

TOY_SNAKEFILE = r"""
REPO = "@REPO@"


configfile: f"{REPO}/config.yaml"


report: f"{REPO}/report/workflow.rst"


include: f"{REPO}/rules/common.smk"
include: f"{REPO}/rules/report.smk"

CAP = f"{REPO}/report/captions"


rule all:
    input:
        final_targets(),


for task, folder in PARTA_TASKS.items():
    for name, backends, results in parta_variants(task):

        rule:
            name:
                f"toy_{name}"
            wildcard_constraints:
                backend="|".join(backends),
            input:
                "fig.png",
            output:
                png=report(
                    f"{PA}/{folder}/{{item}}.png",
                    caption=f"{CAP}/{folder}.rst",
                    category="Part A",
                    subcategory=folder,
                    labels={"backend": "{backend}", "item": "{item}"},
                ),
                **upsampled_outputs(folder, results),
                **judged_outputs(task, folder),
            params:
                task=task,
                backend=backend_params(task),
                settings=task_params(task),
                image=image_spec(task),
            benchmark:
                f"benchmarks/parta/{{backend}}/{folder}/{{item}}.tsv"
            shell:
                "for f in {output}; do case $f in *_judged) mkdir -p $f ;; *) cp {input} $f ;; esac; done"


rule toy_noising:
    input: "fig.png"
    output: report(f"{PB}/figures/b1_noising.png", caption=f"{CAP}/noising.rst", category="Part B")
    params: sigmas=config["partB"]["noising_sigmas"], seed=config["seed"]
    shell: "cp {input} {output}"


rule toy_loss:
    input: "fig.png"
    output: report(f"{PB}/{{run}}/loss.png", caption=f"{CAP}/loss.rst", category="Part B")
    shell: "cp {input} {output}"


rule toy_denoise:
    input: "fig.png"
    output: report(f"{PB}/{{run}}/denoise_epoch{{epoch}}.png", caption=f"{CAP}/denoise.rst", category="Part B")
    params: spec=run_spec, seed=config["seed"]
    shell: "cp {input} {output}"


rule toy_ood:
    input: "fig.png"
    output: report(f"{PB}/{{run}}/ood.png", caption=f"{CAP}/ood.rst", category="Part B")
    params: sigmas=config["partB"]["noising_sigmas"], seed=config["seed"]
    shell: "cp {input} {output}"


rule toy_pure_noise:
    input: "fig.png"
    output: report(f"{PB}/{{run}}/outputs_epoch{{epoch}}.png", caption=f"{CAP}/pure_noise.rst", category="Part B")
    params: seed=config["seed"]
    shell: "cp {input} {output}"


rule toy_samples:
    input: "fig.png"
    output: report(f"{PB}/{{run}}/samples_epoch{{epoch}}.png", caption=f"{CAP}/samples.rst", category="Part B")
    params: spec=run_spec, seed=config["seed"]
    shell: "cp {input} {output}"


rule toy_gif:
    input: "fig.gif"
    output: report(f"{PB}/{{run}}/trajectory.gif", caption=f"{CAP}/trajectory.rst", category="Part B")
    params: spec=run_spec, seed=config["seed"]
    shell: "cp {input} {output}"


rule toy_numbers:
    output:
        "results/{path}",
    wildcard_constraints:
        path=r".*\.(json|csv|npz)",
    benchmark:
        "benchmarks/toy_numbers/{path}.tsv"
    shell:
        "python toy_numbers.py {output}"
"""


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy workflow after a full run (with the writeup) and ``--report report.zip``."""
    from PIL import Image

    ws = tmp_path_factory.mktemp("toy_report")
    (ws / "schemas").symlink_to(ROOT / "schemas")
    (ws / "report").symlink_to(ROOT / "report")
    (ws / "inputs").symlink_to(ROOT / "inputs")  # config validation checks input files exist
    (ws / "Snakefile").write_text(TOY_SNAKEFILE.replace("@REPO@", str(ROOT)))
    (ws / "toy_numbers.py").write_text(TOY_NUMBERS)
    Image.new("RGB", (48, 32), (200, 60, 40)).save(ws / "fig.png")
    frames = [Image.new("L", (28, 28), v) for v in (0, 255)]
    frames[0].save(ws / "fig.gif", save_all=True, append_images=frames[1:], duration=100)
    ci = str(ROOT / "configs" / "ci.yaml")
    run_snakemake(ws, "--cores", "2", "--configfile", ci, timeout=600)
    run_snakemake(ws, "--cores", "1", "--configfile", ci, "--report", "report.zip", timeout=600)
    return ws


def _report_html(ws: Path) -> str:
    with zipfile.ZipFile(ws / "report.zip") as z:
        name = next(n for n in z.namelist() if n.endswith("report.html"))
        return z.read(name).decode()


def _js_var(page: str, name: str):
    m = re.search(rf'<script id="[\w-]+">\s*var {name} = (.*?);\n', page, re.S)
    assert m, name
    return json.loads(m.group(1))


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def test_every_caption_file_exists() -> None:
    """Rules may only name caption files that exist (Part A: one per task id)."""
    for task in PART_A_TASKS:
        assert (CAPTIONS / f"{task}.rst").is_file(), task
    for smk in (ROOT / "rules").glob("*.smk"):
        for name in re.findall(r"captions/(\w+)\.rst", smk.read_text()):
            assert (CAPTIONS / f"{name}.rst").is_file(), (smk.name, name)


def test_captions_render_with_real_params(toy: Path) -> None:
    results = _js_var(_report_html(toy), "results")
    texts = [_text(v.get("caption", "")) for v in results.values()]
    assert len(texts) >= 30, texts
    for t in texts:
        assert t, "empty caption"
        assert "{{" not in t and "{%" not in t and "Undefined" not in t, t
        assert "None" not in t, t
    joined = "\n".join(texts)
    # Part A: prompts, items, i_start, backend and seed come through the real params
    assert 'Samples for the prompt "a rocket ship" with 3 and 5 denoising steps' in joined
    assert "at i_start = 1, 3, 5" in joined
    assert '"an oil painting of an old man" upright' in joined
    assert "(deepfloyd backend, seed 0)" in joined and "(local backend, seed 0)" in joined
    # Part B: run, epoch and the run spec (from params, or config for rules without params)
    assert "Samples of run fm_class after epoch 1, 4 per digit" in joined
    assert re.search(
        r"Training loss per step of run ddpm_class, log scale, \d+ epochs? \(ddpm", joined
    )
    assert "σ = 0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0" in joined
    # A0's stage-II results, each its own report item (ci.yaml: 3 and 5 steps, n = 1)
    names = [v.get("name", "") + str(v.get("filename", "")) for v in results.values()]
    assert (
        sum(
            "a_rocket_ship-256px-3steps_1" in n or "a_rocket_ship-256px-5steps_1" in n
            for n in names
        )
        == 2
    ), names


def test_workflow_description(toy: Path) -> None:
    desc = _text(_js_var(_report_html(toy), "workflow_desc"))
    assert "Seed: 0" in desc
    assert "deepfloyd: stage I tiny_if/stage1" in desc
    assert "local: the class-conditioned MNIST model of Part B run ddpm_class" in desc
    assert "fm_class_const: fm, class-conditioned" in desc
    assert "{{" not in desc and "Undefined" not in desc


def test_writeup_rule_output_and_runtimes(toy: Path) -> None:
    out = toy / "results" / "writeup"
    md = (out / "index.md").read_text()
    page = (out / "index.html").read_text()
    # runtimes from the jobs' benchmark files (global wildcard constraints in the patterns)
    assert re.search(r"\| toy_parta_sdedit \| \d+ \|", md), md[-2000:]
    assert "| toy_parta_sdedit | backend=deepfloyd, item=" in md
    assert "| toy_numbers |" in md and "| writeup |" not in md
    assert "| seed | 0 |" in md and "stage1: tiny_if/stage1" in md
    assert 'src="figures/partA/deepfloyd/a1_8_anagrams/old_man_campfire.png"' in page
    assert (out / "figures/partB/fm_class/trajectory.gif").is_file()
    log = (toy / "logs" / "writeup.log").read_text()
    assert "writeup:" in log and "figures" in log


def test_writeup_rule_fails_naming_a_corrupt_figure(toy: Path) -> None:
    bad = "results/partB/fm_time/loss.png"
    (toy / bad).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    proc = run_snakemake(
        toy,
        "--cores",
        "1",
        "--configfile",
        str(ROOT / "configs" / "ci.yaml"),
        "--forcerun",
        "writeup",
        "--rerun-triggers",
        "mtime",
        "--",
        "results/writeup/index.html",
        check=False,
    )
    assert proc.returncode != 0
    assert "fundiff writeup failed" in proc.stderr + proc.stdout
    assert bad in proc.stderr + proc.stdout
    assert bad in (toy / "logs" / "writeup.log").read_text()
