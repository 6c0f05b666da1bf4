"""The two physical forms of a feature store: a Zarr v3 directory and an HDF5 file.

Both hold the same tree of groups (with JSON-able attributes) and arrays; this module
knows nothing of what the tree means (that is :mod:`tprna.store.schema`), only how to
read it and how to write a whole group atomically:

* **Zarr** — a group is written complete into ``<store>/.staging/<uuid>/``, fsynced, and
  then ``os.rename``\\ d into place, so it appears all at once or not at all.  A group
  that is already there (a changed entry) is *exchanged* with the new one in one step
  (``renameat2(RENAME_EXCHANGE)``, :mod:`tprna.store.atomic`), so a reader never finds
  it missing.  Every chunk is written, even an all-zero one, and the array says so
  (``tprna_all_chunks``): a chunk file that is not there is damage, never zeros.  Each
  chunk ends in its CRC32C (the Zarr v3 ``crc32c`` codec), checked on every read.  The
  write is a plain function of (store path, target, payload), callable from any worker.
* **HDF5** — not crash-safe, so the live file is never modified: a session writes into
  ``<file>.partial`` (a copy of the live file, or a cleanly opening leftover of a killed
  session), flushes after each group, and ``os.replace``\\ s it (fsynced) over the live
  file at checkpoints and at the end.  Readers only ever open the live file.  Each chunk
  carries HDF5's Fletcher-32 checksum, checked by HDF5 on every read.  HDF5
  cannot survive a write that fails for space (it crashes in a later call), so the
  session allocates the disk blocks of every group before HDF5 writes it, keeps a
  ballast file to free before closing, and on a full disk discards its partial and
  raises :class:`~tprna.store.atomic.DiskFull`.

Attributes are stored natively in Zarr (``zarr.json``) and as one JSON string per key in
HDF5, so both read back as the same dicts.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from tprna.errors import TprnaError
from tprna.store.atomic import (DiskFull, disk_full, disk_full_error, exchange, fsync_dir, fsync_file,
                                fsync_tree, release_reservation, reserve, write_file_atomic)

__all__ = [
    "GroupPayload", "Backend", "ZarrBackend", "Hdf5Backend", "is_hdf5_path", "open_backend",
    "StoreLock", "zarr_init_store", "zarr_write_group", "zarr_set_root_attrs", "zarr_clean_stale",
    "Hdf5Session", "CHUNK_BYTES", "store_location", "ALL_CHUNKS",
]

CHUNK_BYTES = 4 * 1024 * 1024  # upper bound on the raw bytes of one chunk
STAGING = ".staging"
TRASH = ".trash"
LOCK = ".lock"
HDF5_SUFFIXES = (".h5", ".hdf5")
ALL_CHUNKS = "tprna_all_chunks"  # array attribute: every chunk was written (none is implicit zeros)
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


# "scheme:/..." or "scheme://..." (a Path collapses the double slash); two letters at least,
# so a drive letter is not a scheme.
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):/")


def store_location(path: str | os.PathLike) -> Path:
    """The filesystem path of a store given as a path or a ``file://`` URL.

    Other URLs (``s3://``, ``gs://``, ``http://`` …) are refused: a build publishes each
    entry by renaming a finished folder into place, which is atomic on POSIX (and shared)
    filesystems but not on object stores, where readers could see half an entry."""
    text = os.fspath(path)
    m = _URL.match(text)
    if m is None:
        return Path(text)
    scheme = m.group("scheme").lower()
    if scheme == "file":
        parsed = urllib.parse.urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise TprnaError(f"file:// URL names host {parsed.netloc!r}; use file:///absolute/path "
                             "(a filesystem every worker mounts)", text)
        return Path(urllib.parse.unquote(parsed.path))
    raise TprnaError(f"{scheme}:// stores are not supported: entries are published by an atomic "
                     "rename, which object stores lack; use a local or shared-filesystem path "
                     "(or a file:// URL) and copy the finished store", text)


def is_hdf5_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in HDF5_SUFFIXES


def chunk_shape(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunks along the first axis only, each at most :data:`CHUNK_BYTES` raw bytes."""
    if not shape:
        return ()
    row = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
    rows = max(1, min(shape[0], CHUNK_BYTES // max(row, 1)))
    return (rows,) + tuple(int(s) for s in shape[1:])


class StoreLock:
    """An exclusive advisory lock (``flock``) held by the one process allowed to write."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> "StoreLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise TprnaError("another build or split is writing this store; wait for it to finish",
                             self.path.parent if self.path.name == LOCK else self.path) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# --------------------------------------------------------------------------- reading


class Backend:
    """Read access to the group/array tree.  Group and array paths are '/'-separated and
    relative to the store root ('' is the root)."""

    kind: str
    path: Path

    def exists(self) -> bool: ...
    def read_attrs(self, group: str, keys: Iterable[str] | None = None) -> dict | None: ...
    def list_groups(self, group: str) -> list[str]: ...
    def list_children(self, group: str) -> list[str]: ...
    def list_arrays(self, group: str) -> list[str]: ...
    def read_array(self, path: str) -> np.ndarray: ...
    def read_array_reference(self, path: str) -> np.ndarray: ...

    def missing_chunks(self, path: str) -> list[str]:
        """Chunks of the array at ``path`` that should be stored and are not."""
        return []

    def chunk_checksums(self, path: str) -> bool:
        """Whether every read of the array at ``path`` checks each chunk against a checksum
        stored with it (stores written before chunk checksums: no)."""
        return False

    def read_arrays(self, group: str, names: Iterable[str]) -> dict[str, np.ndarray]:
        return {name: self.read_array(f"{group}/{name}") for name in names}

    def stored_bytes(self, group: str) -> int: ...
    def bytes_on_disk(self) -> int: ...
    def refresh(self) -> None: ...
    def close(self) -> None: ...


class ZarrBackend(Backend):
    kind = "zarr"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._store = None
        self._crc_checked: set[str] = set()  # arrays whose chunks carry checksums (a read checked them)

    def _zstore(self):
        if self._store is None:
            import zarr

            self._store = zarr.storage.LocalStore(self.path, read_only=True)
        return self._store

    def exists(self) -> bool:
        return (self.path / "zarr.json").is_file()

    def _meta(self, node: str) -> dict | None:
        try:
            return json.loads((self.path / node / "zarr.json").read_bytes())
        except (OSError, ValueError):
            return None

    def read_attrs(self, group: str, keys: Iterable[str] | None = None) -> dict | None:
        meta = self._meta(group)
        if meta is None or meta.get("node_type") != "group":
            return None
        attrs = meta.get("attributes", {})
        return dict(attrs) if keys is None else {k: attrs[k] for k in keys if k in attrs}

    def _children(self, group: str, node_type: str) -> list[str]:
        try:
            names = sorted(os.listdir(self.path / group))
        except OSError:
            return []
        out = []
        for name in names:
            if name.startswith("."):
                continue
            meta_file = self.path / group / name / "zarr.json"
            if not meta_file.is_file():
                continue
            meta = self._meta(f"{group}/{name}" if group else name)
            if meta is not None and meta.get("node_type") == node_type:
                out.append(name)
        return out

    def list_groups(self, group: str) -> list[str]:
        return self._children(group, "group")

    def list_children(self, group: str) -> list[str]:
        """Every child folder, readable or not (what verify walks)."""
        try:
            return sorted(n for n in os.listdir(self.path / group)
                          if not n.startswith(".") and (self.path / group / n).is_dir())
        except OSError:
            return []

    def list_arrays(self, group: str) -> list[str]:
        return self._children(group, "array")

    def read_array(self, path: str) -> np.ndarray:
        fast = _read_plain_v3(self.path / path)
        if fast is None:
            return self.read_array_reference(path)
        arr, crc = fast
        if crc:
            self._crc_checked.add(path)
        return arr

    def read_array_reference(self, path: str) -> np.ndarray:
        """Through zarr itself (what :mod:`tprna.store.verify` uses)."""
        import zarr

        return np.asarray(zarr.open_array(self._zstore(), path=path, mode="r")[...])

    def missing_chunks(self, path: str) -> list[str]:
        return missing_chunks(self.path / path) or []

    def chunk_checksums(self, path: str) -> bool:
        if path in self._crc_checked:
            return True
        meta = self._meta(path) or {}
        return any(c.get("name") == "crc32c" for c in meta.get("codecs", ()) if isinstance(c, dict))

    def stored_bytes(self, group: str) -> int:
        return _dir_bytes(self.path / group)

    def bytes_on_disk(self) -> int:
        return _dir_bytes(self.path)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        self._store = None


_PLAIN_DTYPES = {"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                 "float16", "float32", "float64"}


class ChunkError(Exception):
    """A chunk of an array is missing, truncated or cannot be decoded."""


def _read_plain_v3(node: Path) -> tuple[np.ndarray, bool] | None:
    """Read a Zarr v3 array of the plain kind this package writes (regular grid, default
    chunk keys, ``bytes`` + optional ``blosc`` codecs) synchronously: a few file reads and
    one decompression per chunk, without zarr's async machinery (several times faster for
    the small arrays of one entry): the array, and whether every chunk passed its CRC32C.
    None for anything else, which zarr then reads.

    Unlike zarr, it does not read a missing chunk of an array written with every chunk
    (:data:`ALL_CHUNKS`) as zeros, nor a chunk of the wrong size: both raise
    :class:`ChunkError`."""
    try:
        meta = json.loads((node / "zarr.json").read_bytes())
    except FileNotFoundError:
        raise KeyError(f"no array at {node}") from None
    try:
        if meta.get("node_type") != "array" or meta.get("storage_transformers"):
            return None
        dtype, shape = meta["data_type"], tuple(meta["shape"])
        grid, keys, codecs = meta["chunk_grid"], meta["chunk_key_encoding"], meta["codecs"]
        names = [c["name"] for c in codecs]
        crc = names[-1:] == ["crc32c"]
        if crc:
            names = names[:-1]
        if (dtype not in _PLAIN_DTYPES or not shape or grid["name"] != "regular"
                or keys["name"] != "default" or names not in (["bytes"], ["bytes", "blosc"])
                or codecs[0].get("configuration", {}).get("endian", "little") != "little"):
            return None
        blosc = len(names) == 2
        chunks = tuple(grid["configuration"]["chunk_shape"])
        sep = keys.get("configuration", {}).get("separator", "/")
        fill = meta.get("fill_value", 0)
        every_chunk = (meta.get("attributes") or {}).get(ALL_CHUNKS) is True
    except (KeyError, TypeError, AttributeError):
        return None
    dt = np.dtype(dtype).newbyteorder("<")
    out = np.empty(shape, dtype=dt)
    counts = [-(-s // c) for s, c in zip(shape, chunks)]
    chunk_bytes = int(np.prod(chunks, dtype=np.int64)) * dt.itemsize
    for idx in np.ndindex(*counts):
        where = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, shape))
        key = sep.join(["c", *map(str, idx)])
        try:
            raw = (node / key).read_bytes()
        except FileNotFoundError:
            if every_chunk:
                raise ChunkError(f"chunk {key} is missing") from None
            out[where] = fill
            continue
        if crc:
            import google_crc32c

            if len(raw) < 4 or google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
                raise ChunkError(f"chunk {key} fails its CRC32C check (changed or truncated on disk)")
            raw = raw[:-4]
        if blosc:
            import numcodecs.blosc

            try:
                raw = numcodecs.blosc.decompress(raw)
            except Exception as e:  # noqa: BLE001 - truncated or garbled compressed bytes
                raise ChunkError(f"chunk {key} cannot be decoded ({type(e).__name__}: {e})") from None
        if len(raw) != chunk_bytes:
            raise ChunkError(f"chunk {key} holds {len(raw)} bytes, not {chunk_bytes} (truncated)")
        chunk = np.frombuffer(raw, dtype=dt).reshape(chunks)
        out[where] = chunk[tuple(slice(0, w.stop - w.start) for w in where)]
    return out.astype(out.dtype.newbyteorder("="), copy=False), crc


def missing_chunks(node: Path) -> list[str] | None:
    """Keys of the chunks absent from a Zarr array written with every chunk; None when the
    array does not say it was (then an absent chunk is legitimately all fill value)."""
    try:
        meta = json.loads((node / "zarr.json").read_bytes())
        if (meta.get("attributes") or {}).get(ALL_CHUNKS) is not True:
            return None
        shape = tuple(meta["shape"])
        chunks = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        sep = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    counts = [-(-s // c) for s, c in zip(shape, chunks)]
    keys = (sep.join(["c", *map(str, idx)]) for idx in np.ndindex(*counts))
    return [k for k in keys if not (node / k).is_file()]


def _dir_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


class Hdf5Backend(Backend):
    """Reads the live file only; reopens it when a build has replaced it (checked at
    :meth:`refresh`, which the reader calls at the start of each public operation)."""

    kind = "hdf5"
    # a reader's file is never modified: builds replace the whole file, which it reopens
    swaps_entries = False

    def __init__(self, path: Path, file: Any = None):
        self.path = Path(path)
        self._file = file  # an already-open h5py.File (a writer's partial): never reopened
        self._pinned = file is not None
        self._inode: tuple[int, int] | None = None
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
            import h5py

            try:
                self._file = h5py.File(self.path, "r")
            except OSError as e:
                raise TprnaError(f"cannot open HDF5 store ({e})", self.path) from None
            self._inode = ident

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
        import h5py

        if not isinstance(node, h5py.Group):
            return None
        if keys is None:
            return _decode_attrs(node.attrs)
        attrs = node.attrs
        return _decode_attrs({k: attrs[k] for k in keys if k in attrs})

    def _children(self, group: str, want_group: bool) -> list[str]:
        import h5py

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

    def chunk_checksums(self, path: str) -> bool:
        if path not in self._fletcher:
            try:
                self._fletcher[path] = bool(self._h5()[path].fletcher32)
            except (KeyError, OSError, RuntimeError, AttributeError):
                return False
        return self._fletcher[path]

    def read_arrays(self, group: str, names: Iterable[str]) -> dict[str, np.ndarray]:
        node = self._h5()[group]
        out = {}
        for name in names:
            ds = node[name]
            if not self._pinned and f"{group}/{name}" not in self._fletcher:
                self._fletcher[f"{group}/{name}"] = bool(ds.fletcher32)
            arr = np.empty(ds.shape, dtype=ds.dtype)
            if arr.size:
                ds.read_direct(arr)
            out[name] = arr
        return out

    def stored_bytes(self, group: str) -> int:
        import h5py

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


def open_backend(path: str | os.PathLike) -> Backend:
    p = store_location(path)
    return Hdf5Backend(p) if is_hdf5_path(p) else ZarrBackend(p)


def _decode_attrs(attrs: Any) -> dict:
    out = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        out[key] = json.loads(value) if isinstance(value, str) else value
    return out


# --------------------------------------------------------------------------- Zarr writing


def _compressors():
    """zstd through blosc, then each chunk's CRC32C (checked by every reader, zarr's too)."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    blosc = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
    return [blosc, Crc32cCodec()] if CHUNK_CHECKSUMS else [blosc]


def zarr_init_store(path: Path, root_attrs: dict) -> None:
    """Create an empty store (root group with ``root_attrs`` and an empty ``entries`` group).
    The root's ``zarr.json`` is written once, attributes included, so a build killed here
    never leaves a root that does not say it is a feature store."""
    import zarr

    path.mkdir(parents=True, exist_ok=True)
    zarr.create_group(zarr.storage.LocalStore(path), attributes=root_attrs, overwrite=False)
    zarr_require_entries(path)


def zarr_require_entries(path: Path) -> None:
    """Create the ``entries`` group when it is missing (its creation was interrupted)."""
    if not (path / "entries" / "zarr.json").is_file():
        import zarr

        zarr.open_group(zarr.storage.LocalStore(path), path="entries", mode="a", use_consolidated=False)


def zarr_set_root_attrs(path: Path, attrs: dict) -> None:
    """Replace the root attributes: the root ``zarr.json`` is rewritten through a fsynced
    temporary file and a rename, so readers (and a full disk) leave the old one or the new."""
    meta_path = Path(path) / "zarr.json"
    try:
        meta = json.loads(meta_path.read_bytes())
    except (OSError, ValueError) as e:
        raise TprnaError(f"cannot read the store's root metadata ({e})", path) from None
    meta["attributes"] = attrs
    try:
        write_file_atomic(meta_path, json.dumps(meta, indent=2).encode())
    except OSError as e:
        if disk_full(e):
            raise disk_full_error(path, e) from None
        raise


# What each axis of a stored array is, so that xarray / plain zarr users read the schema.
_DIMENSIONS = {
    "msa": ("sequence", "position"), "weights": ("sequence",),
    "contacts": ("position_i", "position_j"), "observed": ("position_i", "position_j"),
    "cov": ("pair", "state_i", "state_j"), "precision": ("pair", "state_i", "state_j"),
    "profile": ("position", "state"),
}


def dimension_names(name: str, ndim: int) -> tuple[str, ...]:
    """Axis names of a stored array: packed maps (bpp, apc, …) are one axis of i ≤ j pairs."""
    known = _DIMENSIONS.get(name, ("pair",))
    return known if len(known) == ndim else tuple(f"{name}_{k}" for k in range(ndim))


def _zarr_write_tree(group: Any, payload: GroupPayload) -> None:
    for name, arr in payload.arrays.items():
        arr = np.ascontiguousarray(arr)
        za = group.create_array(name, shape=arr.shape, dtype=arr.dtype,
                                chunks=chunk_shape(arr.shape, arr.dtype.itemsize),
                                compressors=_compressors(), fill_value=0,
                                dimension_names=dimension_names(name, arr.ndim),
                                attributes={ALL_CHUNKS: True}, config={"write_empty_chunks": True})
        za[...] = arr
    for name, child in payload.children.items():
        _zarr_write_tree(group.create_group(name), child)
    if payload.attrs:
        group.update_attributes(payload.attrs)  # one metadata write, after every array


def zarr_write_group(store_path: str | os.PathLike, target: str, payload: GroupPayload) -> None:
    """Write ``payload`` as the group ``target`` (e.g. ``entries/<id>``) of the store,
    atomically and durably: built complete under ``.staging/``, fsynced, and renamed into
    place (the parent folder fsynced after).  An existing group at ``target`` is exchanged
    with the new one in one step and then deleted; where the file system cannot exchange,
    it is moved aside first (the one case with an instant where ``target`` is absent).
    Safe to call from any process; the parent of ``target`` must already exist.  A full
    disk raises :class:`DiskFull` and leaves ``target`` as it was."""
    import zarr

    root = Path(store_path)
    staging = root / STAGING / uuid.uuid4().hex
    dest = root / target
    try:
        staging.parent.mkdir(exist_ok=True)
        group = zarr.open_group(zarr.storage.LocalStore(staging), mode="w", use_consolidated=False)
        _zarr_write_tree(group, payload)
        fsync_tree(staging)
        if not dest.exists():
            os.rename(staging, dest)
        elif exchange(staging, dest):
            pass  # the old group is now at ``staging``, deleted below
        else:
            trash = root / TRASH / uuid.uuid4().hex
            trash.parent.mkdir(exist_ok=True)
            os.rename(dest, trash)
            os.rename(staging, dest)
            shutil.rmtree(trash, ignore_errors=True)
        fsync_dir(dest.parent)
    except Exception as e:
        if disk_full(e):
            raise disk_full_error(root, e) from None
        raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def zarr_clean_stale(path: Path) -> int:
    """Remove leftovers of killed writers: staging and trash folders, temp metadata files.
    Call only while holding the store lock.  Returns how many were removed."""
    removed = 0
    for sub in (STAGING, TRASH):
        d = path / sub
        if d.is_dir():
            for child in d.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
                removed += 1
    leftovers = list(path.glob("zarr.*.partial")) + list((path / "entries").glob("zarr.*.partial"))
    for tmp in leftovers + list(path.glob(".zarr.json.*.tmp")):  # the last: zarr_set_root_attrs
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


# --------------------------------------------------------------------------- HDF5 writing


def _encode_attrs(attrs: dict) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in attrs.items()}


def _h5_write_tree(group: Any, payload: GroupPayload) -> None:
    for name, arr in payload.arrays.items():
        arr = np.ascontiguousarray(arr)
        kwargs: dict[str, Any] = {}
        if arr.size:
            kwargs = dict(chunks=chunk_shape(arr.shape, arr.dtype.itemsize),
                          # deflate: every HDF5 build (h5dump, HDFView, R, MATLAB) reads it; LZF only h5py
                          compression="gzip", compression_opts=1, shuffle=arr.dtype.itemsize > 1,
                          fletcher32=CHUNK_CHECKSUMS)
        group.create_dataset(name, data=arr, **kwargs)
    for name, child in payload.children.items():
        _h5_write_tree(group.create_group(name), child)
    for key, value in _encode_attrs(payload.attrs).items():
        group.attrs[key] = value


_BALLAST_BYTES = 1 << 20  # freed before HDF5 closes a file, so closing never lacks space
_GROUP_SLACK = 1 << 20  # metadata HDF5 may write beside a group (B-tree nodes, heaps, superblock)
_ARRAY_SLACK = 64 << 10  # object header, chunk index and attributes of one array


def h5_space_needed(payload: GroupPayload) -> int:
    """An upper bound on the bytes writing ``payload`` adds to an HDF5 file: the raw array
    bytes (LZF is an optional filter: a chunk it cannot shrink is stored as it is), plus
    metadata per array and per group, plus the JSON attributes four times over."""
    need = _ARRAY_SLACK + 4 * len(json.dumps(payload.attrs, default=str))
    for arr in payload.arrays.values():
        need += int(np.asarray(arr).nbytes) + _ARRAY_SLACK
    return need + sum(h5_space_needed(child) for child in payload.children.values())


class Hdf5Session:
    """One writer's session on an HDF5 store: all writes go to ``<file>.partial``, which
    replaces the live file at :meth:`checkpoint` and :meth:`commit`.

    ``is_valid(file)`` (given the open partial) drops whatever a killed session left
    half-written; it returns False when the partial should be discarded entirely.

    HDF5 crashes the process (a segfault in a later flush) after a write that failed for
    space, so HDF5 is never let near a full disk: the blocks of every group are allocated
    before it is written (:func:`tprna.store.atomic.reserve`), a ballast file holds the
    room HDF5 needs to close the file, and a new file is laid out in memory and written by
    Python.  When the space is not there the session discards its partial (the live file
    is as it was at the last publish) and raises :class:`DiskFull`."""

    def __init__(self, path: Path, root_attrs: dict,
                 repair: Callable[[Any], bool] | None = None):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.ballast = self.path.with_name(self.path.name + ".ballast")
        self._root_attrs = root_attrs
        self._repair = repair
        self._file = None
        self.dirty = False

    def clean_stale(self) -> None:
        """Remove what a killed session leaves beside the partial (call under the lock)."""
        self.ballast.unlink(missing_ok=True)
        self.partial.with_name(self.partial.name + ".copy").unlink(missing_ok=True)
        for tmp in self.path.parent.glob(f"{self.path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)

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

    # -- lifecycle
    def open(self) -> "Hdf5Session":
        try:
            self._lay_ballast()
            return self._open()
        except Exception as e:
            if disk_full(e):
                raise self._full(e) from None
            raise

    def _open(self) -> "Hdf5Session":
        import h5py

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
                for key, value in _encode_attrs(self._root_attrs).items():
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

    @property
    def file(self):
        return self._file

    def read_root_attrs(self) -> dict:
        return _decode_attrs(self._file.attrs)

    def set_root_attrs(self, attrs: dict) -> None:
        self._reserve(_GROUP_SLACK + 4 * len(json.dumps(attrs, default=str)))
        for key in list(self._file.attrs.keys()):
            if key not in attrs:
                del self._file.attrs[key]
        for key, value in _encode_attrs(attrs).items():
            self._file.attrs[key] = value
        self._file.flush()
        self.dirty = True

    def write_group(self, target: str, payload: GroupPayload) -> None:
        """Write (or replace) the group ``target``; its attrs, ``complete`` among them,
        are written last, then the file is flushed.  Its disk space is allocated first."""
        self._reserve(_GROUP_SLACK + h5_space_needed(payload))
        f = self._file
        if target in f:
            del f[target]
        _h5_write_tree(f.create_group(target), payload)
        f.flush()
        self.dirty = True

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
        import h5py

        self._file = h5py.File(self.partial, "r+")

    def commit(self) -> None:
        """Close the partial and make it the live file (when anything changed), fsynced."""
        if self._file is None:
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
        """Close without publishing; the partial stays for the next session to resume."""
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


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
