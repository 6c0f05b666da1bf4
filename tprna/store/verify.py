"""Checksum verification: re-read every array of every entry and compare it with the
sha256 recorded when it was written.  Anything that cannot be read or decoded is a
problem too, never a crash."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from tprna.store.backends import Backend
from tprna.store.schema import ENTRIES, checksum, entry_group

__all__ = ["Problem", "verify_store", "verify_entry", "verify_root"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a store: the entry (None for the store itself), the group or
    array within it, and what is wrong."""

    entry: str | None
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.entry or '<store>'}: {self.where}: {self.reason}"


def _check_group(backend: Backend, entry_id: str, group: str, label: str,
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


def verify_entry(backend: Backend, entry_id: str) -> list[Problem]:
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


def verify_root(backend: Backend) -> list[Problem]:
    """Problems of the store's root metadata."""
    try:
        root = backend.read_attrs("")
    except Exception as e:  # noqa: BLE001
        return [Problem(None, "root", f"metadata unreadable ({e})")]
    if root is not None and not isinstance(root.get("specs"), dict):
        return [Problem(None, "root", "no 'specs' in the root metadata")]
    return []


def verify_store(backend: Backend, ids: Iterable[str] | None = None) -> list[Problem]:
    """Problems found in the store's root metadata and its entries (all, or ``ids``)."""
    problems = verify_root(backend)
    names = list(ids) if ids is not None else backend.list_children(ENTRIES)
    for entry_id in names:
        problems += verify_entry(backend, entry_id)
    return problems
