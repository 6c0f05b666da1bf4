"""A reader process for test_store_readers.py: polls a store while builds write it.

    python store_reader.py STORE STOP_FILE READY_FILE PHASE_FILE OUT.json

Every poll lists the entries (``ids()``) and reads every listed entry in full — metadata,
alignment, labels, the features of every spec it holds, each read checking what it read
— and re-verifies its checksums.  No build in the test removes an entry, so an entry
that leaves the listing is a finding, as is any failed read.  Entries read are counted
per build phase (the word in PHASE_FILE: add, spec, replace).  Written to OUT.json when
STOP_FILE appears.
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

from tprna.errors import TprnaError
from tprna.store import open_store


def _read(store, entry_id: str, meta: dict) -> None:
    msa = store.read_msa(entry_id)
    assert msa.shape == (meta["depth"], meta["length"]), (msa.shape, meta["depth"], meta["length"])
    labels = store.read_labels(entry_id)
    assert (labels is not None) == bool(meta["has_labels"])
    if labels is not None:
        assert labels[0].shape == labels[1].shape == (meta["length"], meta["length"])
    assert meta["specs"], "a listed entry holds no features"
    for key in meta["specs"]:
        feats = store.read_features(entry_id, key)
        for name in ("cov", "precision", "bpp"):
            if name in feats:
                assert feats[name].shape[:2] == (meta["length"], meta["length"]), name
    problems = store.verify([entry_id])
    assert problems == [], [str(p) for p in problems]


def read_entry(store, entry_id: str) -> None:
    """Read the entry in full and check its parts agree — as one version of it: a build
    may replace it between two of these calls (each call is whole by itself), and then
    the reads are done again, as a careful client would."""
    for attempt in range(5):
        meta = store.entry_meta(entry_id)
        try:
            _read(store, entry_id, meta)
            return
        except (TprnaError, AssertionError):
            now = store.entry_meta(entry_id)
            if (now["input_key"], now["written_at"], now["specs"]) == \
                    (meta["input_key"], meta["written_at"], meta["specs"]):
                raise  # the same version throughout: a real finding
        time.sleep(0.01 * (attempt + 1))
    raise AssertionError(f"{entry_id} changed under five reads in a row")


def main(store_path: str, stop_file: str, ready_file: str, phase_file: str, out_file: str) -> None:
    polls = 0
    entries: Counter = Counter()
    counts: list[int] = []
    errors: list[str] = []
    vanished: list[str] = []
    previous: set[str] = set()
    store = open_store(store_path)  # one handle for the whole run: it must follow the builds
    Path(ready_file).write_text("ready")
    while not Path(stop_file).exists():
        try:
            phase = Path(phase_file).read_text().strip() or "start"
        except OSError:
            phase = "start"
        try:
            ids = store.ids()
            polls += 1
            counts.append(len(ids))
            gone = previous - set(ids)
            if gone:
                vanished.append(f"{phase}: {sorted(gone)} left the listing")
            previous |= set(ids)
            for e in ids:
                read_entry(store, e)
                entries[phase] += 1
        except Exception as exc:  # noqa: BLE001 - every failure is a finding
            errors.append(f"{phase}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            time.sleep(0.01)
    store.close()
    Path(out_file).write_text(json.dumps({"polls": polls, "entries_read": dict(entries),
                                          "counts": counts, "errors": errors[:20], "n_errors": len(errors),
                                          "vanished": vanished[:20], "n_vanished": len(vanished)}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
