"""Pseudo-likelihood couplings (plmDCA): the objective against a slow loop over sequences and
columns, its gradient against finite differences, the fit's optimality and gauge, a coupled
pair found, one sequence giving nothing, and the channel recomputed on a cut alignment."""
from __future__ import annotations

import numpy as np
import pytest

from tprna.data import subsampled_features
from tprna.features import FeatureSpec, make_features, plm_map, sequence_weights
from tprna.msa import MSA
from tprna.plmdca import coupling_regularisation, plm_couplings, pseudo_likelihood
from helpers import coupled_alignment, rna

Q = 5


def random_parameters(length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    j = rng.normal(0, 0.5, (length * Q, length * Q))
    j = (j + j.T) / 2
    for i in range(length):
        j[i * Q:(i + 1) * Q, i * Q:(i + 1) * Q] = 0
    return j, rng.normal(0, 0.5, length * Q)


def slow_objective(j, h, rows, w, lambda_j, lambda_h):
    """−Σ_n w_n Σ_i log P(x_ni | rest) + λ_h‖h‖² + λ_J Σ_{i<j}‖J_ij‖², by the definition."""
    n, length = rows.shape
    J = j.reshape(length, Q, length, Q)
    H = h.reshape(length, Q)
    total = 0.0
    for s in range(n):
        for i in range(length):
            energy = np.array([H[i, a] + sum(J[i, a, k, rows[s, k]] for k in range(length) if k != i)
                               for a in range(Q)])
            total -= w[s] * (energy[rows[s, i]] - np.log(np.exp(energy).sum()))
    pairs = sum(np.sum(J[a, :, b, :] ** 2) for a in range(length) for b in range(a + 1, length))
    return total + lambda_h * np.sum(h ** 2) + lambda_j * pairs


def one_hot(rows):
    x = np.zeros((rows.shape[0], rows.shape[1] * Q))
    x[np.arange(rows.shape[0])[:, None], np.arange(rows.shape[1]) * Q + rows] = 1
    return x


def test_objective_matches_the_definition_and_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    rows = rng.integers(0, Q, (7, 4))
    w = rng.random(7)
    w /= w.sum()
    j, h = random_parameters(4, rng)
    value, grad_j, grad_h = pseudo_likelihood(j, h, one_hot(rows), w, Q, lambda_j=0.3, lambda_h=0.2)
    assert value == pytest.approx(slow_objective(j, h, rows, w, 0.3, 0.2), rel=1e-10)
    eps = 1e-6
    for a, b in [(0, 7), (3, 19), (12, 6)]:  # J(a, b) and J(b, a) move together: one parameter
        step = np.zeros_like(j)
        step[a, b] = step[b, a] = eps
        numeric = (pseudo_likelihood(j + step, h, one_hot(rows), w, Q, 0.3, 0.2)[0]
                   - pseudo_likelihood(j - step, h, one_hot(rows), w, Q, 0.3, 0.2)[0]) / (2 * eps)
        assert grad_j[a, b] + grad_j[b, a] == pytest.approx(numeric, rel=1e-5)
    for a in (0, 9, 18):
        step = np.zeros_like(h)
        step[a] = eps
        numeric = (pseudo_likelihood(j, h + step, one_hot(rows), w, Q, 0.3, 0.2)[0]
                   - pseudo_likelihood(j, h - step, one_hot(rows), w, Q, 0.3, 0.2)[0]) / (2 * eps)
        assert grad_h[a] == pytest.approx(numeric, rel=1e-5)
    assert not grad_j[:Q, :Q].any()  # no self-coupling


def test_regularisation_rule():
    assert coupling_regularisation(1000) == 0.01 and coupling_regularisation(501) == 0.01
    assert coupling_regularisation(0) == pytest.approx(0.1)
    assert coupling_regularisation(250) == pytest.approx(0.055)


def test_the_fit_is_a_minimum_in_the_zero_sum_gauge():
    msa = coupled_alignment(60)
    w = sequence_weights(msa).astype(np.float64)
    j = plm_couplings(msa.codes, w, Q, max_iterations=500)
    assert j.shape == (12, 12, Q, Q)
    np.testing.assert_allclose(j, j.transpose(1, 0, 3, 2), atol=1e-12)
    np.testing.assert_allclose(j.sum(axis=2), 0, atol=1e-10)
    np.testing.assert_allclose(j.sum(axis=3), 0, atol=1e-10)
    assert not j[np.arange(12), np.arange(12)].any()
    # the strongest coupling is the co-varying pair's
    norms = np.sqrt((j[:, :, :-1, :-1] ** 2).sum(axis=(2, 3)))
    assert np.unravel_index(np.argmax(norms), norms.shape) in ((1, 9), (9, 1))


def test_plm_channel_finds_the_coupled_pair_and_is_empty_for_one_sequence():
    spec = FeatureSpec(feature_set="cov+ss+profile+plm")
    fd = make_features(coupled_alignment(60), spec)
    m = fd["plm"]
    off = ~np.eye(12, dtype=bool)
    assert m.shape == (12, 12) and np.allclose(m, m.T)
    assert abs(m[off].mean()) < 1e-5 and abs(m[off].std() - 1) < 1e-4  # standardised like dca
    assert np.unravel_index(np.argmax(m), m.shape) in ((1, 9), (9, 1))
    lone = make_features(rna("GGGAAACCCAAAGGGUUUCCC"), spec)
    assert lone["plm"].shape == (21, 21) and not lone["plm"].any()
    # copies of the one sequence are still one distinct row: nothing to couple
    assert not plm_map(rna(*["GGGAAACCC"] * 5), np.ones(5, np.float32)).any()


def test_the_channel_recomputed_on_a_cut_alignment_is_the_cut_alignments_own():
    msa = coupled_alignment(n=80, length=20, seed=1)
    spec = FeatureSpec(feature_set="cov+ss+plm")
    stored = make_features(msa, spec)
    depth, seed, window = 30, 5, slice(4, 16)
    got = subsampled_features(msa.codes, stored, spec, depth, seed, window)
    rng = np.random.default_rng(seed)  # the rows subsampled_features draws
    rows = np.concatenate([[0], 1 + np.sort(rng.choice(len(msa.codes) - 1, depth - 1, replace=False))])
    sub = MSA(ids=tuple(map(str, rows)), codes=msa.codes[rows], alphabet=msa.alphabet)
    expected = make_features(sub, spec)["plm"][window, window]  # on the whole length, then cut
    np.testing.assert_allclose(got["plm"], expected.astype(np.float16), atol=2e-3)
    assert got["plm"].shape == (12, 12)


def test_the_memory_estimate_bounds_the_fit():
    import tracemalloc

    from tprna.features import feature_memory_bytes

    rng = np.random.default_rng(0)
    length, depth = 120, 200
    msa = rna(*("".join(rng.choice(list("ACGU-"), length)) for _ in range(depth)))
    w = sequence_weights(msa)
    plm_map(msa, w)  # scipy's optimiser imported outside the measurement
    tracemalloc.start()
    plm_map(msa, w)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    share = (feature_memory_bytes(FeatureSpec(feature_set="cov+ss+plm"), length, depth)
             - feature_memory_bytes(FeatureSpec(feature_set="cov+ss"), length, depth))
    assert peak <= share <= 1.5 * peak  # the fit's share of the store's memory guard: above it, not far
    # one sequence fits nothing (its map is all zero): the guard charges it nothing
    tracemalloc.start()
    plm_map(rna(msa.query), np.ones(1))
    alone = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert alone < share / 100
    assert (feature_memory_bytes(FeatureSpec(feature_set="cov+ss+plm"), length, 1)
            == feature_memory_bytes(FeatureSpec(feature_set="cov+ss"), length, 1))
