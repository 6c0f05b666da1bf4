"""Depth sampling in training: features of a random row subset, recomputed from the store's
encoded alignment, checked against an independent slow reference and against the store."""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
from helpers import simulated_store, train_one_epoch

from tprna.data import DEPTH_SAMPLING_MAX, LengthBatchSampler, StoreDataset, draw_depth, subsampled_features
from tprna.errors import TprnaError
from tprna.features import FeatureSpec
from tprna.simulate import write_example_dataset
from tprna.store import build_store, items_from_manifest, open_store


@pytest.fixture(scope="module")
def profile_store(tmp_path_factory) -> Path:
    return simulated_store(tmp_path_factory.mktemp("depth"), feature_set="cov+ss+profile", n_families=4,
                           lengths=(30, 50), depths=(40, 120))


def reference_covariance(codes: np.ndarray, q: int, identity: float = 0.8) -> tuple[np.ndarray, np.ndarray, float]:
    """Weights, covariance and Neff by the definitions, with loops (the slow oracle)."""
    n, length = codes.shape
    need = math.ceil(identity * length - 1e-9)
    w = np.array([1.0 / sum(int((codes[a] == codes[b]).sum()) >= need for b in range(n)) for a in range(n)])
    p = w / w.sum()
    onehot = np.eye(q)[codes]  # (n, L, q)
    fi = np.einsum("n,nia->ia", p, onehot)
    fij = np.einsum("n,nia,njb->ijab", p, onehot, onehot)
    return w, fij - fi[:, None, :, None] * fi[None, :, None, :], w.sum() / math.sqrt(length)


def test_subset_features_match_the_slow_reference(profile_store):
    store = open_store(profile_store)
    spec = next(iter(store.specs.values()))
    entry = max(store.ids(), key=lambda i: store.entry_meta(i)["depth"])
    codes = store.read_msa(entry)
    stored = store.read_features(entry, spec.key)
    depth, seed, window = 9, 1234, slice(5, 25)
    got = subsampled_features(codes, stored, spec, depth, seed, window)
    rng = np.random.default_rng(seed)  # the rows the function draws: the query and 8 others
    rows = np.concatenate([[0], 1 + np.sort(rng.choice(len(codes) - 1, depth - 1, replace=False))])
    w, cov, neff = reference_covariance(codes[rows], spec.q)
    np.testing.assert_allclose(got["weights"], w, rtol=1e-6)
    assert float(got["neff"]) == pytest.approx(neff, rel=1e-5)
    # stored precision: float16, as the store keeps it
    np.testing.assert_allclose(got["cov"], cov[window, window].astype(np.float16), atol=1e-3)
    profile = np.einsum("n,nia->ia", w / w.sum(), np.eye(spec.q)[codes[rows]])
    np.testing.assert_allclose(got["profile"], profile[window].astype(np.float16), atol=1e-3)
    np.testing.assert_array_equal(got["bpp"], np.asarray(stored["bpp"])[window, window])


def test_every_row_gives_the_stored_features(profile_store):
    store = open_store(profile_store)
    spec = next(iter(store.specs.values()))
    entry = store.ids()[0]
    codes = store.read_msa(entry)
    stored = store.read_features(entry, spec.key)
    window = slice(3, 28)
    got = subsampled_features(codes, stored, spec, len(codes), 7, window)
    assert float(got["neff"]) == pytest.approx(float(stored["neff"]), rel=1e-5)
    for name in ("cov", "bpp"):
        np.testing.assert_allclose(got[name], np.asarray(stored[name])[window, window], atol=2e-3)
    np.testing.assert_allclose(got["profile"], np.asarray(stored["profile"])[window], atol=2e-3)


def test_the_query_alone_has_no_covariance(profile_store):
    store = open_store(profile_store)
    spec = next(iter(store.specs.values()))
    entry = store.ids()[0]
    codes = store.read_msa(entry)
    got = subsampled_features(codes, store.read_features(entry, spec.key), spec, 1, 0, slice(0, 20))
    assert not np.any(got["cov"])
    np.testing.assert_array_equal(got["profile"], np.eye(spec.q, dtype=np.float32)[codes[0, :20]])
    assert float(got["neff"]) == pytest.approx(1 / math.sqrt(codes.shape[1]))


def test_depth_draws():
    rng = random.Random(0)
    draws = [draw_depth(rng, 5000, 0.5) for _ in range(6000)]
    cut = [d for d in draws if d]
    assert 0.46 < len(cut) / len(draws) < 0.54
    assert 0.29 < cut.count(1) / len(cut) < 0.38
    assert max(cut) <= DEPTH_SAMPLING_MAX and min(cut) >= 1
    assert all(draw_depth(rng, 1, 1.0) == 0 for _ in range(20))  # a single sequence is never cut
    assert {draw_depth(rng, 2, 1.0) for _ in range(50)} == {1}
    assert all(1 <= draw_depth(rng, 3, 1.0) <= 2 for _ in range(50))


def test_sampler_keys_are_a_function_of_seed_and_epoch():
    lengths, depths = [40, 150, 90, 60], [300, 1, 20, 2]

    def epoch(e: int) -> list:
        s = LengthBatchSampler(lengths, crop=64, seed=3, depths=depths, depth_sampling=0.7)
        s.set_epoch(e)
        return [k for batch in s for k in batch]

    first = epoch(5)
    assert first == epoch(5) and first != epoch(6)
    assert all(len(k) == 5 and k[2] == min(lengths[k[0]], 64) for k in first)
    assert all(k[3] == 0 for k in first if depths[k[0]] == 1)
    with pytest.raises(TprnaError, match="depth"):
        LengthBatchSampler(lengths, depth_sampling=0.5)


def test_dataset_item_on_a_cut_alignment(profile_store):
    dataset = StoreDataset(profile_store)
    index = max(range(len(dataset)), key=lambda i: dataset.depths[i])
    full = dataset[(index, 2, 20, 0, 0)]
    alone = dataset[(index, 2, 20, 1, 0)]
    assert full["features"].shape == alone["features"].shape == (dataset.spec.channels, 20, 20)
    assert alone["neff"] < full["neff"]
    assert np.array_equal(full["contacts"].numpy(), alone["contacts"].numpy())
    # the bpp channel (after the 25 covariance channels) is the query's, whatever the depth
    assert np.array_equal(full["features"][25].numpy(), alone["features"][25].numpy())


def test_feature_sets_that_cannot_be_recomputed_are_refused(tmp_path):
    manifest = write_example_dataset(tmp_path / "data", n_families=2, lengths=(20, 24), depths=(5, 8))
    store = tmp_path / "c.zarr"
    assert not build_store(store, items_from_manifest(manifest),
                           FeatureSpec(feature_set="cov+ss+profile+coupling"), progress=False).failed
    with pytest.raises(TprnaError, match="alifold"):
        StoreDataset(store).check_depth_sampling()


def test_training_with_depth_sampling(profile_store, tmp_path):
    ckpt, record = train_one_epoch(profile_store, tmp_path / "run", depth_sampling=0.5)
    assert ckpt["train_config"]["depth_sampling"] == 0.5
    assert record["epoch"] == 0


def test_training_keeps_torchs_thread_count_once_numba_runs():
    """numba's pool launch resets the process's OpenMP threads (torch's too); training
    launches it first and puts torch's count back.  Fresh processes: the pool must not be
    running yet.  Without the fix the count jumps to every core (the control)."""
    import os
    import subprocess
    import sys

    def threads_after_weights(fix: bool) -> int:
        code = f"""
import numpy as np, torch
torch.set_num_threads(1)
assert torch.get_num_threads() == 1  # torch's pool is up before numba's, as in training
from tprna.train import keep_torch_threads_past_numba
if {fix}:
    keep_torch_threads_past_numba()
from tprna import feature_kernels
rows = np.random.default_rng(0).integers(0, 5, (60, 160)).astype(np.uint8)
feature_kernels.neighbour_counts(rows, np.ones(60), 120, 1)
print(torch.get_num_threads())
"""
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        return int(out.split()[-1])

    assert threads_after_weights(fix=True) == 1
    if (os.cpu_count() or 1) > 1:
        assert threads_after_weights(fix=False) > 1  # the bug this guards against is still numba's
