"""Damage on disk is found by ``tprna store verify`` AND by the ordinary reads — never
read as zeros or other numbers.  Seeded, at random places:

* a byte flipped in a chunk of an array (Zarr chunk files; HDF5 chunks inside the file);
* a chunk file truncated (Zarr), the HDF5 file truncated;
* a chunk file deleted (Zarr: it would read as zeros).

Each time, ``tprna store verify`` exits 1 naming the damaged entry (and only it), and
reading that entry (alignment, labels, features) raises a :class:`TprnaError` naming it
(an HDF5 file cut short may fail to open at all: that error names the file).  The store
is restored after each case and must verify clean again.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tprna.cli import app
from tprna.errors import TprnaError
from tprna.features import FeatureSpec
from tprna.simulate import write_example_dataset
from tprna.store import build_store, items_from_manifest, open_store

CASES = {"flip": 12, "truncate": 6, "delete": 6}  # Zarr chunk files
H5_CASES = {"flip": 10, "truncate": 4}
runner = CliRunner()


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    root = tmp_path_factory.mktemp("flips")
    manifest = write_example_dataset(root / "sim", n_families=6, seed=5, lengths=(30, 70), depths=(10, 200))
    return items_from_manifest(manifest)


def _verify(store: Path):
    result = runner.invoke(app, ["store", "verify", str(store)], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def _read_all(store: Path, entry: str) -> str | None:
    """The TprnaError reading every array of ``entry`` raises, or None if all read."""
    try:
        with open_store(store) as st:
            st.read_msa(entry)
            st.read_labels(entry)
            for key in st.entry_specs(entry):
                st.read_features(entry, key)
    except TprnaError as e:
        return str(e)
    return None


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


def _found(store: Path, entry: str, kind: str, backend: str, ledger, whole_file: bool = False) -> None:
    key = f"{kind}/{backend}"
    ledger.corruptions[key] += 1
    code, out = _verify(store)
    assert code == 1, out
    if whole_file:  # the file itself may no longer open: then the error names it
        assert f"failed verification: {entry}" in out or str(store) in out, out
    else:
        assert f"failed verification: {entry}" in out, out  # named, and the only one named
    ledger.corruptions_by_verify[key] += 1
    error = _read_all(store, entry)
    assert error is not None, f"{kind}: {entry} read without an error"
    assert entry in error or (whole_file and str(store) in error), error
    ledger.corruptions_by_reads[key] += 1


def test_damaged_zarr_chunks_are_found_by_verify_and_by_reads(tmp_path, items, ledger):
    store = tmp_path / "s.zarr"
    assert build_store(store, items, FeatureSpec(), progress=False).ok
    assert build_store(store, items, FeatureSpec(feature_set="cov", dtype="float32"), progress=False).ok
    assert _verify(store)[0] == 0
    rng = random.Random("tprna-corruption-zarr")
    chunks = _zarr_chunks(store)
    assert len(chunks) > 40
    for kind, n in CASES.items():
        for entry, chunk in rng.sample(chunks, n):
            raw = chunk.read_bytes()
            if kind == "flip":
                _flip(chunk, rng.randrange(len(raw)), rng.randrange(1, 256))
            elif kind == "truncate":
                chunk.write_bytes(raw[: rng.randrange(len(raw))])
            else:
                chunk.unlink()
            try:
                _found(store, entry, kind, "zarr", ledger)
            finally:
                chunk.write_bytes(raw)
    assert _verify(store)[0] == 0


def test_damaged_hdf5_file_is_found_by_verify_and_by_reads(tmp_path, items, ledger):
    import h5py

    store = tmp_path / "s.h5"
    assert build_store(store, items, FeatureSpec(), progress=False).ok
    chunks = []  # (entry id, byte offset, size) of every chunk of every array
    with h5py.File(store, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.chunks is not None and obj.size:
                for i in range(obj.id.get_num_chunks()):
                    info = obj.id.get_chunk_info(i)
                    chunks.append((name.split("/")[1], info.byte_offset, info.size))
        f.visititems(visit)
    rng = random.Random("tprna-corruption-hdf5")
    pristine = store.read_bytes()
    try:
        for entry, offset, size in rng.sample(chunks, H5_CASES["flip"]):
            _flip(store, offset + rng.randrange(size), rng.randrange(1, 256))
            try:
                _found(store, entry, "flip", "hdf5", ledger)
            finally:
                store.write_bytes(pristine)
        # cut the file inside a chunk: that entry's data is gone (and with it, maybe, what
        # HDF5 keeps after it: then the file does not open, which is found too)
        for entry, offset, size in rng.sample(chunks, H5_CASES["truncate"]):
            with open(store, "r+b") as f:
                f.truncate(offset + rng.randrange(size))
            try:
                _found(store, entry, "truncate", "hdf5", ledger, whole_file=True)
            finally:
                store.write_bytes(pristine)
    finally:
        store.write_bytes(pristine)
    assert _verify(store)[0] == 0
