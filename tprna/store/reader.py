"""Reading a feature store: :class:`FeatureStore` and :func:`open_store`.

Every read checks what it read, and anything wrong is a :class:`TprnaError` naming the
entry — never zeros or other numbers passed on to training or inference: a missing,
truncated or undecodable chunk always; a chunk whose bytes changed by its own checksum
(CRC32C in Zarr, Fletcher-32 in HDF5, a few per cent of a read); and, for arrays written
before chunk checksums, the array's sha256 against the one recorded when it was written
(10–25 % of a read, measured by ``scripts/bench_store.py``; ``verify_reads=False`` skips
it).  Listing (``ids``, ``entry_meta``, ``info``) comes from the entry index
(:mod:`tprna.store.index`) when it can be trusted, from each entry's metadata otherwise.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from tprna.errors import TprnaError
from tprna.features import FEATURE_SETS, FeatureSpec, stored_feature_set
from tprna.store import index as entry_index
from tprna.store.base import StoreReader
from tprna.store.formats import open_reader, open_writer, store_lock
from tprna.store.schema import (ENTRIES, FORMAT, FORMAT_VERSION, NEFF_SPLITS, checksum, entry_group,
                                features_group, unpack_component)
from tprna.store.verify import verify_entry, verify_root

__all__ = ["FeatureStore", "open_store", "update_root"]



class FeatureStore:
    """Read access to a store (and split edits when opened with ``mode="a"``).

    Only complete entries are visible.  An HDF5 store is re-opened transparently when a
    build has replaced the file since the last call."""

    def __init__(self, backend: StoreReader, mode: str = "r", verify_reads: bool = True):
        self.backend = backend
        self._index: tuple[object, dict | None] | None = None  # (index token, trusted records)
        self.mode = mode
        self.verify_reads = verify_reads
        self.path = backend.path
        backend.refresh()
        root = backend.read_attrs("")
        meta = (root or {}).get("tprna_store")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise TprnaError("not a tpRNA feature store (no tprna_store metadata)", self.path)
        if int(meta.get("version", 0)) > FORMAT_VERSION:
            raise TprnaError(f"store format version {meta.get('version')} is newer than this tpRNA "
                             f"reads ({FORMAT_VERSION}); upgrade tprna", self.path)

    # -- context manager
    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, backend={self.backend.kind})"

    # -- root metadata
    def _root(self) -> dict:
        self.backend.refresh()
        return self.backend.read_attrs("") or {}

    @property
    def specs(self) -> dict[str, FeatureSpec]:
        return {k: FeatureSpec.from_dict(d) for k, d in self._root().get("specs", {}).items()}

    @property
    def splits(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._root().get("splits", {}).items()}

    # -- entries
    def _entry_attrs(self, entry_id: str, keys: tuple[str, ...] | None = None) -> dict | None:
        wanted = None if keys is None else ("complete", "checksums") + keys
        attrs = self.backend.read_attrs(entry_group(entry_id), wanted)
        return attrs if attrs and attrs.get("complete") is True and "checksums" in attrs else None

    def _feature_attrs(self, entry_id: str, key: str, keys: tuple[str, ...] | None = None) -> dict | None:
        wanted = None if keys is None else ("complete", "checksums") + keys
        attrs = self.backend.read_attrs(features_group(entry_id, key), wanted)
        return attrs if attrs and attrs.get("complete") is True and "checksums" in attrs else None

    def _require(self, entry_id: str) -> dict:
        attrs = self._entry_attrs(entry_id)
        if attrs is None:
            raise TprnaError(f"no entry {entry_id!r} in the store (see 'tprna store ls')", self.path)
        return attrs

    def _records(self) -> dict[str, dict] | None:
        """The entry index's records, when it can be trusted (re-read when it changed)."""
        token = self.backend.index_token()
        if self._index is None or self._index[0] != token:
            self._index = (token, entry_index.load(self.backend))
        return self._index[1]

    def ids(self, split: str | None = None) -> list[str]:
        """Ids of complete entries, sorted; or those of a named split, in the split's order."""
        self.backend.refresh()
        records = self._records()
        if records is not None and set(records) == set(self.backend.list_children(ENTRIES)):
            present = sorted(records)
        else:
            present = [e for e in self.backend.list_groups(ENTRIES) if self._entry_attrs(e, ()) is not None]
        if split is None:
            return present
        splits = self.splits
        if split not in splits:
            known = ", ".join(sorted(splits)) or "none"
            raise TprnaError(f"no split named {split!r} (splits: {known})", self.path)
        have = set(present)
        return [e for e in splits[split] if e in have]

    def __contains__(self, entry_id: object) -> bool:
        self.backend.refresh()
        return isinstance(entry_id, str) and self._entry_attrs(entry_id, ()) is not None

    def __len__(self) -> int:
        return len(self.ids())

    def entry_specs(self, entry_id: str) -> list[str]:
        """Keys of the specs whose features this entry holds (complete ones only)."""
        groups = self.backend.list_groups(f"{entry_group(entry_id)}/features")
        return [k for k in groups if self._feature_attrs(entry_id, k, ()) is not None]

    def entry_meta(self, entry_id: str) -> dict[str, Any]:
        """id, sequence, length, depth, input key, provenance, molecule, labels, the specs it
        holds and their Neff, and when it was written."""
        self.backend.refresh()
        records = self._records()
        if records is not None and entry_id in records:
            return entry_index.meta(entry_id, records[entry_id])
        attrs = self._require(entry_id)
        neff = {}
        for key in self.backend.list_groups(f"{entry_group(entry_id)}/features"):
            fattrs = self._feature_attrs(entry_id, key, ("neff",))
            if fattrs is not None:
                neff[key] = float(fattrs["neff"])
        keys = ("id", "sequence", "length", "depth", "input_key", "provenance", "molecule",
                "has_labels", "n_unknown", "n_dropped_columns", "written_at")
        return {**{k: attrs.get(k) for k in keys}, "specs": list(neff), "neff": neff}

    def _stable(self, entry_id: str, read: Callable[[], Any]) -> Any:
        """``read()``, confirmed against a concurrent rebuild: replacing a changed entry
        swaps its whole folder, so a read that straddles the swap could mix old metadata
        with new arrays.  The entry's version is checked before and after; on a change
        the read is retried.  HDF5 readers never see a swap (builds replace the file)."""
        if not getattr(self.backend, "swaps_entries", True):
            return read()
        for attempt in range(5):
            before = self._version(entry_id)
            try:
                result = read()
            except TprnaError:
                if self._version(entry_id) == before:
                    raise  # a real problem (or no such entry), not a swap in progress
            else:
                if self._version(entry_id) == before:
                    return result
            time.sleep(0.01 * (attempt + 1))
        raise TprnaError(f"entry {entry_id!r} kept changing while being read (a build is replacing it); "
                         "read it again when the build is done", self.path)

    def _version(self, entry_id: str) -> tuple | None:
        attrs = self.backend.read_attrs(entry_group(entry_id), ("complete", "input_key", "written_at"))
        return (attrs.get("input_key"), attrs.get("written_at")) if attrs else None

    def read_msa(self, entry_id: str) -> np.ndarray:
        """The encoded alignment, (N, L) uint8 indices into the molecule's alphabet."""
        return self._stable(entry_id, lambda: self._read_msa(entry_id))

    def read_labels(self, entry_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(contacts uint8 L×L, observed bool L×L), or None when the entry has no labels."""
        return self._stable(entry_id, lambda: self._read_labels(entry_id))

    def read_features(self, entry_id: str, spec: FeatureSpec | str | None = None) -> dict[str, np.ndarray]:
        """weights (N,) float32, neff (float32 scalar), and the spec's components unpacked:
        cov / precision (L, L, q, q) float32, bpp (L, L) float32."""
        return self._stable(entry_id, lambda: self._read_features(entry_id, spec))

    def _read_msa(self, entry_id: str) -> np.ndarray:
        self.backend.refresh()
        attrs = self._require(entry_id)
        return self._array(entry_id, entry_group(entry_id), "msa", attrs["checksums"])

    def _read_labels(self, entry_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        self.backend.refresh()
        attrs = self._require(entry_id)
        if not attrs.get("has_labels"):
            return None
        group, sums = entry_group(entry_id), attrs["checksums"]
        return (self._array(entry_id, group, "contacts", sums).astype(np.uint8, copy=False),
                self._array(entry_id, group, "observed", sums).astype(bool, copy=False))

    def resolve_spec(self, spec: FeatureSpec | str | None, entry_id: str | None = None) -> str:
        """A spec key from a FeatureSpec, a key, a feature-set name, or None (the store's
        first spec that ``entry_id`` holds)."""
        specs = self.specs
        if isinstance(spec, FeatureSpec):
            return spec.key
        if spec is None:
            held = self.entry_specs(entry_id) if entry_id else list(specs)
            for key in specs:
                if key in held:
                    return key
            if held:
                return held[0]
            raise TprnaError("the store holds no features yet; run 'tprna store build'", self.path)
        if spec in specs:
            return spec
        stored = stored_feature_set(spec) if spec in FEATURE_SETS else spec  # derived channels read the same arrays
        named = [k for k, s in specs.items() if stored_feature_set(s.feature_set) == stored]
        if entry_id is not None and len(named) > 1:
            held = set(self.entry_specs(entry_id))
            named = [k for k in named if k in held] or named
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise TprnaError(f"several specs have feature set {spec!r} ({', '.join(named)}); "
                             "pick one by key", self.path)
        known = ", ".join(f"{k} ({s.feature_set})" for k, s in specs.items()) or "none"
        raise TprnaError(f"no feature spec {spec!r} in the store (specs: {known})", self.path)

    def _read_features(self, entry_id: str, spec: FeatureSpec | str | None) -> dict[str, np.ndarray]:
        self.backend.refresh()
        key = spec.key if isinstance(spec, FeatureSpec) else self.resolve_spec(spec, entry_id)
        fattrs = self._feature_attrs(entry_id, key, ("neff", "components"))  # with checksums; implies a complete entry
        if fattrs is None:
            self._require(entry_id)
            raise TprnaError(f"entry {entry_id!r} has no features for spec {key}; "
                             "build them with 'tprna store build' and that spec", self.path)
        group = features_group(entry_id, key)
        names = ["weights", *fattrs["components"]]
        try:
            arrays = self.backend.read_arrays(group, names)
        except TprnaError:
            raise
        except Exception as e:  # noqa: BLE001 - a corrupt chunk: name the entry and the fix
            raise TprnaError(f"entry {entry_id!r}: cannot read its features ({type(e).__name__}: {e}); "
                             "run 'tprna store verify', then rebuild the entry", self.path) from None
        for name in names:
            self._check(entry_id, f"{group}/{name}", arrays[name], fattrs["checksums"].get(name))
        out: dict[str, np.ndarray] = {"weights": arrays.pop("weights").astype(np.float32, copy=False),
                                      "neff": np.float32(fattrs["neff"])}
        for name, packed in arrays.items():
            out[name] = unpack_component(name, packed)
        return out

    def _array(self, entry_id: str, group: str, name: str, checksums: Mapping[str, str]) -> np.ndarray:
        try:
            arr = self.backend.read_array(f"{group}/{name}")
        except TprnaError:
            raise
        except Exception as e:  # noqa: BLE001 - a corrupt chunk: name the entry and the fix
            raise TprnaError(f"entry {entry_id!r}: cannot read {name} ({type(e).__name__}: {e}); "
                             "run 'tprna store verify', then rebuild the entry", self.path) from None
        self._check(entry_id, f"{group}/{name}", arr, checksums.get(name))
        return arr

    def _check(self, entry_id: str, path: str, arr: np.ndarray, expected: str | None) -> None:
        """The array read is the one written: its sha256 is the recorded checksum — unless
        each of its chunks was already checked against its own checksum while being read."""
        if not self.verify_reads or self.backend.chunk_checksums(path):
            return
        where = path.split("/", 2)[-1]  # entries/<id>/...
        if expected is None:
            raise TprnaError(f"entry {entry_id!r}: {where} has no recorded checksum; "
                             "run 'tprna store verify', then rebuild the entry", self.path)
        if checksum(arr) != expected:
            raise TprnaError(f"entry {entry_id!r}: {where} differs from what was written (checksum "
                             "mismatch: the data changed on disk); run 'tprna store verify', then "
                             "rebuild the entry", self.path)

    # -- whole store
    def info(self) -> dict[str, Any]:
        """Counts, specs, splits, Neff per spec, lengths, depths and bytes on disk."""
        ids = self.ids()
        metas = [self.entry_meta(e) for e in ids]
        specs = self.specs
        per_spec = {k: {"spec": s.to_dict(), "entries": sum(k in m["neff"] for m in metas),
                        "neff": [m["neff"][k] for m in metas if k in m["neff"]]}
                    for k, s in specs.items()}
        return {
            "path": str(self.path), "backend": self.backend.kind, "format_version": FORMAT_VERSION,
            "entries": len(ids), "with_labels": sum(bool(m["has_labels"]) for m in metas),
            "lengths": [m["length"] for m in metas], "depths": [m["depth"] for m in metas],
            "specs": per_spec, "splits": {k: len(v) for k, v in self.splits.items()},
            "bytes_on_disk": self.backend.bytes_on_disk(),
        }

    def feature_bytes(self, entry_id: str, spec: FeatureSpec | str | None = None) -> int:
        """Bytes the entry's feature group for ``spec`` takes in storage."""
        key = self.resolve_spec(spec, entry_id)
        return self.backend.stored_bytes(features_group(entry_id, key))

    def verify(self, ids: Iterable[str] | None = None) -> list:
        """Re-read every array of every entry (or of ``ids``) and compare checksums.  An
        entry a concurrent build replaced while it was being checked is checked again
        (its old metadata against its new arrays is no finding)."""
        self.backend.refresh()
        problems = verify_root(self.backend) if ids is None else []
        for entry_id in (list(ids) if ids is not None else self.backend.list_children(ENTRIES)):
            for attempt in range(5):
                before = self._version(entry_id)
                found = verify_entry(self.backend, entry_id)
                if not found or not getattr(self.backend, "swaps_entries", True) \
                        or self._version(entry_id) == before:
                    break
                time.sleep(0.01 * (attempt + 1))
            problems += found
        return problems

    # -- splits
    def set_split(self, name: str, ids: Iterable[str]) -> list[str]:
        """Name a subset of the entries (replacing a split of that name).  An empty list is
        refused: it would silently empty the split."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            raise TprnaError(f"split {name!r}: no ids given (an empty list would empty the split)",
                             self.path)
        present = set(self.ids())
        missing = [e for e in ids if e not in present]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise TprnaError(f"split {name!r}: no entries {', '.join(map(repr, missing[:5]))}{more} "
                             "in the store", self.path)
        self.update_splits({name: ids})
        return ids

    def neff_splits(self, spec: FeatureSpec | str | None = None) -> dict[str, list[str]]:
        """The Neff subsets (neff<1, 1<=neff<10, neff>=10) by the Neff of ``spec``."""
        key = self.resolve_spec(spec)
        out: dict[str, list[str]] = {name: [] for name, _, _ in NEFF_SPLITS}
        for e in self.ids():
            neff = self.entry_meta(e)["neff"]
            if key not in neff:
                continue
            value = float(neff[key])
            for name, lo, hi in NEFF_SPLITS:
                if lo <= value < hi:
                    out[name].append(e)
        return out

    def update_splits(self, splits: Mapping[str, list[str]]) -> None:
        """Write named splits into the root metadata (atomically, under the store lock)."""
        if self.mode == "r":
            raise TprnaError("store opened read-only; open_store(path, mode='a') to edit splits", self.path)
        update_root(self.path, lambda attrs: {**attrs, "splits": {**attrs.get("splits", {}), **splits}})
        self.backend.refresh()


def update_root(path: Path, change: Callable[[dict], dict]) -> None:
    """Apply ``change(attrs) -> attrs`` to the root metadata, safely for readers, under the
    store lock; the entry index (which names each entry's splits) is rewritten with it."""
    with store_lock(path):
        writer = open_writer(path)
        reader = writer.prepare()
        try:
            records = entry_index.load(reader)
            if records is None:
                records = entry_index.scan(reader)
            attrs = change(reader.read_attrs("") or {})
            writer.begin(lambda: entry_index.make_index(records, attrs.get("splits", {})))
            writer.set_root_attrs(attrs)
            writer.write_index(entry_index.make_index(records, attrs.get("splits", {})))
        except BaseException:
            writer.abandon()
            raise
        writer.commit()


def open_store(path: str | os.PathLike, mode: str = "r", *, verify_reads: bool = True) -> FeatureStore:
    """Open a store: a ``.h5``/``.hdf5`` file, otherwise a Zarr directory.  ``mode`` is
    ``"r"`` (read) or ``"a"`` (read, and edit splits).  ``verify_reads`` checks every
    array read against its recorded sha256 (a few per cent of a read; see
    ``scripts/bench_store.py``); missing and truncated chunks are errors either way."""
    if mode not in ("r", "a"):
        raise TprnaError(f"open_store mode must be 'r' or 'a', not {mode!r}")
    backend = open_reader(path)
    if not backend.exists():
        raise TprnaError("no feature store here; create one with 'tprna store build'", path)
    return FeatureStore(backend, mode, verify_reads=verify_reads)
