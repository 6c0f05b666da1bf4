"""Sequence redundancy between training and test sets: extra training chains that are too
similar to a test query would leak the answer, so they are dropped before training."""
from __future__ import annotations

from typing import Mapping, Sequence

import gemmi
import numpy as np

__all__ = ["sequence_identity", "drop_similar", "close_to_any"]

_SCORING = gemmi.AlignmentScoring("n")
# gemmi's default gaps (−1) let a 76-nt sequence scatter over a 412-nt one and "match"
# 98 % of random RNAs; with these costs random pairs stay near 0.5 (max 0.54 seen).
_SCORING.gapo, _SCORING.gape = -10, -2


def sequence_identity(a: str, b: str) -> float:
    """Identical aligned positions over the shorter sequence's length (global alignment)."""
    if not a or not b:
        return 0.0
    result = gemmi.align_string_sequences(list(a.upper()), list(b.upper()), [], _SCORING)
    return result.match_count / min(len(a), len(b))


def drop_similar(candidates: Mapping[str, str], references: Mapping[str, str],
                 threshold: float = 0.7) -> tuple[list[str], dict[str, tuple[str, float]]]:
    """Split ``candidates`` (id → sequence) into those kept and those whose identity to any
    reference sequence is ≥ ``threshold`` (id → (closest reference, identity))."""
    kept, dropped = [], {}
    for cid, seq in candidates.items():
        best = max(((rid, sequence_identity(seq, ref)) for rid, ref in references.items()),
                   key=lambda t: t[1], default=("", 0.0))
        if best[1] >= threshold:
            dropped[cid] = best
        else:
            kept.append(cid)
    return kept, dropped


# Pairs sharing fewer of the shorter sequence's 5-mers than this are not aligned.  Measured on
# 400,000 random pairs of the coconet training families' homologs and the benchmark chains
# (3,000 aligned per 5 % bin): no pair below 0.15 reached 70 % identity (the 0.10–0.15 bin's
# highest was 0.70 to two decimals, below the threshold), while 2 in 3,000 of the 0.15–0.20
# bin did.
_KMER, _PREFILTER = 5, 0.15


def _kmer_sets(sequences: Sequence[str]) -> np.ndarray:
    """(n, 4^k) presence of each ACGU k-mer (other letters break k-mers)."""
    code = {c: i for i, c in enumerate("ACGU")}
    out = np.zeros((len(sequences), 4 ** _KMER), np.float32)
    for n, seq in enumerate(sequences):
        digits = [code.get(c, -1) for c in seq.upper().replace("T", "U")]
        for i in range(len(digits) - _KMER + 1):
            window = digits[i:i + _KMER]
            if min(window) >= 0:
                out[n, sum(d << (2 * k) for k, d in enumerate(window))] = 1
    return out


def close_to_any(sequences: Sequence[str], references: Mapping[str, str],
                 threshold: float = 0.7) -> list[str | None]:
    """For each sequence, a reference it is ≥ ``threshold`` identical to
    (:func:`sequence_identity`), or None.  Only pairs that share at least ``_PREFILTER`` of
    the shorter sequence's 5-mers are aligned (see the measurement above)."""
    names = list(references)
    refs = [references[r] for r in names]
    if not sequences or not refs:
        return [None] * len(sequences)
    shared = _kmer_sets(sequences) @ _kmer_sets(refs).T
    shorter = np.minimum.outer(np.array([len(s) for s in sequences]), np.array([len(r) for r in refs]))
    candidates = shared >= _PREFILTER * np.maximum(shorter - _KMER + 1, 1)
    out: list[str | None] = [None] * len(sequences)
    for i, j in zip(*np.nonzero(candidates)):
        if out[i] is None and sequence_identity(sequences[i], refs[j]) >= threshold:
            out[i] = names[j]
    return out
