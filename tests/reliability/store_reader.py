"""A reader process for test_store_readers.py: polls a store while a build writes it.

    python store_reader.py STORE STOP_FILE READY_FILE OUT.json

Every poll opens the listing (``ids()``) and reads every listed entry in full — metadata,
alignment, labels, the features of every spec it holds — and re-checks its checksums.
Any failure, and any entry that disappears from the listing of an append-only build, is
written to OUT.json with the counts when STOP_FILE appears.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tprna.store import open_store


def read_entry(store, entry_id: str) -> None:
    meta = store.entry_meta(entry_id)
    msa = store.read_msa(entry_id)
    assert msa.shape == (meta["depth"], meta["length"]), (msa.shape, meta["depth"], meta["length"])
    labels = store.read_labels(entry_id)
    assert (labels is not None) == bool(meta["has_labels"])
    if labels is not None:
        assert labels[0].shape == labels[1].shape == (meta["length"], meta["length"])
    specs = store.entry_specs(entry_id)
    assert specs, "a listed entry holds no features"
    for key in specs:
        feats = store.read_features(entry_id, key)
        assert feats["weights"].shape == (meta["depth"],)
        for name in ("cov", "precision", "bpp"):
            if name in feats:
                assert feats[name].shape[:2] == (meta["length"], meta["length"]), name
    problems = store.verify([entry_id])
    assert problems == [], [str(p) for p in problems]


def main(store_path: str, stop_file: str, ready_file: str, out_file: str) -> None:
    polls = entries = 0
    counts: list[int] = []
    errors: list[str] = []
    previous: set[str] = set()
    store = open_store(store_path)  # one handle for the whole run: it must follow the build
    Path(ready_file).write_text("ready")
    while not Path(stop_file).exists():
        try:
            ids = store.ids()
            polls += 1
            counts.append(len(ids))
            if not previous <= set(ids):
                errors.append(f"entries vanished during an append-only build: {sorted(previous - set(ids))}")
            previous = set(ids)
            for e in ids:
                read_entry(store, e)
                entries += 1
        except Exception as exc:  # noqa: BLE001 - every failure is a finding
            errors.append(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            time.sleep(0.01)
    store.close()
    Path(out_file).write_text(json.dumps({"polls": polls, "entries_read": entries,
                                          "counts": counts, "errors": errors[:20],
                                          "n_errors": len(errors)}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
