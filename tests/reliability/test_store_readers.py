"""Readers in other processes never see a partial or a missing entry: a reader process
(store_reader.py) polls ``open_store(...).ids()`` and reads every listed entry in full —
metadata, alignment, labels, every spec's features, each read checked — and re-verifies
it, while builds

* add entries (``add``), then a second feature spec to every entry (``spec``),
* replace every simulated entry, twice (their inputs changed to another version and
  back: ``replace``).

Both backends (HDF5 publishing after every entry).  No build removes an entry, so an
entry that leaves a listing, even for one poll, is a finding, as is any failed read.
"""
from __future__ import annotations

import json
import os
import shutil
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
def world(tmp_path_factory, real_data):
    root = tmp_path_factory.mktemp("readers")
    for version, seed in (("A", 9), ("B", 10)):
        write_example_dataset(root / f"sim{version}", n_families=6, seed=seed, lengths=(30, 70),
                              depths=(10, 150))
    shutil.copytree(root / "simA", root / "live")
    real = []
    if real_data is not None:
        real = [i for i in items_from_manifest(real_data / "coconet" / "manifest.csv")
                if i.id in ("RF02681", "RF00044")]
    return root, real


def _use(root: Path, version: str) -> None:
    for sub in ("msa", "labels"):
        for f in (root / f"sim{version}" / sub).iterdir():
            shutil.copyfile(f, root / "live" / sub / f.name)


@pytest.mark.parametrize("name", ["s.zarr", "s.h5"])
def test_reader_process_never_sees_a_partial_or_missing_entry(tmp_path, world, ledger, name):
    root, real = world
    _use(root, "A")
    items = items_from_manifest(root / "live" / "manifest.csv") + real
    store = tmp_path / name
    hdf5 = name.endswith(".h5")
    assert build_store(store, items[:1], FeatureSpec(), progress=False).ok  # the reader needs a store
    stop, ready, phase, out = (tmp_path / n for n in ("stop", "ready", "phase", "reader.json"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reader = subprocess.Popen([sys.executable, str(HERE / "store_reader.py"), str(store), str(stop),
                               str(ready), str(phase), str(out)], env=env, stderr=subprocess.PIPE)
    reports = {}
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and reader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready.exists(), reader.stderr.read().decode()
        kwargs = {"checkpoint_every": 1} if hdf5 else {}
        phase.write_text("add")
        reports["add"] = build_store(store, items, FeatureSpec(), progress=False, **kwargs)
        phase.write_text("spec")
        reports["spec"] = build_store(store, items, SECOND, progress=False, **kwargs)  # groups in old entries
        for k, version in enumerate(("B", "A")):
            _use(root, version)
            phase.write_text("replace")
            reports[f"replace{k}"] = build_store(store, items, FeatureSpec(), progress=False, **kwargs)
        time.sleep(0.3)  # a last full poll of the finished store
    finally:
        stop.write_text("stop")
        try:
            reader.wait(timeout=120)
        finally:
            if reader.poll() is None:
                reader.kill()
    assert reader.returncode == 0, reader.stderr.read().decode()
    assert all(r.ok for r in reports.values()), {k: r.failed for k, r in reports.items()}
    n_sim = len(items) - len(real)
    assert len(reports["add"].built) == len(items) - 1 and len(reports["spec"].built) == len(items)
    assert len(reports["replace0"].replaced) == n_sim and len(reports["replace1"].replaced) == n_sim
    seen = json.loads(out.read_text())
    backend = "hdf5" if hdf5 else "zarr"
    ledger.reader_polls[backend] += seen["polls"]
    for key, n in seen["entries_read"].items():
        ledger.reader_entries[key] += n
    ledger.partial_entries_seen += seen["n_errors"]
    ledger.missing_entries_seen += seen["n_vanished"]
    assert seen["n_errors"] == 0, seen["errors"]
    assert seen["n_vanished"] == 0, seen["vanished"]
    counts = seen["counts"]
    assert len(counts) >= 3 and counts[-1] == len(items)
    assert any(1 <= n < len(items) for n in counts), counts  # it did read while entries were added
    assert seen["entries_read"].get("replace", 0) > 0, seen["entries_read"]  # and while replaced
