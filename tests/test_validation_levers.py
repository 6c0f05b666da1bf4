"""The validation-lever script's alignment filters, views, windows and blend, by hand."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import rna

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import validation_levers as levers  # noqa: E402


def test_coverage_filter_counts_the_query_residue_columns():
    msa = rna("ACGUNA",   # query: 5 residue columns (its N is read as a gap and does not count)
              "AC----",   # 2 of 5 → 0.4
              "ACG--A",   # 4 of 5 → 0.8
              "-----A",   # 1 of 5 → 0.2
              "----GA")   # G faces the query's N, not a residue: 1 of 5
    assert levers.covered(msa, 0.5).ids == ("s0", "s2")
    assert levers.covered(msa, 0.4).ids == ("s0", "s1", "s2")
    assert levers.covered(msa, 1.0).ids == ("s0",)  # the query stays


def test_identity_filter_is_greedy_in_alignment_order():
    msa = rna("AAAAAAAAAA",
              "AAAAAAAAAC",   # 0.9 to the query: dropped at < 0.9
              "AAAAACCCCC",   # 0.5 to the query: kept
              "AAAAACCCCG",   # 0.9 to row 2 (kept before it): dropped
              "GGGGGGGGGG")   # 0 to both: kept
    assert levers.identity_filtered(msa, 0.9).ids == tuple(msa.ids[i] for i in (0, 2, 4))
    assert levers.identity_filtered(msa, 0.95).depth == 5


def test_depth_view_keeps_the_query_and_half_the_rows():
    msa = rna(*["ACGU"] * 21)
    view = levers.depth_view(msa, 0.5, seed=3)
    assert view.depth == 10 and view.ids[0] == msa.ids[0] and len(set(view.ids)) == 10
    assert levers.depth_view(msa, 0.5, seed=3).ids == view.ids  # reproducible
    small = rna(*["ACGU"] * 8)
    assert levers.depth_view(small, 0.5, seed=3) is small


def test_windows_cover_every_residue_and_average_overlaps():
    assert levers.window_starts(100, 128, 64) == [0]
    assert levers.window_starts(200, 128, 64) == [0, 64, 72]
    assert levers.window_starts(256, 128, 64) == [0, 64, 128]
    # each window predicts its own start everywhere: overlaps average the starts
    x = np.zeros((1, 10, 10), dtype=np.float32)
    x[0] = np.arange(10)[:, None]  # row index, so a window knows where it starts
    whole = np.full((10, 10), -1.0, dtype=np.float32)

    def start_of(window: np.ndarray) -> np.ndarray:
        return np.full(window.shape[1:], window[0, 0, 0])
    out = levers.windowed(start_of, x, whole, crop=4, stride=2)  # windows at 0, 2, 4, 6
    assert out[0, 0] == 0 and out[2, 3] == 1  # (2, 3): windows 0 and 2
    assert out[9, 9] == 6 and out[4, 5] == pytest.approx((2 + 4) / 2)
    assert out[0, 9] == -1  # no window holds both: the whole-RNA map
    short = whole[:4, :4]
    assert levers.windowed(start_of, x[:, :4, :4], short, crop=4, stride=2) is short  # one crop: as it was


def test_blend_scales_the_couplings_to_their_maximum():
    prob = np.array([[0.2, 0.6], [0.6, 0.2]])
    coupling = np.array([[0.0, 4.0], [4.0, 2.0]])
    assert np.allclose(levers.blended(prob, coupling, 0.25), [[0.15, 0.7], [0.7, 0.275]])
    assert np.allclose(levers.blended(prob, np.zeros((2, 2)), 0.5), prob / 2)


def test_table_and_verdict_measure_against_the_baseline():
    rows = {"the Rfam alignment (baseline)": {"seeds": [0.70, 0.72], "average": 0.73, "cost": "", "note": ""},
            "filter": {"seeds": [0.60, 0.61], "average": 0.62, "cost": "none", "note": "1 alignment cut"},
            "views": {"seeds": [0.71, 0.73], "average": 0.75, "cost": "2 more passes", "note": ""},
            "3 of 3 networks averaged": {"seeds": [], "average": 0.74, "cost": "1 more network pass", "note": ""}}
    lines = levers.table(rows)
    assert lines[2].startswith("| the Rfam alignment (baseline) | 0.700 | 0.720 | 0.730 | +0.000 |")
    assert "| filter | 0.600 | 0.610 | 0.620 | -0.110 | none | 1 alignment cut |" == lines[3]
    assert lines[5].startswith("| 3 of 3 networks averaged |  |  | 0.740 | +0.010 |")
    assert levers.verdict(rows) == ("The best lever, views, moves the average of the seeds by +0.020, "
                                    "at the cost of 2 more passes per prediction.")


def test_view_rows_spread_over_identity_among_the_rows_that_may_stand_in():
    msa = rna("AAAAAAAAAA",
              "AAAAAAAAAC",   # 0.9 identical: too close to stand in
              "AAAAAAAACC",   # 0.8
              "CCCCCAAAA-",   # 0.4, 0.9 coverage
              "CCCCCCCC--",   # 0.8 coverage: too short
              "CCAAAAAA-C",   # 0.6, 0.9 coverage
              "CCCCCCCCCC")   # 0.0
    # eligible by identity, least first: s6, s3, s5, s2
    assert levers.view_rows(msa, 2) == [6, 2]
    assert levers.view_rows(msa, 3) == [6, 5, 2]
    assert levers.view_rows(msa, 4) == levers.view_rows(msa, 8) == [2, 3, 5, 6]
    assert levers.view_rows(rna("ACGU", "ACGU"), 2) == []


def test_homolog_view_puts_the_row_first_on_its_own_columns():
    msa = rna("ACGUACGU",
              "AC-UAC-U",
              "GGGGCCCC")
    view, columns = levers.homolog_view(msa, 1)
    assert columns.tolist() == [0, 1, 3, 4, 5, 7]
    assert view.ids == ("s1", "s0", "s2") and view.query == "ACUACU"
    assert msa.alphabet.decode(view.codes[1]) == "ACUACU" and msa.alphabet.decode(view.codes[2]) == "GGGCCC"
    assert view.query_text == ""


def test_views_average_pair_by_pair_where_they_cover():
    whole = np.zeros((4, 4), dtype=np.float32)
    one = (np.full((2, 2), 1.0), np.array([0, 2]))
    two = (np.full((3, 3), 4.0), np.array([0, 1, 2]))
    out = levers.with_views(whole, [one, two])
    assert out[0, 2] == pytest.approx(5 / 3)   # the whole map and both views
    assert out[0, 1] == pytest.approx(2.0)     # the whole map and the second view
    assert out[3, 3] == 0 and out[0, 3] == 0   # no view: as it was
    assert levers.with_views(whole, []).tolist() == whole.tolist()


def test_four_network_tables_and_the_verdict_over_recipes():
    base = "the Rfam alignment (baseline)"
    record = {"r1": {base: {"seeds": [0.70, 0.72, 0.74, 0.76], "average": 0.75, "cost": "", "note": ""},
                     "views": {"seeds": [0.71, 0.73, 0.75, 0.77], "average": 0.74, "cost": "2 more", "note": "9 of 14"}},
              "r2": {base: {"seeds": [0.70, 0.70, 0.70, 0.70], "average": 0.76, "cost": "", "note": ""},
                     "views": {"seeds": [0.70, 0.72, 0.70, 0.72], "average": 0.77, "cost": "2 more", "note": ""}}}
    lines = levers.table(record["r1"])
    assert lines[0] == ("| lever | seed 0 | seed 1 | seed 2 | seed 3 | average of the seeds | against the baseline | "
                        "added to a prediction | note |")
    assert lines[1] == "|---|---:|---:|---:|---:|---:|---:|---|---|"
    assert lines[3] == "| views | 0.710 | 0.730 | 0.750 | 0.770 | 0.740 | -0.010 | 2 more | 9 of 14 |"
    assert levers.four_verdict(record) == ("Averaged over the recipes, the best lever on four networks, views, "
                                           "moves their average by +0.000: none moves it at all.")
    record["r2"]["views"]["average"] = 0.78
    assert levers.four_verdict(record).endswith("views, moves their average by +0.005.")


def test_ensemble_sizes_average_every_subset():
    pooled = [{"RF1": np.array([[v]], dtype=np.float32)} for v in (0.0, 1.0, 2.0, 3.0)]

    def score(maps: dict) -> float:  # a subset's average map holds the mean of its members' values
        return round(float(maps["RF1"][0, 0]), 4)
    sizes = levers.ensemble_sizes(pooled, score)
    assert sizes["1"] == {"mean": 1.5, "low": 0.0, "high": 3.0, "subsets": 4}
    assert sizes["2"] == {"mean": 1.5, "low": 0.5, "high": 2.5, "subsets": 6}
    assert sizes["3"]["low"] == 1.0 and sizes["3"]["high"] == 2.0 and sizes["4"]["subsets"] == 1
    assert levers.sizes_table(sizes)[3] == "| 2 | 6 | 1.500 | 0.500 | 2.500 |"
    curve = {"1": {"mean": 0.74}, "2": {"mean": 0.76}, "4": {"mean": 0.77}, "8": {"mean": 0.78}}
    assert levers.sizes_verdict(curve, 4) == ("Averaging 4 networks (as the shipped model does) gives 75% of the "
                                              "+0.040 that all 8 add over one network.")
