"""Batching, training, resume, transfer and evaluation on a small simulated store (always
available) and on the real coconet test families (when ../shared/data is present)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from tprna.data import LengthBatchSampler, StoreDataset, collate, length_batches
from tprna.errors import TprnaError
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


def test_resuming_a_run_logged_before_a_field_existed(sim_store, tmp_path):
    """A run whose earlier epochs were logged by an older tpRNA (without the sampling fields)
    resumes and keeps every epoch in metrics.csv, the missing fields left empty."""
    out = tmp_path / "old"
    common = dict(store=str(sim_store), out=str(out), model="mffnet30", workers=0, crop=24)
    train(TrainConfig(epochs=1, **common))
    ckpt = load_checkpoint(out / "last.ckpt")
    for record in ckpt["history"]:
        del record["depth_sampling"], record["homolog_sampling"]
    save_checkpoint(out / "last.ckpt", ckpt)
    train(TrainConfig(epochs=2, resume=True, **common))
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert rows[0]["homolog_sampling"] == "" and rows[1]["homolog_sampling"] == "0.0"


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(sim_store, tmp_path):
    common = dict(store=str(sim_store), model="mffnet30", lr=0.005, workers=0, seed=7)
    straight = train(TrainConfig(out=str(tmp_path / "a"), epochs=3, **common))
    train(TrainConfig(out=str(tmp_path / "b"), epochs=1, **common))  # "killed" after epoch 1
    resumed = train(TrainConfig(out=str(tmp_path / "b"), epochs=3, resume=True, **common))
    a, b = load_checkpoint(straight)["model"], load_checkpoint(resumed)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert len(load_checkpoint(resumed)["history"]) == 3


def test_weight_averaging_is_the_mean_of_the_epochs_weights(tiny_store, tmp_path):
    """--average-from 1 over 3 epochs: the model is the mean of the weights a plain run has
    after epochs 1 and 2 (saved one resume at a time), the live weights are that run's, a
    run killed mid-average and resumed ends the same, and BatchNorm's statistics come from
    one pass of the averaged weights over the last epoch's batches."""
    plain = tmp_path / "plain"
    snapshots = []
    for epochs in (1, 2, 3):
        train(tiny_config(tiny_store, plain, epochs=epochs, resume=epochs > 1))
        snapshots.append(load_checkpoint(plain / "last.ckpt")["model"])
    averaged = load_checkpoint(train(tiny_config(tiny_store, tmp_path / "avg", epochs=3, average_from=1)))
    assert averaged["averaged_epochs"] == 2 and averaged["history"][-1]["averaged_epochs"] == 2
    for name, live in snapshots[2].items():
        assert torch.equal(averaged["live_model"][name], live), name
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        assert torch.allclose(averaged["model"][name], (snapshots[1][name] + live) / 2, atol=1e-7), name
    stem_mean = next(n for n in averaged["model"] if n.endswith("running_mean"))
    counter = stem_mean.replace("running_mean", "num_batches_tracked")
    batches = int(snapshots[2][counter] - snapshots[1][counter])  # the last epoch's batches
    assert int(averaged["model"][counter]) == batches
    assert not torch.allclose(averaged["model"][stem_mean], (snapshots[1][stem_mean] + snapshots[2][stem_mean]) / 2)

    train(tiny_config(tiny_store, tmp_path / "killed", epochs=2, average_from=1))
    resumed = load_checkpoint(train(tiny_config(tiny_store, tmp_path / "killed", epochs=3, average_from=1,
                                                resume=True)))
    for name in averaged["model"]:
        assert torch.equal(resumed["model"][name], averaged["model"][name]), name
    with pytest.raises(TprnaError, match="average_from 3 averages no epoch of a 3-epoch run"):
        train(tiny_config(tiny_store, tmp_path / "none", epochs=3, average_from=3))
    assert not (tmp_path / "none").exists()


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


# ------------------------------------------------------------------ checkpoints, run folders, leakage

@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """Five short simulated RNAs (train 4 / test 1): an epoch takes a second or two."""
    return simulated_store(tmp_path_factory.mktemp("tiny"), n_families=5, seed=5, lengths=(20, 26),
                           depths=(5, 30))


@pytest.fixture(scope="module")
def tiny_run(tiny_store, tmp_path_factory):
    """One epoch of mffnet30 on the tiny store's train split (tests copy it to change it)."""
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(store=str(tiny_store), out=str(out), model="mffnet30", epochs=1, workers=0,
                          lr=0.005, seed=2))
    finally:
        torch.set_num_threads(before)
    return out


def tiny_config(store, out, **changes) -> TrainConfig:
    """tiny_run's configuration, with ``changes``."""
    return TrainConfig(**{**dict(store=str(store), out=str(out), model="mffnet30", epochs=1, workers=0,
                                 lr=0.005, seed=2), **changes})


def copy_run(run, tmp_path):
    import shutil

    return shutil.copytree(run, tmp_path / "run")


class _CreatesAFile:
    """Unpickling this calls open(marker, "w"): a harmless stand-in for any code a crafted
    checkpoint could run (os.system, ...)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_checkpoint(path, marker, legacy=False):
    import pickle

    payload = {"model_config": {"name": "mffnet30", "kwargs": {}}, "feature_spec": FeatureSpec().to_dict(),
               "model": {}, "payload": _CreatesAFile(marker)}
    if legacy:  # a bare pickle, as torch.save wrote before its zip format
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "pickle"])
def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path, tiny_store, legacy):
    from typer.testing import CliRunner

    from tprna.cli import app
    from tprna.errors import TprnaError

    marker = tmp_path / "code_ran"
    evil = crafted_checkpoint(tmp_path / "evil.ckpt", marker, legacy)
    with pytest.raises(TprnaError) as err:
        load_checkpoint(evil)
    text = str(err.value)
    assert text.startswith(str(evil)) and "\n" not in text and "refused" in text
    with pytest.raises(TprnaError, match="refused"):
        initial_model("mffnet30", FeatureSpec(), init_from=str(evil))
    runner = CliRunner()
    for args in (["export", "onnx", str(evil), "-o", str(tmp_path / "x.onnx")],
                 ["train", str(tiny_store), "--out", str(tmp_path / "run"), "--init-from", str(evil),
                  "--epochs", "1", "--workers", "0", "--model", "mffnet30"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "evil.ckpt" in result.output and "refused" in result.output
    assert not marker.exists()


def test_a_trained_checkpoint_is_plain_data_and_records_its_entries(tiny_store, tiny_run):
    from tprna.train import ids_digest

    ckpt = torch.load(tiny_run / "last.ckpt", map_location="cpu", weights_only=True)
    train_ids = StoreDataset(tiny_store, split="train").ids
    assert ckpt["train_ids"] == train_ids and len(train_ids) == 4
    assert ckpt["train_ids_sha256"] == ids_digest(train_ids)
    assert ckpt["train_config"]["model"] == "mffnet30" and ckpt["optimizer"]["state"]


def test_an_existing_run_is_refused_unless_resumed_or_overwritten(tiny_store, tiny_run, tmp_path):
    from typer.testing import CliRunner

    from tprna.cli import app
    from tprna.errors import TprnaError

    run = copy_run(tiny_run, tmp_path)
    before = (run / "last.ckpt").read_bytes()
    with pytest.raises(TprnaError) as err:
        train(tiny_config(tiny_store, run, model="resnet34"))
    text = str(err.value)
    assert text.startswith(str(run)) and "--resume" in text and "--overwrite" in text and "--out" in text
    result = CliRunner().invoke(app, ["train", str(tiny_store), "--out", str(run), "--epochs", "1",
                                      "--workers", "0"])
    assert result.exit_code == 1 and "Traceback" not in result.output and "--resume" in result.output
    assert (run / "last.ckpt").read_bytes() == before
    with pytest.raises(TprnaError, match="not both"):
        train(tiny_config(tiny_store, run, resume=True, overwrite=True))
    # --overwrite starts afresh in its place: another seed, a one-epoch history
    train(tiny_config(tiny_store, run, seed=9, overwrite=True))
    ckpt = load_checkpoint(run / "last.ckpt")
    assert ckpt["train_config"]["seed"] == 9 and len(ckpt["history"]) == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("changes, words", [
    ({"model": "resnet34"}, ["model: mffnet30 → resnet34"]),
    ({"loss": "wce", "lr": 0.01}, ["loss: tploss → wce", "lr: 0.005 → 0.01"]),
    ({"seed": 3, "crop": 20}, ["seed: 2 → 3", "crop: 160 → 20"]),
    ({"lr_milestones": (50,)}, ["lr_milestones: [100] → [50]"]),
    ({"long_weight": 3.0}, ["long_weight: 1.0 → 3.0"]),
    ({"average_from": 0}, ["average_from: None → 0"]),
    ({"exclude": ["sim000"]}, ["exclude: [] → ['sim000']", "training entries: 4 → 3 (left out: sim000)"]),
])
def test_resume_refuses_a_changed_configuration(tiny_store, tiny_run, tmp_path, changes, words):
    from tprna.errors import TprnaError

    run = copy_run(tiny_run, tmp_path)
    before = (run / "last.ckpt").read_bytes()
    with pytest.raises(TprnaError) as err:
        train(tiny_config(tiny_store, run, epochs=2, resume=True, **changes))
    text = str(err.value)
    assert text.startswith(str(run)) and "\n" not in text and "cannot resume" in text
    for w in words:
        assert w in text, text
    assert (run / "last.ckpt").read_bytes() == before


def test_a_bad_loss_option_is_refused_before_a_run_is_replaced(tiny_store, tiny_run, tmp_path):
    from tprna.errors import TprnaError

    run = copy_run(tiny_run, tmp_path)
    before = (run / "last.ckpt").read_bytes()
    with pytest.raises(TprnaError, match="long_weight must be > 0, got 0.0"):
        train(tiny_config(tiny_store, run, overwrite=True, long_weight=0.0))
    assert (run / "last.ckpt").read_bytes() == before and (run / "metrics.jsonl").is_file()


def test_resume_may_change_epochs_workers_and_device(tiny_store, tiny_run, tmp_path):
    """Nothing left to train at epochs=1: the resume is accepted and writes nothing."""
    run = copy_run(tiny_run, tmp_path)
    before = (run / "last.ckpt").read_bytes()
    path = train(tiny_config(tiny_store, run, resume=True, workers=1, device="cpu"))
    assert path == run / "last.ckpt" and path.read_bytes() == before
    from tprna.errors import TprnaError
    with pytest.raises(TprnaError, match="init_from: None → "):
        train(tiny_config(tiny_store, run, resume=True, init_from=str(run / "last.ckpt")))


def test_training_refuses_entries_of_a_test_split(tiny_store, tmp_path):
    import shutil

    from tprna.errors import TprnaError
    from tprna.store import open_store

    store = shutil.copytree(tiny_store, tmp_path / "leaky.zarr")
    with open_store(store, mode="a") as st:
        leaked = st.ids("train")[1]
        st.set_split("TS1", [leaked])
    with pytest.raises(TprnaError) as err:
        train(tiny_config(store, tmp_path / "run"))
    text = str(err.value)
    assert text.startswith(str(store)) and leaked in text and "'TS1'" in text and "--exclude" in text
    # left out, the check passes (and epochs=0 then stops before any training)
    with pytest.raises(TprnaError, match="nothing to train"):
        train(tiny_config(store, tmp_path / "run", exclude=[leaked], epochs=0))


def test_evaluation_refuses_the_entries_a_model_was_trained_on(tiny_store, tiny_run, tmp_path):
    from tprna.errors import TprnaError

    ckpt = tiny_run / "last.ckpt"
    warnings: list[str] = []
    on_train = load_evaluation_set(str(tiny_store), "train")
    with pytest.raises(TprnaError) as err:
        predict_with_checkpoint(ckpt, on_train, device="cpu", warn=warnings.append)
    text = str(err.value)
    assert text.startswith(str(ckpt)) and "4 of the evaluated entries" in text and "--allow-train-overlap" in text
    assert sorted(on_train.labels)[0] in text
    got = predict_with_checkpoint(ckpt, on_train, device="cpu", allow_train_overlap=True, warn=warnings.append)
    assert set(got) == set(on_train.labels)
    assert len(warnings) == 1 and "\n" not in warnings[0] and "training entries" in warnings[0]
    # the test split: nothing to report
    warnings.clear()
    predict_with_checkpoint(ckpt, load_evaluation_set(str(tiny_store), "test"), device="cpu", warn=warnings.append)
    assert warnings == []
    # a checkpoint from before the ids were recorded: its configuration's split, on this store…
    old = torch.load(ckpt, weights_only=True)
    del old["train_ids"], old["train_ids_sha256"]
    save_checkpoint(tmp_path / "old.ckpt", old)
    with pytest.raises(TprnaError, match="4 of the evaluated entries"):
        predict_with_checkpoint(tmp_path / "old.ckpt", on_train, device="cpu", warn=warnings.append)
    # … and trained elsewhere: one line saying it could not be checked
    old["train_store"] = "/elsewhere/store.zarr"
    save_checkpoint(tmp_path / "old.ckpt", old)
    predict_with_checkpoint(tmp_path / "old.ckpt", on_train, device="cpu", warn=warnings.append)
    assert len(warnings) == 1 and "records no training ids" in warnings[0]


def test_evaluate_command_refuses_training_entries_in_one_line(tiny_store, tiny_run, tmp_path):
    from typer.testing import CliRunner

    from tprna.cli import app

    base = ["evaluate", str(tiny_run / "last.ckpt"), str(tiny_store), "--split", "train", "--no-baselines",
            "--device", "cpu", "--out", str(tmp_path / "eval")]
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "training entries" in result.output and "--allow-train-overlap" in result.output
    result = CliRunner().invoke(app, base + ["--allow-train-overlap"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and (tmp_path / "eval" / "results.json").exists()


def test_weights_that_do_not_fit_the_config_are_a_user_error(tiny_store, tiny_run, tmp_path):
    from typer.testing import CliRunner

    from tprna.cli import app
    from tprna.errors import TprnaError

    ckpt = torch.load(tiny_run / "last.ckpt", weights_only=True)
    ckpt["model_config"]["kwargs"]["channels"] = 16  # the weights are 64 channels wide
    bad = tmp_path / "bad.ckpt"
    save_checkpoint(bad, ckpt)
    with pytest.raises(TprnaError, match="do not fit its model config") as err:
        predict_with_checkpoint(bad, load_evaluation_set(str(tiny_store), "test"), device="cpu")
    assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)
    result = CliRunner().invoke(app, ["evaluate", str(bad), str(tiny_store), "--no-baselines", "--device", "cpu",
                                      "--out", str(tmp_path / "eval")])
    assert result.exit_code == 1 and "Traceback" not in result.output and "bad.ckpt" in result.output


@pytest.mark.parametrize("field, value, words", [
    ("model_config", ["mffnet30"], "model_config"),
    ("model_config", {"name": "mffnet30", "kwargs": "wide"}, "model_config"),
    ("feature_spec", "cov+ss", "feature_spec"),
    ("feature_spec", {"molecule": "dna"}, "feature spec"),
    ("model", ["weights"], "'model'"),
    ("model", {"stem.conv.weight": 1.0}, "'model'"),
    ("history", "long", "history"),
    ("live_model", {"stem.conv.weight": torch.zeros(1)}, "'live_model' must hold the same tensors as 'model'"),
])
def test_a_malformed_init_from_is_a_user_error(tmp_path, field, value, words):
    from tprna.errors import TprnaError

    source = initial_model("mffnet30", FeatureSpec())
    payload = {"model_config": {"name": "mffnet30", "kwargs": {"in_channels": 26}},
               "model": source.state_dict(), "feature_spec": FeatureSpec().to_dict(), field: value}
    path = tmp_path / "pre.ckpt"
    save_checkpoint(path, payload)
    with pytest.raises(TprnaError, match=words) as err:
        initial_model("mffnet30", FeatureSpec(), init_from=str(path))
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
