"""Readers never see a partial entry: a separate reader process (store_reader.py) polls
``open_store(...).ids()`` and reads every listed entry in full — metadata, alignment,
labels, every spec's features — and re-checks its checksums, while a build appends
entries and then a second feature spec to them.  Both backends."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tprna.features import FeatureSpec
from tprna.simulate import write_example_dataset
from tprna.store import build_store, items_from_manifest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SECOND = FeatureSpec(feature_set="precision", dtype="float32")


@pytest.fixture(scope="module")
def items(tmp_path_factory, real_data):
    root = tmp_path_factory.mktemp("readers")
    manifest = write_example_dataset(root / "sim", n_families=10, seed=9, lengths=(40, 90), depths=(20, 300))
    out = items_from_manifest(manifest)
    if real_data is not None:
        real = items_from_manifest(real_data / "coconet" / "manifest.csv")
        out += [i for i in real if i.id in ("RF02681", "RF00044")]
    return out


@pytest.mark.parametrize("name", ["s.zarr", "s.h5"])
def test_reader_process_never_sees_a_partial_entry(tmp_path, items, ledger, name):
    store = tmp_path / name
    hdf5 = name.endswith(".h5")
    assert build_store(store, items[:1], FeatureSpec(), progress=False).ok  # the reader needs a store
    stop, ready, out = tmp_path / "stop", tmp_path / "ready", tmp_path / "reader.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reader = subprocess.Popen([sys.executable, str(HERE / "store_reader.py"), str(store), str(stop),
                               str(ready), str(out)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and reader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready.exists(), reader.stderr.read().decode()
        kwargs = {"checkpoint_every": 1} if hdf5 else {"jobs": 2}
        first = build_store(store, items, FeatureSpec(), progress=False, **kwargs)
        kwargs.pop("jobs", None)  # one worker pool start-up is enough
        second = build_store(store, items, SECOND, progress=False, **kwargs)  # new groups in old entries
        time.sleep(0.3)  # a last full poll of the finished store
    finally:
        stop.write_text("stop")
        try:
            reader.wait(timeout=120)
        finally:
            if reader.poll() is None:
                reader.kill()
    assert reader.returncode == 0, reader.stderr.read().decode()
    assert first.ok and second.ok and len(first.built) == len(items) - 1 and len(second.built) == len(items)
    seen = json.loads(out.read_text())
    backend = "hdf5" if hdf5 else "zarr"
    ledger.reader_polls[backend] += seen["polls"]
    ledger.reader_entries[backend] += seen["entries_read"]
    ledger.partial_entries_seen += seen["n_errors"]
    assert seen["n_errors"] == 0, seen["errors"]
    counts = seen["counts"]
    assert len(counts) >= 3 and counts[-1] == len(items)
    assert any(1 <= n < len(items) for n in counts), counts  # it did read while entries were added
