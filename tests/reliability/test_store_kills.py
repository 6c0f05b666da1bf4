"""Store builds SIGKILLed at seeded random points, again and again, then resumed.

Every round, on each backend, asks the store for one kind of work — a **fresh** build (no
store yet), an **incremental** one (new families, or a second feature spec beside the
first) or a **replacing** one (some families' inputs changed, so their entries are
replaced; often new families and split moves in the same build) — and kills the build:

* in a child of a warm fork server (``build_harness.py``), at a random one of the
  build's file-system events (counted first in an unkilled run on a copy of the store),
  or a random time after it took the store lock (HDF5 writes happen inside the library,
  between events);
* a few times as ``python -m tprna store build --jobs 2`` whose whole process group is
  killed a random time after it took the lock (the CLI and its worker pool).

After each kill, what a reader sees is valid: every visible entry reads (with every
read's checks) and verifies, and equals a clean build of the inputs it was made from
(old or new, never a mixture).  A re-run then finishes the job: the ids are exactly
the manifest's, none duplicated, none missing, no stray groups or leftover files, every
array equals a clean build's, the splits are the manifest's; and a further run has
nothing to do.  The seeds are fixed: CI kills at the same points every run.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tprna.features import FeatureSpec
from tprna.simulate import write_example_dataset
from tprna.store import build_store, items_from_manifest, open_store
from tprna.store.formats import open_reader as open_backend
from tprna.store.location import lock_path, staging_dir
from tprna.store.splits import MANIFEST_SPLITS

REPO = Path(__file__).resolve().parents[2]
SPECS = (FeatureSpec(), FeatureSpec(feature_set="cov", identity=0.7, dtype="float32"))
SPEC_ARGS = ({}, {"feature_set": "cov", "identity": 0.7, "dtype": "float32"})
KILLS = {"zarr": 27, "hdf5": 25}  # harness kills per backend: 52 in all
CLI_KILLS = {"zarr": 1, "hdf5": 1}  # and `tprna store build -j 2` process groups
N_SIM = 6


@dataclass
class World:
    root: Path
    live: Path  # the input files the builds read (a copy of version A or B per family)
    refs: dict  # (version, spec index) -> {entry id: {"": entry sums, "key": input key, spec key: sums}}
    keys: dict  # (entry id, version) -> input key
    ids: list
    versions: dict = field(default_factory=dict)  # family id -> "A" | "B" in live/
    listed: list = field(default_factory=list)  # families the current manifest lists
    splits: dict = field(default_factory=dict)  # family id -> split in the current manifest

    @property
    def manifest(self) -> Path:
        return self.live / "manifest.csv"

    def write_manifest(self) -> None:
        rows = ["id,msa,label,split"]
        rows += [f"{f},msa/{self._msa_name(f)},labels/{f}.contacts,{self.splits[f]}" for f in self.listed]
        self.manifest.write_text("\n".join(rows) + "\n")

    def _msa_name(self, fid: str) -> str:
        return next((self.root / "simA" / "msa").glob(f"{fid}.*")).name

    def set_version(self, fid: str, version: str) -> None:
        src = self.root / f"sim{version}"
        for sub in ("msa", "labels"):
            for f in (src / sub).glob(f"{fid}.*"):
                shutil.copyfile(f, self.live / sub / f.name)
        self.versions[fid] = version


def _checksums(store_path: Path) -> dict:
    """entry id -> {"": entry checksums, "key": input key, spec key: feature checksums}."""
    backend = open_backend(store_path)
    backend.refresh()
    out = {}
    for e in backend.list_groups("entries"):
        attrs = backend.read_attrs(f"entries/{e}") or {}
        got = {"": attrs.get("checksums"), "key": attrs.get("input_key")}
        for k in backend.list_groups(f"entries/{e}/features"):
            got[k] = (backend.read_attrs(f"entries/{e}/features/{k}") or {}).get("checksums")
        out[e] = got
    backend.close()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("kills")
    for version, seed in (("A", 11), ("B", 12)):
        write_example_dataset(root / f"sim{version}", n_families=N_SIM, seed=seed,
                              lengths=(20, 45), depths=(5, 60))
    live = root / "live"
    (live / "msa").mkdir(parents=True)
    (live / "labels").mkdir()
    ids = [i.id for i in items_from_manifest(root / "simA" / "manifest.csv")]
    w = World(root, live, {}, {}, ids)
    # Clean references: every (version, spec), built in-process from the versions' own files.
    for version in ("A", "B"):
        items = items_from_manifest(root / f"sim{version}" / "manifest.csv")
        for s, spec in enumerate(SPECS):
            ref = root / f"ref-{version}-{s}.zarr"
            assert build_store(ref, items, spec, progress=False).failed == []
            w.refs[(version, s)] = _checksums(ref)
            for e, sums in w.refs[(version, s)].items():
                w.keys[(e, version)] = sums["key"]
    return w


def _fast_root(tmp_path: Path) -> Path:
    """Stores live in memory when /dev/shm is there: a kill test needs no disk."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        d = shm / f"tprna-kills-{os.getpid()}-{tmp_path.name}"
        d.mkdir(parents=True, exist_ok=True)
        return d
    return tmp_path


def _lock_path(store: Path) -> Path:
    return lock_path(store)


def _store_files(store: Path) -> list[Path]:
    return sorted(p for p in store.parent.iterdir() if p.name.startswith(store.name))


def _remove(store: Path) -> None:
    for p in _store_files(store):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _copy(store: Path, to: Path) -> None:
    _remove(to)
    for p in _store_files(store):
        dest = to.with_name(to.name + p.name[len(store.name):])
        shutil.copytree(p, dest, symlinks=True) if p.is_dir() else shutil.copyfile(p, dest)


def _matches(world: World, e: str, got: dict) -> str:
    """The version whose clean build ``got`` (one entry's checksums) equals, every spec
    group it holds included; fails when none does."""
    versions = [v for v in ("A", "B") if world.keys.get((e, v)) == got["key"]]
    assert versions, f"{e}: input key matches neither version"
    v = versions[0]
    assert got[""] == world.refs[(v, 0)][e][""], f"{e}: entry arrays differ from a clean build"
    for key, sums in got.items():
        if key in ("", "key"):
            continue
        s = [SPECS[0].key, SPECS[1].key].index(key)
        assert sums == world.refs[(v, s)][e][key], f"{e}/{key}: differs from a clean build"
    return v


def _read_everything(store, e: str) -> int:
    """Every array of an entry through the ordinary reads (each read checks itself)."""
    n = 2
    store.read_msa(e)
    if store.read_labels(e) is not None:
        n += 2
    for key in store.entry_specs(e):
        n += len(store.read_features(e, key)) - 1
    return n


def _check_after_kill(store_path: Path, world: World, ledger) -> int:
    """What a reader sees right after a kill: whole entries only, each equal to a clean
    build of the inputs it came from.  Returns how many."""
    if not (store_path.is_file() or (store_path / "zarr.json").is_file()):
        return 0
    with open_store(store_path) as reader:
        ids = reader.ids()
        assert len(ids) == len(set(ids))
        for e in ids:
            ledger.arrays_read_after_kills += _read_everything(reader, e)
        assert reader.verify() == []
    now = _checksums(store_path)
    for e in ids:
        _matches(world, e, now[e])
    return len(ids)


def _check_complete(store_path: Path, world: World, spec_index: int, ledger) -> None:
    spec = SPECS[spec_index]
    expected = sorted(world.listed)
    with open_store(store_path) as reader:
        ids = reader.ids()
        assert ids == expected, (ids, expected)  # none missing, none extra, none twice
        assert reader.backend.list_groups("entries") == expected  # no stray (incomplete) groups
        assert reader.verify() == []
        for e in ids:
            ledger.arrays_compared += _read_everything(reader, e)
        owned = reader._root().get(MANIFEST_SPLITS, [])
        splits = {k: sorted(v) for k, v in reader.splits.items() if k in owned}
        want: dict = {}
        for e in expected:
            want.setdefault(world.splits[e], []).append(e)
        assert {k: v for k, v in splits.items() if v} == want, (splits, want)  # the manifest's splits
    now = _checksums(store_path)
    for e in expected:
        assert now[e]["key"] == world.keys[(e, world.versions[e])], f"{e}: built from stale inputs"
        assert _matches(world, e, now[e]) == world.versions[e]
        assert spec.key in now[e], f"{e}: no features for this round's spec"
    if store_path.suffix == ".h5":
        left = [p.name for p in _store_files(store_path)]
        assert left == [store_path.name, store_path.name + ".lock"], f"leftover files: {left}"
    else:
        for sub in (staging_dir(store_path), store_path / ".trash"):
            assert not sub.exists() or not any(sub.iterdir()), f"leftovers in {sub}"
        assert not list(store_path.glob(".zarr.json.*.tmp")), "a leftover root metadata file"


def _next_round(world: World, store_path: Path, r: int, rng: random.Random) -> tuple[str, int]:
    """Change the inputs for round ``r``: returns (kind of build, spec index)."""
    cycle = r % 4
    if cycle == 0 or not store_path.exists():  # fresh: a new store of a few families
        _remove(store_path)
        world.listed = sorted(rng.sample(world.ids, rng.randint(2, 4)))
        for fid in world.ids:
            world.set_version(fid, rng.choice("AB"))
            world.splits[fid] = rng.choice(["train", "test"])
        world.write_manifest()
        return "fresh", 0
    spec_index = rng.choice([0, 0, 1])
    if cycle == 1:  # incremental: more families (or, all listed, the other spec)
        rest = [f for f in world.ids if f not in world.listed]
        if rest:
            world.listed = sorted(world.listed + rng.sample(rest, rng.randint(1, len(rest))))
            spec_index = 0
        else:
            spec_index = 1
        world.write_manifest()
        return "incremental", spec_index
    # replacing: changed inputs (cycle 3 also adds families and moves splits)
    for fid in rng.sample(world.listed, rng.randint(1, max(1, len(world.listed) - 1))):
        world.set_version(fid, "B" if world.versions[fid] == "A" else "A")
    if cycle == 3:
        rest = [f for f in world.ids if f not in world.listed]
        world.listed = sorted(world.listed + rest[: rng.randint(0, len(rest))])
        for fid in rng.sample(world.listed, rng.randint(1, len(world.listed))):
            world.splits[fid] = "test" if world.splits[fid] == "train" else "train"
    world.write_manifest()
    return "replacing", spec_index


def _resume_and_check(store_path: Path, world: World, spec_index: int, ledger) -> None:
    report = build_store(store_path, items_from_manifest(world.manifest), SPECS[spec_index], progress=False)
    assert report.failed == [], report.failed
    _check_complete(store_path, world, spec_index, ledger)
    again = build_store(store_path, items_from_manifest(world.manifest), SPECS[spec_index], progress=False)
    assert again.built == [] and again.failed == []


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_killed_builds_resume_to_a_whole_store(world, harness, ledger, tmp_path, backend):
    root = _fast_root(tmp_path)
    try:
        store = root / ("s.zarr" if backend == "zarr" else "s.h5")
        scratch = root / ("count.zarr" if backend == "zarr" else "count.h5")
        rng = random.Random(f"tprna-kills-{backend}")
        kills = r = 0
        while kills < KILLS[backend] and r < 3 * KILLS[backend]:
            kind, spec_index = _next_round(world, store, r, rng)
            checkpoint_every = rng.choice([None, 1, 2]) if backend == "hdf5" else None
            args = dict(checkpoint_every=checkpoint_every)
            # how much work this round is: events and seconds of an unkilled run on a copy
            _copy(store, scratch)
            counted = harness.run(scratch, world.manifest, SPEC_ARGS[spec_index], **args)
            assert counted.get("exit") == 0, counted
            by_time = rng.random() < (0.5 if backend == "hdf5" else 0.3)
            if by_time:
                at = rng.uniform(0, counted["seconds"])
                _lock_path(store).unlink(missing_ok=True)  # its appearance: the build has started
                result = harness.run(store, world.manifest, SPEC_ARGS[spec_index], kill_after=at,
                                     lock=_lock_path(store), **args)
                where = f"{at * 1e3:.0f} ms after the lock"
            else:
                at = rng.randint(1, counted["events"])
                result = harness.run(store, world.manifest, SPEC_ARGS[spec_index], kill_at=at, **args)
                where = f"event {at} of {counted['events']}"
            killed = result.get("signal") == signal.SIGKILL
            assert killed or result.get("exit") == 0, result  # never a crash
            visible = _check_after_kill(store, world, ledger)
            ledger.kill_states.append({"backend": backend, "round": r, "kind": kind, "at": where,
                                       "killed": killed, "entries_visible": visible,
                                       "checkpoint_every": checkpoint_every})
            if killed:
                kills += 1
                ledger.kills[backend] += 1
                ledger.kill_kinds[kind] += 1
                ledger.kill_methods["event" if not by_time else "timer"] += 1
            else:
                ledger.kills_missed[backend] += 1
            _resume_and_check(store, world, spec_index, ledger)
            ledger.resumes += 1
            r += 1
        assert kills == KILLS[backend], ledger.kill_states
    finally:
        if root != tmp_path:
            shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_killed_cli_builds_with_workers_resume(world, ledger, tmp_path, backend):
    """``python -m tprna store build -j 2``: the CLI and its worker pool, whole process
    group SIGKILLed at a random time after it took the lock."""
    store = tmp_path / ("c.zarr" if backend == "zarr" else "c.h5")
    rng = random.Random(f"tprna-cli-kills-{backend}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    kills = attempts = 0
    while kills < CLI_KILLS[backend] and attempts < 4:
        attempts += 1
        kind, spec_index = _next_round(world, store, 0 if attempts == 1 else 2, rng)
        spec = SPECS[spec_index]
        lock = _lock_path(store)
        lock.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "tprna", "store", "build", str(store), "--manifest", str(world.manifest),
             "--features", spec.feature_set, "--identity", str(spec.identity), "--dtype", spec.dtype,
             "--jobs", "2", "-q"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        deadline = time.monotonic() + 60
        while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        delay = rng.uniform(0.2, 2.5)  # the worker pool's start-up, then its entries
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < delay:
            time.sleep(0.005)
        running = proc.poll() is None
        if running:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert running or proc.returncode == 0, proc.stderr.read()
        killed = running and proc.returncode == -signal.SIGKILL
        visible = _check_after_kill(store, world, ledger)
        ledger.kill_states.append({"backend": backend, "cli": True, "kind": kind, "killed": killed,
                                   "at": f"{delay * 1e3:.0f} ms after the lock", "entries_visible": visible})
        if killed:
            kills += 1
            ledger.kills[f"{backend} cli -j2"] += 1
            ledger.kill_kinds[kind] += 1
            ledger.kill_methods["process group"] += 1
        _resume_and_check(store, world, spec_index, ledger)
        ledger.resumes += 1
    assert kills == CLI_KILLS[backend], ledger.kill_states
