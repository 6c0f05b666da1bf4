"""What a feature computation refuses before it starts: an input whose features would not fit
in memory (:func:`tprna.features.feature_memory_bytes` above a limit, by default half the
memory available).  The store's build and the serving path both ask here, so that one deep,
long alignment (the plm fit alone is ~230·L²·q² bytes) is reported as a bad input instead of
ending the process.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

from tprna.errors import TprnaError
from tprna.features import FeatureSpec, feature_memory_bytes
from tprna.msa import MSA

__all__ = ["available_memory", "default_limit", "check_feature_memory", "size", "MemoryBudget"]


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_limit(limit: int | None) -> int | None:
    """``limit``, or when None half the memory available now (None where that is unknown)."""
    if limit is not None:
        return limit
    free = available_memory()
    return None if free is None else free // 2


def check_feature_memory(msa: MSA, spec: FeatureSpec, limit: int | None, remedy: str) -> None:
    """Raise a :class:`TprnaError` naming the file when ``msa``'s features for ``spec`` need
    more than ``limit`` bytes (None: half the memory available now); ``remedy`` ends the
    message (what the user can do about it)."""
    need = feature_memory_bytes(spec, msa.length, msa.depth)
    limit = default_limit(limit)
    if limit is not None and need > limit:
        raise TprnaError(f"L={msa.length}, N={msa.depth}: its {spec.feature_set} features need "
                         f"~{size(need)} of memory, above the limit of {size(limit)} "
                         f"(default: half the memory available); {remedy}", msa.source or None)


def size(n: int) -> str:
    """Bytes as GiB, or MiB below a tenth of one (a limit of "0.0 GiB" says nothing)."""
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 / 10 else f"{n / 2 ** 20:.1f} MiB"


class MemoryBudget:
    """The bytes that one process's concurrent feature computations may need together:
    each reserves its estimate before it starts and gives it back when done, waiting while
    the others' reservations leave too little.  ``capacity`` None: half the memory available
    when the budget is made (no limit where that is unknown).  A computation larger than the
    whole budget runs alone rather than never."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = default_limit(capacity)
        self.reserved = 0
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, need: int) -> Iterator[None]:
        with self._changed:
            while self.capacity is not None and self.reserved and self.reserved + need > self.capacity:
                self._changed.wait()
            self.reserved += need
        try:
            yield
        finally:
            with self._changed:
                self.reserved -= need
                self._changed.notify_all()
