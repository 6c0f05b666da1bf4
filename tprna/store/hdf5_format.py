"""The HDF5 form of a store: one ``.h5`` file.

HDF5 is not crash-safe, so the live file is never modified: the writer works on
``<file>.partial`` (a copy of the live file, or a cleanly opening leftover of a killed
build, made safe by the ``repair`` callback), flushes after each group, and
``os.replace``\\ s it (fsynced) over the live file at checkpoints (every
``checkpoint_seconds`` / ``checkpoint_every`` groups, the entry index written first) and
at the end.  Readers only ever open the live file, and re-open it when it was replaced.
Each chunk carries HDF5's Fletcher-32 checksum, checked by HDF5 on every read; datasets
use deflate (gzip level 1) + shuffle, which every HDF5 build reads (``h5dump``).

HDF5 cannot survive a write that fails for space (it crashes in a later call), so the
writer allocates the disk blocks of every group before HDF5 writes it
(:func:`tprna.store.atomic.reserve`), keeps a ballast file to free before closing, lays
a new file out in memory, and on a full disk discards its partial and raises
:class:`~tprna.store.atomic.DiskFull`.

Attributes are stored as one JSON string per key, so they read back as the same dicts
as Zarr's.  This module is over 400 lines because that disk-space discipline (ballast,
reservations, discard) is part of the writer and does not make sense apart from it.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import h5py
import numpy as np

from tprna.errors import TprnaError
from tprna.store import base
from tprna.store.atomic import (DiskFull, disk_full, disk_full_error, fsync_dir, fsync_file,
                                release_reservation, reserve)
from tprna.store.base import INDEX, GroupPayload, chunk_shape, decode_attrs

__all__ = ["Hdf5Reader", "Hdf5Writer"]

INDEX_KEY = "tprna_index"
_BALLAST_BYTES = 1 << 20  # freed before HDF5 closes a file, so closing never lacks space
_GROUP_SLACK = 1 << 20  # metadata HDF5 may write beside a group (B-tree nodes, heaps, superblock)
_ARRAY_SLACK = 64 << 10  # object header, chunk index and attributes of one array


def encode_attrs(attrs: dict) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in attrs.items()}


# --------------------------------------------------------------------------- reading


class Hdf5Reader:
    """Reads the live file only; reopens it when a build has replaced it (checked at
    :meth:`refresh`, which the store reader calls at the start of each public operation)."""

    kind = "hdf5"
    swaps_entries = False  # a reader's file is never modified: builds replace the whole file

    def __init__(self, path: Path, file: Any = None):
        self.path = Path(path)
        self._file = file  # an already-open h5py.File (a writer's partial): never reopened
        self._pinned = file is not None
        self._inode: tuple[int, int] | None = None
        # counts re-opens: the index token.  Not the inode, which the file system hands to a
        # later file once this reader has closed the one that had it (seen in CI: a token
        # equal across two replacements served the index of an older file)
        self._opened = 0
        self._attrs: dict[tuple, dict | None] = {}  # decoded attributes of the open (immutable) file
        self._fletcher: dict[str, bool] = {}  # dataset -> chunks carry Fletcher-32 (same file)

    def exists(self) -> bool:
        return self.path.is_file()

    def refresh(self) -> None:
        if self._pinned:
            return
        try:
            st = os.stat(self.path)
        except OSError:
            self.close()
            return
        ident = (st.st_dev, st.st_ino)
        if self._file is None or ident != self._inode:
            self.close()
            self._attrs.clear()
            self._fletcher.clear()
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as e:
                raise TprnaError(f"cannot open HDF5 store ({e})", self.path) from None
            self._inode = ident
            self._opened += 1

    def _h5(self):
        if self._file is None:
            self.refresh()
        if self._file is None:
            raise TprnaError("no feature store here", self.path)
        return self._file

    def read_attrs(self, group: str, keys: Iterable[str] | None = None) -> dict | None:
        if self._pinned:  # a writer's file changes under it: no cache
            return self._read_attrs(group, keys)
        cache_key = (group, None if keys is None else tuple(keys))
        if cache_key not in self._attrs:
            self._attrs[cache_key] = self._read_attrs(group, keys)
        attrs = self._attrs[cache_key]
        return None if attrs is None else dict(attrs)

    def _read_attrs(self, group: str, keys: Iterable[str] | None) -> dict | None:
        try:
            node = self._h5()[group or "/"]
        except (KeyError, OSError, RuntimeError):
            return None
        if not isinstance(node, h5py.Group):
            return None
        if keys is None:
            return decode_attrs(node.attrs)
        attrs = node.attrs
        return decode_attrs({k: attrs[k] for k in keys if k in attrs})

    def _children(self, group: str, want_group: bool) -> list[str]:
        try:
            node = self._h5()[group or "/"]
        except (KeyError, OSError, RuntimeError):
            return []
        out = []
        for name in sorted(node.keys()):
            cls = node.get(name, getclass=True)
            if (cls is h5py.Group) == want_group and cls in (h5py.Group, h5py.Dataset):
                out.append(name)
        return out

    def list_groups(self, group: str) -> list[str]:
        return self._children(group, True)

    def list_children(self, group: str) -> list[str]:
        try:
            return sorted(self._h5()[group or "/"].keys())
        except (KeyError, OSError, RuntimeError):
            return []

    def list_arrays(self, group: str) -> list[str]:
        return self._children(group, False)

    def read_array(self, path: str) -> np.ndarray:
        return np.asarray(self._h5()[path][()])

    read_array_reference = read_array

    def missing_chunks(self, path: str) -> list[str]:
        return []  # HDF5 has no chunk files to lose: a damaged chunk fails its Fletcher-32

    def chunk_checksums(self, path: str) -> bool:
        if path not in self._fletcher:
            try:
                self._fletcher[path] = bool(self._h5()[path].fletcher32)
            except (KeyError, OSError, RuntimeError, AttributeError):
                return False
        return self._fletcher[path]

    def read_arrays(self, group: str, names: Iterable[str]) -> dict[str, np.ndarray]:
        # h5py's low-level calls: its high-level objects cost ~0.1 ms each, as much as reading
        # a small entry's arrays (the read-vs-recompute target of a 40-nt RNA)
        try:
            node = h5py.h5g.open(self._h5().id, group.encode())
        except (KeyError, ValueError):  # the low-level call says ValueError where h5py says KeyError
            raise KeyError(group) from None
        out = {}
        for name in names:
            if not self._pinned and f"{group}/{name}" not in self._fletcher:
                self._fletcher[f"{group}/{name}"] = bool(self._h5()[group][name].fletcher32)
            try:
                ds = h5py.h5d.open(node, name.encode())
            except KeyError:
                raise KeyError(f"{group}/{name}") from None
            arr = np.empty(ds.shape, dtype=ds.dtype)
            if arr.size:
                ds.read(h5py.h5s.ALL, h5py.h5s.ALL, arr)
            out[name] = arr
        return out

    def index_token(self) -> object:
        self.refresh()
        return object() if self._pinned else self._opened  # the live file changes only by replacement

    def read_index(self) -> dict | None:
        return (self.read_attrs(INDEX, (INDEX_KEY,)) or {}).get(INDEX_KEY)

    def stored_bytes(self, group: str) -> int:
        total = 0

        def visit(_name: str, obj: Any) -> None:
            nonlocal total
            if isinstance(obj, h5py.Dataset):
                total += obj.id.get_storage_size()
        self._h5()[group].visititems(visit)
        return total

    def bytes_on_disk(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def close(self) -> None:
        if self._pinned:
            return
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - closing a file that went away
                pass
        self._file = None
        self._inode = None


# --------------------------------------------------------------------------- writing


def _write_tree(group: Any, payload: GroupPayload) -> None:
    for name, arr in payload.arrays.items():
        arr = np.ascontiguousarray(arr)
        kwargs: dict[str, Any] = {}
        if arr.size:
            kwargs = dict(chunks=chunk_shape(arr.shape, arr.dtype.itemsize),
                          # deflate: every HDF5 build (h5dump, HDFView, R, MATLAB) reads it; LZF only h5py
                          compression="gzip", compression_opts=1, shuffle=arr.dtype.itemsize > 1,
                          fletcher32=base.CHUNK_CHECKSUMS)
        group.create_dataset(name, data=arr, **kwargs)
    for name, child in payload.children.items():
        _write_tree(group.create_group(name), child)
    for key, value in encode_attrs(payload.attrs).items():
        group.attrs[key] = value


def space_needed(payload: GroupPayload) -> int:
    """An upper bound on the bytes writing ``payload`` adds to an HDF5 file: the raw array
    bytes (deflate is an optional filter: a chunk it cannot shrink is stored as it is),
    plus metadata per array and per group, plus the JSON attributes four times over."""
    need = _ARRAY_SLACK + 4 * len(json.dumps(payload.attrs, default=str))
    for arr in payload.arrays.values():
        need += int(np.asarray(arr).nbytes) + _ARRAY_SLACK
    return need + sum(space_needed(child) for child in payload.children.values())


class Hdf5Writer:
    """The writer of an HDF5 store: every write goes to ``<file>.partial``, which replaces
    the live file at checkpoints and at :meth:`commit`.  ``repair(file)`` (given an open
    leftover partial) drops what a killed writer left half-written, and returns False when
    the partial should be discarded entirely.  HDF5 stores have one writer process, so
    :attr:`sink` is None: workers send their groups back."""

    sink = None

    def __init__(self, path: Path, root_attrs: dict, repair: Callable[[Any], bool] | None = None,
                 checkpoint_every: int | None = None, checkpoint_seconds: float = 300.0):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.ballast = self.path.with_name(self.path.name + ".ballast")
        self._root_attrs = root_attrs
        self._repair = repair
        self._file = None
        self._live: Hdf5Reader | None = None
        self._current_index: Callable[[], dict] | None = None
        self._every, self._seconds = checkpoint_every, checkpoint_seconds
        self._written, self._last = 0, time.monotonic()
        self.dirty = False

    # -- lifecycle
    def prepare(self) -> Hdf5Reader:
        """Clean what a killed writer left beside the partial; resume its partial (or start
        a new file) — else plan against the live file, copied only when there is work."""
        if self.path.exists() and not self.path.is_file():
            raise TprnaError("exists and is not a file", self.path)
        self.ballast.unlink(missing_ok=True)
        self.partial.with_name(self.partial.name + ".copy").unlink(missing_ok=True)
        for tmp in self.path.parent.glob(f"{self.path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
        if self.partial.exists() or not self.path.exists():
            self.open()
            return Hdf5Reader(self.path, file=self._file)
        self._live = Hdf5Reader(self.path)
        self._live.refresh()
        return self._live

    def begin(self, current_index: Callable[[], dict]) -> None:
        self._current_index = current_index
        if self._live is not None:
            self._live.close()
            self._live = None
        if self._file is None:
            self.open()
        self._last = time.monotonic()

    def open(self) -> "Hdf5Writer":
        try:
            self._lay_ballast()
            return self._open()
        except Exception as e:
            if disk_full(e):
                raise self._full(e) from None
            raise

    def _open(self) -> "Hdf5Writer":
        if self.partial.exists():
            f = None
            try:
                reserve(self.partial, _GROUP_SLACK)  # for what the repair rewrites
                f = h5py.File(self.partial, "r+")
                ok = self._repair(f) if self._repair else True
                if ok:  # a killed writer can leave metadata that reads but cannot be rewritten
                    for key, value in list(f.attrs.items()):
                        f.attrs[key] = value
                    f.flush()
            except DiskFull:
                ok = False  # discarded: it was what filled the disk
            except Exception:  # noqa: BLE001 - any failure to open or walk it: discard
                ok = False
            if ok:
                self._file, self.dirty = f, True
                return self
            try:
                if f is not None:
                    f.close()
            except Exception:  # noqa: BLE001
                pass
            self.partial.unlink(missing_ok=True)
        if self.path.exists():
            tmp = self.partial.with_name(self.partial.name + ".copy")
            try:
                shutil.copyfile(self.path, tmp)
                os.replace(tmp, self.partial)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            # laid out in memory, written by Python: a full disk is an OSError here, not in HDF5
            mem = h5py.File(f"tprna-new-{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False,
                            fs_strategy="fsm", fs_persist=True)
            try:
                mem.require_group("entries")
                for key, value in encode_attrs(self._root_attrs).items():
                    mem.attrs[key] = value
                mem.flush()
                image = mem.id.get_file_image()
            finally:
                mem.close()
            try:
                with open(self.partial, "wb") as out:
                    out.write(image)
            except OSError:
                self.partial.unlink(missing_ok=True)
                raise
            self.dirty = True
        self._file = h5py.File(self.partial, "r+")
        return self

    # -- space
    def _lay_ballast(self) -> None:
        try:
            fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, _BALLAST_BYTES)
            finally:
                os.close(fd)
        except OSError as e:
            self.ballast.unlink(missing_ok=True)
            if disk_full(e):
                raise disk_full_error(self.path, e, _BALLAST_BYTES) from None
            raise

    def _reserve(self, nbytes: int) -> None:
        try:
            reserve(self.partial, nbytes)
        except DiskFull:
            self.discard()
            raise

    def _full(self, e: BaseException) -> DiskFull:
        self.discard()
        return e if isinstance(e, DiskFull) else disk_full_error(self.path, e)

    def _close_file(self) -> None:
        """Close the partial, with the ballast's room free for what HDF5 writes then."""
        self.ballast.unlink(missing_ok=True)
        f, self._file = self._file, None
        if f is not None:
            f.close()

    # -- writing
    def read_root_attrs(self) -> dict:
        return decode_attrs(self._file.attrs)

    def set_root_attrs(self, attrs: dict) -> None:
        self._reserve(_GROUP_SLACK + 4 * len(json.dumps(attrs, default=str)))
        for key in list(self._file.attrs.keys()):
            if key not in attrs:
                del self._file.attrs[key]
        for key, value in encode_attrs(attrs).items():
            self._file.attrs[key] = value
        self._file.flush()
        self.dirty = True

    def write_group(self, target: str, payload: GroupPayload) -> None:
        """Write (or replace) the group ``target``; its attrs, ``complete`` among them,
        are written last, then the file is flushed.  Its disk space is allocated first."""
        self._reserve(_GROUP_SLACK + space_needed(payload))
        f = self._file
        if target in f:
            del f[target]
        _write_tree(f.create_group(target), payload)
        f.flush()
        self.dirty = True

    def write_index(self, index: dict) -> None:
        self.write_group(INDEX, GroupPayload({INDEX_KEY: index}))

    def group_written(self) -> None:
        self._written += 1
        due = (self._every and self._written % self._every == 0) or \
            time.monotonic() - self._last >= self._seconds
        if due:
            if self._current_index is not None:
                self.write_index(self._current_index())
            self.checkpoint()
            self._last = time.monotonic()

    def checkpoint(self) -> None:
        """Publish what is written so far: the live file becomes a (fsynced) copy of the partial."""
        if not self.dirty:
            return
        self._file.flush()
        self._close_file()
        tmp = self.path.with_name(self.path.name + f".{uuid.uuid4().hex}.tmp")
        try:
            shutil.copyfile(self.partial, tmp)
            fsync_file(tmp)
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)
            self._lay_ballast()
        except OSError as e:
            if disk_full(e):
                raise self._full(e) from None
            raise
        finally:
            tmp.unlink(missing_ok=True)
        self._file = h5py.File(self.partial, "r+")

    def commit(self) -> None:
        """Close the partial and make it the live file (when anything changed), fsynced."""
        if self._live is not None:
            self._live.close()
            self._live = None
        if self._file is None:
            self.ballast.unlink(missing_ok=True)
            return
        self._file.flush()
        self._close_file()
        if not self.dirty:
            self.partial.unlink(missing_ok=True)
            return
        try:
            release_reservation(self.partial)  # blocks allocated past its end are not the file's
            fsync_file(self.partial)
            os.replace(self.partial, self.path)
            fsync_dir(self.path.parent)
        except OSError as e:
            if disk_full(e):
                raise self._full(e) from None
            raise

    def abandon(self) -> None:
        """Close without publishing; the partial stays for the next build to resume."""
        if self._live is not None:
            self._live.close()
            self._live = None
        if self._file is not None:
            try:
                self._file.flush()
                self._close_file()
            except Exception:  # noqa: BLE001
                self._file = None
            try:
                release_reservation(self.partial)
            except OSError:
                pass
        self.ballast.unlink(missing_ok=True)

    def discard(self) -> None:
        """Close and delete the partial: the store stays as it was at the last publish.
        What a full disk calls for (the partial is what filled it)."""
        try:
            self._close_file()
        except Exception:  # noqa: BLE001 - closing a partial about to be deleted
            self._file = None
        self.partial.unlink(missing_ok=True)
        self.partial.with_name(self.partial.name + ".copy").unlink(missing_ok=True)
        self.ballast.unlink(missing_ok=True)
