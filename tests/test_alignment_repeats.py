"""Alignment repeats in training: each entry on an alignment of ≥ 2 rows several times an
epoch, each copy drawn on its own, single sequences once — indices by hand, the sampler's
draws per copy, and a training epoch's examples and recorded ids."""
from __future__ import annotations

from collections import Counter

import pytest
from helpers import train_one_epoch

from tprna.data import LengthBatchSampler, repeated_alignments
from tprna.errors import TprnaError
from tprna.train import TrainConfig, train


def test_repeated_alignments_by_hand():
    depths = [300, 1, 20, 2, 1]
    assert repeated_alignments(depths, 3) == [0, 0, 0, 1, 2, 2, 2, 3, 3, 3, 4]
    assert repeated_alignments(depths, 1) == [0, 1, 2, 3, 4]


def test_copies_are_drawn_apart():
    lengths, depths = [150, 40, 90], [300, 1, 20]
    order = repeated_alignments(depths, 2)  # items 0,1 are entry 0; 3,4 entry 2
    sampler = LengthBatchSampler([lengths[i] for i in order], crop=64, seed=5,
                                 depths=[depths[i] for i in order], depth_sampling=1.0)
    differ = 0
    for epoch in range(6):
        sampler.set_epoch(epoch)
        keys = {k[0]: k[1:] for batch in sampler for k in batch}
        assert sorted(keys) == list(range(len(order)))  # every copy, once an epoch
        differ += keys[0] != keys[1]  # crop start and depth draw of the two copies of entry 0
    assert differ >= 5  # equal only by chance (a 150-nt RNA has 87 windows of 64)


def test_training_with_alignment_repeats(sampling_store, tmp_path):
    plain, plain_record = train_one_epoch(sampling_store, tmp_path / "plain")
    ckpt, record = train_one_epoch(sampling_store, tmp_path / "twice", alignment_repeats=2, depth_sampling=0.5)
    assert ckpt["train_config"]["alignment_repeats"] == 2 and record["alignment_repeats"] == 2
    assert plain_record["alignment_repeats"] == 1
    # every stored family is an alignment: each trains twice an epoch, recorded with its multiplicity
    assert Counter(ckpt["train_ids"]) == {entry: 2 for entry in plain["train_ids"]}
    assert record["examples"] == 2 * plain_record["examples"]
    # the count shapes the run: a resume with another is refused, naming it
    resumed = TrainConfig(**{**ckpt["train_config"], "epochs": 2, "resume": True, "alignment_repeats": 1})
    with pytest.raises(TprnaError, match="cannot resume.*alignment_repeats: 2 → 1"):
        train(resumed)
    with pytest.raises(TprnaError, match="alignment_repeats is a count >= 1, got 0"):
        train_one_epoch(sampling_store, tmp_path / "none", alignment_repeats=0)
    assert not (tmp_path / "none").exists()  # refused before the run's folder is made
