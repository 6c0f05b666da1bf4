"""Features against hand-computed answers and the independent slow reference."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tprna.alphabet import PROTEIN, RNA
from tprna.errors import TprnaError
from tprna.contract import model_input
from tprna.features import (FeatureSpec, base_pair_probabilities, covariance, make_features, neff, precision,
                            sequence_weights)
from tprna.msa import MSA, read_msa
from tprna.testing import reference_covariance, reference_weights
from helpers import coupled_alignment, rna


def test_weights_and_neff_by_hand():
    # identities to q: s1 5/5, s2 4/5 (= 0.8, counts), s3 1/5; s2–s3 1/5
    msa = rna("ACGUA", "ACGUA", "ACGUC", "UUUUU")
    w = sequence_weights(msa)
    np.testing.assert_allclose(w, [1 / 3, 1 / 3, 1 / 3, 1.0], rtol=1e-6)
    assert neff(msa) == pytest.approx(2.0 / math.sqrt(5))


def test_gaps_count_as_identical_symbols():
    # s1 and s2 agree everywhere, gaps included; q differs from them at 2 of 5 columns
    msa = rna("ACGUA", "AC--A", "AC--A", "GGGGG")
    np.testing.assert_allclose(sequence_weights(msa), [1, 0.5, 0.5, 1], rtol=1e-6)


def test_identity_threshold_is_inclusive_and_configurable():
    msa = rna("AAAAAAAAAA", "AAAAAAAAUU")  # identity exactly 0.8
    np.testing.assert_allclose(sequence_weights(msa, 0.8), [0.5, 0.5])
    np.testing.assert_allclose(sequence_weights(msa, 0.81), [1, 1])


def test_covariance_by_hand():
    # column 0 and 1 perfectly coupled (A↔C, U↔G), duplicates halve each weight
    msa = rna("AC", "AC", "UG", "UG")
    c = covariance(msa, sequence_weights(msa))
    A, C, G, U = 0, 1, 2, 3
    assert c.shape == (2, 2, 5, 5) and c.dtype == np.float32
    assert c[0, 1, A, C] == pytest.approx(0.25) and c[0, 1, U, G] == pytest.approx(0.25)
    assert c[0, 1, A, G] == pytest.approx(-0.25) and c[0, 1, U, C] == pytest.approx(-0.25)
    assert c[0, 0, A, A] == pytest.approx(0.25) and c[0, 0, A, U] == pytest.approx(-0.25)
    independent = rna("AC", "AG", "UC", "UG")
    assert np.abs(covariance(independent, sequence_weights(independent))[0, 1]).max() < 1e-7


def test_covariance_symmetry_and_reference_random():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 5, size=(60, 12)).astype(np.uint8)
    codes[0] = rng.integers(0, 4, size=12)
    codes[10:20] = codes[0]  # some near-duplicates so the weights matter
    msa = MSA(ids=tuple(map(str, range(60))), codes=codes, alphabet=RNA)
    w = sequence_weights(msa)
    np.testing.assert_allclose(w, reference_weights(msa), rtol=1e-6)
    c = covariance(msa, w)
    np.testing.assert_allclose(c, reference_covariance(msa, w), atol=1e-6)  # float32
    np.testing.assert_allclose(c, c.transpose(1, 0, 3, 2), atol=1e-7)


def test_protein_scatter_path_matches_reference():
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 21, size=(40, 9)).astype(np.uint8)
    codes[0] = rng.integers(0, 20, size=9)
    msa = MSA(ids=tuple(map(str, range(40))), codes=codes, alphabet=PROTEIN)
    w = sequence_weights(msa)
    np.testing.assert_allclose(covariance(msa, w), reference_covariance(msa, w), atol=2e-7)


def test_pseudocount_mixes_with_uniform():
    msa = rna("AC", "AC", "UG", "UG")
    w = sequence_weights(msa)
    lam = 0.5
    c = covariance(msa, w, pseudocount=lam)
    # f'_0(A) = .5·.5 + .5/5 = .35 ; f'_01(A,C) = .5·.5 + .5/25 = .27 → C = .27 − .35² 
    assert c[0, 1, 0, 1] == pytest.approx(0.27 - 0.35 ** 2, abs=1e-6)
    assert c[0, 0, 0, 0] == pytest.approx(0.35 - 0.35 ** 2, abs=1e-6)


def test_precision_inverts_the_ridged_covariance():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 5, size=(80, 6)).astype(np.uint8)
    codes[0] = rng.integers(0, 4, size=6)
    msa = MSA(ids=tuple(map(str, range(80))), codes=codes, alphabet=RNA)
    cov = covariance(msa, sequence_weights(msa))
    prec = precision(cov, shrinkage=0.1)
    flat = lambda a: a.transpose(0, 2, 1, 3).reshape(30, 30).astype(np.float64)
    ridged = flat(cov) + max(0.1 * np.mean(np.diag(flat(cov))), 1e-3) * np.eye(30)
    np.testing.assert_allclose(flat(prec) @ ridged, np.eye(30), atol=1e-4)
    np.testing.assert_allclose(prec, prec.transpose(1, 0, 3, 2), rtol=1e-4, atol=1e-3)


def test_bpp_hairpin_known_by_hand():
    # GGGGAAAACCCC: the only sensible fold pairs G1-C12 … G4-C9
    p = base_pair_probabilities("GGGGAAAACCCC")
    assert p.shape == (12, 12)
    np.testing.assert_allclose(p, p.T)
    for i, j in [(1, 10), (2, 9)]:
        assert p[i, j] > 0.5
    assert p[4:8, 4:8].max() < 0.01  # the loop does not pair with itself
    assert (p.sum(axis=1) <= 1 + 1e-6).all()  # a base pairs at most once


def test_bpp_agrees_with_mfe_structure():
    import RNA as vienna
    seq = "GCGGAUUUAGCUCAGUUGGGAGAGCGCCAGACUGAAGAUCUGGAGGUCCUGUGUUCGAUCCACAGAAUUCGCACCA"
    structure, _ = vienna.fold(seq)
    stack, pairs = [], []
    for i, ch in enumerate(structure):
        if ch == "(":
            stack.append(i)
        elif ch == ")":
            pairs.append((stack.pop(), i))
    p = base_pair_probabilities(seq)
    probs = np.array([p[i, j] for i, j in pairs])
    assert len(pairs) > 15 and probs.mean() > 0.4
    confident = [(i, j) for i in range(76) for j in range(i + 1, 76) if p[i, j] > 0.5]
    assert len(confident) > 8 and np.mean([pair in pairs for pair in confident]) >= 0.6
    unpaired = [(i, j) for i in range(76) for j in range(i + 4, 76) if (i, j) not in pairs]
    assert np.mean([p[i, j] for i, j in unpaired]) < 0.01


def test_make_features_and_model_input_channels():
    msa = rna("GGGGAAAACCCC", "GGGCAAAAGCCC", "GGAGAAAACUCC")
    spec = FeatureSpec()
    fd = make_features(msa, spec)
    assert set(fd) == {"weights", "neff", "cov", "bpp"}
    x = model_input(fd, spec)
    assert x.shape == (spec.channels, 12, 12) == (26, 12, 12)
    np.testing.assert_array_equal(x[5 * 2 + 3], fd["cov"][:, :, 2, 3])  # channel a·q + b
    np.testing.assert_array_equal(x[25], fd["bpp"])


def test_profile_channels_by_hand():
    # two sequences with weight 1 each (identity 4/6 < 0.8): f_i(a) is the column's mix
    msa = rna("GGAAAC", "GAAAUC")
    spec = FeatureSpec(feature_set="cov+ss+profile")
    fd = make_features(msa, spec)
    a, c, g, u = (RNA.states.index(x) for x in "ACGU")
    assert fd["profile"].shape == (6, 5)
    np.testing.assert_allclose(fd["profile"][1], np.eye(5)[g] * 0.5 + np.eye(5)[a] * 0.5)
    np.testing.assert_allclose(fd["profile"][4], np.eye(5)[a] * 0.5 + np.eye(5)[u] * 0.5)
    x = model_input(fd, spec)
    assert x.shape == (spec.channels, 6, 6) == (51, 6, 6)
    profile = x[26:]  # after cov (25) and bpp (1): channel a·q + b holds f_i(a)·f_j(b)
    assert profile[g * 5 + c][0, 5] == 1.0 and profile[c * 5 + g][5, 0] == 1.0
    assert profile[g * 5 + u][1, 4] == 0.25 and profile[u * 5 + g][1, 4] == 0.0


def test_profile_of_a_single_sequence_is_its_one_hot():
    # an MSA of one: zero covariance, so the query's letters reach the network only here
    fd = make_features(rna("GGGAAACCCU"), FeatureSpec(feature_set="cov+ss+profile"))
    assert not fd["cov"].any()
    np.testing.assert_array_equal(fd["profile"].argmax(1), [RNA.states.index(x) for x in "GGGAAACCCU"])
    np.testing.assert_array_equal(fd["profile"].sum(1), 1.0)


def test_spec_key_changes_with_every_setting():
    keys = {FeatureSpec().key, FeatureSpec(feature_set="cov").key, FeatureSpec(identity=0.62).key,
            FeatureSpec(pseudocount=0.1).key, FeatureSpec(molecule="protein", feature_set="cov").key}
    assert len(keys) == 5
    assert FeatureSpec.from_dict(FeatureSpec(identity=0.7).to_dict()) == FeatureSpec(identity=0.7)


def test_bad_specs_and_mismatches():
    with pytest.raises(TprnaError, match="unknown feature set"):
        FeatureSpec(feature_set="bogus")
    with pytest.raises(TprnaError, match="base-pair"):
        FeatureSpec(molecule="protein", feature_set="cov+ss")
    with pytest.raises(TprnaError, match="spec is protein"):
        make_features(rna("ACGU"), FeatureSpec(molecule="protein", feature_set="cov"))


def test_real_family_matches_reference(shared_data):
    msa = read_msa(shared_data / "coconet/RNA_DATASET/MSA/RF00005_1.faclean")
    w = sequence_weights(msa)
    np.testing.assert_allclose(w, reference_weights(msa), rtol=1e-6)
    np.testing.assert_allclose(covariance(msa, w), reference_covariance(msa, w), atol=1e-6)


def test_real_protein_matches_reference(shared_data):
    msa = read_msa(shared_data / "protein/aln/1a0tP.aln", "protein")
    small = MSA(msa.ids[:400], msa.codes[:400], msa.alphabet)
    w = sequence_weights(small)
    np.testing.assert_allclose(w, reference_weights(small), rtol=1e-6)
    # float32 accumulation: ~1e-6 absolute, far below the float16 the store keeps
    np.testing.assert_allclose(covariance(small, w), reference_covariance(small, w), atol=3e-6)


def test_coupling_maps_of_one_sequence_and_of_a_coupled_pair():
    spec = FeatureSpec(feature_set="cov+ss+profile+coupling")
    lone = make_features(rna("GGGAAACCCAAAGGGUUUCCC"), spec)
    # no covariance, no coupling; RNAalifold of one sequence is RNAfold's partition function
    assert not lone["apc"].any() and not lone["dca"].any()
    np.testing.assert_allclose(lone["alifold"], lone["bpp"], atol=1e-6)
    fd = make_features(coupled_alignment(40), spec)  # columns 1 and 9 co-vary perfectly
    for name in ("apc", "dca"):
        m = fd[name]
        assert m.shape == (12, 12) and np.allclose(m, m.T)
        off = ~np.eye(12, dtype=bool)
        assert abs(m[off].mean()) < 1e-5 and abs(m[off].std() - 1) < 1e-4  # standardised
        assert np.unravel_index(np.argmax(m), m.shape) in ((1, 9), (9, 1))
    assert fd["alifold"].shape == (12, 12)
