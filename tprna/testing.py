"""A deliberately plain reference of the MSA features: explicit loops over sequences and
positions, no merging of duplicates, no BLAS tricks.  It is the independent answer that the
tests and ``scripts/bench_features.py`` check :mod:`tprna.features` against — never use it
for real work."""
from __future__ import annotations

import numpy as np

from tprna.msa import MSA

__all__ = ["reference_weights", "reference_covariance"]


def reference_weights(msa: MSA, identity: float = 0.8) -> np.ndarray:
    codes = msa.codes
    n, length = codes.shape
    weights = np.empty(n)
    for a in range(n):
        same = (codes == codes[a]).sum(axis=1) / length  # identity of every row to row a
        weights[a] = 1.0 / np.count_nonzero(same >= identity - 1e-9)
    return weights


def reference_covariance(msa: MSA, weights: np.ndarray) -> np.ndarray:
    codes, q = msa.codes, msa.alphabet.q
    n, length = codes.shape
    w = weights / weights.sum()
    fi = np.zeros((length, q))
    fij = np.zeros((length, length, q, q))
    for s in range(n):
        fi[np.arange(length), codes[s]] += w[s]
        for i in range(length):
            fij[i, np.arange(length), codes[s, i], codes[s]] += w[s]
    return fij - fi[:, None, :, None] * fi[None, :, None, :]
