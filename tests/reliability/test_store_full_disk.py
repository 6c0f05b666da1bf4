"""A full disk: the build stops with one clean error, leaves the store as it was, and the
next build (with space) finishes the job.  Both backends, on a small tmpfs the test
mounts (root, or CAP_SYS_ADMIN; skipped with the reason elsewhere).

For each of several amounts of free space — none at all, then seeded random amounts
short of what the build needs, placed so that each step of a build meets the full disk
(Zarr: the first entry, a later one; HDF5: the copy of the live file, the ballast that
lets HDF5 close, the blocks of the first group) — a build that adds and replaces entries
runs in a child of the fork server (``build_harness.py``, so a crash shows as a signal, not as a dead test run):

* it exits with a :class:`~tprna.store.atomic.DiskFull` error — never a signal (HDF5
  used to segfault here, and leave a ``.partial`` that made every retry segfault);
* nothing half-written is left (no ``.staging``/``.trash`` contents, no ``.partial``,
  ballast or temporary copy), the store verifies, and every entry in it is the old or
  the new version of its inputs, whole; HDF5's file is byte for byte what it was (the
  live file is only replaced when a build publishes), and so is a Zarr store the build
  could write nothing into;
* a retry on the still-full disk fails the same clean way;
* with the space back, the next build succeeds and equals a clean build.

The CLI prints the error in one line and exits 1.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tprna.cli import app
from tprna.features import FeatureSpec
from tprna.simulate import write_example_dataset
from tprna.store import build_store, items_from_manifest, open_store
from tprna.store.formats import open_reader as open_backend
from tprna.store.location import staging_dir

DISK = 16 * 2 ** 20
runner = CliRunner()


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    mnt = tmp_path_factory.mktemp("disk")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mnt)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a small tmpfs to fill ({e})")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root or CAP_SYS_ADMIN): "
                    f"{done.stderr.strip() or done.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fullin")
    for version, seed in (("A", 21), ("B", 22)):
        write_example_dataset(root / f"sim{version}", n_families=6, seed=seed, lengths=(60, 110),
                              depths=(20, 200))
    shutil.copytree(root / "simA", root / "live")
    refs = {}
    for version in ("A", "B"):
        ref = root / f"ref{version}.zarr"
        assert build_store(ref, items_from_manifest(root / f"sim{version}" / "manifest.csv"), FeatureSpec(),
                           progress=False).ok
        refs[version] = _entry_sums(ref)
    return root, refs


def _entry_sums(store: Path) -> dict:
    backend = open_backend(store)
    backend.refresh()
    out = {}
    for e in backend.list_groups("entries"):
        sums = {"": (backend.read_attrs(f"entries/{e}") or {}).get("checksums")}
        for k in backend.list_groups(f"entries/{e}/features"):
            sums[k] = (backend.read_attrs(f"entries/{e}/features/{k}") or {}).get("checksums")
        out[e] = sums
    backend.close()
    return out


def _use(root: Path, versions: dict) -> None:
    for fid, version in versions.items():
        for sub in ("msa", "labels"):
            for f in (root / f"sim{version}" / sub).glob(f"{fid}.*"):
                shutil.copyfile(f, root / "live" / sub / f.name)


def _manifest(root: Path, ids: list[str]) -> Path:
    lines = (root / "simA" / "manifest.csv").read_text().splitlines()
    path = root / "live" / f"manifest-{len(ids)}.csv"
    path.write_text("\n".join([lines[0]] + [l for l in lines[1:] if l.split(",")[0] in ids]) + "\n")
    return path


def _files(store: Path) -> dict:
    """relative path -> sha256 of every file of the store (its lock aside)."""
    if store.is_file():
        return {store.name: hashlib.sha256(store.read_bytes()).hexdigest()}
    out = {}
    for dirpath, _, names in os.walk(store):
        for n in names:
            p = Path(dirpath) / n
            if n != ".lock":
                out[str(p.relative_to(store))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill(disk: Path, leave: int) -> Path:
    """A filler file that leaves ``leave`` bytes free (to the page)."""
    filler = disk / "filler"
    size = max(_free(disk) - leave, 0)
    with open(filler, "wb") as f:
        if size:
            os.posix_fallocate(f.fileno(), 0, size)
    return filler


def _leftovers(store: Path) -> list[str]:
    if store.suffix == ".h5":
        return sorted(p.name for p in store.parent.iterdir()
                      if p.name.startswith(store.name) and p.name not in (store.name, store.name + ".lock"))
    folders = (staging_dir(store), store / ".trash")
    return sorted(str(p) for sub in folders if sub.is_dir() for p in sub.iterdir())


def _check_valid(store: Path, refs: dict) -> None:
    """Every entry whole: it reads, verifies, and is the old or the new version."""
    with open_store(store) as st:
        assert st.verify() == []
        for e in st.ids():
            st.read_msa(e)
            st.read_features(e)
    for e, sums in _entry_sums(store).items():
        assert sums in (refs["A"][e], refs["B"][e]), f"{e}: neither version"


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_full_disk_leaves_the_store_as_it_was(small_disk, inputs, harness, ledger, backend):
    root, refs = inputs
    ids = sorted(refs["A"])
    rng = random.Random(f"tprna-full-disk-{backend}")
    store = small_disk / ("s.zarr" if backend == "zarr" else "s.h5")
    first, full = _manifest(root, ids[:3]), _manifest(root, ids)
    for step in (["nothing", "first entry", "a later entry"] if backend == "zarr"
                 else ["nothing", "live file copy", "ballast", "first group"]):
        for p in small_disk.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        _use(root, {fid: "A" for fid in ids})
        assert build_store(store, items_from_manifest(first), FeatureSpec(), progress=False).ok
        before = _files(store)
        # the next build: three more families, and two of the first three changed
        changed = {fid: "B" for fid in rng.sample(ids[:3], 2)}
        _use(root, changed)
        size = sum(p.stat().st_size for p in store.rglob("*")) if store.is_dir() else store.stat().st_size
        entry, mib = size // 3, 2 ** 20  # the store holds three entries
        leave = {"nothing": 0, "first entry": rng.randrange(0, entry // 2),
                 "a later entry": rng.randrange(entry, 2 * entry),
                 "live file copy": rng.randrange(0, size),
                 "ballast": rng.randrange(size + 2 ** 16, size + mib),
                 "first group": rng.randrange(size + mib + 2 ** 16, size + 2 * mib)}[step]
        filler = _fill(small_disk, leave)
        for attempt in ("build", "retry"):
            ledger.full_disk[f"{backend}:tried"] += 1
            result = harness.run(store, full, {})
            assert "signal" not in result, f"the build crashed on a full disk: {result}"
            assert result.get("exit") == 3 and "disk full" in result.get("error", ""), result
            assert result.get("error_type") == "DiskFull" and "\n" not in result["error"], result
            ledger.full_disk[f"{backend}:clean"] += 1
            assert _leftovers(store) == [], _leftovers(store)
            _check_valid(store, refs)
            if backend == "hdf5" or step == "nothing":
                ledger.full_disk[f"{backend}:compared"] += 1
                assert _files(store) == before, "the store changed"
                ledger.full_disk[f"{backend}:unchanged"] += 1
        if step == "nothing":  # the CLI says it in one line, exit 1
            cli = runner.invoke(app, ["store", "build", str(store), "--manifest", str(full), "-q"],
                                env={"COLUMNS": "400"})
            assert cli.exit_code == 1 and "disk full" in cli.output, cli.output
            assert len([l for l in cli.output.splitlines() if l.strip()]) == 1, cli.output
        filler.unlink()
        ledger.full_disk[f"{backend}:next"] += 1
        report = build_store(store, items_from_manifest(full), FeatureSpec(), progress=False)
        assert report.ok and _leftovers(store) == []
        with open_store(store) as st:
            assert st.ids() == ids and st.verify() == []
        now = _entry_sums(store)
        for fid in ids:
            assert now[fid] == refs[changed.get(fid, "A")][fid], f"{fid}: differs from a clean build"
        ledger.full_disk[f"{backend}:next ok"] += 1
