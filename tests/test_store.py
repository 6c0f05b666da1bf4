"""The feature store: round trips on both backends, one schema, content-keyed incremental
builds, crash safety (SIGKILL mid-build, concurrent readers), checksums, bad inputs, size."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tprna.errors import TprnaError
from tprna.features import FeatureSpec, make_features
from tprna.msa import read_msa
from tprna.simulate import write_example_dataset
from tprna.store import (BuildItem, build_store, check_disjoint_splits, items_from_manifest,
                         items_from_paths, open_store, overlapping_splits)
from tprna.store import atomic, base, zarr_format
from tprna.store.formats import open_reader as open_backend
from tprna.store.location import staging_dir
from tprna.store.schema import pack_symmetric, unpack_symmetric
from tprna.structure import read_labels

from helpers import coconet_items

REPO = Path(__file__).resolve().parents[1]
# Small real coconet families (depth 6–65, length 47–66), one of them in the test split.
REAL_IDS = ("RF00044", "RF02681", "RF00207", "RF01826", "RF00164")
BACKENDS = ("s.zarr", "s.h5")
SPEC = FeatureSpec()  # cov+ss, float16


@pytest.fixture(scope="module")
def real_items() -> list[BuildItem]:
    return coconet_items(REAL_IDS)


# --------------------------------------------------------------------------- tiny generated data


def write_family(path: Path, n: int, length: int, seed: int, mutation: float = 0.25) -> Path:
    """A random RNA query and n-1 mutated copies of it (with gaps), as aligned FASTA."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACGU-"))
    query = rng.integers(0, 4, length)
    rows = [query]
    for _ in range(n - 1):
        row = query.copy()
        mutate = rng.random(length) < mutation
        row[mutate] = rng.integers(0, 5, mutate.sum())
        rows.append(row)
    path.write_text("".join(f">s{k}\n{''.join(letters[r])}\n" for k, r in enumerate(rows)))
    return path


def write_contact_list(path: Path, length: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pairs = {(int(i), int(j)) for i, j in rng.integers(1, length + 1, (length, 2)) if i < j}
    path.write_text("".join(f"{i} {j}\n" for i, j in sorted(pairs)))
    return path


@pytest.fixture
def tiny(tmp_path) -> list[BuildItem]:
    """Six tiny families, two of them with contact-list labels."""
    d = tmp_path / "in"
    d.mkdir()
    items = []
    for k in range(6):
        length = 18 + 4 * k
        msa = write_family(d / f"fam{k}.fasta", n=8 + 5 * k, length=length, seed=k)
        label = write_contact_list(d / f"fam{k}.pairs", length, seed=k) if k < 2 else None
        items.append(BuildItem(id=f"fam{k}", msa=msa, label=label, split="train" if k % 2 else "test"))
    return items


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, inode) of every file under a store (or of the file itself)."""
    if path.is_file():
        st = path.stat()
        return {path.name: (st.st_mtime_ns, st.st_ino)}
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(root, f))
            out[os.path.relpath(os.path.join(root, f), path)] = (st.st_mtime_ns, st.st_ino)
    return out


def tree(path: Path) -> dict:
    """Backend-neutral walk: group → (attrs minus timestamps, {array: (shape, dtype)})."""
    backend = open_backend(path)
    backend.refresh()
    out = {}

    def walk(group: str) -> None:
        attrs = backend.read_attrs(group) or {}
        attrs.pop("written_at", None)
        for record in attrs.get("tprna_index", {}).get("entries", {}).values():  # the index's copies
            record.pop("written_at", None)
        if group == "":
            attrs["tprna_store"].pop("tprna_version", None)
        arrays = {}
        for a in backend.list_arrays(group):
            arr = backend.read_array(f"{group}/{a}" if group else a)
            arrays[a] = (arr.shape, str(arr.dtype))
        out[group] = (attrs, arrays)
        for g in backend.list_groups(group):
            walk(f"{group}/{g}" if group else g)

    walk("")
    backend.close()
    return out


# --------------------------------------------------------------------------- packing


@pytest.mark.parametrize("length", [1, 2, 7])
def test_pack_unpack_symmetric(length):
    rng = np.random.default_rng(length)
    x = rng.normal(size=(length, length, 3, 3)).astype(np.float32)
    sym = (x + x.transpose(1, 0, 3, 2)) / 2
    packed = pack_symmetric(sym, "float32")
    assert packed.shape == (length * (length + 1) // 2, 3, 3)
    np.testing.assert_array_equal(unpack_symmetric(packed, length), sym)
    m = rng.random((length, length)).astype(np.float32)
    m = m + m.T
    np.testing.assert_array_equal(unpack_symmetric(pack_symmetric(m, "float32"), length), m)


def test_float16_overflow_is_a_user_error():
    with pytest.raises(TprnaError, match="float32"):
        pack_symmetric(np.full((2, 2), 1e6, np.float32), "float16")


# --------------------------------------------------------------------------- round trip, real data


@pytest.mark.parametrize("name", BACKENDS)
def test_round_trip_real_families(tmp_path, real_items, name):
    report = build_store(tmp_path / name, real_items, SPEC, progress=False)
    assert report.failed == [] and sorted(report.built) == sorted(REAL_IDS)
    with open_store(tmp_path / name) as store:
        assert store.ids() == sorted(REAL_IDS)
        assert set(store.specs) == {SPEC.key}
        assert store.splits["test"] == ["RF00207"]
        for item in real_items:
            msa = read_msa(item.msa, "rna")
            ref = make_features(msa, SPEC)
            np.testing.assert_array_equal(store.read_msa(item.id), msa.codes)
            got = store.read_features(item.id, SPEC)
            assert set(got) == {"weights", "neff", "cov", "bpp"}
            np.testing.assert_array_equal(got["weights"], ref["weights"])
            assert got["neff"] == pytest.approx(float(ref["neff"]), rel=1e-6)
            for key in ("cov", "bpp"):
                assert got[key].dtype == np.float32 and got[key].shape == ref[key].shape
                # equal up to float16 rounding (the lower triangle is the upper one mirrored)
                np.testing.assert_allclose(got[key], ref[key], rtol=2 ** -10, atol=2 ** -20)
            contacts, observed = read_labels(item.structure, msa.query, item.chain, "rna")
            labels = store.read_labels(item.id)
            np.testing.assert_array_equal(labels[0], contacts)
            np.testing.assert_array_equal(labels[1], observed)
            meta = store.entry_meta(item.id)
            assert meta["sequence"] == msa.query and meta["length"] == msa.length
            assert meta["depth"] == msa.depth and meta["has_labels"]
            assert meta["provenance"]["msa"]["path"] == str(item.msa.resolve())
            assert meta["neff"] == {SPEC.key: pytest.approx(float(ref["neff"]), rel=1e-6)}
        assert store.verify() == []


def test_same_schema_on_both_backends(tmp_path, tiny):
    for name in BACKENDS:
        assert build_store(tmp_path / name, tiny, SPEC, progress=False).failed == []
    zarr_tree, h5_tree = tree(tmp_path / BACKENDS[0]), tree(tmp_path / BACKENDS[1])
    assert zarr_tree.keys() == h5_tree.keys()
    for group in zarr_tree:
        assert zarr_tree[group] == h5_tree[group], group  # same attrs (checksums too) and arrays


def test_zarr_fast_read_matches_zarr(tmp_path, tiny):
    build_store(tmp_path / "s.zarr", tiny[:2], SPEC, progress=False)
    backend = open_backend(tmp_path / "s.zarr")
    for name in ("msa", "contacts", "observed", f"features/{SPEC.key}/cov", f"features/{SPEC.key}/bpp"):
        path = f"entries/fam0/{name}"
        fast, ref = backend.read_array(path), backend.read_array_reference(path)
        assert fast.dtype == ref.dtype
        np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("name", BACKENDS)
def test_size_ratio_on_a_real_entry(tmp_path, real_items, name):
    build_store(tmp_path / name, real_items[:1], SPEC, progress=False)
    item = real_items[0]
    ref = make_features(read_msa(item.msa), SPEC)
    npy = sum(128 + np.asarray(ref[k], np.float32).nbytes for k in ("weights", "cov", "bpp"))
    with open_store(tmp_path / name) as store:
        ratio = store.feature_bytes(item.id, SPEC) / npy
    assert ratio <= 0.35, ratio


# --------------------------------------------------------------------------- incremental builds


@pytest.mark.parametrize("name", BACKENDS)
def test_incremental_rebuilds(tmp_path, tiny, name):
    path = tmp_path / name
    first = build_store(path, tiny[:4], SPEC, progress=False)
    assert sorted(first.built) == ["fam0", "fam1", "fam2", "fam3"]

    before = snapshot(path)
    again = build_store(path, tiny[:4], SPEC, progress=False)
    assert again.built == [] and sorted(again.skipped_unchanged) == ["fam0", "fam1", "fam2", "fam3"]
    assert snapshot(path) == before  # nothing written, not even metadata
    assert not Path(str(path) + ".partial").exists()

    added = build_store(path, tiny, SPEC, progress=False)  # two new inputs
    assert sorted(added.built) == ["fam4", "fam5"] and len(added.skipped_unchanged) == 4

    write_family(tiny[2].msa, n=30, length=26, seed=99)  # change one input
    with open_store(path) as store:
        old_key = store.entry_meta("fam2")["input_key"]
    changed = build_store(path, tiny, SPEC, progress=False)
    assert changed.built == ["fam2"] and changed.replaced == ["fam2"]
    assert len(changed.skipped_unchanged) == 5
    with open_store(path) as store:
        assert store.entry_meta("fam2")["input_key"] != old_key
        np.testing.assert_array_equal(store.read_msa("fam2"), read_msa(tiny[2].msa).codes)
        assert store.ids() == [f"fam{k}" for k in range(6)]
        assert store.verify() == []


@pytest.mark.parametrize("name", BACKENDS)
def test_second_spec_side_by_side(tmp_path, tiny, name):
    path = tmp_path / name
    build_store(path, tiny[:3], SPEC, progress=False)
    other = FeatureSpec(feature_set="precision", identity=0.7, dtype="float32")
    with open_store(path) as store:
        msa_before = {e: store.read_msa(e) for e in store.ids()}
        entry_attrs_before = {e: store.entry_meta(e)["written_at"] for e in store.ids()}
    report = build_store(path, tiny[:3], other, progress=False)
    assert sorted(report.built) == ["fam0", "fam1", "fam2"] and report.replaced == []
    with open_store(path) as store:
        assert set(store.specs) == {SPEC.key, other.key}
        for e in store.ids():
            assert store.entry_meta(e)["written_at"] == entry_attrs_before[e]  # entry not rewritten
            np.testing.assert_array_equal(store.read_msa(e), msa_before[e])
            assert set(store.read_features(e, SPEC)) == {"weights", "neff", "cov", "bpp"}
            feats = store.read_features(e, other.key)
            ref = make_features(read_msa(tiny[int(e[-1])].msa), other)
            iu, ju = np.triu_indices(feats["precision"].shape[0])  # float32 storage: i ≤ j exact
            np.testing.assert_array_equal(feats["precision"][iu, ju], ref["precision"][iu, ju])
            # the i > j blocks mirror the i < j ones; the inverse itself is symmetric to ~1e-3
            np.testing.assert_allclose(feats["precision"], ref["precision"], rtol=2e-3, atol=1e-4)
            assert set(store.entry_meta(e)["neff"]) == {SPEC.key, other.key}
    assert build_store(path, tiny[:3], SPEC, progress=False).built == []
    assert build_store(path, tiny[:3], other, progress=False).built == []


def test_parallel_build_equals_serial(tmp_path, tiny):
    serial = build_store(tmp_path / "a.zarr", tiny, SPEC, jobs=1, progress=False)
    parallel = build_store(tmp_path / "b.zarr", tiny, SPEC, jobs=2, progress=False)
    assert sorted(serial.built) == sorted(parallel.built) and parallel.failed == []
    assert tree(tmp_path / "a.zarr") == tree(tmp_path / "b.zarr")


# --------------------------------------------------------------------------- crash safety


def many_families(folder: Path, count: int = 24) -> Path:
    folder.mkdir()
    for k in range(count):
        write_family(folder / f"m{k:02d}.fasta", n=300, length=100 + k, seed=100 + k, mutation=0.4)
    return folder


def children(pid: int) -> set[int]:
    try:
        return set(map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split()))
    except OSError:
        return set()


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whoever adopted it, maybe never)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
                    reason="needs Linux's /proc/PID/task/PID/children to find the worker processes")
def test_workers_exit_with_a_build_killed_alone(tmp_path):
    """``store build -j 2`` stopped by SIGTERM, which leaves it no chance to shut its pool
    down: its workers, each in a plm fit of many seconds with more tasks queued, must not
    go on as orphans."""
    manifest = write_example_dataset(tmp_path / "data", n_families=6, seed=1, lengths=(150, 160),
                                     depths=(1500, 2000))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tprna", "store", "build", str(tmp_path / "s.zarr"),
                             "--manifest", str(manifest), "--features", "cov+ss+plm", "-j", "2", "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(children(proc.pid)) < 2 and time.monotonic() < deadline:  # the pool (and its tracker)
            time.sleep(0.05)
        time.sleep(5)  # the workers started (tpRNA imported) and took their first tasks
        workers = children(proc.pid)
        assert len(workers) >= 2 and proc.poll() is None, "the build ended before it could be stopped"
        proc.send_signal(signal.SIGTERM)  # the build alone, not its process group
        proc.wait(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(map(running, workers)):
            time.sleep(0.05)
        left = [w for w in workers if running(w)]
        assert not left, f"workers {left} computed on after their build was killed"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
        except ProcessLookupError:
            pass
        proc.wait()


def test_a_folder_of_target_folders_is_refused_with_the_way_to_give_it(tmp_path):
    """A folder holding per-target folders is not walked; the error says how to give its
    files, and a build of files that share a name says how to name them apart."""
    from tprna.store import items_from_paths

    for name in ("R1107", "R1108"):
        (tmp_path / "targets" / name).mkdir(parents=True)
    files = [write_family(tmp_path / "targets" / name / "seq.fasta", 8, 30, seed=n)
             for n, name in enumerate(("R1107", "R1108"))]
    with pytest.raises(TprnaError, match=r"its subfolders hold 2: give them as files, e\.g\. .*targets/\*/seq\.fasta"):
        items_from_paths([tmp_path / "targets"])
    report = build_store(tmp_path / "s.zarr", items_from_paths(files), SPEC, progress=False)
    assert report.built == ["seq"] and "manifest names them in its column id" in report.failed[0][1]


def _overlaps(limits, msa, spec, n: int = 3) -> int:
    """How many of ``n`` threads were inside ``limits.computing`` at once, at most."""
    inside, most, lock = [0], [0], threading.Lock()

    def compute() -> None:
        with limits.computing(msa, spec):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.2)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=compute) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return most[0]


def test_large_inputs_of_a_local_build_compute_one_at_a_time(tmp_path):
    """The workers of ``store build -j N`` share the memory limit: an input above a
    worker's share (limit / N) computes holding one lock file, so two such never run
    together (each open of the file is its own lock, as in separate processes); those
    within their share run side by side; the lock file is gone after."""
    from tprna.features import feature_memory_bytes
    from tprna.store.tasks import FeatureLimits, shared_limits

    msa = read_msa(write_family(tmp_path / "f.fasta", 40, 60, seed=2))
    need = feature_memory_bytes(SPEC, msa.length, msa.depth)
    with shared_limits(FeatureLimits(memory_limit=need), 3) as large:  # above its share: alone
        assert large.workers == 3 and Path(large.large_lock).is_file()
        assert _overlaps(large, msa, SPEC) == 1
        roomy = replace(large, memory_limit=3 * need)  # within its share: together
        assert _overlaps(roomy, msa, SPEC) == 3
    assert not Path(large.large_lock).exists()
    with shared_limits(FeatureLimits(memory_limit=need), 1) as alone:  # one process: nothing to share
        assert alone.large_lock is None and _overlaps(alone, msa, SPEC) == 3


def test_a_large_inputs_lock_goes_with_its_worker(tmp_path):
    """A worker killed inside a large computation (the OOM killer) does not leave the others
    waiting for its lock."""
    lock = tmp_path / "large.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"), str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        from tprna.store.tasks import FeatureLimits

        msa = read_msa(write_family(tmp_path / "f.fasta", 40, 60, seed=2))
        limits = FeatureLimits(memory_limit=1, workers=2, large_lock=str(lock))
        entered = threading.Event()

        def compute() -> None:
            with limits.computing(msa, SPEC):
                entered.set()

        thread = threading.Thread(target=compute, daemon=True)
        thread.start()
        assert not entered.wait(0.5)  # the holder has it
        holder.kill()
        assert entered.wait(5)
    finally:
        holder.kill()
        holder.wait()


def test_a_local_build_shares_its_limit_among_its_workers(tmp_path, monkeypatch):
    """build_store hands its ``jobs`` local processes limits with their shared lock (and a
    Dask cluster's workers, with their own machines' memory, none)."""
    from tprna.store import build as build_module

    seen = []
    real = build_module._build

    def spy(path, items, spec, report, limits, *rest):
        seen.append((limits.workers, limits.large_lock, Path(limits.large_lock).exists()))
        return real(path, items, spec, report, limits, *rest)

    monkeypatch.setattr(build_module, "_build", spy)
    msas = [write_family(tmp_path / f"m{i}.fasta", 12, 30, seed=i) for i in range(2)]
    report = build_store(tmp_path / "s.zarr", [BuildItem(m.stem, m) for m in msas], SPEC, jobs=2,
                         progress=False, memory_limit=2 ** 30)
    assert report.ok and sorted(report.built) == ["m0", "m1"]
    ((workers, lock, existed),) = seen
    assert workers == 2 and existed and not Path(lock).exists()


@pytest.mark.parametrize("name", BACKENDS)
def test_killed_build_leaves_no_partial_entry_and_resumes(tmp_path, name):
    inputs = many_families(tmp_path / "msas")
    path = tmp_path / name
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tprna", "store", "build", str(path), str(inputs), "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    partial = Path(str(path) + ".partial")
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if name.endswith(".zarr"):
                n = len(list((path / "entries").glob("m*"))) if (path / "entries").is_dir() else 0
            else:
                n = 3 if partial.exists() and partial.stat().st_size > 2_000_000 else 0
            if n >= 3:
                break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"

    if path.exists():  # whatever a reader sees now is valid
        with open_store(path) as store:
            visible = store.ids()
            assert len(visible) < 24
            assert store.verify() == []

    items = items_from_paths([inputs])
    resumed = build_store(path, items, SPEC, progress=False)
    assert resumed.failed == []
    assert len(resumed.built) + len(resumed.skipped_unchanged) == 24
    assert len(resumed.built) < 24 or name.endswith(".h5")  # zarr keeps every finished entry
    clean = build_store(tmp_path / ("clean" + Path(name).suffix), items, SPEC, progress=False)
    with open_store(path) as store, open_store(tmp_path / ("clean" + Path(name).suffix)) as ref:
        assert store.ids() == ref.ids() and len(store.ids()) == 24 == len(clean.built)
        assert store.verify() == []
        for e in store.ids():
            assert store.entry_meta(e)["input_key"] == ref.entry_meta(e)["input_key"]
    if name.endswith(".zarr"):
        assert not staging_dir(path).exists() or list(staging_dir(path).iterdir()) == []
    else:
        assert not partial.exists()


@pytest.mark.parametrize("name", BACKENDS)
def test_concurrent_reader_never_sees_a_partial_entry(tmp_path, name):
    inputs = many_families(tmp_path / "msas", count=12)
    items = items_from_paths([inputs])
    path = tmp_path / name
    build_store(path, items[:1], SPEC, progress=False)  # the store exists before the reader starts
    seen: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        with open_store(path) as store:
            while not stop.is_set():
                try:
                    ids = store.ids()
                    seen.append(len(ids))
                    for e in ids:
                        feats = store.read_features(e, SPEC)
                        meta = store.entry_meta(e)
                        assert feats["cov"].shape[0] == meta["length"]
                        problems = store.verify([e])
                        assert problems == [], problems
                except Exception as exc:  # noqa: BLE001 - collected and asserted below
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        report = build_store(path, items, SPEC, progress=False, checkpoint_every=1)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert len(report.built) == 11
    assert len(seen) > 2 and seen[-1] <= 12
    assert any(1 <= n < 12 for n in seen)


@pytest.mark.parametrize("name", BACKENDS)
def test_flipped_byte_is_found_and_entry_named(tmp_path, tiny, name):
    path = tmp_path / name
    build_store(path, tiny, SPEC, progress=False)
    if name.endswith(".zarr"):
        chunk = path / "entries" / "fam3" / "features" / SPEC.key / "cov" / "c" / "0" / "0" / "0"
        offset = chunk.stat().st_size // 2
        target = chunk
    else:
        import h5py

        with h5py.File(path, "r") as f:
            info = f[f"entries/fam3/features/{SPEC.key}/cov"].id.get_chunk_info(0)
        offset, target = info.byte_offset + info.size // 2, path
    with open(target, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    with open_store(path) as store:
        problems = store.verify()
        assert problems and {p.entry for p in problems} == {"fam3"}
        assert "cov" in problems[0].where
        with pytest.raises(TprnaError, match="'fam3'.*verify"):  # never other numbers
            store.read_features("fam3", SPEC)
        store.read_features("fam2", SPEC)  # the other entries read as ever


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_are_reported_and_skipped(tmp_path, tiny):
    d = tmp_path / "bad"
    d.mkdir()
    empty = d / "empty.fasta"
    empty.write_text("")
    unequal = d / "unequal.fasta"
    unequal.write_text(">q\nACGUACGU\n>s\nACGU\n")
    alphabet = d / "protein.fasta"
    alphabet.write_text(">q\nMKLVEEFPQ\n>s\nMKLVEEFPQ\n")
    wrong_label = d / "wrong.label"
    length = 18
    wrong_label.write_text("\n".join("\t".join(["0"] * (length + 3)) for _ in range(length + 3)) + "\n")
    missing_structure = d / "nowhere.pdb"
    bad = [
        BuildItem("empty", empty),
        BuildItem("unequal", unequal),
        BuildItem("alphabet", alphabet),
        BuildItem("wronglabel", tiny[0].msa, label=wrong_label),
        BuildItem("nostructure", tiny[1].msa, structure=missing_structure, chain="A"),
        BuildItem("nomsa", d / "missing.fasta"),
        BuildItem("bad/id", tiny[2].msa),
        BuildItem("fam0", tiny[3].msa),  # duplicate id
    ]
    report = build_store(tmp_path / "s.zarr", tiny + bad, SPEC, progress=False)
    assert sorted(report.built) == [f"fam{k}" for k in range(6)]
    failed = dict(report.failed)
    assert set(report.failed_ids) == {"empty", "unequal", "alphabet", "wronglabel", "nostructure",
                                      "nomsa", "bad/id", "fam0"}
    assert "no sequences" in failed[str(empty)]
    assert "unequal lengths" in failed[str(unequal)]
    assert "not RNA" in failed[str(alphabet)]
    assert str(length) in failed[str(wrong_label)]
    assert "not found" in failed[str(missing_structure)]
    assert "not found" in failed[str(d / "missing.fasta")]
    with open_store(tmp_path / "s.zarr") as store:
        assert store.ids() == [f"fam{k}" for k in range(6)]
        assert store.verify() == []


def test_missing_chain_is_reported(tmp_path, real_items):
    item = replace(real_items[0], chain="Z")
    report = build_store(tmp_path / "s.zarr", [item, real_items[1]], SPEC, progress=False)
    assert report.built == [real_items[1].id]
    (source, reason), = report.failed
    assert source == str(item.structure) and "Z" in reason


def test_not_a_store_and_bad_spec_are_user_errors(tmp_path, tiny):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("hello")
    with pytest.raises(TprnaError, match="not a feature store"):
        build_store(tmp_path / "other", tiny, SPEC, progress=False)
    with pytest.raises(TprnaError, match="dtype"):
        build_store(tmp_path / "s.zarr", tiny, FeatureSpec(dtype="int8"), progress=False)
    with pytest.raises(TprnaError, match="no feature store"):
        open_store(tmp_path / "nothing.zarr")
    build_store(tmp_path / "s.zarr", tiny[:1], SPEC, progress=False)
    with open_store(tmp_path / "s.zarr") as store:
        with pytest.raises(TprnaError, match="no entry"):
            store.read_msa("nope")
        with pytest.raises(TprnaError, match="no feature spec"):
            store.read_features("fam0", "precision")


# --------------------------------------------------------------------------- splits and inputs


@pytest.mark.parametrize("name", BACKENDS)
def test_splits(tmp_path, tiny, name):
    path = tmp_path / name
    build_store(path, tiny, SPEC, progress=False)
    with open_store(path, mode="a") as store:
        assert store.splits == {"test": ["fam0", "fam2", "fam4"], "train": ["fam1", "fam3", "fam5"]}
        assert store.ids("train") == ["fam1", "fam3", "fam5"]
        store.set_split("hard", ["fam5", "fam0"])
        subsets = store.neff_splits()
        store.update_splits(subsets)
        assert sorted(sum(subsets.values(), [])) == store.ids()
        with pytest.raises(TprnaError, match="nope"):
            store.set_split("x", ["fam0", "nope"])
        with pytest.raises(TprnaError, match="no split"):
            store.ids("nothing")
    with open_store(path) as store:
        assert store.ids("hard") == ["fam5", "fam0"]
        assert set(store.splits) == {"train", "test", "hard", "neff<1", "1<=neff<10", "neff>=10"}
        with pytest.raises(TprnaError, match="read-only"):
            store.set_split("y", ["fam0"])
        assert store.verify() == []


def test_items_from_manifest_and_paths(tmp_path):
    (tmp_path / "msa").mkdir()
    (tmp_path / "pdb").mkdir()
    (tmp_path / "lab").mkdir()
    for name in ("1ehz_A.fasta", "RF00005_1.faclean.gz", "x.a3m"):
        (tmp_path / "msa" / name).write_text(">q\nACGU\n")
    (tmp_path / "msa" / "notes.txt").write_text("not an alignment")
    (tmp_path / "pdb" / "1ehz.cif").write_text("data_x\n")
    (tmp_path / "pdb" / "RF00005_1.pdb").write_text("ATOM\n")
    (tmp_path / "lab" / "x.true.gz").write_text("0")
    items = {i.id: i for i in items_from_paths([tmp_path / "msa"], tmp_path / "pdb", tmp_path / "lab")}
    assert set(items) == {"1ehz_A", "RF00005_1", "x"}
    assert items["1ehz_A"].structure == tmp_path / "pdb" / "1ehz.cif" and items["1ehz_A"].chain == "A"
    assert items["RF00005_1"].structure.name == "RF00005_1.pdb" and items["RF00005_1"].chain is None
    assert items["x"].label.name == "x.true.gz" and items["x"].structure is None
    assert items_from_paths([tmp_path / "msa" / "x.a3m"], chain="B")[0].chain == "B"

    manifest = tmp_path / "m.csv"
    manifest.write_text("id,split,msa,structure,chain,extra\n"
                        "a,train,msa/x.a3m,pdb/1ehz.cif,A,1\nb,test,/abs/b.fa,,,2\n")
    a, b = items_from_manifest(manifest)
    assert a == BuildItem("a", tmp_path / "msa" / "x.a3m", "rna", tmp_path / "pdb" / "1ehz.cif", "A", None, "train")
    assert b.msa == Path("/abs/b.fa") and b.structure is None and b.chain is None and b.split == "test"
    (tmp_path / "bad.csv").write_text("name,alignment\nx,y\n")
    with pytest.raises(TprnaError, match="id, msa"):
        items_from_manifest(tmp_path / "bad.csv")
    with pytest.raises(TprnaError, match="not found"):
        items_from_manifest(tmp_path / "none.csv")


# --------------------------------------------------------------------------- splits: the manifest decides


@pytest.mark.parametrize("name", BACKENDS)
def test_a_manifest_edit_moves_an_id_between_splits(tmp_path, tiny, name):
    path = tmp_path / name
    build_store(path, tiny, SPEC, progress=False)  # test: fam0 fam2 fam4, train: fam1 fam3 fam5
    with open_store(path, mode="a") as store:
        store.set_split("hard", ["fam0", "fam1"])  # made by hand: no manifest touches it
    moved = [replace(i, split="train") if i.id == "fam0" else i for i in tiny]
    build_store(path, moved, SPEC, progress=False)
    with open_store(path) as store:
        assert store.ids("test") == ["fam2", "fam4"]
        assert store.ids("train") == ["fam1", "fam3", "fam5", "fam0"]
        assert store.ids("hard") == ["fam0", "fam1"]
        assert overlapping_splits(store, "train", "test") == []
        check_disjoint_splits(store, "train", "test")
        assert overlapping_splits(store, "train", "hard") == ["fam0", "fam1"]
        with pytest.raises(TprnaError, match="share 2 entries: fam0, fam1"):
            check_disjoint_splits(store, "train", "hard")
    # every test id moved: "test" is still the manifest's to empty; ids it omits keep theirs
    build_store(path, [replace(i, split="train") for i in tiny[:5]], SPEC, progress=False)
    with open_store(path) as store:
        assert store.ids("test") == [] and sorted(store.ids("train")) == [f"fam{k}" for k in range(6)]
        assert overlapping_splits(store, "train", ["fam5", "nope"]) == ["fam5"]


def test_disjoint_check_names_the_shared_ids(tmp_path, tiny):
    build_store(tmp_path / "s.zarr", tiny, SPEC, progress=False)
    with open_store(tmp_path / "s.zarr", mode="a") as store:
        store.update_splits({"test": ["fam0", "fam2", "fam1"]})  # a leak made by hand
        assert overlapping_splits(store, "train", "test") == ["fam1"]
        with pytest.raises(TprnaError, match="'train' and 'test' share 1 entry: fam1"):
            check_disjoint_splits(store, "train", "test")
        with pytest.raises(TprnaError, match="no split named"):
            overlapping_splits(store, "train", "nothing")


# --------------------------------------------------------------------------- reads check what they read


def _entry_chunks(store: Path, entry: str, array: str) -> list[Path]:
    return sorted(p for p in (store / "entries" / entry / array / "c").rglob("*") if p.is_file())


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_missing_or_truncated_chunk_is_an_error_on_read(tmp_path, tiny, damage):
    path = tmp_path / "s.zarr"
    build_store(path, tiny, SPEC, progress=False)
    for array, read in ((f"features/{SPEC.key}/cov", lambda st: st.read_features("fam3", SPEC)),
                        ("msa", lambda st: st.read_msa("fam3")),
                        ("contacts", None)):
        if read is None:  # fam3 has no labels: fam1 has (an all-zero contact map would read as zeros)
            chunk, entry, read = _entry_chunks(path, "fam1", array)[0], "fam1", lambda st: st.read_labels("fam1")
        else:
            chunk, entry = _entry_chunks(path, "fam3", array)[0], "fam3"
        raw = chunk.read_bytes()
        chunk.unlink() if damage == "deleted" else chunk.write_bytes(raw[: len(raw) // 2])
        with open_store(path) as store:
            with pytest.raises(TprnaError, match=f"'{entry}'.*(missing|CRC32C|truncated)"):
                read(store)
            problems = store.verify()
            assert {p.entry for p in problems} == {entry}, problems
        chunk.write_bytes(raw)
    with open_store(path) as store:
        assert store.verify() == []


def _rewrite_chunk_with_other_numbers(chunk: Path, crc: bool) -> None:
    """Silent corruption that decodes: the chunk re-encoded with one value changed (and,
    for a chunk with a CRC32C, its old CRC kept)."""
    import numcodecs.blosc

    raw = chunk.read_bytes()
    body, tail = (raw[:-4], raw[-4:]) if crc else (raw, b"")
    data = bytearray(numcodecs.blosc.decompress(body))
    data[len(data) // 2] ^= 0x40
    chunk.write_bytes(numcodecs.blosc.compress(bytes(data), b"zstd", 5, numcodecs.blosc.SHUFFLE, 2) + tail)


@pytest.mark.parametrize("layout", ["chunk checksums", "before chunk checksums"])
def test_other_numbers_in_a_chunk_are_an_error_on_read(tmp_path, tiny, monkeypatch, layout):
    path = tmp_path / "s.zarr"
    if layout == "before chunk checksums":  # a store written before them: the sha256 is checked
        monkeypatch.setattr(base, "CHUNK_CHECKSUMS", False)
    build_store(path, tiny, SPEC, progress=False)
    monkeypatch.setattr(base, "CHUNK_CHECKSUMS", True)
    _rewrite_chunk_with_other_numbers(_entry_chunks(path, "fam3", f"features/{SPEC.key}/cov")[0],
                                      crc=layout == "chunk checksums")
    with open_store(path) as store:
        with pytest.raises(TprnaError, match="'fam3'.*(CRC32C|checksum mismatch)"):
            store.read_features("fam3", SPEC)
        assert {p.entry for p in store.verify()} == {"fam3"}
    if layout == "before chunk checksums":  # opting out of the sha256 reads the other numbers
        with open_store(path, verify_reads=False) as store:
            store.read_features("fam3", SPEC)


def test_hdf5_chunks_carry_checksums(tmp_path, tiny):
    import h5py

    build_store(tmp_path / "s.h5", tiny[:2], SPEC, progress=False)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f[f"entries/fam0/features/{SPEC.key}/cov"].fletcher32
        assert f["entries/fam0/msa"].fletcher32


# --------------------------------------------------------------------------- replace without a gap


def _watch_publishing(monkeypatch, on_step) -> None:
    """Call ``on_step(what)`` after every rename, replace and exchange the store makes."""
    for name in ("rename", "replace"):
        real = getattr(os, name)

        def wrapped(*args, _real=real, _name=name, **kwargs):
            out = _real(*args, **kwargs)
            on_step(f"os.{_name}({args[0]!s:.60}, {args[1]!s:.60})")
            return out
        monkeypatch.setattr(os, name, wrapped)
    real_exchange = atomic.exchange

    def exchange(a, b):
        done = real_exchange(a, b)
        on_step(f"exchange({a}, {b}) -> {done}")
        return done
    monkeypatch.setattr(zarr_format, "exchange", exchange)


@pytest.mark.parametrize("name", BACKENDS)
def test_replacing_an_entry_never_leaves_it_missing(tmp_path, tiny, monkeypatch, name):
    path = tmp_path / name
    build_store(path, tiny[:3], SPEC, progress=False)
    write_family(tiny[1].msa, n=30, length=26, seed=99)  # fam1 changes: its entry is replaced
    seen: list[str] = []

    def check(step: str) -> None:
        if not path.exists():
            return
        with open_store(path) as store:  # a reader that looks right after every step
            ids = store.ids()
            assert ids == ["fam0", "fam1", "fam2"], f"after {step}: {ids}"
            store.read_msa("fam1")
            store.read_features("fam1", SPEC)
        seen.append(step)

    _watch_publishing(monkeypatch, check)
    report = build_store(path, tiny[:3], SPEC, progress=False, checkpoint_every=1)
    assert report.replaced == ["fam1"] and seen
    monkeypatch.undo()
    with open_store(path) as store:
        np.testing.assert_array_equal(store.read_msa("fam1"), read_msa(tiny[1].msa).codes)
        assert store.verify() == []


def test_replace_without_exchange_falls_back_to_two_renames(tmp_path, tiny, monkeypatch):
    """Where the file system cannot exchange (NFS), a replacement still ends whole."""
    path = tmp_path / "s.zarr"
    build_store(path, tiny[:3], SPEC, progress=False)
    write_family(tiny[1].msa, n=30, length=26, seed=99)
    monkeypatch.setattr(zarr_format, "exchange", lambda a, b: False)
    assert build_store(path, tiny[:3], SPEC, progress=False).replaced == ["fam1"]
    with open_store(path) as store:
        np.testing.assert_array_equal(store.read_msa("fam1"), read_msa(tiny[1].msa).codes)
        assert store.verify() == [] and store.ids() == ["fam0", "fam1", "fam2"]
    assert not staging_dir(path).exists() and not (path / ".trash").exists()


# --------------------------------------------------------------------------- durable publishing


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name an fd's file")
@pytest.mark.parametrize("name", BACKENDS)
def test_data_is_fsynced_before_the_rename_that_publishes_it(tmp_path, tiny, monkeypatch, name):
    """Every file and folder a rename publishes was fsynced before it, and the folder the
    rename changed is fsynced after (a power cut then leaves the old entry or the new)."""
    path = tmp_path / name
    build_store(path, tiny[:2], SPEC, progress=False)
    write_family(tiny[1].msa, n=30, length=26, seed=99)
    log: list[tuple] = []  # ("fsync", path) | ("publish", {paths it held}, target)
    real_fsync, real_rename, real_replace, real_exchange = os.fsync, os.rename, os.replace, atomic.exchange

    def fsync(fd):
        log.append(("fsync", os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))))
        return real_fsync(fd)

    def held(src) -> set[str] | None:
        src = Path(src)
        if src.is_dir() and src.parent == staging_dir(path):  # a Zarr group going in
            return {os.path.realpath(p) for p in [src, *src.rglob("*")]}
        if src.is_file() and src.name.endswith((".partial", ".tmp")):  # an HDF5 file / metadata going in
            return {os.path.realpath(src)}
        return None

    def publishing(real):
        def call(a, b, *args, **kwargs):
            files = None if staging_dir(path) in Path(b).parents else held(a)  # zarr's own writes there
            out = real(a, b, *args, **kwargs)
            if files is not None:
                log.append(("publish", files, os.path.realpath(b)))
            return out
        return call

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", publishing(real_rename))
    monkeypatch.setattr(os, "replace", publishing(real_replace))
    monkeypatch.setattr(zarr_format, "exchange", publishing(real_exchange))
    build_store(path, tiny[:3], SPEC, progress=False)  # fam2 new, fam1 replaced, splits rewritten
    monkeypatch.undo()
    published = [(k, entry) for k, entry in enumerate(log) if entry[0] == "publish"]
    assert len(published) >= (3 if name.endswith(".zarr") else 1), log
    for k, (_, files, target) in published:
        before = {e[1] for e in log[:k] if e[0] == "fsync"}
        assert files <= before, f"{target} published before fsyncing {sorted(files - before)[:3]}"
        after = {e[1] for e in log[k:] if e[0] == "fsync"}
        assert os.path.dirname(target) in after, f"{os.path.dirname(target)} not fsynced after the rename"


# --------------------------------------------------------------------------- inputs too big to compute


def test_an_input_too_long_is_refused_before_computing(tmp_path, tiny, monkeypatch):
    import tprna.store.tasks as build

    computed: list[int] = []
    real = build.make_features
    monkeypatch.setattr(build, "make_features", lambda msa, spec: computed.append(msa.length) or real(msa, spec))
    report = build_store(tmp_path / "s.zarr", tiny, SPEC, progress=False, max_length=30)
    assert sorted(report.built) == ["fam0", "fam1", "fam2", "fam3"]  # L = 18, 22, 26, 30, 34, 38
    failed = dict(zip(report.failed_ids, (why for _, why in report.failed)))
    assert set(failed) == {"fam4", "fam5"} and max(computed) <= 30
    assert "query length 34 is above the limit of 30" in failed["fam4"] and "of memory" in failed["fam4"]
    assert "--max-length" in failed["fam4"]
    # the memory estimate too: the limit, the estimate and the fix in the message
    report = build_store(tmp_path / "t.zarr", tiny[:1], SPEC, progress=False, memory_limit=10_000)
    (source, why), = report.failed
    assert source == str(tiny[0].msa) and "above the limit" in why and "--memory-limit" in why


def test_the_memory_estimate_grows_as_l_squared():
    from tprna.features import feature_memory_bytes

    small, big = (feature_memory_bytes(SPEC, length, 100) for length in (100, 1000))
    assert 80 < big / small < 100  # the L² terms dominate
    assert feature_memory_bytes(SPEC, 2000, 1000) > 100 * 2000 ** 2  # at least the covariance
    assert feature_memory_bytes(FeatureSpec(feature_set="precision"), 500, 10) > feature_memory_bytes(SPEC, 500, 10)


# --------------------------------------------------------------------------- byte-order marks


def test_a_manifest_with_a_byte_order_mark(tmp_path, tiny):
    text = "id,msa,split\n" + "".join(f"{i.id},{i.msa},{i.split}\n" for i in tiny)
    (tmp_path / "plain.csv").write_text(text)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert items_from_manifest(tmp_path / "bom.csv") == items_from_manifest(tmp_path / "plain.csv")


def test_stores_other_tools_can_read(tmp_path):
    """Zarr arrays name their axes for plain zarr / xarray; HDF5 datasets use deflate, which
    h5dump (any HDF5 build) decodes to the same numbers."""
    import shutil
    import subprocess

    import h5py
    import zarr

    manifest = write_example_dataset(tmp_path / "data", n_families=2, seed=4, lengths=(20, 24), depths=(4, 6))
    items = items_from_manifest(manifest)
    spec = FeatureSpec(feature_set="cov")
    assert build_store(tmp_path / "s.zarr", items, spec, progress=False).ok
    assert build_store(tmp_path / "s.h5", items, spec, progress=False).ok
    with open_store(tmp_path / "s.zarr") as st:
        entry = st.ids()[0]
    root = zarr.open_group(tmp_path / "s.zarr", mode="r")
    assert root[f"entries/{entry}/msa"].metadata.dimension_names == ("sequence", "position")
    assert root[f"entries/{entry}/features/{spec.key}/cov"].metadata.dimension_names == ("pair", "state_i", "state_j")
    with h5py.File(tmp_path / "s.h5", "r") as f:
        dataset = f[f"entries/{entry}/msa"]
        assert dataset.compression == "gzip"
        expected = dataset[...]
    h5dump = shutil.which("h5dump")
    if h5dump is None:
        pytest.skip("h5dump not installed (apt-get install hdf5-tools)")
    out = subprocess.run([h5dump, "-d", f"/entries/{entry}/msa", "-y", "-w", "0", str(tmp_path / "s.h5")],
                         capture_output=True, text=True, check=True).stdout
    body = out.split("DATA {", 1)[1].split("}", 1)[0]
    numbers = [int(t) for t in body.replace(",", " ").split()]
    assert numbers == expected.ravel().tolist()


def test_plain_zarr_walks_the_store_without_a_warning(tmp_path, tiny):
    """Nothing but the Zarr hierarchy is inside the folder (the lock and the staging folder
    are beside it), and the consolidated metadata is the tree as it is after every build
    and every split edit: plain zarr (and xarray, where installed) read the schema."""
    import warnings

    import zarr

    path = tmp_path / "s.zarr"
    build_store(path, tiny[:3], SPEC, progress=False)
    build_store(path, tiny, FeatureSpec(feature_set="cov"), progress=False)  # 3 new entries, a 2nd spec
    with open_store(path, mode="a") as store:
        store.set_split("hard", ["fam1", "fam4"])
    on_disk = {os.path.relpath(d, path).replace(os.sep, "/") for d, _, files in os.walk(path)
               if "zarr.json" in files and d != str(path)}
    assert sorted(os.listdir(path)) == ["entries", "index", "zarr.json"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for consolidated in (True, False):
            root = zarr.open_group(path, mode="r", use_consolidated=consolidated)
            assert (root.metadata.consolidated_metadata is not None) == consolidated
            members = dict(root.members(max_depth=None))
            assert set(members) == on_disk
            for name, node in members.items():
                node.attrs.asdict()
                if isinstance(node, zarr.Array):
                    node[...]  # every array decodes (its CRC32C checked by zarr)
                    assert node.metadata.dimension_names is not None, name
        root = zarr.open_group(path, mode="r")
        assert root["entries/fam4"].attrs["length"] == 34
        assert root.attrs["splits"]["hard"] == ["fam1", "fam4"]
        assert root["index"].attrs["tprna_index"]["entries"]["fam4"]["splits"] == ["hard", "test"]
        assert root[f"entries/fam0/features/{SPEC.key}/cov"].metadata.dimension_names == ("pair", "state_i", "state_j")
    try:
        import xarray
    except ImportError:
        return
    ds = xarray.open_zarr(path, group="entries/fam0")
    assert ds["msa"].dims == ("sequence", "position")


@pytest.mark.parametrize("name", BACKENDS)
def test_the_entry_index_answers_listing_and_is_rebuilt_when_stale(tmp_path, tiny, name, monkeypatch):
    path = tmp_path / name
    build_store(path, tiny[:4], SPEC, progress=False)
    build_store(path, tiny[:2], FeatureSpec(feature_set="cov"), progress=False)
    with open_store(path) as store:
        scanned = {e: store.entry_meta(e) for e in store.ids()}  # from the index
    from tprna.store import index as entry_index

    with open_store(path) as store:  # the same rows when every entry's metadata is read
        monkeypatch.setattr(entry_index, "load", lambda reader: None)
        assert {e: store.entry_meta(e) for e in store.ids()} == scanned
        info = store.info()
        monkeypatch.undo()
        assert store.info() == info
    assert set(scanned["fam0"]["neff"]) == {SPEC.key, FeatureSpec(feature_set="cov").key}
    assert scanned["fam1"]["has_labels"] and not scanned["fam3"]["has_labels"]
    # listing opens no entry's metadata once the index is there
    with open_store(path) as store:
        monkeypatch.setattr(entry_index, "scan", lambda *a, **k: pytest.fail("scanned the entries"))
        real = store.backend.read_attrs
        monkeypatch.setattr(store.backend, "read_attrs", lambda group, keys=None: pytest.fail(group)
                            if group.startswith("entries/") else real(group, keys))
        assert [store.entry_meta(e)["length"] for e in store.ids()] == [18, 22, 26, 30]
        store.info()
    monkeypatch.undo()
    if name.endswith(".zarr"):  # a store written before the index (or a killed build): scanned, then rewritten
        shutil.rmtree(path / "index")
        with open_store(path) as store:
            assert {e: store.entry_meta(e) for e in store.ids()} == scanned
        before = snapshot(path)
        build_store(path, tiny[:4], SPEC, progress=False)
        assert (path / "index" / "zarr.json").is_file() and snapshot(path) != before
        with open_store(path) as store:
            assert store.backend.read_index()["complete"] is True


def test_a_build_with_nothing_to_do_still_clears_a_killed_writers_staging(tmp_path, tiny):
    path = tmp_path / "s.zarr"
    build_store(path, tiny[:2], SPEC, progress=False)
    leftover = staging_dir(path) / "0123abcd"  # a worker killed mid-write (its task re-run elsewhere)
    leftover.mkdir(parents=True)
    (leftover / "zarr.json").write_text("{}")
    before = snapshot(path)
    assert build_store(path, tiny[:2], SPEC, progress=False).built == []
    assert snapshot(path) == before and not staging_dir(path).exists()


def test_hdf5_reader_follows_a_replacement_that_reuses_an_inode(tmp_path, tiny, monkeypatch):
    """A file system hands a freed inode to a later file: a long-lived reader that saw
    versions A, B, then C (C on A's inode number) must serve C's entry index, not A's.
    CI once read A's depth beside C's alignment this way."""
    depths = (8, 30, 12)  # three versions of fam0, each of its own depth
    versions = []
    for k, n in enumerate(depths):
        write_family(tiny[0].msa, n=n, length=18, seed=k)
        versions.append(tmp_path / f"v{k}.h5")
        build_store(versions[-1], tiny[:1], SPEC, progress=False)
    live = tmp_path / "s.h5"
    inode = {"now": 100}
    real_stat = os.stat

    def stat(path, *args, **kwargs):  # the live file's inode number is what the test says
        fields = list(real_stat(path, *args, **kwargs))
        if Path(path) == live:
            fields[1] = inode["now"]
        return os.stat_result(fields)

    monkeypatch.setattr("tprna.store.hdf5_format.os.stat", stat)
    shutil.copyfile(versions[0], live)
    with open_store(live) as store:
        assert store.entry_meta("fam0")["depth"] == depths[0]
        for k, number in ((1, 200), (2, 100)):
            shutil.copyfile(versions[k], tmp_path / "next.h5")
            os.replace(tmp_path / "next.h5", live)
            inode["now"] = number
            if k == 1:  # B is opened by a read that does not consult the index
                assert store.read_msa("fam0").shape[0] == depths[1]
        meta = store.entry_meta("fam0")
        assert meta["depth"] == depths[2]
        assert store.read_msa("fam0").shape == (meta["depth"], meta["length"])
