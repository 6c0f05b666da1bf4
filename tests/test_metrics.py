"""Metrics on hand-made maps whose answers are worked out in the comments."""
import math

import numpy as np
import pytest

from tprna.errors import TprnaError
from tprna.metrics import (RANGES, apc, contact_precisions, summarize, top_k, top_k_precision, top_pairs)

# In a 10×10 map the only pairs i<j with s = j−i ≥ 6 are (all short range, s < 12):
#   s=6: (0,6) (1,7) (2,8) (3,9)   s=7: (0,7) (1,8) (2,9)   s=8: (0,8) (1,9)   s=9: (0,9)
SHORT_PAIRS = [(0, 6), (1, 7), (2, 8), (3, 9), (0, 7), (1, 8), (2, 9), (0, 8), (1, 9), (0, 9)]


def example_10x10():
    prob = np.zeros((10, 10))
    # ranking by probability: the order of SHORT_PAIRS
    for rank, (i, j) in enumerate(SHORT_PAIRS):
        prob[i, j] = 0.9 - 0.08 * rank
    prob[0, 1] = prob[2, 4] = 0.99        # s < 6: never scored
    prob[6, 0] = 0.0                       # lower triangle: ignored
    contacts = np.zeros((10, 10), dtype=int)
    for i, j in [(0, 6), (2, 8), (1, 9), (0, 1), (2, 4)]:
        contacts[i, j] = contacts[j, i] = 1
    return prob, contacts


def test_top_k_values():
    assert [top_k(10, d) for d in ("L", "L/2", "L/5", "L/10")] == [10, 5, 2, 1]
    assert top_k(7, "L/10") == 1 and top_k(25, "L/2") == 12


def test_short_range_precision_by_hand():
    prob, contacts = example_10x10()
    # ranked: (0,6)+ (1,7)- (2,8)+ (3,9)- (0,7)- (1,8)- (2,9)- (0,8)- (1,9)+ (0,9)-
    # top1 1/1, top2 1/2, top5 2/5, top10 3/10
    got = contact_precisions(prob, contacts)
    assert got[("short", "L/10")] == 1.0
    assert got[("short", "L/5")] == 0.5
    assert got[("short", "L/2")] == pytest.approx(0.4)
    assert got[("short", "L")] == pytest.approx(0.3)
    # no mid or long pairs in a 10-residue chain: 0/k
    for r in ("mid", "long"):
        for label in ("L", "L/2", "L/5", "L/10"):
            assert got[(r, label)] == 0.0
    assert len(got) == 12


def test_unobserved_pairs_are_not_candidates():
    prob, contacts = example_10x10()
    observed = np.ones((10, 10), dtype=bool)
    observed[1, 7] = False
    # ranked: (0,6)+ (2,8)+ (3,9)- (0,7)- (1,8)- (2,9)- (0,8)- (1,9)+ (0,9)-  (9 candidates)
    assert top_k_precision(prob, contacts, observed, "short", 1) == 1.0
    assert top_k_precision(prob, contacts, observed, "short", 2) == 1.0
    assert top_k_precision(prob, contacts, observed, "short", 5) == pytest.approx(0.4)
    # CASP convention: divide by k=10 although only 9 candidates exist
    assert top_k_precision(prob, contacts, observed, "short", 10) == pytest.approx(0.3)
    # the pairs themselves, best first, and a NaN score last
    i, j = top_pairs(prob, observed, "short", 4)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 6), (2, 8), (3, 9), (0, 7)]
    prob = prob.copy()
    prob[0, 6] = np.nan
    i, j = top_pairs(prob, observed, "short", 9)
    assert (i[-1], j[-1]) == (0, 6) and len(i) == 9


def test_ties_break_in_row_major_order():
    _, contacts = example_10x10()
    prob = np.full((10, 10), 0.5)
    # equal scores: order (0,6)+ (0,7)- (0,8)- (0,9)- (1,7)- (1,8)- (1,9)+ ...
    assert top_k_precision(prob, contacts, None, "short", 2) == 0.5
    assert top_k_precision(prob, contacts, None, "short", 5) == pytest.approx(0.2)
    assert top_k_precision(prob, contacts, None, "short", 7) == pytest.approx(2 / 7)


def test_range_boundaries():
    length = 30
    prob = np.zeros((length, length))
    contacts = np.zeros((length, length), dtype=int)
    for s in (5, 6, 11, 12, 23, 24, 29):
        prob[0, s] = 1.0 - s / 100          # the best pair of every range
    for s in (11, 23, 24):
        contacts[0, s] = 1
    # short: s=6 (0.94) beats s=11 (0.89) → top1 miss, top2 hit 1/2
    assert top_k_precision(prob, contacts, None, "short", 1) == 0.0
    assert top_k_precision(prob, contacts, None, "short", 2) == 0.5
    # mid: s=12 (0.88) then s=23 (0.77)
    assert top_k_precision(prob, contacts, None, "mid", 2) == 0.5
    # long: s=24 (0.76) first
    assert top_k_precision(prob, contacts, None, "long", 1) == 1.0
    assert RANGES["short"] == (6, 12) and RANGES["mid"] == (12, 24) and RANGES["long"][0] == 24


def test_shape_mismatch_is_a_user_error():
    with pytest.raises(TprnaError):
        top_k_precision(np.zeros((5, 5)), np.zeros((6, 6)), None, "short", 1)
    with pytest.raises(TprnaError):
        top_k_precision(np.zeros((5, 5)), np.zeros((5, 5)), None, "medium", 1)


def test_summarize_overall_and_by_neff():
    a = {("long", "L/5"): 1.0, ("short", "L"): 0.2}
    b = {("long", "L/5"): 0.0, ("short", "L"): 0.4}
    c = {("long", "L/5"): 0.5, ("short", "L"): 0.6}
    out = summarize([a, b, c], neff=[0.5, 5.0, 10.0])
    assert out["all"]["n"] == 3
    assert out["all"]["precision"][("long", "L/5")] == pytest.approx(0.5)
    assert out["all"]["precision"][("short", "L")] == pytest.approx(0.4)
    assert out["neff<1"] == {"n": 1, "precision": a}
    assert out["1<=neff<10"] == {"n": 1, "precision": b}
    assert out["neff>=10"] == {"n": 1, "precision": c}  # 10 opens the deep subset (store splits agree)
    assert set(summarize([a, b], neff=[0.5, 5.0])) == {"all", "neff<1", "1<=neff<10"}  # empty left out
    assert set(summarize([a, b])) == {"all"}
    with pytest.raises(TprnaError):
        summarize([a, b], neff=[1.0])


def test_apc_by_hand():
    s = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])
    # row means off the diagonal: 1.5, 2, 2.5; overall mean 2
    # (0,1): 1 − 1.5·2/2 = −0.5   (0,2): 2 − 1.5·2.5/2 = 0.125   (1,2): 3 − 2·2.5/2 = 0.5
    expected = np.array([[0.0, -0.5, 0.125], [-0.5, 0.0, 0.5], [0.125, 0.5, 0.0]])
    np.testing.assert_allclose(apc(s), expected)
    s_diag = s + np.diag([100.0, -7.0, 3.0])      # the diagonal does not enter
    np.testing.assert_allclose(apc(s_diag), expected)
    assert not math.isnan(apc(np.zeros((4, 4))).sum())


def test_attainable_precision_by_hand():
    """A perfect predictor's long-range top-k is min(1, contacts / k): a 60-nt RNA with 3
    long contacts (s ≥ 24) scores 3/60, 3/30, 3/12 and 3/6 at L, L/2, L/5, L/10; a 30-mer with
    3 scores 1 at L/10 (k = 3)."""
    from tprna.evaluate import Labels, attainable, attainable_line
    sparse = np.zeros((60, 60), dtype=np.uint8)
    for i, j in [(0, 30), (5, 40), (10, 59)]:
        sparse[i, j] = sparse[j, i] = 1
    dense = np.zeros((30, 30), dtype=np.uint8)
    for i in range(3):  # 3 long pairs in a 30-mer: long top-L/10 (k = 3) is attainable
        dense[i, 29 - i] = dense[29 - i, i] = 1
    labels = {"sparse": Labels(sparse, np.ones_like(sparse, dtype=bool), 0.5, "A" * 60),
              "dense": Labels(dense, np.ones_like(dense, dtype=bool), 20.0, "A" * 30)}
    result = attainable(labels)
    per = dict(zip(result["ids"], result["per_rna"]))
    assert [per["sparse"][("long", k)] for k in ("L", "L/2", "L/5", "L/10")] == \
        pytest.approx([3 / 60, 3 / 30, 3 / 12, 3 / 6])
    assert per["dense"][("long", "L/10")] == 1.0 and per["dense"][("long", "L")] == pytest.approx(3 / 30)
    assert result["summary"]["all"]["precision"][("long", "L/10")] == pytest.approx((0.5 + 1.0) / 2)
    assert result["summary"]["neff>=10"]["n"] == 1
    line = attainable_line(result, "neff<1")
    assert "top-L 0.050" in line and "top-L/10 0.500" in line
    assert attainable_line(result, "1<=neff<10") == ""  # an empty subset: no line
