"""scripts/planted_helices.py: the planted pairs a simulated family names, and where a map ranks them."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import planted_helices  # noqa: E402
from tprna.simulate import format_contacts, simulate_family  # noqa: E402


def test_planted_pairs_read_back_from_the_contact_file(tmp_path):
    fam = simulate_family(90, 5, np.random.default_rng(2), tertiary_stems=2)
    assert fam.tertiary
    (tmp_path / "f.contacts").write_text(format_contacts(fam))
    assert planted_helices.planted_pairs(tmp_path / "f.contacts") == fam.tertiary
    plain = simulate_family(90, 5, np.random.default_rng(2))
    (tmp_path / "g.contacts").write_text(format_contacts(plain))
    assert planted_helices.planted_pairs(tmp_path / "g.contacts") == []


def test_found_counts_pairs_within_the_long_range_top_l():
    # L = 30: 21 long-range pairs (j - i >= 24) in all; the top-L keeps every one of them, so a
    # long-range pair is always found and a closer pair never
    score = np.zeros((30, 30))
    assert planted_helices.found(score, [(0, 29), (2, 27)]) == 1.0
    assert planted_helices.found(score, [(0, 20)]) == 0.0
    # L = 60: 666 long-range pairs, 60 kept; two pairs scored highest are found, one scored zero is
    # not (the stable order keeps the earliest zeros, which (30, 59) is not among)
    score = np.zeros((60, 60))
    score[3, 40] = score[40, 3] = 1.0
    score[10, 50] = 0.5
    assert planted_helices.found(score, [(3, 40), (10, 50)]) == 1.0
    assert planted_helices.found(score, [(40, 3), (30, 59)]) == 0.5


def test_found_at_a_fraction_of_l():
    score = np.zeros((60, 60))
    for rank, (a, b) in enumerate([(0, 59), (1, 58), (2, 57), (3, 56), (4, 55), (5, 54), (6, 53)]):
        score[a, b] = 10 - rank
    # top-L/10 keeps the 6 highest: the seventh pair is out
    assert planted_helices.found(score, [(0, 59), (5, 54)], 10) == 1.0
    assert planted_helices.found(score, [(0, 59), (6, 53)], 10) == 0.5
    assert planted_helices.found(score, [(6, 53)], 5) == 1.0
