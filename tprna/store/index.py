"""The entry index: one small document, kept with the store, that answers ``ids()``,
``store ls`` and ``store info`` without opening every entry's metadata.

It lives in the attributes of the root-level group ``index`` (``tprna_index``)::

    {"version": 1, "complete": true,
     "entries": {<id>: {length, depth, sequence, molecule, input_key, provenance, has_labels,
                        n_unknown, n_dropped_columns, written_at,
                        neff: {<spec key>: Neff}, splits: [<split name>, ...]}}}

so ``specs`` of an entry are the keys of its ``neff``.  A build marks it incomplete before
it changes anything and writes it whole (atomically) when it is done; a split edit
rewrites it.  A reader trusts it only when it is complete and names exactly the entry
folders present; otherwise (a killed build, a store written before the index) the
reader scans the entries as it always did, and the next build writes the index again.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from tprna.store.base import StoreReader
from tprna.store.schema import ENTRIES, entry_group, features_group

__all__ = ["INDEX_VERSION", "RECORD_KEYS", "entry_record", "scan", "make_index", "load", "meta"]

INDEX_VERSION = 1
RECORD_KEYS = ("sequence", "length", "depth", "input_key", "provenance", "molecule", "has_labels",
               "n_unknown", "n_dropped_columns", "written_at")


def entry_record(attrs: Mapping[str, Any], neff: Mapping[str, float]) -> dict:
    """An entry's index record from its attributes and the Neff of each spec it holds."""
    return {**{k: attrs.get(k) for k in RECORD_KEYS}, "neff": {k: float(neff[k]) for k in sorted(neff)}}


def _complete(attrs: dict | None) -> bool:
    return bool(attrs) and attrs.get("complete") is True and "checksums" in attrs


def scan(reader: StoreReader, ids: Iterable[str] | None = None) -> dict[str, dict]:
    """Records of the complete entries (or of ``ids``), read from each entry's metadata:
    what the index saves a reader from doing."""
    out = {}
    for e in (reader.list_groups(ENTRIES) if ids is None else ids):
        attrs = reader.read_attrs(entry_group(e))
        if not _complete(attrs):
            continue
        neff = {}
        for key in reader.list_groups(f"{entry_group(e)}/features"):
            fattrs = reader.read_attrs(features_group(e, key), ("complete", "checksums", "neff"))
            if _complete(fattrs):
                neff[key] = fattrs["neff"]
        out[e] = entry_record(attrs, neff)
    return out


def make_index(records: Mapping[str, dict], splits: Mapping[str, list[str]]) -> dict:
    """The index document for ``records``, each with the names of the splits holding it."""
    member: dict[str, list[str]] = {}
    for name, ids in splits.items():
        for e in ids:
            member.setdefault(e, []).append(name)
    return {"version": INDEX_VERSION, "complete": True,
            "entries": {e: {**records[e], "splits": sorted(member.get(e, []))} for e in sorted(records)}}


def load(reader: StoreReader) -> dict[str, dict] | None:
    """The index's records when it can be trusted: complete, of this version, and naming
    exactly the entry folders present.  None otherwise."""
    index = reader.read_index()
    if not isinstance(index, dict) or index.get("complete") is not True \
            or index.get("version") != INDEX_VERSION or not isinstance(index.get("entries"), dict):
        return None
    records = index["entries"]
    if set(records) != set(reader.list_children(ENTRIES)):
        return None
    return records


def meta(entry_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """What :meth:`FeatureStore.entry_meta` returns, from an index record."""
    neff = dict(record["neff"])
    return {"id": entry_id, **{k: record.get(k) for k in RECORD_KEYS}, "specs": list(neff), "neff": neff}
