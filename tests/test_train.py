"""Batching, training, resume, transfer and evaluation on a small simulated store (always
available) and on the real coconet test families (when ../shared/data is present)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from tprna.data import LengthBatchSampler, StoreDataset, collate, length_batches
from tprna.evaluate import (baseline_maps, coevolution_map, load_evaluation_set, peer_maps,
                            predict_with_checkpoint, read_pair_scores, score_maps)
from tprna.features import FeatureSpec
from tprna.losses import pair_mask
from tprna.store import build_store, items_from_manifest
from tprna.train import TrainConfig, initial_model, load_checkpoint, save_checkpoint, train

from helpers import simulated_store


@pytest.fixture(scope="module")
def sim_store(tmp_path_factory):
    return simulated_store(tmp_path_factory.mktemp("sim"), n_families=8, seed=3, lengths=(30, 60),
                           depths=(5, 120))


def test_length_batches_reproduce_the_paper_and_cover_everything():
    lengths = [90, 85, 120, 110, 160, 170, 80]
    batches = length_batches(lengths)  # budget 3·100²
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) ** 2 <= 30000 or len(b) == 1
    sizes = {max(lengths[i] for i in b): len(b) for b in batches}
    assert sizes == {90: 3, 120: 2, 160: 1, 170: 1}


def test_sampler_is_seeded_per_epoch_and_shards_ranks():
    lengths = list(np.random.default_rng(0).integers(20, 200, size=50))
    a, b = LengthBatchSampler(lengths, seed=1), LengthBatchSampler(lengths, seed=1)
    a.set_epoch(3), b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    shards = [list(LengthBatchSampler(lengths, seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1])
    seen = {i for shard in shards for batch in shard for i in batch}
    assert seen == set(range(50))


def test_collate_pads_and_masks(sim_store):
    ds = StoreDataset(sim_store, split="train")
    items = [ds[0], ds[1]]
    batch = collate(items)
    longest = max(it["features"].shape[-1] for it in items)
    assert batch["features"].shape == (2, 25, longest, longest)
    for b, it in enumerate(items):
        n = it["features"].shape[-1]
        assert batch["mask"][b].sum() == n
        assert torch.equal(batch["features"][b, :, :n, :n], it["features"])
        assert batch["features"][b, :, n:, :].abs().sum() == 0
        assert not batch["observed"][b, n:, :].any()


def test_training_lowers_the_loss_and_logs(sim_store, tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(store=str(sim_store), out=str(out), model="mffnet30", epochs=4, lr=0.01, workers=0))
    history = load_checkpoint(out / "last.ckpt")["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 4 and float(rows[-1]["loss"]) == pytest.approx(history[-1]["loss"])


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(sim_store, tmp_path):
    common = dict(store=str(sim_store), model="mffnet30", lr=0.005, workers=0, seed=7)
    straight = train(TrainConfig(out=str(tmp_path / "a"), epochs=3, **common))
    train(TrainConfig(out=str(tmp_path / "b"), epochs=1, **common))  # "killed" after epoch 1
    resumed = train(TrainConfig(out=str(tmp_path / "b"), epochs=3, resume=True, **common))
    a, b = load_checkpoint(straight)["model"], load_checkpoint(resumed)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert len(load_checkpoint(resumed)["history"]) == 3


def test_checkpoint_carries_config_and_spec(sim_store, tmp_path):
    ckpt = load_checkpoint(train(TrainConfig(store=str(sim_store), out=str(tmp_path), model="resnet34",
                                             epochs=1, workers=0)))
    assert ckpt["model_config"]["name"] == "resnet34"
    assert FeatureSpec.from_dict(ckpt["feature_spec"]) == FeatureSpec(feature_set="cov")


def test_transfer_trunk_arrives_unchanged(tmp_path):
    protein = FeatureSpec(molecule="protein", feature_set="cov")
    source = initial_model("mffnet30", protein)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))  # "pretrained": anything but the initialisation
    save_checkpoint(tmp_path / "protein.ckpt", {"model_config": {"name": "mffnet30", "kwargs": {"in_channels": 441}},
                                               "model": source.state_dict(), "feature_spec": protein.to_dict()})
    rna = initial_model("mffnet30", FeatureSpec(), init_from=str(tmp_path / "protein.ckpt"))
    src, dst = source.state_dict(), rna.state_dict()
    assert dst["stem.conv.weight"].shape[1] == 26 and src["stem.conv.weight"].shape[1] == 441
    trunk = [k for k in dst if not k.startswith("stem.")]
    assert len(trunk) > 50
    for key in trunk:
        assert torch.equal(src[key], dst[key]), key
    from tprna.errors import TprnaError
    with pytest.raises(TprnaError, match="trunks differ"):
        initial_model("resnet34", FeatureSpec(), init_from=str(tmp_path / "protein.ckpt"))


def test_evaluation_of_checkpoint_and_baselines(sim_store, tmp_path):
    ckpt = train(TrainConfig(store=str(sim_store), out=str(tmp_path), model="mffnet30", epochs=2, workers=0))
    ev = load_evaluation_set(str(sim_store), "test")
    pred = predict_with_checkpoint(ckpt, ev, device="cpu")
    assert set(pred) == set(ev.labels)
    for entry_id, prob in pred.items():
        assert prob.shape == ev.labels[entry_id].contacts.shape
        np.testing.assert_array_equal(prob, prob.T)
    maps = baseline_maps(ev)
    assert set(maps) == {"APC (covariance)", "APC (precision)", "Thermodynamics (bpp)"}
    scored = score_maps(maps["APC (covariance)"], ev.labels)
    assert scored["summary"]["all"]["n"] == len(ev.labels)


def test_coevolution_map_ranks_a_coupled_pair_first():
    cov = np.zeros((8, 8, 5, 5))
    cov[2, 6, :4, :4] = cov[6, 2, :4, :4] = 0.2 * np.eye(4)
    cov[1, 3, 4, 4] = cov[3, 1, 4, 4] = 5.0  # gap-gap covariance is left out of the score
    score = coevolution_map(cov)
    i, j = np.unravel_index(np.argmax(score), score.shape)
    assert {i, j} == {2, 6}


def test_pair_score_files(tmp_path):
    p = tmp_path / "X_method.txt"
    p.write_text("# comment\n1 3 0.5\n2 4 -1.0\n")
    s = read_pair_scores(p, 4)
    assert s[0, 2] == s[2, 0] == 0.5 and s[1, 3] == -1.0 and s[0, 1] == -np.inf
    from tprna.errors import TprnaError
    p.write_text("1 9 0.5\n")
    with pytest.raises(TprnaError, match="X_method.txt: line 1"):
        read_pair_scores(p, 4)


def test_mask_excludes_short_range_padding_and_unobserved():
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    observed = torch.ones(1, 10, 10, dtype=torch.bool)
    observed[0, 0, 7] = False
    valid = pair_mask(mask, observed)
    assert valid[0, 0, 6] and valid[0, 1, 7] and not valid[0, 0, 7] and not valid[0, 0, 5]
    assert not valid[0, :, 8:].any()


# ------------------------------------------------------------------ real data

@pytest.fixture(scope="module")
def coconet_test_store(tmp_path_factory, shared_data):
    store = tmp_path_factory.mktemp("coconet") / "test.zarr"
    items = [i for i in items_from_manifest(shared_data / "coconet/manifest.csv") if i.split == "test"]
    report = build_store(store, items, FeatureSpec(), jobs=2, progress=False)
    assert not report.failed and len(items) == 14
    return store


@pytest.mark.shared
def test_published_figures_reproduce_on_the_14_test_families(coconet_test_store, shared_data):
    """The figures quoted in the issues and the data README, scored by our labels, features
    and metrics: CoCoNet 7x7 top-L/5 long 0.62 and top-L/10 0.68; thermodynamics alone
    0.645 / 0.768 / top-L 0.359; APC 0.416 / 0.519 / 0.202."""
    ev = load_evaluation_set(str(coconet_test_store), "test")
    assert len(ev.labels) == 14
    lengths = {i: lab.contacts.shape[0] for i, lab in ev.labels.items()}
    results = {name: score_maps(m, ev.labels) for name, m in baseline_maps(ev).items()}
    results.update({name: score_maps(m, ev.labels)
                    for name, m in peer_maps(shared_data / "coconet/peer_predictions", lengths).items()})
    long = lambda name, k: results[name]["summary"]["all"]["precision"][("long", k)]
    assert results["CoCoNet (7x7)"]["summary"]["all"]["n"] == 14
    assert long("CoCoNet (7x7)", "L/5") == pytest.approx(0.621, abs=0.01)
    assert long("CoCoNet (7x7)", "L/10") == pytest.approx(0.676, abs=0.01)
    assert long("CoCoNet (7x7)", "L") == pytest.approx(0.439, abs=0.01)
    assert long("Thermodynamics (bpp)", "L/5") == pytest.approx(0.645, abs=0.01)
    assert long("Thermodynamics (bpp)", "L/10") == pytest.approx(0.768, abs=0.01)
    assert long("Thermodynamics (bpp)", "L") == pytest.approx(0.359, abs=0.01)
    assert long("APC (covariance)", "L/5") == pytest.approx(0.416, abs=0.02)
    assert long("APC (covariance)", "L/10") == pytest.approx(0.519, abs=0.02)
    assert long("APC (covariance)", "L") == pytest.approx(0.202, abs=0.02)


def test_crop_windows_are_seeded_and_inside_the_rna(sim_store):
    ds = StoreDataset(sim_store, split="train")
    sampler = LengthBatchSampler(ds.lengths, seed=2, crop=35)
    sampler.set_epoch(1)
    keys = [k for batch in sampler for k in batch]
    assert sorted(k[0] for k in keys) == list(range(len(ds)))
    for index, start, size in keys:
        assert size == min(ds.lengths[index], 35) and 0 <= start <= ds.lengths[index] - size
    assert keys == [k for batch in sampler for k in batch]  # same epoch, same windows
    index, start, size = next(k for k in keys if ds.lengths[k[0]] > 35)
    full, window = ds[index], ds[(index, start, size)]
    assert window["features"].shape[-1] == 35
    s = slice(start, start + size)
    assert torch.equal(window["features"], full["features"][:, s, s])
    assert torch.equal(window["contacts"], full["contacts"][s, s])


@pytest.mark.shared
def test_a_few_epochs_on_real_families_lower_the_loss(shared_data, tmp_path):
    """Training on the four shortest real coconet training families (Rfam alignments, PDB
    labels) lowers tpLoss well below where it started."""
    from tprna.msa import read_msa
    items = [i for i in items_from_manifest(shared_data / "coconet/manifest.csv") if i.split == "train"]
    items = sorted(items, key=lambda i: read_msa(i.msa).length)[:4]
    store = tmp_path / "real.zarr"
    assert not build_store(store, items, FeatureSpec(feature_set="cov"), progress=False).failed
    out = tmp_path / "run"
    train(TrainConfig(store=str(store), out=str(out), model="mffnet30", epochs=5, lr=0.01,
                      workers=0, seed=0))
    losses = [h["loss"] for h in load_checkpoint(out / "last.ckpt")["history"]]
    assert losses[-1] < 0.6 * losses[0], losses
