"""Store builds SIGKILLed at random points, again and again, then resumed.

Each round changes some inputs (so the build replaces entries) or asks for a second
feature spec (so it adds feature groups to existing entries), starts
``python -m tprna store build`` in its own process group, waits until the build holds the
store lock, sleeps a random (seeded) fraction of the expected build time and kills the
whole group with SIGKILL.  Then:

* what a reader sees right after the kill is valid: every visible entry verifies and
  matches a clean build of the inputs it was made from (old or new, never a mixture);
* a re-run finishes the job: the ids are exactly the expected set, none duplicated, none
  missing, no stray groups or leftover files, and every array equals a clean build's.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tprna.features import FeatureSpec
from tprna.simulate import write_example_dataset
from tprna.store import build_store, items_from_manifest, open_store
from tprna.store.backends import open_backend

REPO = Path(__file__).resolve().parents[2]
SPECS = (FeatureSpec(), FeatureSpec(feature_set="cov", identity=0.7, dtype="float32"))
REAL_IDS = ("RF00044", "RF02681", "RF00207")  # small real families (L 47–66), when present
ROUNDS = {"zarr": 8, "hdf5": 4}
N_SIM = 8


@dataclass
class World:
    root: Path
    live: Path  # the input files the builds read (a copy of version A or B per family)
    manifest: Path
    versions: dict  # family id -> "A" | "B" currently in live/
    refs: dict  # (version, spec index) -> {entry id: {group: checksums}}
    keys: dict  # (entry id, version) -> input key
    sim_ids: list
    real_ids: list
    timing: dict = None  # jobs -> (seconds from the lock to the first entry, then per entry)


def _copy_version(world: World, fid: str, version: str) -> None:
    src = world.root / f"sim{version}"
    for sub, suffix in (("msa", None), ("labels", ".contacts")):
        for f in (src / sub).glob(f"{fid}.*"):
            shutil.copyfile(f, world.live / sub / f.name)
    world.versions[fid] = version


def _checksums(store_path: Path) -> dict:
    """entry id -> {"": entry checksums, spec key: feature checksums, "key": input key}."""
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
def world(tmp_path_factory, real_data) -> World:
    root = tmp_path_factory.mktemp("kills")
    for version, seed in (("A", 11), ("B", 12)):
        write_example_dataset(root / f"sim{version}", n_families=N_SIM, seed=seed,
                              lengths=(40, 90), depths=(20, 300))
    live = root / "live"
    (live / "msa").mkdir(parents=True)
    (live / "labels").mkdir()
    sim = items_from_manifest(root / "simA" / "manifest.csv")
    rows = ["id,msa,label,structure,chain,split"]
    rows += [f"{i.id},msa/{i.msa.name},labels/{i.label.name},,,{i.split}" for i in sim]
    real_ids: list[str] = []
    if real_data is not None:
        real = [i for i in items_from_manifest(real_data / "coconet" / "manifest.csv") if i.id in REAL_IDS]
        real_ids = [i.id for i in real]
        rows += [f"{i.id},{i.msa},,{i.structure},{i.chain},{i.split}" for i in real]
    manifest = live / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    w = World(root, live, manifest, {}, {}, {}, [i.id for i in sim], real_ids)
    for fid in w.sim_ids:
        _copy_version(w, fid, "A")
    # Clean references: every (version, spec), built in-process from the versions' own files.
    for version in ("A", "B"):
        for fid in w.sim_ids:
            _copy_version(w, fid, version)
        for s, spec in enumerate(SPECS):
            ref = root / f"ref-{version}-{s}.zarr"
            report = build_store(ref, items_from_manifest(manifest), spec, progress=False)
            assert report.failed == [], report.failed
            w.refs[(version, s)] = _checksums(ref)
            for e, sums in w.refs[(version, s)].items():
                w.keys[(e, version)] = sums["key"]
    for fid in w.sim_ids:
        _copy_version(w, fid, "A")
    w.timing = {jobs: _calibrate(w, root / f"calibrate-{jobs}.zarr", jobs) for jobs in (1, 2)}
    return w


def _calibrate(w: World, scratch: Path, jobs: int) -> tuple[float, float]:
    """How long a build takes, once it holds the lock, to write its first entry (start-up:
    imports, worker processes) and then per entry: the range the random kill delays cover."""
    proc = _start_build(scratch, w, 0, jobs, None)
    lock, entries = _lock_path(scratch), scratch / "entries"
    while not lock.exists() and proc.poll() is None:
        time.sleep(0.002)
    t0 = time.monotonic()
    first = None
    while proc.poll() is None:
        if first is None and entries.is_dir() and any(p.is_dir() for p in entries.iterdir()):
            first = time.monotonic() - t0
        time.sleep(0.002)
    total = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr.read()
    first = first if first is not None else total / 2
    return first, max(total - first, 0.05) / (len(w.sim_ids) + len(w.real_ids))


def _expected(world: World, entry_id: str, spec_index: int) -> dict:
    version = world.versions.get(entry_id, "A")  # real families never change
    return world.refs[(version, spec_index)][entry_id]


def _lock_path(store: Path) -> Path:
    return store.with_name(store.name + ".lock") if store.suffix == ".h5" else store / ".lock"


def _start_build(store: Path, world: World, spec_index: int, jobs: int, checkpoint_every: int | None):
    spec = SPECS[spec_index]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if checkpoint_every:  # the API, to make an HDF5 build publish (and be killed) mid-way
        code = ("import sys; from tprna.features import FeatureSpec; "
                "from tprna.store import build_store, items_from_manifest; "
                f"spec = FeatureSpec(feature_set={spec.feature_set!r}, identity={spec.identity}, dtype={spec.dtype!r}); "
                f"r = build_store({str(store)!r}, items_from_manifest({str(world.manifest)!r}), spec, "
                f"jobs={jobs}, progress=False, checkpoint_every={checkpoint_every}); sys.exit(0 if r.ok else 1)")
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, "-m", "tprna", "store", "build", str(store), "--manifest", str(world.manifest),
               "--features", spec.feature_set, "--identity", str(spec.identity), "--dtype", spec.dtype,
               "--jobs", str(jobs), "-q"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _kill_at_random(proc, lock: Path, delay: float, staging: Path | None = None) -> tuple[bool, float]:
    """Wait for the build to take the store lock, then SIGKILL its process group after
    ``delay`` seconds — or, with ``staging``, as soon as a write is in progress there (a
    Zarr entry half-written in ``.staging/``) after ``delay``.  Returns (still running at
    the kill, seconds after the lock)."""
    deadline = time.monotonic() + 60
    while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    locked = time.monotonic()
    while proc.poll() is None and time.monotonic() - locked < delay:
        time.sleep(0.002)
    if staging is not None:
        while proc.poll() is None and not (staging.is_dir() and any(p.is_dir() for p in staging.iterdir())):
            time.sleep(0.0005)
    running = proc.poll() is None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return running and proc.returncode == -signal.SIGKILL, time.monotonic() - locked


def _done(world: World, sums: dict, spec_index: int) -> set[str]:
    """Entries that are already as this round's build leaves them."""
    key = SPECS[spec_index].key
    out = set()
    for e, got in sums.items():
        want = _expected(world, e, spec_index)
        if got["key"] == want["key"] and got[""] == want[""] and got.get(key) == want[key]:
            out.add(e)
    return out


def _check_after_kill(store: Path, world: World, spec_index: int) -> int:
    """What a reader sees now: only whole entries, each equal to a clean build of the
    inputs it came from (before or after this round's changes).  Returns how many."""
    if not (store.is_file() or (store / "zarr.json").is_file()):
        return 0
    with open_store(store) as reader:
        ids = reader.ids()
        assert reader.verify() == []
        assert len(ids) == len(set(ids))
    now = _checksums(store)
    for e in ids:
        got = now[e]
        versions = [v for v in ("A", "B") if world.keys.get((e, v)) == got["key"]]
        assert versions, f"{e}: input key matches neither version"
        ref_entry = world.refs[(versions[0], 0)][e][""]
        assert got[""] == ref_entry, f"{e}: entry arrays differ from a clean build"
        for key, sums in got.items():
            if key in ("", "key"):
                continue
            s = [SPECS[0].key, SPECS[1].key].index(key)
            assert sums == world.refs[(versions[0], s)][e][key], f"{e}/{key}: differs from a clean build"
    return len(ids)


def _check_complete(store: Path, world: World, spec_index: int) -> None:
    spec = SPECS[spec_index]
    expected = sorted(world.sim_ids + world.real_ids)
    with open_store(store) as reader:
        ids = reader.ids()
        assert ids == expected, (ids, expected)  # none missing, none extra
        assert reader.backend.list_groups("entries") == expected  # no stray (incomplete) groups
        assert reader.verify() == []
        for e in ids:
            assert spec.key in reader.entry_specs(e)
    now = _checksums(store)
    for e in expected:
        want = _expected(world, e, spec_index)
        assert now[e]["key"] == want["key"], f"{e}: built from stale inputs"
        assert now[e][""] == want[""], f"{e}: entry arrays differ from a clean build"
        assert now[e][spec.key] == want[spec.key], f"{e}: features differ from a clean build"
    if store.suffix == ".h5":
        left = sorted(p.name for p in store.parent.iterdir() if p.name.startswith(store.name))
        assert left == [store.name, store.name + ".lock"], f"leftover files: {left}"
    else:
        for sub in (".staging", ".trash"):
            assert not (store / sub).exists() or not any((store / sub).iterdir()), f"leftovers in {sub}"


def _one_round(world: World, store: Path, backend: str, r: int, rng: random.Random, ledger) -> bool:
    spec_index = 1 if r % 3 == 2 else 0
    if r > 0:  # change 3–6 families' inputs: those entries are replaced
        for fid in rng.sample(world.sim_ids, rng.randint(3, 6)):
            world.versions[fid] = "B" if world.versions[fid] == "A" else "A"
            _copy_version(world, fid, world.versions[fid])
    n_entries = len(world.sim_ids) + len(world.real_ids)
    done_before = _done(world, _checksums(store), spec_index) if store.exists() else set()
    needed = n_entries - len(done_before)
    lock = _lock_path(store)
    lock.unlink(missing_ok=True)  # its appearance tells that the build has started
    jobs = 2 if r % 2 else 1
    checkpoint_every = 2 if backend == "hdf5" and r % 2 else None
    # kill during start-up (planning, worker start), while entries are written, or (Zarr)
    # in the middle of writing one into .staging/
    first, per_entry = world.timing[jobs]
    when = rng.choice(["start-up", "between entries", "mid-write" if backend == "zarr" else "between entries"])
    delay = rng.uniform(0.0, first) if when == "start-up" else rng.uniform(first, first + needed * per_entry)
    if when == "mid-write":
        delay = rng.uniform(0.0, first + 0.5 * needed * per_entry)
    proc = _start_build(store, world, spec_index, jobs, checkpoint_every)
    killed, after = _kill_at_random(proc, lock, delay, store / ".staging" if when == "mid-write" else None)
    visible = _check_after_kill(store, world, spec_index)
    done = len(_done(world, _checksums(store), spec_index) - done_before) if visible else 0
    ledger.kill_states.append({"backend": backend, "round": r, "when": when, "at_s": round(after, 3),
                               "killed": killed, "entries_visible": visible,
                               "work_done_at_kill": f"{done}/{needed}", "jobs": jobs,
                               "checkpoint_every": checkpoint_every})
    if killed:
        ledger.kills[backend] += 1
    else:
        ledger.kills_missed[backend] += 1
    # the re-run finishes the job
    report = build_store(store, items_from_manifest(world.manifest), SPECS[spec_index], progress=False)
    assert report.failed == [], report.failed
    _check_complete(store, world, spec_index)
    # and a further run has nothing to do
    again = build_store(store, items_from_manifest(world.manifest), SPECS[spec_index], progress=False)
    assert again.built == [] and again.failed == []
    return killed


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_killed_builds_resume_to_a_whole_store(world, ledger, tmp_path, backend):
    store = tmp_path / ("s.zarr" if backend == "zarr" else "s.h5")
    rng = random.Random(f"tprna-kills-{backend}")
    for fid in world.sim_ids:
        _copy_version(world, fid, "A")
    kills = r = 0
    # a build that finished before its kill is not a kill: go again (a quiet machine builds
    # faster than the calibration run did, so allow several extra rounds)
    while kills < ROUNDS[backend] and r < 5 * ROUNDS[backend]:
        kills += _one_round(world, store, backend, r, rng, ledger)
        r += 1
    assert kills == ROUNDS[backend], ledger.kill_states
