"""A byte flipped in a random chunk of a random array: ``tprna store verify`` exits 1 and
names the entry (and only it) — whenever the flip changed what the chunk decodes to.

The ground truth comes from outside the store code (numcodecs for a Zarr chunk, h5py for
an HDF5 dataset): a flip that leaves the decoded data unchanged (an unused header byte)
must pass verification; every other flip must be caught.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tprna.cli import app
from tprna.features import FeatureSpec
from tprna.simulate import write_example_dataset
from tprna.store import build_store, items_from_manifest

FLIPS = {"zarr": 10, "hdf5": 8}
runner = CliRunner()


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    root = tmp_path_factory.mktemp("flips")
    manifest = write_example_dataset(root / "sim", n_families=6, seed=5, lengths=(30, 70), depths=(10, 200))
    return items_from_manifest(manifest)


def _verify(store: Path):
    result = runner.invoke(app, ["store", "verify", str(store)], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def _flip(path: Path, offset: int, mask: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def _zarr_chunks(store: Path) -> list[tuple[str, Path]]:
    """(entry id, chunk file) for every chunk of every array."""
    out = []
    for chunk in sorted((store / "entries").rglob("*")):
        rel = chunk.relative_to(store / "entries").parts
        if chunk.is_file() and "c" in rel and chunk.name != "zarr.json":
            out.append((rel[0], chunk))
    return out


def _blosc(raw: bytes):
    import numcodecs.blosc

    try:
        return numcodecs.blosc.decompress(raw)
    except Exception:  # noqa: BLE001 - undecodable is "changed"
        return None


def _check(store: Path, entry: str, changed: bool, backend: str, ledger) -> None:
    code, out = _verify(store)
    if changed:
        assert code == 1, out
        assert f"failed verification: {entry}" in out, out  # named, and the only one named
        ledger.flips[f"{backend}:caught"] += 1
    else:
        assert code == 0, out
        ledger.flips[f"{backend}:harmless"] += 1


def test_flipped_byte_in_a_zarr_chunk_is_caught(tmp_path, items, ledger):
    store = tmp_path / "s.zarr"
    assert build_store(store, items, FeatureSpec(), progress=False).ok
    assert _verify(store)[0] == 0
    rng = random.Random("tprna-flips-zarr")
    chunks = _zarr_chunks(store)
    assert len(chunks) > 20
    for entry, chunk in rng.sample(chunks, FLIPS["zarr"]):
        raw = chunk.read_bytes()
        offset, mask = rng.randrange(len(raw)), rng.randrange(1, 256)
        _flip(chunk, offset, mask)
        changed = _blosc(chunk.read_bytes()) != _blosc(raw)
        try:
            _check(store, entry, changed, "zarr", ledger)
        finally:
            chunk.write_bytes(raw)
    assert _verify(store)[0] == 0


def test_flipped_byte_in_an_hdf5_chunk_is_caught(tmp_path, items, ledger):
    import h5py

    store = tmp_path / "s.h5"
    assert build_store(store, items, FeatureSpec(), progress=False).ok
    datasets = []  # (entry id, dataset path, chunk index)
    with h5py.File(store, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.chunks is not None and obj.size:
                for i in range(obj.id.get_num_chunks()):
                    datasets.append((name.split("/")[1], name, i))
        f.visititems(visit)
    rng = random.Random("tprna-flips-hdf5")
    pristine = store.read_bytes()
    for entry, name, index in rng.sample(datasets, FLIPS["hdf5"]):
        with h5py.File(store, "r") as f:
            before = f[name][()]
            info = f[name].id.get_chunk_info(index)
        offset, mask = info.byte_offset + rng.randrange(info.size), rng.randrange(1, 256)
        _flip(store, offset, mask)
        try:
            with h5py.File(store, "r") as f:
                after = f[name][()]  # compared as bytes: a bool array may hold a 3 that reads True
                changed = after.shape != before.shape or after.tobytes() != before.tobytes()
        except Exception:  # noqa: BLE001 - an undecodable chunk is "changed"
            changed = True
        try:
            _check(store, entry, changed, "hdf5", ledger)
        finally:
            store.write_bytes(pristine)
    assert _verify(store)[0] == 0
