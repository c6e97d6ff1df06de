"""The writeup's Evaluation section: one table of every judged Part A metric (value, Wilson
interval, baseline, lift), n/a rows where nothing is judged, and the SDEdit curves."""

from __future__ import annotations

from pathlib import Path

from fundiff.metrics import not_judged, rate
from fundiff.writeup.evaluation import COLUMNS, evaluation_section, measures_text
from fundiff.writeup.model import FigureEntry

PA = Path("results/partA")


def test_table_has_every_metric_with_interval_baseline_and_na() -> None:
    parsed = {
        PA / "local/a1_8_anagrams/six_nine.json": {
            "judged": {"success": rate(48, 64), "baseline": rate(4, 64), "lift": 12.0}
        },
        PA / "local/a1_7_sdedit/mnist_7.json": {
            "judged": {"levels": [0.9, 0.3], "keep_source": [rate(10, 64), rate(64, 64)]}
        },
        PA / "local/a1_7_2_inpaint/mnist_7.json": {
            "judged": {
                "source_class": rate(60, 64),
                "mse_outside_mask": 1e-4,
                "baseline": rate(1, 1),
                "lift": 0.94,
            }
        },
        PA / "deepfloyd/a1_9_hybrids/skull.json": {"judged": not_judged("photos")},
        PA / "local/a1_2_blur/x.json": {"best": []},  # not judged: not in the table
    }
    curve = FigureEntry("c.png", "figures/c.png", "curve", "a1_7_sdedit", 10, 10, 10, False)
    sec = evaluation_section(parsed, [curve])
    (table,) = sec.tables
    assert table.columns == COLUMNS
    rows = {(r[0][:4], r[3]): r for r in table.rows}
    assert len(table.rows) == 6  # 2 levels + inpaint (rate, MSE) + anagram + n/a hybrid
    assert table.rows[0][0].startswith("1.7 ")  # registry order: SDEdit first
    sd = rows[("1.7 ", "keeps source, t/T = 0.90")]
    assert sd[1:] == ["local", "mnist 7", sd[3], "0.1562", "[0.09, 0.26]", "10/64", "", ""]
    an = rows[("1.8 ", "both views right")]
    assert an[4:] == ["0.75", "[0.63, 0.84]", "48/64", "0.0625", "12"]
    assert any(r[3] == "MSE outside mask" for r in table.rows)
    hy = rows[("1.9 ", "n/a")]
    assert hy[1] == "deepfloyd" and hy[-1] == "photos"
    assert sec.figures == [curve]
    assert "Wilson" in sec.text and "1.7.2 Inpainting" in sec.text
    assert "hole image alone" in measures_text()


def test_no_judged_numbers_no_table() -> None:
    sec = evaluation_section({PA / "local/a1_2_blur/x.json": {"best": []}}, [])
    assert sec.is_empty()
