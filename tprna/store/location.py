"""Where a store is, and what lives beside it: URL parsing, the writer's lock, the
staging folder.

A Zarr store is a folder that holds nothing but its Zarr hierarchy, so plain zarr walks
it without a warning: the writer's lock and staging folder are *siblings* of the store
(``<store>.lock``, ``<store>.staging/``), on the same file system, so a group built in
the staging folder is published with one ``rename``.  An HDF5 store's lock is
``<file>.lock`` beside the file.  Stores written before this layout kept ``.lock``,
``.staging`` and ``.trash`` inside the folder; :data:`LEGACY_SIDECARS` names them so a
build can take the old lock too and remove them.
"""
from __future__ import annotations

import fcntl
import os
import re
import urllib.parse
from pathlib import Path

from tprna.errors import TprnaError

__all__ = ["store_location", "is_hdf5_path", "lock_path", "staging_dir", "StoreLock",
           "HDF5_SUFFIXES", "LEGACY_SIDECARS"]

HDF5_SUFFIXES = (".h5", ".hdf5")
LEGACY_SIDECARS = (".lock", ".staging", ".trash")  # inside a Zarr store, before they moved out

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


def _sibling(path: str | os.PathLike, suffix: str) -> Path:
    p = Path(os.path.abspath(path))  # "." and "store.zarr/" have a name to append to
    return p.with_name(p.name + suffix)


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of the store at ``path`` (either format): ``<store>.lock``."""
    return _sibling(path, ".lock")


def staging_dir(path: str | os.PathLike) -> Path:
    """The folder where a Zarr store's groups are built before their rename into it."""
    return _sibling(path, ".staging")


class StoreLock:
    """An exclusive advisory lock (``flock``) held by the one process allowed to write.
    ``also`` are further lock files taken with it when they exist (the lock inside a
    store written before the lock moved beside it, which an older tpRNA still takes)."""

    def __init__(self, path: Path, store: Path | None = None, also: tuple[Path, ...] = ()):
        self.path = path
        self.store = store or path
        self.also = also
        self._fds: list[int] = []

    def _take(self, path: Path, create: bool) -> None:
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:
            if create:
                raise
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self.__exit__()
            raise TprnaError("another build or split is writing this store; wait for it to finish",
                             self.store) from None
        self._fds.append(fd)

    def __enter__(self) -> "StoreLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._take(self.path, create=True)
        for extra in self.also:
            self._take(extra, create=False)
        return self

    def __exit__(self, *exc: object) -> None:
        while self._fds:
            fd = self._fds.pop()
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
