"""Store builds on a Dask distributed cluster (``tprna store build --scheduler``), against a
real ``LocalCluster`` of two worker processes: the same entries and the same bytes as a
local build; a worker killed mid-build, and the build re-run, leaves every entry whole."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from tprna.errors import TprnaError  # noqa: E402
from tprna.features import FeatureSpec  # noqa: E402
from tprna.simulate import write_example_dataset  # noqa: E402
from tprna.store import build_store, items_from_manifest, open_store  # noqa: E402

from helpers import coconet_items  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_IDS = ("RF00044", "RF02681", "RF00207", "RF01826", "RF00164", "RF02695")
SPEC = FeatureSpec()


def local_cluster():
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                    dashboard_address=":0", silence_logs=50)


@pytest.fixture(scope="module")
def cluster():
    with local_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask-sim")
    return items_from_manifest(write_example_dataset(root, n_families=8, seed=3, lengths=(30, 80),
                                                     depths=(5, 200)))


@pytest.fixture(scope="module")
def real():
    return coconet_items(REAL_IDS)


def store_bytes(store: Path) -> dict[str, object]:
    """Every file under entries/: chunk bytes as they are, metadata without its timestamp."""
    out: dict[str, object] = {}
    for f in sorted((store / "entries").rglob("*")):
        if not f.is_file():
            continue
        rel = str(f.relative_to(store))
        if f.name == "zarr.json":
            meta = json.loads(f.read_text())
            meta.get("attributes", {}).pop("written_at", None)
            out[rel] = meta
        else:
            out[rel] = f.read_bytes()
    return out


def assert_same_store(a: Path, b: Path) -> None:
    with open_store(a) as sa, open_store(b) as sb:
        assert sa.ids() == sb.ids() and len(sa.ids()) == len(set(sa.ids()))
        assert sa.verify() == [] and sb.verify() == []
        assert sa.splits == sb.splits
    left, right = store_bytes(a), store_bytes(b)
    assert left.keys() == right.keys()
    for rel in left:
        assert left[rel] == right[rel], rel


def test_dask_build_equals_local_build(tmp_path, cluster, simulated):
    local = build_store(tmp_path / "local.zarr", simulated, SPEC, progress=False)
    remote = build_store(tmp_path / "dask.zarr", simulated, SPEC, progress=False,
                         scheduler=cluster.scheduler_address)
    assert remote.failed == [] and sorted(remote.built) == sorted(local.built)
    assert_same_store(tmp_path / "local.zarr", tmp_path / "dask.zarr")
    again = build_store(tmp_path / "dask.zarr", simulated, SPEC, progress=False, scheduler=cluster)
    assert again.built == [] and len(again.skipped_unchanged) == len(simulated)


def test_dask_build_of_real_families_equals_local_build(tmp_path, cluster, real):
    local = build_store(tmp_path / "local.zarr", real, SPEC, progress=False, jobs=2)
    with distributed.Client(cluster, set_as_default=False) as client:  # a Client works too
        remote = build_store(tmp_path / "dask.zarr", real, SPEC, progress=False, scheduler=client)
        assert client.status == "running"  # the caller's client is left open
    assert local.failed == [] and remote.failed == []
    assert_same_store(tmp_path / "local.zarr", tmp_path / "dask.zarr")


def test_dask_build_reports_bad_inputs_like_a_local_build(tmp_path, cluster, simulated):
    bad = tmp_path / "bad.fasta"
    bad.write_text(">q\nMKLVQ\n>s\nMKLVQ\n")
    items = simulated[:2] + [type(simulated[0])("bad", bad), type(simulated[0])("gone", tmp_path / "no.fa")]
    local = build_store(tmp_path / "local.zarr", items, SPEC, progress=False)
    remote = build_store(tmp_path / "dask.zarr", items, SPEC, progress=False, scheduler=cluster.scheduler_address)
    assert sorted(remote.built) == sorted(local.built) == sorted(i.id for i in simulated[:2])
    assert sorted(remote.failed_ids) == sorted(local.failed_ids) == ["bad", "gone"]
    assert [why for _, why in sorted(remote.failed)] == [why for _, why in sorted(local.failed)]


def test_cli_scheduler_option(tmp_path, cluster, simulated):
    manifest = simulated[0].msa.parents[1] / "manifest.csv"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    store = tmp_path / "cli.zarr"
    out = subprocess.run([sys.executable, "-m", "tprna", "store", "build", f"file://{store}", "--manifest",
                          str(manifest), "--scheduler", cluster.scheduler_address, "-q"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "8 built" in " ".join(out.stdout.split())
    build_store(tmp_path / "local.zarr", simulated, SPEC, progress=False)
    assert_same_store(tmp_path / "local.zarr", store)


def test_scheduler_user_errors(tmp_path, simulated):
    with pytest.raises(TprnaError, match="HDF5 store has one writer"):
        build_store(tmp_path / "s.h5", simulated, SPEC, progress=False, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(TprnaError, match="s3:// stores are not supported"):
        build_store("s3://bucket/s.zarr", simulated, SPEC, progress=False, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(TprnaError, match="bad Dask scheduler address"):
        build_store(tmp_path / "s.zarr", simulated, SPEC, progress=False, scheduler="nonsense")
    with pytest.raises(TprnaError, match="file:///absolute/path"):
        build_store("file://otherhost/x.zarr", simulated, SPEC, progress=False)
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "s.h5").exists()


def test_workers_that_cannot_see_the_store_are_named(tmp_path):
    from tprna.store.cluster import _probe

    probe = tmp_path / "probe-x"
    probe.write_text("token")
    assert _probe(str(probe), "token") is None
    assert "different store" in _probe(str(probe), "other")
    assert "cannot read" in _probe(str(tmp_path / "absent"), "token")


def test_killed_worker_then_rerun_leaves_every_entry_whole(tmp_path_factory, tmp_path, simulated):
    root = tmp_path_factory.mktemp("dask-kill")
    items = items_from_manifest(write_example_dataset(root, n_families=10, seed=4, lengths=(80, 140),
                                                      depths=(100, 400)))
    reference = tmp_path / "local.zarr"
    assert build_store(reference, items, SPEC, progress=False).ok
    store = tmp_path / "dask.zarr"
    with local_cluster() as cluster, distributed.Client(cluster, set_as_default=False) as watcher:
        pids = watcher.run(os.getpid)
        result: dict = {}

        def build() -> None:
            try:
                result["report"] = build_store(store, items, SPEC, progress=False, scheduler=cluster)
            except BaseException as e:  # noqa: BLE001 - asserted below
                result["error"] = e

        thread = threading.Thread(target=build)
        thread.start()
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and thread.is_alive() and time.monotonic() < deadline:
            done = len([p for p in (store / "entries").glob("*") if p.is_dir()]) if (store / "entries").is_dir() else 0
            busy = [addr for addr, keys in watcher.processing().items() if keys and addr in pids]
            if done >= 1 and busy:
                victim = busy[0]
                os.kill(pids[victim], signal.SIGKILL)  # mid-task: its entry is being computed or written
            time.sleep(0.005)
        thread.join(timeout=120)
        assert victim is not None, "the build finished before a worker could be killed"
        assert "error" not in result, result.get("error")
        first = result["report"]
        print("first build after the kill:", first.summary(), first.failed)
        assert len(first.built) + len(first.failed) == len(items)  # every task came back
        # the re-run finishes the job: nothing missing, nothing duplicated, every entry whole
        rerun = build_store(store, items, SPEC, progress=False, scheduler=cluster)
        assert rerun.failed == []
        assert sorted(rerun.built + rerun.skipped_unchanged) == sorted(i.id for i in items)
    assert_same_store(reference, store)
    staging = store.with_name(store.name + ".staging")  # tprna.store.location.staging_dir
    assert not staging.exists() or not any(staging.iterdir())
