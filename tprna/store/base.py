"""What every store format provides: the payload of a group to write, the reader and
writer protocols the rest of the store is written against, and the chunking rule.

A store is a tree of groups (with JSON-able attributes) and arrays; paths are
'/'-separated and relative to the root ('' is the root).  A format module
(:mod:`tprna.store.zarr_format`, :mod:`tprna.store.hdf5_format`) implements
:class:`StoreReader` and :class:`StoreWriter`; it knows nothing of what the tree means
(that is :mod:`tprna.store.schema`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import numpy as np

__all__ = ["GroupPayload", "GroupSink", "StoreReader", "StoreWriter", "CHUNK_BYTES", "ALL_CHUNKS",
           "chunk_shape", "decode_attrs", "now_iso", "INDEX"]

CHUNK_BYTES = 4 * 1024 * 1024  # upper bound on the raw bytes of one chunk
ALL_CHUNKS = "tprna_all_chunks"  # array attribute: every chunk was written (none is implicit zeros)
INDEX = "index"  # the root-level group holding the entry index (tprna.store.index)
# Writers add a checksum to every chunk (CRC32C / Fletcher-32).  False only to write the
# layout of stores made before them (what scripts/bench_store.py compares against).
CHUNK_CHECKSUMS = True


@dataclass
class GroupPayload:
    """A group to write: its attributes, arrays and child groups.  ``attrs`` are written
    last, so a group whose attrs say ``complete`` had all its arrays written first."""

    attrs: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    children: dict[str, "GroupPayload"] = field(default_factory=dict)


def chunk_shape(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunks along the first axis only, each at most :data:`CHUNK_BYTES` raw bytes."""
    if not shape:
        return ()
    row = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
    rows = max(1, min(shape[0], CHUNK_BYTES // max(row, 1)))
    return (rows,) + tuple(int(s) for s in shape[1:])


def decode_attrs(attrs: Any) -> dict:
    """Attributes stored as one JSON string per key (HDF5's encoding) back as a dict."""
    out = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        out[key] = json.loads(value) if isinstance(value, str) else value
    return out


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@runtime_checkable
class StoreReader(Protocol):
    """Read access to the group/array tree of one store."""

    kind: str  # "zarr" | "hdf5"
    path: Path
    swaps_entries: bool  # whether a build may swap a group under an open reader

    def exists(self) -> bool: ...
    def read_attrs(self, group: str, keys: Iterable[str] | None = None) -> dict | None: ...
    def list_groups(self, group: str) -> list[str]: ...
    def list_children(self, group: str) -> list[str]:
        """Every child name, readable or not (cheap: no metadata is opened)."""
    def list_arrays(self, group: str) -> list[str]: ...
    def read_array(self, path: str) -> np.ndarray: ...
    def read_arrays(self, group: str, names: Iterable[str]) -> dict[str, np.ndarray]: ...
    def read_array_reference(self, path: str) -> np.ndarray:
        """Through the format's own library (zarr / h5py): what ``verify`` uses."""
    def missing_chunks(self, path: str) -> list[str]: ...
    def chunk_checksums(self, path: str) -> bool:
        """Whether every read of the array checks each chunk against its own checksum."""
    def index_token(self) -> object:
        """Changes whenever the entry index may have changed (cheap: one stat)."""
    def stored_bytes(self, group: str) -> int: ...
    def bytes_on_disk(self) -> int: ...
    def refresh(self) -> None: ...
    def close(self) -> None: ...


class GroupSink(Protocol):
    """Writes whole groups from any process (a build's workers): picklable."""

    def write_group(self, target: str, payload: GroupPayload) -> None: ...


class StoreWriter(Protocol):
    """The one writer of a store (it runs under the store's lock).

    :meth:`prepare` returns a reader of the store as it stands (created empty when there
    was none); :meth:`begin` is called before the first change; groups are written by
    :meth:`write_group` (or, when :attr:`sink` is set, by the workers through it); the
    entry index goes in last (:meth:`write_index`), and :meth:`commit` publishes — or
    :meth:`abandon` leaves what a next build resumes."""

    path: Path
    sink: GroupSink | None  # workers write groups themselves through this; None: send them back

    def prepare(self) -> StoreReader: ...
    def begin(self, current_index: Callable[[], dict]) -> None:
        """About to change the store; ``current_index()`` is the index of what is in it now
        (a writer that publishes part-way, HDF5 at its checkpoints, writes it then)."""
    def read_root_attrs(self) -> dict: ...
    def set_root_attrs(self, attrs: dict) -> None: ...
    def write_group(self, target: str, payload: GroupPayload) -> None: ...
    def group_written(self) -> None:
        """One more group is in (a writer may publish what it has so far)."""
    def write_index(self, index: dict) -> None: ...
    def commit(self) -> None: ...
    def abandon(self) -> None: ...
