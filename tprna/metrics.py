"""Contact-prediction metrics (numpy only): top-k precision per separation range,
averages over RNAs and Neff subsets, and the average-product correction.

Conventions (CASP / the paper):

* Separation ``s = |i − j|``; ranges short ``6 ≤ s < 12``, mid ``12 ≤ s < 24``, long
  ``s ≥ 24`` (:data:`RANGES`).  Pairs with ``s < 6`` are never scored.
* Top-k precision: the candidate pairs are ``i < j`` in the range and observed in the
  structure; they are ranked by predicted probability (ties broken stably by ``(i, j)``
  row-major order), the top ``k`` kept, precision = true contacts among them ``/ k``.
  The divisor is ``k`` even when fewer than ``k`` candidates exist (a short RNA cannot
  score 1.0 at top-L long range) — the CASP convention the paper follows.
* ``k`` ∈ {L, L/2, L/5, L/10} with L the sequence length, integer division, at least 1.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .errors import TprnaError

__all__ = [
    "MIN_SEPARATION",
    "RANGES",
    "TOP_K",
    "NEFF_BINS",
    "NEFF_SUBSETS",
    "top_k",
    "top_k_precision",
    "top_pairs",
    "contact_precisions",
    "summarize",
    "apc",
]

MIN_SEPARATION = 6  # pairs closer in sequence are never scored
RANGES: dict[str, tuple[int, float]] = {"short": (MIN_SEPARATION, 12), "mid": (12, 24), "long": (24, math.inf)}
TOP_K: dict[str, int] = {"L": 1, "L/2": 2, "L/5": 5, "L/10": 10}
# The same subsets, names and boundaries as the store's named Neff splits.
NEFF_BINS: tuple[tuple[str, float, float], ...] = (
    ("neff<1", 0.0, 1.0), ("1<=neff<10", 1.0, 10.0), ("neff>=10", 10.0, math.inf))
NEFF_SUBSETS: dict[str, Callable[[float], bool]] = {
    "neff<1": lambda v: v < 1,
    "1<=neff<10": lambda v: 1 <= v < 10,
    "neff>=10": lambda v: v >= 10,
}

PrecisionKey = tuple[str, str]


def top_k(length: int, divisor: int | str) -> int:
    """``k`` for ``L/divisor`` (``divisor`` an int or a :data:`TOP_K` label), at least 1."""
    d = TOP_K[divisor] if isinstance(divisor, str) else int(divisor)
    return max(1, length // d)


def _check_square(name: str, a: np.ndarray, length: int | None = None) -> None:
    if a.ndim != 2 or a.shape[0] != a.shape[1] or (length is not None and a.shape[0] != length):
        want = f"{length}×{length}" if length is not None else "square"
        raise TprnaError(f"{name} has shape {a.shape}, expected {want}")


def top_k_precision(prob: np.ndarray, contacts: np.ndarray, observed: np.ndarray | None,
                    range_name: str, k: int) -> float:
    """Precision of the ``k`` highest-probability observed pairs ``i < j`` in range
    ``range_name`` (:func:`top_pairs`): true contacts among them divided by ``k``."""
    prob = np.asarray(prob, dtype=np.float64)
    contacts = np.asarray(contacts)
    _check_square("probability map", prob)
    _check_square("contact map", contacts, prob.shape[0])
    i, j = top_pairs(prob, observed, range_name, k)
    return float(np.count_nonzero(contacts[i, j])) / k


def top_pairs(prob: np.ndarray, observed: np.ndarray | None, range_name: str,
              k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` highest-probability observed pairs ``i < j`` in range ``range_name``, best
    first, as index arrays ``(i, j)``; ties keep row-major order and NaN ranks last."""
    prob = np.asarray(prob, dtype=np.float64)
    _check_square("probability map", prob)
    if range_name not in RANGES:
        raise TprnaError(f"unknown range {range_name!r}; choose one of: {', '.join(RANGES)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    lo, hi = RANGES[range_name]
    i, j = np.triu_indices(prob.shape[0], k=1)   # row-major (i, j) order
    sep = j - i
    keep = (sep >= lo) & (sep < hi)
    if observed is not None:
        observed = np.asarray(observed)
        _check_square("observed mask", observed, prob.shape[0])
        keep &= observed[i, j].astype(bool)
    i, j = i[keep], j[keep]
    scores = prob[i, j]
    scores = np.where(np.isnan(scores), -np.inf, scores)
    order = np.argsort(-scores, kind="stable")[:k]
    return i[order], j[order]


def contact_precisions(prob: np.ndarray, contacts: np.ndarray,
                       observed: np.ndarray | None = None) -> dict[PrecisionKey, float]:
    """Top-k precision for every range × k: ``{("long", "L/5"): 0.6, …}``."""
    length = np.asarray(prob).shape[0]
    return {(r, label): top_k_precision(prob, contacts, observed, r, top_k(length, label))
            for r in RANGES for label in TOP_K}


def summarize(per_rna: Sequence[Mapping[PrecisionKey, float]],
              neff: Sequence[float] | None = None) -> dict[str, dict]:
    """Average per-RNA precisions: ``{"all": {"n": count, "precision": {key: mean}}, …}``
    plus one entry per Neff subset of :data:`NEFF_SUBSETS` (empty subsets left out)."""
    if neff is not None and len(neff) != len(per_rna):
        raise TprnaError(f"{len(per_rna)} RNAs but {len(neff)} Neff values")
    subsets: dict[str, list[int]] = {"all": list(range(len(per_rna)))}
    if neff is not None:
        for name, member in NEFF_SUBSETS.items():
            subsets[name] = [n for n, v in enumerate(neff) if member(float(v))]
    result: dict[str, dict] = {}
    for name, members in subsets.items():
        if not members:
            continue
        keys = list(per_rna[members[0]])
        result[name] = {"n": len(members),
                        "precision": {key: float(np.mean([per_rna[n][key] for n in members]))
                                      for key in keys}}
    return result


def apc(matrix: np.ndarray) -> np.ndarray:
    """Average-product correction ``S_ij − S_i·S_j / S̄`` of a symmetric score matrix,
    the diagonal excluded from the averages (``S_i`` mean of row i off the diagonal,
    ``S̄`` mean of all off-diagonal entries) and set to 0 in the result."""
    s = np.asarray(matrix, dtype=np.float64)
    _check_square("score matrix", s)
    length = s.shape[0]
    out = np.zeros_like(s)
    if length < 2:
        return out
    off = ~np.eye(length, dtype=bool)
    row = np.where(off, s, 0.0).sum(axis=1) / (length - 1)
    overall = s[off].mean()
    correction = np.outer(row, row) / overall if overall != 0 else 0.0
    out = s - correction
    out[~off] = 0.0
    return out
