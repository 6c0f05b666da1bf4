"""The compiled (numba) loops of :mod:`tprna.features`, apart so that importing the
features costs no numba start-up (≈0.3 s): a single sequence, the common serving case, never
runs them.  Bodies unchanged from where they were written (features.py); only the names lost
their underscore."""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["neighbour_counts", "covariance_scatter", "get_num_threads"]

get_num_threads = numba.get_num_threads


@numba.njit(parallel=True, cache=True, nogil=True)
def neighbour_counts(codes: np.ndarray, mult: np.ndarray, min_matches: int, threads: int) -> np.ndarray:
    # Each thread takes every T-th row of the triangle (balanced work) and accumulates into
    # its own slice, so the symmetric update needs no locks.  The inner compare over L
    # bytes vectorises; an early exit would cost more than it saves.
    n, length = codes.shape
    partial = np.zeros((threads, n))
    for t in numba.prange(threads):
        for a in range(t, n, threads):
            ra = codes[a]
            for b in range(a):
                rb = codes[b]
                matches = 0
                for k in range(length):
                    matches += ra[k] == rb[k]
                if matches >= min_matches:
                    partial[t, a] += mult[b]
                    partial[t, b] += mult[a]
    return partial.sum(axis=0) + mult  # a row is its own neighbour, as are its duplicates


@numba.njit(parallel=True, cache=True, nogil=True)
def covariance_scatter(columns: np.ndarray, w: np.ndarray, fi: np.ndarray, threads: int) -> np.ndarray:
    # For each pair i ≤ j, accumulate the q×q block f_ij[x_ni, x_nj] += w_n over the two
    # alignment columns (contiguous in ``columns``, shape (L, N)); the block lives in L1.
    # Subtract f_i·f_j and mirror to (j, i).  Threads take every T-th i for balance.
    length, n = columns.shape
    q = fi.shape[1]
    cov = np.empty((length, length, q, q), dtype=np.float32)
    for t in numba.prange(threads):
        block = np.empty((q, q), dtype=np.float32)
        for i in range(t, length, threads):
            ci = columns[i]
            for j in range(i, length):
                cj = columns[j]
                block[:, :] = 0.0
                for s in range(n):
                    block[ci[s], cj[s]] += w[s]
                for a in range(q):
                    for b in range(q):
                        value = block[a, b] - fi[i, a] * fi[j, b]
                        cov[i, j, a, b] = value
                        cov[j, i, b, a] = value
    return cov
