"""The GPU-memory estimate behind the README table (parameter counts x bytes + margins)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fundiff import if_memory as M

README = Path(__file__).resolve().parents[1] / "README.md"


def test_peak_is_weights_times_bytes_plus_stated_margins():
    t5_fp16 = 4.7e9 * 2 / 2**30  # 8.75 GiB of weights
    assert M.weights_gib("T5-XXL encoder") == pytest.approx(t5_fp16)
    assert M.weights_gib("T5-XXL encoder", "float32") == pytest.approx(2 * t5_fp16)
    assert M.job_peak_gib(["T5-XXL encoder"]) == pytest.approx(1.0 + 1.2 * t5_fp16)
    both = M.weights_gib("IF-I-XL") + M.weights_gib("IF-II-L")
    assert M.job_peak_gib(["IF-I-XL", "IF-II-L"], "none") == pytest.approx(1.0 + 1.2 * both)
    # model offload: one whole model on the GPU at a time; sequential: one block
    assert M.job_peak_gib(["IF-I-XL", "IF-II-L"], "model") == pytest.approx(
        1.0 + 1.2 * M.weights_gib("IF-I-XL")
    )
    assert M.job_peak_gib(["IF-I-XL", "IF-II-L"], "sequential") == pytest.approx(1.6)
    with pytest.raises(ValueError, match="offload"):
        M.job_peak_gib(["IF-I-L"], "cpu")


def test_which_gpus_each_setting_fits():
    course = M.plan("IF-I-L", "IF-II-L")
    assert course["peak"] == course["t5"]  # T5-XXL is the biggest model of the course run
    assert M.fits(course["peak"]) == [16, 24, 40, 80]  # 11.5 GiB: too much for a 12 GB card
    assert M.fits(course["sampling"]) == [8, 12, 16, 24, 40, 80]  # T5 on the CPU: 8 GB is fine
    xl = M.plan("IF-I-XL", "IF-II-L")
    assert xl["peak"] > course["peak"] and M.fits(xl["peak"])[0] == 16
    assert M.fits(M.plan("IF-I-XL", "IF-II-L", "sequential")["peak"])[0] == 8
    assert M.fits(100.0) == []


def test_readme_table_is_the_generated_one():
    text = README.read_text()
    m = re.search(
        r"<!-- gpu-memory-table:start -->\n(.*?)<!-- gpu-memory-table:end -->", text, re.S
    )
    assert m, "README lacks the GPU memory table markers"
    assert m.group(1) == M.markdown_table(), "regenerate: python -m fundiff.if_memory"
    assert m.group(1).count("\n") == 2 + len(M.PAIRS) * len(M.OFFLOADS)
