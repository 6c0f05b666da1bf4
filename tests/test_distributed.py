"""Distributed training: ``torchrun --nproc_per_node 2 -m tprna train`` on the CPU (gloo).

What "the same global batch" means (tprna.train's module doc): both ranks build the same
epoch's batch list and rank r takes batches r, r+2, …; a step covers two consecutive
batches of the list.  A single process with ``--accumulate 2`` adds up exactly those two
batches per step, each with its own masked BatchNorm statistics and weighted by its share
of the step's valid pairs, as the ranks do.  So the two runs should take the same steps up
to floating-point summation order.  With one thread per process the two-term all-reduce
(a + b, halved, times the factor 2 folded into the loss weight) is exact, and the runs
come out bitwise equal here; the tolerances below (1e-5 relative on the loss, 1e-5 on the
weights) only leave room for kernels that sum in another order on other machines.  They
are far below what a wrong weighting gives: averaging the ranks' per-batch mean losses
(DDP's default) instead of weighting by valid pairs moves the epoch-1 loss by 2e-3 relative
and weights by up to 3.5e-2 on this data.  BatchNorm running statistics (eval mode only)
are rank 0's under DDP and are not compared (nor are those weight averaging recomputes:
each rank passes over its own batches).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import distributed as dist

from tprna.data import LengthBatchSampler, StoreDataset
from tprna.features import FeatureSpec
from tprna.train import (CHECKPOINT_NAME, initial_model, is_main_process, load_checkpoint,
                         model_from_checkpoint)

from helpers import simulated_store

REPO = Path(__file__).resolve().parents[1]

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """All six simulated RNAs in the train split (training refuses entries of a test split)."""
    from tprna.store import open_store

    store = simulated_store(tmp_path_factory.mktemp("dist"), "tiny.zarr", n_families=6, seed=3,
                            lengths=(30, 50), depths=(5, 60))
    with open_store(store, mode="a") as st:
        st.update_splits({"train": st.ids(), "test": []})
    return store


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _run(args: list[str], nproc: int | None = None) -> str:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
                if nproc else [sys.executable])
    proc = subprocess.run([*launcher, "-m", "tprna", "train", *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _train_args(store: Path, out: Path, *extra: str) -> list[str]:
    # 6 RNAs of length 41–48 in batches of 1 or 2 (4,000 pixels): 4 batches an epoch,
    # ranks with batches of different sizes and lengths at every step
    return [str(store), "--out", str(out), "--split", "train", "--model", "mffnet30",
            "--workers", "0", "--crop", "0", "--batch-pixels", "4000", "--lr", "0.005",
            "--seed", "1", "--device", "cpu", *extra]


def test_ranks_and_accumulation_cover_the_same_global_batches():
    lengths = [40, 90, 60, 120, 45, 70, 100, 55, 80, 65, 30]
    for world, acc in [(2, 1), (2, 2), (3, 1), (4, 2)]:
        single = LengthBatchSampler(lengths, 9000, seed=4, accumulate=world * acc)
        ranks = [LengthBatchSampler(lengths, 9000, seed=4, num_replicas=world, rank=r, accumulate=acc)
                 for r in range(world)]
        for s in (single, *ranks):
            s.set_epoch(2)
        single_batches, shards = list(single), [list(r) for r in ranks]
        assert len(single_batches) % (world * acc) == 0 and len(single) == len(single_batches)
        assert {len(s) for s in shards} == {len(single_batches) // world} == {len(ranks[0])}
        for step in range(len(single_batches) // (world * acc)):
            ref = single_batches[step * world * acc:(step + 1) * world * acc]
            got = [b for s in shards for b in s[step * acc:(step + 1) * acc]]
            assert sorted(ref) == sorted(got), (world, acc, step)
        assert {i for b in single_batches for i in b} == set(range(len(lengths)))
    one = LengthBatchSampler([50], num_replicas=4, rank=3)  # padding cycles the short list
    assert list(one) == [[0]] and len(one) == 1


def test_only_rank_zero_is_main(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert is_main_process()
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()


@needs_gloo
def test_torchrun_two_ranks_match_one_process_with_the_same_global_batch(tiny_store, tmp_path):
    ddp, ref = tmp_path / "ddp", tmp_path / "ref"
    assert len(StoreDataset(tiny_store, split="train")) == 6

    # with weight averaging from epoch 1, resumed in the middle of it
    first = _run(_train_args(tiny_store, ddp, "--epochs", "2", "--average-from", "1"), nproc=2)  # "killed"
    resumed = _run(_train_args(tiny_store, ddp, "--epochs", "3", "--average-from", "1", "--resume"), nproc=2)
    _run(_train_args(tiny_store, ref, "--epochs", "3", "--accumulate", "2", "--average-from", "1"))

    # rank 0 alone reports and writes: one line per epoch, one checkpoint, no temp files
    assert [line.split()[1] for line in first.splitlines() if line.startswith("epoch ")] == ["1/2", "2/2"]
    assert [line.split()[1] for line in resumed.splitlines() if line.startswith("epoch ")] == ["3/3"]
    assert resumed.count("checkpoint:") == 1
    assert sorted(p.name for p in ddp.iterdir()) == sorted([CHECKPOINT_NAME, "metrics.csv", "metrics.jsonl"])

    a, b = load_checkpoint(ddp / CHECKPOINT_NAME), load_checkpoint(ref / CHECKPOINT_NAME)
    assert a["world_size"] == 2 and b["world_size"] == 1 and a["epoch"] == b["epoch"] == 2
    assert [h["epoch"] for h in a["history"]] == [0, 1, 2]
    assert [h["examples"] for h in a["history"]] == [h["examples"] for h in b["history"]] == [6, 6, 6]
    losses_ddp = [h["loss"] for h in a["history"]]
    losses_ref = [h["loss"] for h in b["history"]]
    assert losses_ddp == pytest.approx(losses_ref, rel=1e-5)
    assert losses_ddp[-1] < losses_ddp[0]
    assert len((ddp / "metrics.jsonl").read_text().splitlines()) == 3

    params = {name for name, _ in model_from_checkpoint(a).named_parameters()}
    assert a["averaged_epochs"] == b["averaged_epochs"] == 2
    for key in params:  # the averaged weights and the optimiser's own
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-5, msg=key)
        torch.testing.assert_close(a["live_model"][key], b["live_model"][key], rtol=1e-5, atol=1e-5, msg=key)
    for i, state in a["optimizer"]["state"].items():
        for k, value in state.items():
            torch.testing.assert_close(value, b["optimizer"]["state"][i][k], rtol=1e-5, atol=1e-5)


@needs_gloo
def test_torchrun_trains_without_the_aux_head_for_wce(tiny_store, tmp_path):
    """ce/wce leave the auxiliary head out of the forward; DDP must not wait for its
    gradients (it is excluded from synchronisation) and it stays at its initial value."""
    out = tmp_path / "wce"
    _run(_train_args(tiny_store, out, "--epochs", "1", "--loss", "wce"), nproc=2)
    ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    torch.manual_seed(1)  # the run's seed: the same initial model
    init = initial_model("mffnet30", FeatureSpec.from_dict(ckpt["feature_spec"])).state_dict()
    assert torch.equal(ckpt["model"]["aux_head.conv.weight"], init["aux_head.conv.weight"])
    assert not torch.equal(ckpt["model"]["head.conv.weight"], init["head.conv.weight"])
    assert len(ckpt["history"]) == 1 and ckpt["world_size"] == 2
