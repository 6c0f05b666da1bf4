"""The logical schema of a feature store: group names, packing, checksums, content keys.

Layout (identical in Zarr and HDF5; ``store/README.md`` is the full description)::

    /                              attrs: tprna_store {format, version}, specs {key: spec}, splits {name: [ids]}
    entries/<id>/                  attrs: id, sequence, length, depth, molecule, input_key,
                                          provenance, has_labels, n_unknown, n_dropped_columns,
                                          checksums, complete, written_at
        msa        (N, L) uint8    the query-anchored alignment, states in alphabet order
        contacts   (L, L) uint8    labels (only when a structure / label file was given)
        observed   (L, L) bool     mask of labelled pairs (same condition)
        features/<spec.key>/       attrs: spec, spec_key, neff, components, packing,
                                          checksums, complete, written_at
            weights    (N,) float32
            cov        (P, q, q) spec.dtype    P = L(L+1)/2: the blocks i ≤ j, row-major
            precision  (P, q, q) spec.dtype
            bpp        (P,) spec.dtype

An entry (or a spec group) exists for readers only when its attrs carry ``complete: true``
and checksums; the writers make it appear in one atomic step, and replace it in one.
The reader is :mod:`tprna.store.reader`; the entry index :mod:`tprna.store.index`.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from tprna.errors import TprnaError
from tprna.metrics import NEFF_BINS
from tprna import __version__
from tprna.features import PROFILE_COMPONENTS
from tprna.store.base import now_iso

__all__ = [
    "FORMAT", "FORMAT_VERSION", "ENTRIES", "PAIR_ARRAYS", "NEFF_SPLITS", "pack_symmetric",
    "unpack_symmetric", "pack_component", "unpack_component", "checksum", "file_sha256", "input_key",
    "entry_group", "features_group", "check_entry_id", "check_is_store", "finalize", "root_attrs",
]

FORMAT = "tprna-feature-store"
FORMAT_VERSION = 1
ENTRIES = "entries"
PAIR_ARRAYS = ("cov", "precision")  # (L, L, q, q), C[i, j, a, b] = C[j, i, b, a]
# every other component is an (L, L) symmetric map (bpp, apc, dca, alifold), packed the same
# way; PROFILE_COMPONENTS ("profile", (L, q)) are stored as they are
NEFF_SPLITS = NEFF_BINS  # the store's named Neff splits are the metrics' subsets
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def entry_group(entry_id: str) -> str:
    return f"{ENTRIES}/{entry_id}"


def features_group(entry_id: str, key: str) -> str:
    return f"{ENTRIES}/{entry_id}/features/{key}"


_ID_OK = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=-]*$")


def check_entry_id(entry_id: str) -> str | None:
    """Why ``entry_id`` cannot name an entry, or None when it can."""
    if not entry_id:
        return "empty id"
    if entry_id.startswith("__") or not _ID_OK.match(entry_id):
        return (f"id {entry_id!r} must be letters, digits and _ . + = - "
                "(not starting with '.', '-' or '__')")
    return None


# --------------------------------------------------------------------------- packing


def pack_symmetric(full: np.ndarray, dtype: str) -> np.ndarray:
    """The i ≤ j part of a symmetric (L, L, ...) array, as (L(L+1)/2, ...) in ``dtype``."""
    length = full.shape[0]
    iu, ju = np.triu_indices(length)
    packed = full[iu, ju]
    if dtype == "float16" and packed.size and float(np.abs(packed).max()) > _FLOAT16_MAX:
        raise TprnaError("feature values exceed the float16 range; rebuild with --dtype float32")
    return np.ascontiguousarray(packed.astype(dtype))


def unpack_symmetric(packed: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`pack_symmetric`: full (L, L, ...) float32; the (j, i) block is the
    (i, j) block transposed over its last two axes."""
    values = np.asarray(packed)
    full = np.empty((length, length) + values.shape[1:], dtype=np.float32)
    start = 0
    for i in range(length):  # row i of the upper triangle is one contiguous run
        stop = start + length - i
        full[i, i:] = values[start:stop]
        start = stop
    mirrored = full.transpose((1, 0) + tuple(range(full.ndim - 1, 1, -1)))  # (j, i, b, a)
    for i in range(1, length):
        full[i, :i] = mirrored[i, :i]
    return full


def pack_component(name: str, full: np.ndarray, dtype: str) -> np.ndarray:
    """A feature component as stored: per-residue ones (``profile``, (L, q)) as they are, the
    symmetric ones as their upper triangle (:func:`pack_symmetric`), in ``dtype``."""
    if name in PROFILE_COMPONENTS:
        return np.ascontiguousarray(np.asarray(full).astype(dtype))
    return pack_symmetric(np.asarray(full), dtype)


def unpack_component(name: str, packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_component`, float32."""
    if name in PROFILE_COMPONENTS:
        return np.asarray(packed).astype(np.float32, copy=False)
    length = (math.isqrt(8 * packed.shape[0] + 1) - 1) // 2  # P = L(L+1)/2
    return unpack_symmetric(packed, length)


def checksum(arr: np.ndarray) -> str:
    """sha256 of the array's bytes as stored (C order)."""
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def finalize(attrs: dict, arrays: Mapping[str, np.ndarray]) -> dict:
    """Attrs with per-array checksums and the ``complete`` flag, ready to be written last."""
    return {**attrs, "checksums": {name: checksum(a) for name, a in arrays.items()},
            "written_at": now_iso(), "complete": True}


# --------------------------------------------------------------------------- content keys


def file_sha256(path: str | os.PathLike) -> str:
    try:
        with open(path, "rb") as f:
            h = hashlib.file_digest(f, "sha256")
    except FileNotFoundError:
        raise TprnaError("file not found", path) from None
    except IsADirectoryError:
        raise TprnaError("is a directory, not a file", path) from None
    except OSError as e:
        raise TprnaError(f"cannot read file ({e.strerror})", path) from None
    return h.hexdigest()


def input_key(msa_sha: str, structure_sha: str | None, label_sha: str | None,
              chain: str | None, molecule: str) -> str:
    """The entry's content key: hash of the input files' bytes, the chain and the molecule."""
    h = hashlib.sha256()
    for part in ("tprna-input/1", molecule, msa_sha, structure_sha or "", label_sha or "", chain or ""):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def root_attrs(specs: Mapping[str, dict] | None = None, splits: Mapping[str, list] | None = None) -> dict:
    return {"tprna_store": {"format": FORMAT, "version": FORMAT_VERSION, "tprna_version": __version__},
            "specs": dict(specs or {}), "splits": dict(splits or {})}


def check_is_store(attrs: dict | None, path: Path) -> None:
    """Refuse a path that holds something other than a feature store."""
    meta = (attrs or {}).get("tprna_store")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TprnaError("exists but is not a tpRNA feature store; choose a new path", path)
