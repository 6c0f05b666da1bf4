"""Thermodynamics dropout in training: examples still on an alignment lose their base-pair
probability channel, single-sequence examples keep it — the sampler's draws by hand and the
dataset's input against the stored features."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import train_one_epoch

from tprna.contract import model_input
from tprna.data import LengthBatchSampler, StoreDataset
from tprna.store import open_store


def keys(epoch: int, **kw) -> list:
    s = LengthBatchSampler([40, 150, 90, 60, 70], crop=64, seed=3, depths=[300, 1, 20, 2, 50], **kw)
    s.set_epoch(epoch)
    return sorted(k for batch in s for k in batch)


def dropped(drawn: list) -> set[int]:
    return {k[0] for k in drawn if len(k) == 7 and k[6] == 1}


def test_sampler_drops_bpp_of_alignment_examples_only():
    assert dropped(keys(4, bpp_dropout=1.0)) == {0, 2, 3, 4}  # every entry on ≥ 2 rows, never depth 1
    assert keys(4, bpp_dropout=1.0) == keys(4, bpp_dropout=1.0)
    # an example cut to the query alone, or trained as a homolog alone, keeps its channel
    for drawn in (keys(2, depth_sampling=1.0, bpp_dropout=1.0), keys(2, homolog_sampling=1.0, bpp_dropout=1.0)):
        for k in drawn:
            single = len(k) >= 4 and (k[3] == 1 or (len(k) >= 6 and k[5] == 1))
            assert (k[0] in dropped([k])) == (k[0] != 1 and not single), k
    # off, every other draw is what it was without the option; on, only the flag is added
    plain = keys(4, depth_sampling=0.7, homolog_sampling=0.3)
    assert plain == keys(4, depth_sampling=0.7, homolog_sampling=0.3, bpp_dropout=0.0)
    with_flag = keys(4, depth_sampling=0.7, homolog_sampling=0.3, bpp_dropout=0.5)
    assert [k[:3] for k in with_flag] == [k[:3] for k in plain]
    assert 0 < len(dropped(keys(4, bpp_dropout=0.5) + keys(5, bpp_dropout=0.5) + keys(6, bpp_dropout=0.5)))
    with pytest.raises(Exception, match="bpp dropout is a fraction"):
        LengthBatchSampler([40], depths=[3], bpp_dropout=1.5)


def test_dataset_zeroes_only_the_bpp_channel(sampling_store):
    dataset = StoreDataset(str(sampling_store), None, split="train")
    spec = dataset.spec
    entry = dataset.ids[0]
    store = open_store(str(sampling_store))
    stored = model_input(store.read_features(entry, spec.key), spec)
    store.close()
    size = dataset.lengths[0]
    kept = dataset[(0, 0, size, 0, 0, 0, 0)]["features"].numpy()
    cut = dataset[(0, 0, size, 0, 0, 0, 1)]["features"].numpy()
    bpp = list(spec.components).index("bpp")  # one channel, after the 25 covariance ones
    assert bpp == 1 and stored.shape[0] == 25 + 1 + 25
    np.testing.assert_array_equal(kept, stored)
    assert stored[25].any() and not cut[25].any()
    np.testing.assert_array_equal(np.delete(cut, 25, axis=0), np.delete(stored, 25, axis=0))
    # on a depth draw the covariance is recomputed and the channel still goes
    sub = dataset[(0, 0, size, 3, 7, 0, 1)]["features"].numpy()
    assert not sub[25].any() and sub[:25].any()


def test_training_with_bpp_dropout(sampling_store, tmp_path):
    ckpt, record = train_one_epoch(sampling_store, tmp_path / "run", bpp_dropout=0.5)
    assert ckpt["train_config"]["bpp_dropout"] == 0.5
    assert record["bpp_dropout"] == 0.5
