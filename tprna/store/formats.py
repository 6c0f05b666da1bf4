"""The path decides the format: ``.h5`` / ``.hdf5`` is one HDF5 file, anything else a
Zarr v3 folder.  :func:`open_reader` and :func:`open_writer` hand back the format's
:class:`~tprna.store.base.StoreReader` / :class:`~tprna.store.base.StoreWriter`."""
from __future__ import annotations

import os
from pathlib import Path

from tprna.store.base import StoreReader, StoreWriter
from tprna.store.location import LEGACY_SIDECARS, StoreLock, is_hdf5_path, lock_path, store_location
from tprna.store.schema import root_attrs
from tprna.store.verify import repair_partial
from tprna.store.zarr_format import ZarrReader, ZarrWriter

__all__ = ["open_reader", "open_writer", "store_lock"]


def open_reader(path: str | os.PathLike) -> StoreReader:
    p = store_location(path)
    if is_hdf5_path(p):
        from tprna.store.hdf5_format import Hdf5Reader  # h5py is imported only for HDF5 stores

        return Hdf5Reader(p)
    return ZarrReader(p)


def open_writer(path: str | os.PathLike, checkpoint_every: int | None = None,
                checkpoint_seconds: float = 300.0) -> StoreWriter:
    """The writer of the store at ``path`` (take :func:`store_lock` first)."""
    p = store_location(path)
    if is_hdf5_path(p):
        from tprna.store.hdf5_format import Hdf5Writer  # h5py is imported only for HDF5 stores

        return Hdf5Writer(p, root_attrs(), repair=repair_partial,
                          checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds)
    return ZarrWriter(p, root_attrs())


def store_lock(path: str | os.PathLike) -> StoreLock:
    """The one-writer lock of the store at ``path`` (a Zarr store written before the lock
    moved beside it also has its old lock inside, taken too)."""
    p = store_location(path)
    legacy = () if is_hdf5_path(p) else (Path(p) / LEGACY_SIDECARS[0],)
    return StoreLock(lock_path(p), store=Path(p), also=legacy)
