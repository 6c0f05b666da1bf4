"""Homolog queries in training: a homolog stands in for the query of its family's alignment —
its own base-pair probabilities, the alignment's other channels on the columns it covers,
the query's labels there.  The fold by hand, the dataset's input against the stored (or
depth-cut) query example, and the sampler's draws against the other sampling options."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import train_one_epoch

from tprna.alphabet import get_alphabet
from tprna.contract import rounded
from tprna.data import (HOMOLOG_ALONE, HOMOLOG_QUERY, LengthBatchSampler, StoreDataset, homolog_bpp,
                        homolog_columns)
from tprna.features import FeatureSpec, base_pair_probabilities
from tprna.msa import parse_msa

RNA = get_alphabet("rna")


def keys(epoch: int, **kw) -> list:
    s = LengthBatchSampler([40, 150, 90, 60, 70], crop=64, seed=3, depths=[300, 1, 20, 2, 50], **kw)
    s.set_epoch(epoch)
    return sorted(k for batch in s for k in batch)


def flagged(drawn: list, flag: int) -> set[int]:
    return {k[0] for k in drawn if len(k) >= 6 and k[5] == flag}


def test_homolog_bpp_is_its_own_fold_on_the_columns_it_covers():
    spec = FeatureSpec(feature_set="cov+ss+profile")
    codes = parse_msa(">q\nGGGAAACCCUUU\n>h\nGGC-AACCGUUA\n", "fasta").codes
    got = homolog_bpp(codes, 1, np.array([0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11]), spec)
    own = base_pair_probabilities("GGCAACCGUUA")  # the homolog's letters, its deletion skipped
    assert got.shape == (12, 12) and got.dtype == np.float32
    assert not got[3].any() and not got[:, 3].any()
    np.testing.assert_array_equal(np.delete(np.delete(got, 3, 0), 3, 1), rounded("bpp", own, "float16"))
    assert own.max() > 0.1  # a real fold, not an empty map


def test_homolog_columns_by_hand():
    spec = FeatureSpec(feature_set="cov+ss")
    # 18 of the query's 20 columns covered (0.9), 16 identical (< 0.9): the only eligible row
    codes = parse_msa(">q\nGGGAAACCCUUUAGGCUAGC\n>h\nAGG-AGCCCUUU-GGCUAGC\n", "fasta").codes
    row, present, inside = homolog_columns(codes, spec, np.random.default_rng(0), slice(2, 14))
    assert row == 1
    assert present.tolist() == [c for c in range(20) if c not in (3, 12)]  # both have a letter
    assert inside.tolist() == [0, 2, 3, 4, 5, 6, 7, 8, 9, 11]  # the window [2, 14) without 3 and 12
    assert homolog_columns(codes[:1], spec, np.random.default_rng(0), slice(0, 20)) is None
    assert homolog_columns(codes, spec, np.random.default_rng(0), slice(3, 4)) is None  # nothing covered


def test_sampler_draws_homolog_queries_for_examples_on_alignments_only():
    drawn = keys(4, homolog_query=1.0)
    assert drawn == keys(4, homolog_query=1.0) and drawn != keys(5, homolog_query=1.0)
    assert flagged(drawn, HOMOLOG_QUERY) == {0, 2, 3, 4}  # every entry with depth > 1
    assert all(len(k) == 3 for k in keys(4, homolog_query=0.0))
    # a depth cut keeps its depth and row seed; one cut to the query alone is never given a homolog
    cut, both = keys(2, depth_sampling=1.0), keys(2, depth_sampling=1.0, homolog_query=1.0)
    assert [k[:5] for k in both] == [k[:5] for k in cut]
    assert all((len(k) == 6 and k[5] == HOMOLOG_QUERY) == (k[0] != 1 and k[3] != 1) for k in both), both
    # a homolog alone stays alone; thermodynamics dropout passes homolog queries over
    alone = keys(4, homolog_sampling=1.0, homolog_query=1.0)
    assert flagged(alone, HOMOLOG_ALONE) == {0, 2, 3, 4} and not flagged(alone, HOMOLOG_QUERY)
    mixed = keys(4, homolog_query=1.0, bpp_dropout=1.0)
    assert not [k for k in mixed if len(k) == 7 and k[6] == 1 and k[5] == HOMOLOG_QUERY]
    # off, every other draw is what it was without the option
    plain = keys(4, depth_sampling=0.7, homolog_sampling=0.3, bpp_dropout=0.4)
    assert plain == keys(4, depth_sampling=0.7, homolog_sampling=0.3, bpp_dropout=0.4, homolog_query=0.0)
    assert 0 < len(flagged(keys(4, homolog_query=0.5) + keys(5, homolog_query=0.5), HOMOLOG_QUERY))
    # at seed 0 the numeric streams all start from the epoch: homolog queries must still draw on their own
    many = LengthBatchSampler([50] * 400, seed=0, depths=[30] * 400, homolog_sampling=0.5, homolog_query=0.5)
    drawn = [k for batch in many for k in batch]
    assert 80 < len(flagged(drawn, HOMOLOG_QUERY)) < 120  # half of the half not trained alone
    with pytest.raises(Exception, match="homolog query is a fraction"):
        LengthBatchSampler([40], depths=[3], homolog_query=1.5)


def test_dataset_item_is_the_alignment_with_the_homologs_fold(sampling_store):
    dataset = StoreDataset(sampling_store)
    spec = dataset.spec
    bpp = list(spec.components).index("bpp")
    assert bpp == 1  # one channel, after the 25 covariance ones
    index = max(range(len(dataset)), key=lambda i: dataset.depths[i])
    start, size = 3, 25
    window = slice(start, start + size)
    for depth, row_seed in ((0, 11), (5, 12)):  # the whole alignment, then a cut to 5 rows
        query = dataset[(index, start, size, depth, row_seed)]
        item = dataset[(index, start, size, depth, row_seed, HOMOLOG_QUERY)]
        codes = dataset._store.read_msa(dataset.ids[index])
        row, present, columns = homolog_columns(codes, spec, np.random.default_rng([row_seed, HOMOLOG_QUERY]),
                                                window)
        assert 0 < len(columns) <= size and item["features"].shape[1] == len(columns)
        cut = np.ix_(columns, columns)
        x, own = item["features"].numpy(), query["features"].numpy()
        # every channel but the fold is the query example's (whole or depth-cut) on the covered columns
        np.testing.assert_array_equal(np.delete(x, 25, 0), np.delete(own, 25, 0)[:, columns][:, :, columns])
        folded = base_pair_probabilities(RNA.decode(codes[row, present]))
        inside = np.searchsorted(present, columns + start)
        np.testing.assert_array_equal(x[25], rounded("bpp", folded, "float16")[np.ix_(inside, inside)])
        assert not np.array_equal(x[25], own[25][cut])  # a homolog's fold, not the query's
        np.testing.assert_array_equal(item["contacts"].numpy(), query["contacts"].numpy()[cut])
        np.testing.assert_array_equal(item["observed"].numpy(), query["observed"].numpy()[cut])
        # the alignment's depth (Neff per √L), not a single sequence's 1 / √L
        assert item["neff"] == query["neff"] > 1.5 / np.sqrt(dataset.lengths[index])


def test_training_with_homolog_queries_and_extending_a_run_with_them(sampling_store, tmp_path):
    from tprna.train import TrainConfig, load_checkpoint, train

    ckpt, record = train_one_epoch(sampling_store, tmp_path / "run", homolog_query=0.5)
    assert ckpt["train_config"]["homolog_query"] == 0.5
    assert record["homolog_query"] == 0.5
    # a curriculum: a run resumed with the option on keeps its first epoch's record without it
    common = dict(store=str(sampling_store), out=str(tmp_path / "plain"), split="train", model="mffnet30", crop=24,
                  workers=0, device="cpu")
    train(TrainConfig(epochs=1, **common))
    history = load_checkpoint(train(TrainConfig(epochs=2, resume=True, homolog_query=0.5, **common)))["history"]
    assert [h["homolog_query"] for h in history] == [0.0, 0.5]
