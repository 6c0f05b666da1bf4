"""Named splits: how a build's manifest assigns them, and the leakage check.

The manifest is the authority for the split of every id it lists: a build puts that id
in the manifest's split and takes it out of every other *manifest split* — the split
names a manifest has ever used in this store (recorded in the root metadata as
``manifest_splits``), so moving an id from ``test`` to ``train`` moves it even when no
id is left in ``test``.  Splits made otherwise (``tprna store split --name``, the Neff
subsets) are never touched by a build, and ids the manifest does not list (or lists
without a split) keep their splits.

:func:`overlapping_splits` names the ids two splits share; :func:`check_disjoint_splits`
refuses them — what a trainer and an evaluator call before using a train and a test
split together.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from tprna.errors import TprnaError

__all__ = ["MANIFEST_SPLITS", "assign_manifest_splits", "overlapping_splits", "check_disjoint_splits"]

MANIFEST_SPLITS = "manifest_splits"  # root attribute: split names that manifests own


def assign_manifest_splits(root: Mapping[str, Any], items: Iterable[Any], present: set[str]) -> dict:
    """The root attributes with the splits of ``items`` (BuildItems: ``id``, ``split``)
    applied: each listed id with a split is in that split (when ``present`` in the store)
    and in no other manifest split.  The first item of an id wins (later ones are
    duplicates the build refuses)."""
    splits = {k: list(v) for k, v in (root.get("splits") or {}).items()}
    wanted: dict[str, str] = {}
    for item in items:
        if item.split and item.id not in wanted:
            wanted[item.id] = item.split
    owned = sorted(set(root.get(MANIFEST_SPLITS) or ()) | set(wanted.values()))
    for name in owned:
        if name in splits:
            splits[name] = [e for e in splits[name] if wanted.get(e, name) == name]
    for entry_id, name in wanted.items():
        if entry_id in present:
            members = splits.setdefault(name, [])
            if entry_id not in members:
                members.append(entry_id)
    out = {**root, "splits": splits}
    if owned or MANIFEST_SPLITS in root:
        out[MANIFEST_SPLITS] = owned
    return out


def _members(store: Any, which: str | Sequence[str]) -> list[str]:
    """Ids of a split name (several joined by commas: "train,extra") or an id list."""
    if isinstance(which, str):
        out: list[str] = []
        for name in (n.strip() for n in which.split(",")):
            if name:
                out += store.ids(name)
        return out
    return list(which)


def overlapping_splits(store: Any, first: str | Sequence[str], second: str | Sequence[str]) -> list[str]:
    """The ids in both ``first`` and ``second`` (split names — "a,b" joins several — or
    lists of ids) of an open :class:`~tprna.store.FeatureStore`, sorted.  Empty when the
    two are disjoint."""
    return sorted(set(_members(store, first)) & set(_members(store, second)))


def check_disjoint_splits(store: Any, first: str | Sequence[str], second: str | Sequence[str]) -> None:
    """Raise a :class:`TprnaError` naming the shared ids when ``first`` and ``second``
    overlap (train/test leakage); return None when they are disjoint."""
    shared = overlapping_splits(store, first, second)
    if not shared:
        return
    def label(which):
        return repr(which) if isinstance(which, str) else f"the {len(list(which))} given ids"
    more = f" and {len(shared) - 10} more" if len(shared) > 10 else ""
    raise TprnaError(f"{label(first)} and {label(second)} share {len(shared)} "
                     f"entr{'y' if len(shared) == 1 else 'ies'}: {', '.join(shared[:10])}{more} "
                     "(train/test leakage); fix the manifest's split column and rebuild, or "
                     "name disjoint splits", getattr(store, "path", None))
