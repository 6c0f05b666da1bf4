"""The two physical forms of a feature store: a Zarr v3 directory and an HDF5 file.

Both hold the same tree of groups (with JSON-able attributes) and arrays; this module
knows nothing of what the tree means (that is :mod:`tprna.store.schema`), only how to
read it and how to write a whole group atomically:

* **Zarr** — a group is written complete into ``<store>/.staging/<uuid>/`` and then
  ``os.rename``\\ d into place, so it appears all at once or not at all.  The write is a
  plain function of (store path, target, payload), callable from any worker process.
* **HDF5** — not crash-safe, so the live file is never modified: a session writes into
  ``<file>.partial`` (a copy of the live file, or a cleanly opening leftover of a killed
  session), flushes after each group, and ``os.replace``\\ s it over the live file at
  checkpoints and at the end.  Readers only ever open the live file.

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
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from tprna.errors import TprnaError

__all__ = [
    "GroupPayload", "Backend", "ZarrBackend", "Hdf5Backend", "is_hdf5_path", "open_backend",
    "StoreLock", "zarr_init_store", "zarr_write_group", "zarr_set_root_attrs", "zarr_clean_stale",
    "Hdf5Session", "CHUNK_BYTES", "store_location",
]

CHUNK_BYTES = 4 * 1024 * 1024  # upper bound on the raw bytes of one chunk
STAGING = ".staging"
TRASH = ".trash"
LOCK = ".lock"
HDF5_SUFFIXES = (".h5", ".hdf5")


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
        return fast if fast is not None else self.read_array_reference(path)

    def read_array_reference(self, path: str) -> np.ndarray:
        """Through zarr itself (what :mod:`tprna.store.verify` uses)."""
        import zarr

        return np.asarray(zarr.open_array(self._zstore(), path=path, mode="r")[...])

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


def _read_plain_v3(node: Path) -> np.ndarray | None:
    """Read a Zarr v3 array of the plain kind this package writes (regular grid, default
    chunk keys, ``bytes`` + optional ``blosc`` codecs) synchronously: a few file reads and
    one decompression per chunk, without zarr's async machinery (several times faster for
    the small arrays of one entry).  None for anything else, which zarr then reads."""
    try:
        meta = json.loads((node / "zarr.json").read_bytes())
    except FileNotFoundError:
        raise KeyError(f"no array at {node}") from None
    try:
        if meta.get("node_type") != "array" or meta.get("storage_transformers"):
            return None
        dtype, shape = meta["data_type"], tuple(meta["shape"])
        grid, keys, codecs = meta["chunk_grid"], meta["chunk_key_encoding"], meta["codecs"]
        if (dtype not in _PLAIN_DTYPES or not shape or grid["name"] != "regular"
                or keys["name"] != "default" or not codecs or codecs[0]["name"] != "bytes"
                or codecs[0].get("configuration", {}).get("endian", "little") != "little"
                or any(c["name"] != "blosc" for c in codecs[1:]) or len(codecs) > 2):
            return None
        chunks = tuple(grid["configuration"]["chunk_shape"])
        sep = keys.get("configuration", {}).get("separator", "/")
        fill = meta.get("fill_value", 0)
    except (KeyError, TypeError, AttributeError):
        return None
    dt = np.dtype(dtype).newbyteorder("<")
    out = np.empty(shape, dtype=dt)
    counts = [-(-s // c) for s, c in zip(shape, chunks)]
    for idx in np.ndindex(*counts):
        where = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, shape))
        try:
            raw = (node / sep.join(["c", *map(str, idx)])).read_bytes()
        except FileNotFoundError:
            out[where] = fill
            continue
        if len(codecs) == 2:
            import numcodecs.blosc

            raw = numcodecs.blosc.decompress(raw)
        chunk = np.frombuffer(raw, dtype=dt).reshape(chunks)
        out[where] = chunk[tuple(slice(0, w.stop - w.start) for w in where)]
    return out.astype(out.dtype.newbyteorder("="), copy=False)


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

    def read_arrays(self, group: str, names: Iterable[str]) -> dict[str, np.ndarray]:
        node = self._h5()[group]
        out = {}
        for name in names:
            ds = node[name]
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
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


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
    """Replace the root attributes (zarr writes ``zarr.json`` via a temp file + rename)."""
    import zarr

    root = zarr.open_group(zarr.storage.LocalStore(path), mode="r+", use_consolidated=False)
    root.attrs.put(attrs)


def _zarr_write_tree(group: Any, payload: GroupPayload) -> None:
    for name, arr in payload.arrays.items():
        arr = np.ascontiguousarray(arr)
        za = group.create_array(name, shape=arr.shape, dtype=arr.dtype,
                                chunks=chunk_shape(arr.shape, arr.dtype.itemsize),
                                compressors=_compressors(), fill_value=0)
        za[...] = arr
    for name, child in payload.children.items():
        _zarr_write_tree(group.create_group(name), child)
    if payload.attrs:
        group.update_attributes(payload.attrs)  # one metadata write, after every array


def zarr_write_group(store_path: str | os.PathLike, target: str, payload: GroupPayload) -> None:
    """Write ``payload`` as the group ``target`` (e.g. ``entries/<id>``) of the store,
    atomically: built complete under ``.staging/`` and renamed into place.  An existing
    group at ``target`` is moved aside first and deleted after.  Safe to call from any
    process; the parent of ``target`` must already exist."""
    import zarr

    root = Path(store_path)
    staging = root / STAGING / uuid.uuid4().hex
    staging.parent.mkdir(exist_ok=True)
    try:
        group = zarr.open_group(zarr.storage.LocalStore(staging), mode="w", use_consolidated=False)
        _zarr_write_tree(group, payload)
        dest = root / target
        try:
            os.rename(staging, dest)
        except OSError:  # the target exists (a changed entry): move it aside, then retry
            trash = root / TRASH / uuid.uuid4().hex
            trash.parent.mkdir(exist_ok=True)
            os.rename(dest, trash)
            os.rename(staging, dest)
            shutil.rmtree(trash, ignore_errors=True)
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
    for tmp in list(path.glob("zarr.*.partial")) + list((path / "entries").glob("zarr.*.partial")):
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
                          compression="lzf", shuffle=arr.dtype.itemsize > 1)
        group.create_dataset(name, data=arr, **kwargs)
    for name, child in payload.children.items():
        _h5_write_tree(group.create_group(name), child)
    for key, value in _encode_attrs(payload.attrs).items():
        group.attrs[key] = value


class Hdf5Session:
    """One writer's session on an HDF5 store: all writes go to ``<file>.partial``, which
    replaces the live file at :meth:`checkpoint` and :meth:`commit`.

    ``is_valid(file)`` (given the open partial) drops whatever a killed session left
    half-written; it returns False when the partial should be discarded entirely."""

    def __init__(self, path: Path, root_attrs: dict,
                 repair: Callable[[Any], bool] | None = None):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self._root_attrs = root_attrs
        self._repair = repair
        self._file = None
        self.resumed = False
        self.dirty = False

    # -- lifecycle
    def open(self) -> "Hdf5Session":
        import h5py

        if self.partial.exists():
            f = None
            try:
                f = h5py.File(self.partial, "r+")
                ok = self._repair(f) if self._repair else True
            except Exception:  # noqa: BLE001 - any failure to open or walk it: discard
                ok = False
            if ok:
                self._file, self.resumed, self.dirty = f, True, True
                return self
            try:
                if f is not None:
                    f.close()
            except Exception:  # noqa: BLE001
                pass
            self.partial.unlink(missing_ok=True)
        if self.path.exists():
            tmp = self.partial.with_name(self.partial.name + ".copy")
            shutil.copyfile(self.path, tmp)
            os.replace(tmp, self.partial)
            self._file = h5py.File(self.partial, "r+")
        else:
            self._file = h5py.File(self.partial, "w", fs_strategy="fsm", fs_persist=True)
            self._file.require_group("entries")
            for key, value in _encode_attrs(self._root_attrs).items():
                self._file.attrs[key] = value
            self.dirty = True
        return self

    @property
    def file(self):
        return self._file

    def read_root_attrs(self) -> dict:
        return _decode_attrs(self._file.attrs)

    def set_root_attrs(self, attrs: dict) -> None:
        for key in list(self._file.attrs.keys()):
            if key not in attrs:
                del self._file.attrs[key]
        for key, value in _encode_attrs(attrs).items():
            self._file.attrs[key] = value
        self._file.flush()
        self.dirty = True

    def write_group(self, target: str, payload: GroupPayload) -> None:
        """Write (or replace) the group ``target``; its attrs, ``complete`` among them,
        are written last, then the file is flushed."""
        f = self._file
        if target in f:
            del f[target]
        _h5_write_tree(f.create_group(target), payload)
        f.flush()
        self.dirty = True

    def checkpoint(self) -> None:
        """Publish what is written so far: the live file becomes a copy of the partial."""
        if not self.dirty:
            return
        self._file.flush()
        self._file.close()
        tmp = self.path.with_name(self.path.name + f".{uuid.uuid4().hex}.tmp")
        try:
            shutil.copyfile(self.partial, tmp)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        import h5py

        self._file = h5py.File(self.partial, "r+")

    def commit(self) -> None:
        """Close the partial and make it the live file (when anything changed)."""
        if self._file is None:
            return
        self._file.flush()
        self._file.close()
        self._file = None
        if self.dirty:
            os.replace(self.partial, self.path)
        else:
            self.partial.unlink(missing_ok=True)

    def abandon(self) -> None:
        """Close without publishing; the partial stays for the next session to resume."""
        if self._file is not None:
            try:
                self._file.flush()
                self._file.close()
            except Exception:  # noqa: BLE001
                pass
            self._file = None


def iter_h5_groups(f: Any, group: str) -> Iterator[str]:
    node = f[group]
    import h5py

    for name in list(node.keys()):
        if node.get(name, getclass=True) is h5py.Group:
            yield name


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
