"""The Zarr v3 form of a store: a folder holding nothing but its Zarr hierarchy.

* **Writing** — a group is written complete into the store's staging folder (a sibling,
  ``<store>.staging/<uuid>/``, :mod:`tprna.store.location`), fsynced, and ``os.rename``\\ d
  into place, so it appears all at once or not at all.  A group that is already there (a
  changed entry) is *exchanged* with the new one in one step
  (``renameat2(RENAME_EXCHANGE)``, :mod:`tprna.store.atomic`), so a reader never finds it
  missing.  Any process can do this (:class:`ZarrSink`: the build's workers do).  Every
  chunk is written, even an all-zero one, and the array says so (``tprna_all_chunks``):
  a chunk file that is not there is damage, never zeros.  Each chunk ends in its CRC32C
  (the Zarr v3 ``crc32c`` codec), checked on every read.
* **Metadata** — the root ``zarr.json`` and the index group's are rewritten through a
  fsynced temporary file and a rename.  When a build starts changing the store it drops
  the consolidated metadata and marks the entry index incomplete; when it ends it writes
  the index and consolidates the whole tree into the root ``zarr.json`` again, so plain
  ``zarr.open_group`` / ``xarray.open_zarr`` users never read a stale tree.
* **Reading** — :func:`_read_plain_v3` decodes the plain arrays this package writes with
  a few file reads and one decompression per chunk.  Measured against zarr's own reader
  on the coconet families of ``scripts/bench_store.py`` (``read_features``, this machine):
  zarr took 2.5–50× as long (1.0× only for the largest, L=496), so the decoder stays.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import google_crc32c
import numcodecs.blosc
import numpy as np

from tprna.errors import TprnaError
from tprna.store import base
from tprna.store.atomic import (disk_full, disk_full_error, exchange, fsync_dir, fsync_tree,
                                write_file_atomic)
from tprna.store.base import ALL_CHUNKS, INDEX, GroupPayload, chunk_shape
from tprna.store.location import LEGACY_SIDECARS, staging_dir

__all__ = ["ZarrReader", "ZarrSink", "ZarrWriter", "ChunkError", "dimension_names", "consolidate"]

INDEX_KEY = "tprna_index"  # attribute of the index group holding the index


class ChunkError(Exception):
    """A chunk of an array is missing, truncated or cannot be decoded."""


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


_ROOT_HEAD = b'{"attributes":'


def _load_root(path: Path) -> dict | None:
    """The root ``zarr.json`` as far as a reader needs it.  Consolidated, it holds the
    metadata of the whole tree (~10 MB for 1,000 entries, seconds to parse on a busy
    machine), so when it is in the compact form :func:`_write_meta` writes — attributes
    first — only the attributes are parsed."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if raw.startswith(_ROOT_HEAD) and b'"node_type":"group"' in raw:
        try:
            attrs, _ = json.JSONDecoder().raw_decode(raw.decode(), len(_ROOT_HEAD))
        except ValueError:
            return None
        return {"node_type": "group", "attributes": attrs}
    try:
        return json.loads(raw)
    except ValueError:
        return None


# --------------------------------------------------------------------------- reading


class ZarrReader:
    kind = "zarr"
    swaps_entries = True  # a build replaces a changed entry's folder under open readers

    def __init__(self, path: Path):
        self.path = Path(path)
        self._store = None
        self._crc_checked: set[str] = set()  # arrays whose chunks carry checksums (a read checked them)
        self._root: tuple[tuple, dict] | None = None  # (stat key, root zarr.json): it holds the whole tree

    def _zstore(self):
        if self._store is None:
            import zarr  # 0.12 s to import: only verify's reads need it (others use the decoder)

            self._store = zarr.storage.LocalStore(self.path, read_only=True)
        return self._store

    def exists(self) -> bool:
        return (self.path / "zarr.json").is_file()

    def _meta(self, node: str) -> dict | None:
        if node:
            return _load(self.path / node / "zarr.json")
        meta_file = self.path / "zarr.json"  # rewritten only by rename: a new inode each time
        try:
            st = os.stat(meta_file)
        except OSError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._root is None or self._root[0] != key:
            meta = _load_root(meta_file)
            if meta is None:
                return None
            self._root = (key, meta)
        return self._root[1]

    def read_attrs(self, group: str, keys: Iterable[str] | None = None) -> dict | None:
        meta = self._meta(group)
        if meta is None or meta.get("node_type") != "group":
            return None
        attrs = meta.get("attributes", {})
        return dict(attrs) if keys is None else {k: attrs[k] for k in keys if k in attrs}

    def _children(self, group: str, node_type: str) -> list[str]:
        out = []
        for name in self.list_children(group):
            meta = self._meta(f"{group}/{name}" if group else name)
            if meta is not None and meta.get("node_type") == node_type:
                out.append(name)
        return out

    def list_groups(self, group: str) -> list[str]:
        return self._children(group, "group")

    def list_children(self, group: str) -> list[str]:
        try:
            with os.scandir(self.path / group) as it:  # d_type: no stat per child
                return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
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

    def read_arrays(self, group: str, names: Iterable[str]) -> dict[str, np.ndarray]:
        return {name: self.read_array(f"{group}/{name}") for name in names}

    def read_array_reference(self, path: str) -> np.ndarray:
        import zarr  # see _zstore

        return np.asarray(zarr.open_array(self._zstore(), path=path, mode="r")[...])

    def missing_chunks(self, path: str) -> list[str]:
        return missing_chunks(self.path / path) or []

    def chunk_checksums(self, path: str) -> bool:
        if path in self._crc_checked:
            return True
        meta = self._meta(path) or {}
        return any(c.get("name") == "crc32c" for c in meta.get("codecs", ()) if isinstance(c, dict))

    def index_token(self) -> object:
        try:
            st = os.stat(self.path / INDEX / "zarr.json")
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def read_index(self) -> dict | None:
        return (self.read_attrs(INDEX, (INDEX_KEY,)) or {}).get(INDEX_KEY)

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


def _read_plain_v3(node: Path) -> tuple[np.ndarray, bool] | None:
    """Read a Zarr v3 array of the plain kind this package writes (regular grid, default
    chunk keys, ``bytes`` + optional ``blosc`` + optional ``crc32c`` codecs)
    synchronously, without zarr's async machinery: the array, and whether every chunk
    passed its CRC32C.  None for anything else, which zarr then reads.

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
            if len(raw) < 4 or google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
                raise ChunkError(f"chunk {key} fails its CRC32C check (changed or truncated on disk)")
            raw = raw[:-4]
        if blosc:
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


# --------------------------------------------------------------------------- writing groups


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


def _compressors() -> list:
    """zstd through blosc, then each chunk's CRC32C (checked by every reader, zarr's too)."""
    from zarr.codecs import BloscCodec, Crc32cCodec  # zarr (0.12 s) only where a store is written

    blosc = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
    return [blosc, Crc32cCodec()] if base.CHUNK_CHECKSUMS else [blosc]


def _write_tree(group: Any, payload: GroupPayload) -> None:
    for name, arr in payload.arrays.items():
        arr = np.ascontiguousarray(arr)
        za = group.create_array(name, shape=arr.shape, dtype=arr.dtype,
                                chunks=chunk_shape(arr.shape, arr.dtype.itemsize),
                                compressors=_compressors(), fill_value=0,
                                dimension_names=dimension_names(name, arr.ndim),
                                attributes={ALL_CHUNKS: True}, config={"write_empty_chunks": True})
        za[...] = arr
    for name, child in payload.children.items():
        _write_tree(group.create_group(name), child)
    if payload.attrs:
        group.update_attributes(payload.attrs)  # one metadata write, after every array


@dataclass(frozen=True)
class ZarrSink:
    """Writes whole groups into the store at ``path`` from any process."""

    path: Path

    def write_group(self, target: str, payload: GroupPayload) -> None:
        """Write ``payload`` as the group ``target`` (e.g. ``entries/<id>``), atomically
        and durably: built complete in the staging folder, fsynced, and renamed into place
        (the parent folder fsynced after).  An existing group at ``target`` is exchanged
        with the new one in one step and then deleted; where the file system cannot
        exchange, it is moved aside first (the one case with an instant where ``target``
        is absent).  The parent of ``target`` must exist.  A full disk raises
        :class:`~tprna.store.atomic.DiskFull` and leaves ``target`` as it was."""
        import zarr  # zarr (0.12 s) only where a store is written: readers use the decoder

        root = Path(self.path)
        staging = staging_dir(root) / uuid.uuid4().hex
        dest = root / target
        try:
            staging.parent.mkdir(exist_ok=True)
            group = zarr.open_group(zarr.storage.LocalStore(staging), mode="w", use_consolidated=False)
            _write_tree(group, payload)
            fsync_tree(staging)
            if not dest.exists():
                os.rename(staging, dest)
            elif exchange(staging, dest):
                pass  # the old group is now at ``staging``, deleted below
            else:
                trash = staging_dir(root) / f"trash-{uuid.uuid4().hex}"
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


# --------------------------------------------------------------------------- metadata


def _write_meta(path: Path, meta: dict) -> None:
    """Write a ``zarr.json`` atomically, compact and attributes first (what
    :func:`_load_root` reads without parsing the consolidated tree)."""
    meta = {"attributes": meta.get("attributes", {}), **{k: v for k, v in meta.items() if k != "attributes"}}
    try:
        write_file_atomic(path, json.dumps(meta, separators=(",", ":")).encode())
    except OSError as e:
        if disk_full(e):
            raise disk_full_error(path.parent, e) from None
        raise


def _group_meta(attrs: dict) -> dict:
    return {"attributes": attrs, "zarr_format": 3, "node_type": "group"}


def consolidate(path: Path, consolidated: bool = True) -> None:
    """Rewrite the root ``zarr.json`` with the metadata of every node below it inline (the
    form ``zarr.consolidate_metadata`` writes), or without any (``consolidated=False``)."""
    path = Path(path)
    meta = _load(path / "zarr.json")
    if meta is None:
        raise TprnaError("cannot read the store's root metadata", path)
    nodes: dict[str, dict] = {}
    if consolidated:
        for dirpath, dirnames, files in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(dirpath, path)
            if rel == "." or "zarr.json" not in files:
                continue
            node = _load(Path(dirpath) / "zarr.json")
            if node is None:
                continue
            if node.get("node_type") == "group":
                node["consolidated_metadata"] = {"kind": "inline", "must_understand": False, "metadata": {}}
            else:
                dirnames[:] = []  # chunk folders below an array
            nodes[rel.replace(os.sep, "/")] = node
    if consolidated:
        meta["consolidated_metadata"] = {"kind": "inline", "must_understand": False, "metadata": nodes}
    else:
        meta.pop("consolidated_metadata", None)
    _write_meta(path / "zarr.json", meta)


def _empty(folder: Path) -> int:
    """Remove everything in ``folder`` (when it is there); how many entries were removed."""
    if not folder.is_dir():
        return 0
    removed = 0
    for child in folder.iterdir():
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        removed += 1
    return removed


class ZarrWriter:
    """The writer of a Zarr store (see the module doc)."""

    def __init__(self, path: Path, root_attrs: dict):
        self.path = Path(path)
        self.sink = ZarrSink(self.path)
        self._root_attrs = root_attrs
        self._changed = False

    def prepare(self) -> ZarrReader:
        import zarr  # zarr (0.12 s) only where a store is written: readers use the decoder

        path = self.path
        if path.exists() and not path.is_dir():
            raise TprnaError("exists and is not a folder (HDF5 stores need a .h5 suffix)", path)
        if path.is_dir() and not (path / "zarr.json").exists() and any(
                not n.startswith(".") for n in os.listdir(path)):
            raise TprnaError("folder exists, is not empty and is not a feature store; choose a new path", path)
        _empty(staging_dir(path))  # what killed writers left there (ours by name; even a no-op build)
        if not (path / "zarr.json").exists():
            # the root zarr.json is written once, attributes included, so a build killed here
            # never leaves a root that does not say it is a feature store
            path.mkdir(parents=True, exist_ok=True)
            zarr.create_group(zarr.storage.LocalStore(path), attributes=self._root_attrs, overwrite=False)
        return ZarrReader(path)

    def begin(self, current_index: Callable[[], dict]) -> None:
        """Clean what killed writers left, and take the tree's summaries (consolidated
        metadata, entry index) down until :meth:`write_index` puts them back."""
        import zarr  # zarr (0.12 s) only where a store is written: readers use the decoder

        self.clean_stale()
        if not (self.path / "entries" / "zarr.json").is_file():  # its creation was interrupted
            zarr.open_group(zarr.storage.LocalStore(self.path), path="entries", mode="a", use_consolidated=False)
        consolidate(self.path, consolidated=False)
        self.write_index(None)
        self._changed = True

    def clean_stale(self) -> int:
        """Remove leftovers of killed writers (staging groups, temp metadata files) and the
        sidecars older stores kept inside the folder.  Returns how many were removed."""
        removed = 0
        for d in (staging_dir(self.path), *(self.path / n for n in LEGACY_SIDECARS[1:])):
            removed += _empty(d)
            if d.parent == self.path and d.is_dir():
                d.rmdir()
        (self.path / LEGACY_SIDECARS[0]).unlink(missing_ok=True)  # held by this writer's lock
        for folder in (self.path, self.path / "entries", self.path / INDEX):
            for tmp in [*folder.glob("zarr.*.partial"), *folder.glob(".zarr.json.*.tmp")]:
                tmp.unlink(missing_ok=True)
                removed += 1
        return removed

    def read_root_attrs(self) -> dict:
        return ZarrReader(self.path).read_attrs("") or {}

    def set_root_attrs(self, attrs: dict) -> None:
        """Replace the root attributes (the root ``zarr.json`` through a temporary file and
        a rename: readers, and a full disk, leave the old one or the new)."""
        meta = _load(self.path / "zarr.json")
        if meta is None:
            raise TprnaError("cannot read the store's root metadata", self.path)
        meta["attributes"] = attrs
        _write_meta(self.path / "zarr.json", meta)

    def write_group(self, target: str, payload: GroupPayload) -> None:
        self.sink.write_group(target, payload)

    def group_written(self) -> None:
        pass

    def write_index(self, index: dict | None) -> None:
        """The entry index (None: mark it incomplete); with a complete one the tree is
        consolidated again."""
        (self.path / INDEX).mkdir(exist_ok=True)
        _write_meta(self.path / INDEX / "zarr.json",
                    _group_meta({INDEX_KEY: index if index is not None else {"complete": False}}))
        if index is not None:
            consolidate(self.path)

    def commit(self) -> None:
        try:
            staging_dir(self.path).rmdir()  # the staging folder goes when it is empty
        except OSError:
            pass

    def abandon(self) -> None:
        pass
