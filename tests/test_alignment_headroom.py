"""scripts/alignment_headroom.py: dot-bracket pairs, the long-range top-L of each signal and a
family's headroom, checked by hand on a small map."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import alignment_headroom as headroom  # noqa: E402
from tprna.evaluate import Labels  # noqa: E402


def test_dot_bracket_pairs_with_pseudoknots_by_hand():
    assert headroom.dot_bracket_pairs("((..[[..))..]]") == {(0, 9), (1, 8), (4, 13), (5, 12)}
    assert headroom.dot_bracket_pairs("A.(.).a") == {(0, 6), (2, 4)}
    assert headroom.dot_bracket_pairs("....") == set()


def test_secondary_structure_only_on_the_query(tmp_path):
    path = tmp_path / "secstruct.txt"
    path.write_text("PDBID: x\nSEQUENCE: ggAAAcc \nSECSTRUCT: ((...)) \n")
    assert headroom.secondary_structure(path, "GGAAACC") == {(0, 6), (1, 5)}
    assert headroom.secondary_structure(path, "GGAAACCU") is None  # another sequence: not split by kind


def score(length: int, high: list[tuple[int, int]]) -> np.ndarray:
    """-1 everywhere, the listed pairs 1: the top-L holds them and then the earliest long pairs
    in row-major order (rows 0 and 1 for L = 60: 36 + 35 pairs)."""
    s = -np.ones((length, length))
    for i, j in high:
        s[i, j] = s[j, i] = 1.0
    return s


def test_a_family_by_hand():
    length = 60
    true = [(5, 45), (6, 44), (7, 43), (20, 55)]  # a helix and one tertiary contact, all past row 1
    contacts = np.zeros((length, length), np.uint8)
    for i, j in true:
        contacts[i, j] = contacts[j, i] = 1
    labels = Labels(contacts, np.ones((length, length), bool), 10.0, "A" * length)
    maps = {"model": score(length, [(5, 45), (6, 44), (30, 58)]), "alone": score(length, []),
            "plm": score(length, [(7, 43), (20, 55)]), "APC (precision)": score(length, []),
            "bpp": score(length, [])}
    row = headroom.family("x", labels, maps, {(5, 45), (6, 44)})
    assert row["P model"] == 2 / 60 and row["P plm"] == 2 / 60 and row["P alone"] == 0.0
    assert row["attainable"] == row["evidence"] == 4 / 60
    assert row["unused"] == 2 and row["fp"] == 58 and row["swapped"] == 4 / 60
    # (7, 43) is 2 from (5, 45) on both strands: a helix neighbour; (20, 55) is tertiary
    assert (row["n pair"], row["n helix"], row["n tertiary"]) == (2, 1, 1)
    assert (row["model pair"], row["model helix"], row["model tertiary"]) == (2, 0, 0)
    assert (row["plm pair"], row["plm helix"], row["plm tertiary"]) == (0, 1, 1)
    # no dot-bracket on the query: no kinds
    assert "n pair" not in headroom.family("x", labels, maps, None)
    text = headroom.verdict([row])
    assert "reaches 0.033 of an attainable 0.067" in text and "swapped" in text


def test_family_bootstrap_by_hand():
    # two families, 0 and 1 with alignments: a draw's mean is 0, 1/2 or 1 with chances 1/4, 1/2, 1/4
    rows = [{"P model": 0.0, "P alone": -0.1}, {"P model": 1.0, "P alone": 0.9}]
    boot = headroom.family_bootstrap(rows, goal=0.75, gain=0.10)
    assert boot["intervals"]["alignment"] == (0.0, 1.0)
    assert abs(boot["reaches goal"] - 0.25) < 0.02  # both families 1 in a quarter of the draws
    # the query alone is 0.1 below in every family: the paired gain never moves
    assert boot["intervals"]["gain"] == pytest.approx((0.1, 0.1)) and boot["reaches gain"] == 1.0
    text = headroom.bootstrap_text(boot)
    assert "in [0.000, 1.000] with the alignment" in text and "the gain 0.10 in 100%" in text
