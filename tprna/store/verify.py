"""Checksum verification: re-read every array of every entry and compare it with the
sha256 recorded when it was written.  Anything that cannot be read or decoded is a
problem too, never a crash.  :func:`repair_partial` applies the same checks to what a
killed HDF5 build left in its partial file, before the next build resumes it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from tprna.store.base import INDEX, StoreReader, decode_attrs
from tprna.store.schema import ENTRIES, FORMAT, checksum, entry_group, features_group

__all__ = ["Problem", "verify_store", "verify_entry", "verify_root", "repair_partial"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a store: the entry (None for the store itself), the group or
    array within it, and what is wrong."""

    entry: str | None
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.entry or '<store>'}: {self.where}: {self.reason}"


def _check_group(backend: StoreReader, entry_id: str, group: str, label: str,
                 required: Iterable[str]) -> list[Problem]:
    try:
        attrs = backend.read_attrs(group)
    except Exception as e:  # noqa: BLE001 - unreadable metadata is a finding
        return [Problem(entry_id, label, f"metadata unreadable ({type(e).__name__}: {e})")]
    if attrs is None:
        return [Problem(entry_id, label, "metadata missing or unreadable")]
    if attrs.get("complete") is not True:
        return [Problem(entry_id, label, "incomplete (no 'complete' flag): a write was interrupted")]
    sums = attrs.get("checksums")
    if not isinstance(sums, dict):
        return [Problem(entry_id, label, "no checksums recorded")]
    problems = []
    try:
        present = set(backend.list_arrays(group))
    except Exception as e:  # noqa: BLE001
        return [Problem(entry_id, label, f"cannot list arrays ({type(e).__name__}: {e})")]
    for name in sorted(set(required) - set(sums)):
        problems.append(Problem(entry_id, f"{label}/{name}", "required array has no checksum"))
    for name in sorted(present - set(sums)):
        problems.append(Problem(entry_id, f"{label}/{name}", "array has no recorded checksum"))
    for name, expected in sorted(sums.items()):
        try:
            gone = backend.missing_chunks(f"{group}/{name}")
        except Exception:  # noqa: BLE001 - judged by the read below
            gone = []
        if gone:
            more = f" and {len(gone) - 3} more" if len(gone) > 3 else ""
            problems.append(Problem(entry_id, f"{label}/{name}",
                                    f"chunk {', '.join(gone[:3])}{more} missing (deleted on disk)"))
            continue
        try:
            actual = checksum(backend.read_array_reference(f"{group}/{name}"))
        except Exception as e:  # noqa: BLE001 - decode errors of corrupt chunks land here
            problems.append(Problem(entry_id, f"{label}/{name}",
                                    f"cannot read ({type(e).__name__}: {' '.join(str(e).split())[:200]})"))
            continue
        if actual != expected:
            problems.append(Problem(entry_id, f"{label}/{name}", "checksum mismatch (data changed on disk)"))
    return problems


def verify_entry(backend: StoreReader, entry_id: str) -> list[Problem]:
    group = entry_group(entry_id)
    try:
        attrs = backend.read_attrs(group) or {}
    except Exception:  # noqa: BLE001 - reported by _check_group below
        attrs = {}
    required = ["msa"] + (["contacts", "observed"] if attrs.get("has_labels") else [])
    problems = _check_group(backend, entry_id, group, "entry", required)
    try:
        keys = backend.list_children(f"{group}/features")
    except Exception as e:  # noqa: BLE001
        return problems + [Problem(entry_id, "features", f"cannot list ({type(e).__name__}: {e})")]
    for key in keys:
        fgroup = f"{group}/features/{key}"
        try:
            fattrs = backend.read_attrs(fgroup) or {}
        except Exception:  # noqa: BLE001
            fattrs = {}
        required = ["weights"] + list(fattrs.get("components", []))
        problems += _check_group(backend, entry_id, fgroup, f"features/{key}", required)
    return problems


def verify_root(backend: StoreReader) -> list[Problem]:
    """Problems of the store's root metadata."""
    try:
        root = backend.read_attrs("")
    except Exception as e:  # noqa: BLE001
        return [Problem(None, "root", f"metadata unreadable ({e})")]
    if root is not None and not isinstance(root.get("specs"), dict):
        return [Problem(None, "root", "no 'specs' in the root metadata")]
    return []


def verify_store(backend: StoreReader, ids: Iterable[str] | None = None) -> list[Problem]:
    """Problems found in the store's root metadata and its entries (all, or ``ids``)."""
    problems = verify_root(backend)
    names = list(ids) if ids is not None else backend.list_children(ENTRIES)
    for entry_id in names:
        problems += verify_entry(backend, entry_id)
    return problems


def repair_partial(f: Any) -> bool:
    """Make a leftover HDF5 ``<file>.partial`` (an open ``h5py.File``) safe to resume:
    groups a killed writer left incomplete are deleted, groups it wrote (absent or
    different in the live file) are checksum-verified and deleted when wrong, and its
    entry index (which may predate them) is dropped, to be rebuilt.  False: discard the
    partial."""
    import h5py  # only ever called on an HDF5 store: a Zarr-only user never imports h5py

    meta = decode_attrs(f.attrs).get("tprna_store")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or ENTRIES not in f:
        return False
    live_path = Path(f.filename[: -len(".partial")])
    live = None
    if live_path.exists():
        try:
            live = h5py.File(live_path, "r")
        except OSError:
            live = None
    try:
        if INDEX in f:
            del f[INDEX]
        for e in list(f[ENTRIES].keys()):
            group = entry_group(e)
            groups = [group]
            if f.get(f"{group}/features", getclass=True) is h5py.Group:
                groups += [features_group(e, k) for k in list(f[f"{group}/features"].keys())]
            for g in groups:
                attrs = decode_attrs(f[g].attrs)
                ok = attrs.get("complete") is True and isinstance(attrs.get("checksums"), dict)
                if ok and not (live is not None and g in live and decode_attrs(live[g].attrs) == attrs):
                    ok = all(checksum(np.asarray(f[f"{g}/{n}"][()])) == s
                             for n, s in attrs["checksums"].items())
                if not ok:
                    del f[g]
                    if g == group:
                        break
        f.flush()
    finally:
        if live is not None:
            live.close()
    return True
