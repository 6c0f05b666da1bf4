"""What training and serving must agree on about the network's input, kept free of torch
so that serving (:mod:`tprna.serve`) can use it without the training stack: batches formed
by length under a budget of padded L² pixels.

The paper batched 3 RNAs below L=100, 2 up to 150 and 1 above; a budget of 3·100² = 30,000
padded pixels gives 3 below 100, 2 up to 122 and 1 above, and generalises to any length mix.
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["PAPER_PIXEL_BUDGET", "length_batches"]

PAPER_PIXEL_BUDGET = 3 * 100 ** 2


def length_batches(lengths: Sequence[int], pixel_budget: int = PAPER_PIXEL_BUDGET,
                   order: Sequence[int] | None = None) -> list[list[int]]:
    """Group indices, in ascending length, into batches whose padded size
    (members × longest²) stays within ``pixel_budget``; a longer RNA goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i)) if order is None else order
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max([lengths[j] for j in current] + [lengths[i]])
        if current and (len(current) + 1) * longest ** 2 > pixel_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
