"""Training: Adam with the paper's step schedule, length-bucketed batches (random crops of
long RNAs, optional depth sampling of the alignments), per-epoch logs, checkpoints that
can rebuild the model and name its features, exact resume, transfer from a
protein-pretrained trunk, and data-parallel training under ``torchrun``.

A checkpoint (``torch.save`` dict, written atomically) carries: the model config and
weights, the feature spec it was trained on, the training store's resolved path
(``train_store``), the training configuration, the ids of the entries it was trained on
(``train_ids``, with their ``train_ids_sha256``), the number of processes
(``world_size``), the optimiser state, the epoch and the metric history — tensors and
plain Python data only, so
:func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``: a file that needs
any other Python object to unpickle (which could run code) is refused, never executed.

**Run folders.**  ``train`` refuses an ``out`` folder that already holds a run
(``last.ckpt``) unless told what to do with it: ``resume`` continues it, ``overwrite``
starts afresh in its place.  ``resume`` restarts from the last finished epoch: batches are
a function of (seed, epoch) and the model has no dropout, so a resumed run reproduces the
uninterrupted one.  It therefore refuses a configuration that differs from the
checkpoint's in anything that shapes the run (model, loss, its weights, learning-rate
schedule, seed, batching, crop, the data: store, split, ids, exclusions, the entries
themselves, the feature spec), printing each difference as ``field: old → new``.  What
may change on resume (:data:`RESUME_MAY_CHANGE`): ``epochs`` (to extend a run),
``workers``, ``device``, ``accumulate`` (with a note that the run then no longer
reproduces an uninterrupted one), ``out`` (a moved folder) and ``features`` (the name of
the spec; the spec itself must match), ``depth_sampling``, ``bpp_dropout``,
``homolog_query`` and ``homolog_sampling`` with its ``homolog_exclude`` (a curriculum: a
run extended with any of them; each epoch's record in the history says which it had).
``init_from`` only seeds a fresh model: on resume it is inherited from the checkpoint, and
another one is refused.

**Weight averaging.**  With ``average_from=E`` the run's model is the mean of the weights
after each epoch from E (0-based, like the milestones) to the last — stochastic weight
averaging over the low-learning-rate epochs, which evens out where the last minibatches
happened to leave the weights.  From epoch E on the checkpoint's ``model`` is that running
mean (what export, evaluation and ``init_from`` read) and ``live_model`` the optimiser's
own weights (what ``resume`` continues), with ``averaged_epochs`` the count.  BatchNorm's
running statistics are averaged with the weights, then recomputed for the averaged weights
after the last epoch by one pass over that epoch's batches without gradients (the mean
of their masked batch statistics; under ``torchrun`` rank 0's batches), since the mean of
the epochs' statistics is not the statistics of the mean weights.

**Leakage.**  Training refuses entries that are also in a test split of the store (a split
named ``test…`` or ``TS…``), naming them; leave them out with ``exclude``.

**Distributed training.**  Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment)
:func:`train` joins the process group itself — NCCL with one GPU per rank
(``cuda:LOCAL_RANK``), gloo on CPU — and wraps the model in DistributedDataParallel, e.g.
``torchrun --nproc_per_node 2 -m tprna train STORE --out RUN``.  What is matched:

* **The global batch.**  Every rank builds the same epoch's batch list (same seed) and
  takes every ``R``-th batch (:class:`~tprna.data.LengthBatchSampler`); an optimiser step
  covers ``R × accumulate`` consecutive batches of that list — the *global batch*.
* **The gradient.**  Each batch's loss is a mean over its valid pairs (weighted, with
  ``long_weight``); it is weighted by its share of the global batch's pair weights (one
  all-reduce of their sum per step), so the step's gradient is that of the mean over
  every valid pair of the global batch,
  whatever the ranks' batch sizes and lengths.  ``R`` ranks with ``accumulate=A`` and one
  process with ``accumulate=R·A`` therefore take the same steps, up to floating-point
  summation order (tests/test_distributed.py checks the loss curve and the weights).
* **BatchNorm** uses each batch's own (masked) statistics, as plain BatchNorm under DDP
  does — no SyncBatchNorm, and the same in the one-process accumulation: a global batch
  is never normalised as one padded tensor.  The running statistics (eval mode only) are
  rank 0's, broadcast to every rank at each forward (DDP's default).
* **The auxiliary head** of tpLoss is trained only with ``loss=tploss``; with ``ce`` or
  ``wce`` it never runs, so its parameters are frozen (``requires_grad=False``) before
  the model is wrapped and DDP waits for no gradient of theirs.
* **Logs and checkpoints** are written by rank 0 only (the others wait at a barrier);
  the epoch loss is the all-reduced mean over every rank's examples.  ``resume`` loads the
  checkpoint on every rank, so all continue from the same state (the run folder must be
  shared between nodes).
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import pickle
import random
import re
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from tprna.data import PAPER_PIXEL_BUDGET, LengthBatchSampler, StoreDataset, collate, repeated_alignments
from tprna.errors import TprnaError
from tprna.features import FeatureSpec
from tprna.losses import build_loss, pair_mask, pair_weights
from tprna.models import build_model, load_trunk, model_config
from tprna.models.contactnet import ModelConfig
from tprna.msa import fasta_records, read_text
from tprna.store import open_store, overlapping_splits
from tprna.store.atomic import atomic_output

__all__ = ["TrainConfig", "train", "initial_model", "load_checkpoint", "save_checkpoint",
           "model_from_checkpoint", "resolve_device", "is_main_process", "CHECKPOINT_NAME",
           "RESUME_MAY_CHANGE", "is_test_split", "ids_digest", "store_key_of"]

CHECKPOINT_NAME = "last.ckpt"
# TrainConfig fields a resumed run may change (see the module doc); every other field must
# match the checkpoint's.  resume/overwrite say what to do with the folder, not how to train.
RESUME_MAY_CHANGE = frozenset({"epochs", "workers", "device", "accumulate", "out", "features",
                               "resume", "overwrite", "init_from", "depth_sampling",
                               "homolog_sampling", "homolog_exclude", "bpp_dropout", "homolog_query"})


@dataclass
class TrainConfig:
    store: str
    out: str
    split: str | None = "train"
    features: str | None = None  # spec key or feature-set name; None = the store's only spec
    model: str = "mffnet36"
    loss: str = "tploss"
    alpha: float = 0.2
    beta: float = 0.1
    long_weight: float = 1.0  # a long-range pair's weight in the loss's mean (losses.pair_weights)
    epochs: int = 200
    lr: float = 0.01
    lr_milestones: tuple[int, ...] = (100,)  # the paper: 0.01 for epochs 0–100, then 0.001
    lr_gamma: float = 0.1
    pixel_budget: int = PAPER_PIXEL_BUDGET
    max_length: int | None = None
    crop: int | None = 160  # train on random windows of at most this length (memory, speed)
    depth_sampling: float = 0.0  # fraction of alignment examples cut to a random depth each epoch
    homolog_sampling: float = 0.0  # fraction of alignment examples trained as a homolog alone each epoch
    homolog_exclude: str | None = None  # FASTA: homologs ≥ 70 % identical to one of these never train
    bpp_dropout: float = 0.0  # fraction of examples on ≥ 2 rows trained without the bpp channel each epoch
    homolog_query: float = 0.0  # fraction of examples on ≥ 2 rows trained with a homolog as the query each epoch
    alignment_repeats: int = 1  # each entry on ≥ 2 rows this many times an epoch (data.repeated_alignments)
    average_from: int | None = None  # the model is the mean of the weights after each epoch from this one
    seed: int = 0
    device: str = "auto"
    workers: int = 1
    init_from: str | None = None  # checkpoint whose trunk and heads seed this model
    resume: bool = False
    ids: list[str] | None = None  # train on these entries only (overrides split)
    exclude: list[str] = field(default_factory=list)
    accumulate: int = 1  # batches per rank added up per optimiser step (see the module doc)
    overwrite: bool = False  # replace a run already in ``out`` (without it, refused unless resume)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TprnaError(f"device {device!r} requested but no CUDA device is available")
    return torch.device(device)


def is_main_process() -> bool:
    """False on every torchrun rank but 0 (True outside torchrun): who prints and writes."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class _Ranks:
    world: int = 1
    rank: int = 0
    owned: bool = False  # this call started the process group (and ends it)

    @property
    def main(self) -> bool:
        return self.rank == 0


def _start_distributed(device: str) -> tuple[_Ranks, torch.device]:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 (or use one already started);
    the rank's device is ``cuda:LOCAL_RANK`` on GPU, else the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not dist.is_available() or (world <= 1 and not dist.is_initialized()):
        return _Ranks(), resolve_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device)
    if chosen.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise TprnaError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} "
                             "CUDA devices: start at most one process per GPU")
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    elif chosen.type != "cpu":
        raise TprnaError(f"distributed training runs on CUDA or the CPU, not {chosen}")
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return _Ranks(dist.get_world_size(), dist.get_rank(), owned), chosen


def save_checkpoint(path: Path, payload: dict) -> None:
    with atomic_output(path) as tmp:  # a kill mid-write never leaves a truncated checkpoint
        torch.save(_plain(payload), tmp)


def _plain(value):
    """``value`` with numpy scalars/arrays turned into Python numbers/tensors, so the
    checkpoint unpickles under ``weights_only=True`` (tensors and plain data only)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return value


def load_checkpoint(path: str | Path) -> dict:
    """A tpRNA checkpoint as a dict, read with ``weights_only=True``: unpickling may build
    tensors and plain Python data only, so a crafted file cannot run code.  Its structure
    (model config, feature spec, weights) is checked; every problem is a one-line
    :class:`TprnaError` naming the file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TprnaError("checkpoint not found", path) from None
    except IsADirectoryError:
        raise TprnaError("is a folder, not a checkpoint file", path) from None
    except pickle.UnpicklingError as e:
        what = _refused_global(e)
        raise TprnaError(f"refused to load: the file needs Python objects beyond tensors and plain data "
                         f"to unpickle{what}, which could run code; a tpRNA checkpoint never does. "
                         "Only load checkpoints you trust, written by 'tprna train'", path) from None
    except Exception as e:  # torch raises many types for a corrupt file
        raise TprnaError(f"not a readable tpRNA checkpoint ({type(e).__name__})", path) from None
    if not isinstance(ckpt, dict) or "model_config" not in ckpt or "feature_spec" not in ckpt:
        raise TprnaError("not a tpRNA checkpoint (no model config / feature spec)", path)
    _check_structure(ckpt, path)
    return ckpt


def _refused_global(err: Exception) -> str:
    """' (GLOBAL builtins.open)' from torch's weights-only refusal, when it names one."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    return f" ({found.group(1)})" if found else ""


def _check_structure(ckpt: dict, path: str | Path) -> None:
    """The fields every consumer reads, with the types it expects."""
    config = ckpt["model_config"]
    if not isinstance(config, dict) or not isinstance(config.get("name"), str) \
            or not isinstance(config.get("kwargs", {}), dict):
        raise TprnaError("malformed checkpoint: 'model_config' must be {'name': str, 'kwargs': dict}", path)
    if not isinstance(ckpt["feature_spec"], dict):
        raise TprnaError("malformed checkpoint: 'feature_spec' is not a mapping", path)
    try:
        FeatureSpec.from_dict(ckpt["feature_spec"])
    except TprnaError as e:
        raise TprnaError(f"malformed checkpoint: feature spec: {e}", path) from None
    except TypeError:
        raise TprnaError("malformed checkpoint: 'feature_spec' has fields of the wrong type", path) from None
    weights = ckpt.get("model")
    if not isinstance(weights, dict) or not weights \
            or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise TprnaError("malformed checkpoint: 'model' must map parameter names to tensors", path)
    live = ckpt.get("live_model")
    if live is not None and (not isinstance(live, dict) or set(live) != set(weights)
                             or not isinstance(ckpt.get("averaged_epochs"), int)):
        raise TprnaError("malformed checkpoint: 'live_model' must hold the same tensors as 'model', "
                         "with an integer 'averaged_epochs'", path)
    for key, kind in (("train_config", dict), ("history", list), ("epoch", int), ("train_ids", list),
                      ("optimizer", dict)):
        if key in ckpt and ckpt[key] is not None and not isinstance(ckpt[key], kind):
            raise TprnaError(f"malformed checkpoint: '{key}' is not a {kind.__name__}", path)


def model_from_checkpoint(ckpt: dict, source: str | Path | None = None) -> torch.nn.Module:
    """The model a checkpoint describes, with its weights; a :class:`TprnaError` (naming
    ``source``) when the weights do not fit the model config."""
    config = ModelConfig.from_dict(ckpt["model_config"])
    try:
        model = config.build()
    except TprnaError as e:
        raise TprnaError(f"the checkpoint's model config does not build: {e}", source) from None
    except (TypeError, ValueError) as e:
        raise TprnaError(f"the checkpoint's model config does not build ({type(e).__name__}: {e})",
                         source) from None
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
        first = str(e).strip().splitlines()
        detail = " ".join(first[1:3] if len(first) > 1 else first)[:300]
        raise TprnaError(f"the checkpoint's weights do not fit its model config "
                         f"({ckpt['model_config']['name']}): {detail}", source) from None
    return model


def initial_model(name: str, spec: FeatureSpec, init_from: str | None = None) -> torch.nn.Module:
    """A fresh model for ``spec``'s input channels; with ``init_from``, every trunk and head
    tensor comes from that checkpoint (e.g. protein-pretrained) and only the stem is new."""
    model = build_model(name, in_channels=spec.channels)
    if init_from:
        source = load_checkpoint(init_from)
        if source["model_config"]["name"] != name:
            raise TprnaError(f"pretrained model is {source['model_config']['name']}, not "
                             f"{name}: the trunks differ", init_from)
        try:
            load_trunk(model, source["model"])
        except TprnaError as e:
            raise TprnaError(str(e), init_from) from None
    return model


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _epoch_lr(config: TrainConfig, epoch: int) -> float:
    return config.lr * config.lr_gamma ** sum(epoch >= m for m in config.lr_milestones)


def train(config: TrainConfig, progress: Callable[[str], None] | None = None) -> Path:
    """Train (or resume) and return the path of the final checkpoint.  Under torchrun every
    rank calls this; only rank 0 writes and reports ``progress``."""
    if config.accumulate < 1:
        raise TprnaError(f"accumulate must be >= 1, got {config.accumulate}")
    ranks, device = _start_distributed(config.device)
    try:
        return _train(config, progress if ranks.main else None, ranks, device)
    finally:
        if ranks.owned:
            dist.destroy_process_group()


def _train(config: TrainConfig, progress: Callable[[str], None] | None, ranks: _Ranks,
           device: torch.device) -> Path:
    out = Path(config.out)
    ckpt_path = out / CHECKPOINT_NAME
    if config.resume and config.overwrite:
        raise TprnaError("give --resume (continue the run) or --overwrite (start afresh), not both", out)
    if out.exists() and not out.is_dir():
        raise TprnaError("--out must be a folder for the run, but a file of that name exists", out)
    previous = ckpt_path.exists()
    if previous and not (config.resume or config.overwrite):
        raise TprnaError(f"this folder already holds a training run ({CHECKPOINT_NAME}): continue it with "
                         "--resume, start afresh in its place with --overwrite, or choose another --out", out)
    # the loss's options are checked before anything is written (nor an --overwrite run removed)
    loss_fn = build_loss(config.loss, **({"alpha": config.alpha} if config.loss != "ce" else {}),
                         **({"beta": config.beta} if config.loss == "tploss" else {}),
                         long_weight=config.long_weight)
    if config.average_from is not None and not 0 <= config.average_from < config.epochs:
        raise TprnaError(f"average_from {config.average_from} averages no epoch of a {config.epochs}-epoch run "
                         f"(epochs count from 0 to {config.epochs - 1}, like the milestones)", out)
    if config.alignment_repeats < 1:
        raise TprnaError(f"alignment_repeats is a count >= 1, got {config.alignment_repeats}", out)
    out.mkdir(parents=True, exist_ok=True)
    _seed_everything(config.seed)

    dataset = StoreDataset(config.store, config.features, split=None if config.ids else config.split,
                           ids=config.ids, max_length=config.max_length)
    if config.exclude:
        excluded = set(config.exclude)
        keep = [i for i, entry in enumerate(dataset.ids) if entry not in excluded]
        if not keep:
            raise TprnaError("--exclude leaves no entry to train on", config.store)
        dataset.keep(keep)
    spec: FeatureSpec = dataset.spec
    if config.depth_sampling:
        dataset.check_depth_sampling()
    if config.homolog_sampling or config.homolog_query:
        _screen_homologs(dataset, config, progress)
    if config.alignment_repeats != 1:  # after screening: the copies share their entry's screened homologs
        dataset.keep(repeated_alignments(dataset.depths, config.alignment_repeats))
    if (config.depth_sampling or config.homolog_sampling or config.homolog_query) and config.workers == 0:
        keep_torch_threads_past_numba()  # features are recomputed in this process
    store_key = store_key_of(config.store)
    _refuse_test_entries(config.store, dataset.ids)

    start_epoch, history = 0, []
    averaged, averaged_epochs = None, 0  # the running mean of the weights (average_from)
    if config.resume and previous:
        ckpt = load_checkpoint(ckpt_path)
        if ckpt["feature_spec"] != spec.to_dict():
            raise TprnaError("the checkpoint to resume was trained on another feature spec", ckpt_path)
        config = _resumable(config, ckpt, store_key, dataset.ids, ckpt_path)
        # an averaging run goes on from the optimiser's weights; its model is their mean so far
        model = model_from_checkpoint({**ckpt, "model": ckpt.get("live_model", ckpt["model"])}, ckpt_path)
        if "live_model" in ckpt:
            averaged, averaged_epochs = ckpt["model"], ckpt["averaged_epochs"]
        start_epoch, history = ckpt["epoch"] + 1, ckpt["history"]
        before = ckpt.get("world_size", 1) * ckpt.get("train_config", {}).get("accumulate", 1)
        if progress and before != ranks.world * config.accumulate and start_epoch < config.epochs:
            progress(f"note: resuming with {ranks.world * config.accumulate} batches per step "
                     f"(was {before}): the run will not reproduce an uninterrupted one")
    else:
        ckpt = None
        if previous and ranks.main:  # --overwrite: the old run goes before the new one writes
            for name in (CHECKPOINT_NAME, "metrics.jsonl", "metrics.csv"):
                (out / name).unlink(missing_ok=True)
        model = initial_model(config.model, spec, config.init_from)
    model.to(device)
    if averaged is not None:
        averaged = {name: tensor.to(device) for name, tensor in averaged.items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=_epoch_lr(config, start_epoch))
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    needs_aux = config.loss == "tploss"  # ce/wce never run (nor train) the auxiliary head
    net = _wrap_ddp(model, device, needs_aux) if ranks.world > 1 else model

    sampler = LengthBatchSampler(dataset.lengths, config.pixel_budget, seed=config.seed, crop=config.crop,
                                 num_replicas=ranks.world, rank=ranks.rank, accumulate=config.accumulate,
                                 depths=dataset.depths, depth_sampling=config.depth_sampling,
                                 homolog_sampling=config.homolog_sampling, bpp_dropout=config.bpp_dropout,
                                 homolog_query=config.homolog_query)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                        num_workers=config.workers, persistent_workers=config.workers > 0)
    meta = {"model_config": model_config(model).to_dict(), "feature_spec": spec.to_dict(),
            "train_store": store_key, "train_config": _jsonable(asdict(config)),
            "train_ids": list(dataset.ids), "train_ids_sha256": ids_digest(dataset.ids),
            "world_size": ranks.world}

    for epoch in range(start_epoch, config.epochs):
        lr = _epoch_lr(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sampler.set_epoch(epoch)
        net.train()
        started, total, count = time.perf_counter(), 0.0, 0
        # The loader's batches in lists of ``accumulate``, one optimiser step each
        # (itertools.batched from Python 3.12).
        batches = iter(loader)
        for step in iter(lambda: list(islice(batches, config.accumulate)), []):
            inputs = []
            for batch in step:
                mask = batch["mask"].to(device)
                inputs.append((batch["features"].to(device, non_blocking=True), mask,
                               pair_mask(mask, batch["observed"].to(device)),
                               batch["contacts"].to(device), len(batch["ids"])))
            # each batch's loss is a (weighted) mean over its valid pairs: weight it by its
            # share of the global batch's pair weights (all ranks, all accumulated batches)
            pairs = [float(pair_weights(v, config.long_weight).sum()) for _, _, v, _, _ in inputs]
            global_pairs = _all_sum([float(sum(pairs))], device, ranks)[0]
            optimizer.zero_grad(set_to_none=True)
            for k, ((x, mask, valid, contacts, size), n) in enumerate(zip(inputs, pairs)):
                last = k == len(inputs) - 1  # DDP all-reduces the gradients at the last backward
                with net.no_sync() if ranks.world > 1 and not last else nullcontext():
                    loss = loss_fn(net(x, mask, aux=needs_aux), contacts, valid)
                    # DDP averages over ranks: the factor `world` turns that into a sum
                    (loss * (n * ranks.world / max(global_pairs, 1.0))).backward()
                total += float(loss.detach()) * size
                count += size
            optimizer.step()
        total, count = _all_sum([total, float(count)], device, ranks)
        record = {"epoch": epoch, "lr": lr, "loss": total / max(count, 1),
                  "seconds": round(time.perf_counter() - started, 3), "examples": int(count),
                  "depth_sampling": config.depth_sampling, "homolog_sampling": config.homolog_sampling,
                  "bpp_dropout": config.bpp_dropout, "homolog_query": config.homolog_query,
                  "alignment_repeats": config.alignment_repeats}
        history.append(record)
        weights = {"model": model.state_dict()}
        if config.average_from is not None and epoch >= config.average_from:
            averaged = _add_to_mean(averaged, model.state_dict(), averaged_epochs)
            averaged_epochs += 1
            record["averaged_epochs"] = averaged_epochs
            if epoch == config.epochs - 1:
                averaged = _refreshed_batchnorm(model, averaged, loader, device, needs_aux)
                record["seconds"] = round(time.perf_counter() - started, 3)  # the pass is the epoch's cost
            weights = {"model": averaged, "live_model": model.state_dict(), "averaged_epochs": averaged_epochs}
        if ranks.main:
            save_checkpoint(ckpt_path, {**meta, **weights, "optimizer": optimizer.state_dict(),
                                        "epoch": epoch, "history": history})
            _write_logs(out, history)  # from the checkpoint's history: a resume never duplicates
        if ranks.world > 1:
            # the checkpoint is complete before any rank goes on
            dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)
        if progress:
            progress(f"epoch {epoch + 1}/{config.epochs}  loss {record['loss']:.4f}  lr {lr:g}  "
                     f"{record['seconds']:.1f}s")
    if not ckpt_path.exists():
        raise TprnaError(f"nothing to train: epochs={config.epochs}", out)
    return ckpt_path


def _add_to_mean(mean: dict | None, weights: dict, count: int) -> dict:
    """The mean of ``count`` epochs' weights with ``weights`` added; integer buffers
    (BatchNorm's batch counters) are the latest epoch's."""
    if mean is None:
        return {name: tensor.detach().clone() for name, tensor in weights.items()}
    return {name: (mean[name] + (tensor.detach() - mean[name]) / (count + 1)
                   if tensor.is_floating_point() else tensor.detach().clone())
            for name, tensor in weights.items()}


def _refreshed_batchnorm(model: torch.nn.Module, mean: dict, loader: DataLoader, device: torch.device,
                         needs_aux: bool) -> dict:
    """``mean`` with every BatchNorm's running statistics recomputed for those weights: the
    cumulative mean of their (masked) batch statistics over one pass of ``loader``,
    without gradients, in a copy of ``model`` (left as it was)."""
    averaged = copy.deepcopy(model)
    averaged.load_state_dict(mean)
    norms = [m for m in averaged.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative mean over the pass, not an exponential one
    averaged.train()
    with torch.no_grad():
        for batch in loader:
            averaged(batch["features"].to(device), batch["mask"].to(device), aux=needs_aux)
    return averaged.state_dict()  # momentum is not part of it: the copy goes, the model keeps its own


def ids_digest(ids: Sequence[str]) -> str:
    """sha256 of the sorted ids, one per line: names a set of entries in a line."""
    return hashlib.sha256("".join(f"{i}\n" for i in sorted(ids)).encode()).hexdigest()


def is_test_split(name: str) -> bool:
    """A split that holds benchmark entries: ``test…`` or ``TS…`` (any case)."""
    return name.lower().startswith(("test", "ts"))


def _refuse_test_entries(store_path: str, ids: Sequence[str]) -> None:
    """Refuse to train on an entry that is also in a test split of the store."""
    with open_store(store_path) as store:
        tests = sorted(name for name in store.splits if is_test_split(name))
        shared_by = {name: overlapping_splits(store, list(ids), name) for name in tests}
    for name, shared in shared_by.items():
        if shared:
            raise TprnaError(f"{len(shared)} training entr{'y is' if len(shared) == 1 else 'ies are'} also in "
                             f"test split {name!r}: {_some(shared)}; take them out of the training split "
                             "or leave them out with --exclude FILE", store_path)


def _some(ids: Sequence[str], n: int = 5) -> str:
    more = f" and {len(ids) - n} more" if len(ids) > n else ""
    return ", ".join(map(str, ids[:n])) + more


def _resumable(config: TrainConfig, ckpt: dict, store_key: str, ids: Sequence[str],
               path: Path) -> TrainConfig:
    """``config`` if it may continue ``ckpt``'s run (see the module doc) — with the
    checkpoint's ``init_from`` — else a :class:`TprnaError` listing every difference."""
    old = ckpt.get("train_config") or {}
    changes = []
    if "init_from" in old:  # it seeded the run's first epoch; on resume it is the checkpoint's
        inherited = old["init_from"]
        if config.init_from is not None and (inherited is None or
                                             Path(config.init_from).resolve() != Path(inherited).resolve()):
            changes.append(f"init_from: {inherited} → {config.init_from}")
        config = replace(config, init_from=inherited)
    new = _jsonable(asdict(config))
    if ckpt["model_config"]["name"] != config.model:
        changes.append(f"model: {ckpt['model_config']['name']} → {config.model}")
    for key, value in new.items():
        if key in RESUME_MAY_CHANGE or key == "model" or key not in old or key == "store":
            continue
        same = (sorted(old[key] or []) == sorted(value or [])) if key == "exclude" else old[key] == value
        if not same:
            changes.append(f"{key}: {old[key]} → {value}")
    if ckpt.get("train_store") is not None and ckpt["train_store"] != store_key:
        changes.append(f"store: {ckpt['train_store']} → {store_key}")
    before = ckpt.get("train_ids")
    if before is not None and list(before) != list(ids):
        gone, added = sorted(set(before) - set(ids)), sorted(set(ids) - set(before))
        changes.append(f"training entries: {len(before)} → {len(ids)}"
                       + (f" (left out: {_some(gone, 3)})" if gone else "")
                       + (f" (new: {_some(added, 3)})" if added else ""))
    if changes:
        raise TprnaError(f"cannot resume: the run was trained otherwise — {'; '.join(changes)}. Resume with "
                         "the same options (only --epochs, --workers, --device and --accumulate may change), "
                         "or start another run with another --out (or --overwrite)", path)
    return config


def _wrap_ddp(model: torch.nn.Module, device: torch.device, needs_aux: bool) -> torch.nn.Module:
    if not needs_aux:
        # The aux head gets no gradient on any rank.  DDP reduces only the parameters that
        # require a gradient, so frozen it is neither waited for nor reduced.
        for name, param in model.named_parameters():
            if name.startswith("aux_head."):
                param.requires_grad_(False)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=False)


def _all_sum(values: list[float], device: torch.device, ranks: _Ranks) -> list[float]:
    """Sum ``values`` over the ranks (as float64); the values themselves on one process."""
    if ranks.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _screen_homologs(dataset: StoreDataset, config: TrainConfig, progress: Callable[[str], None] | None) -> None:
    """Homologs trained alone or as a query are training RNAs: leave out those too close to the chains in
    ``homolog_exclude`` (the validation and benchmark chains), and say what was done."""
    say = progress or (lambda line: None)
    if not config.homolog_exclude:
        say("homolog sampling: homologs not screened (no --homolog-exclude); a benchmark chain ≥ 70 % "
            "identical to one of them is no longer held out")
        return
    records = fasta_records(read_text(config.homolog_exclude), config.homolog_exclude)
    eligible, left_out = dataset.screen_homologs(dict(records))
    say(f"homolog sampling: {left_out} of {eligible} homolog rows left out (≥ 70 % identical to one of "
        f"{len(records)} chains in {config.homolog_exclude})")


def keep_torch_threads_past_numba() -> None:
    """Launch numba's thread pool now and give torch back its thread count.  The pool's launch
    (at numba's first parallel call) sets the OpenMP thread count of the whole process to
    every core, torch's included (both end up on one libgomp): a run told to use one thread
    per process (``OMP_NUM_THREADS=1``) then runs two on each core: an epoch with depth
    sampling took 805 s instead of 205 s with three runs sharing two cores."""
    import numba  # only the runs that recompute features need it

    threads = torch.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)


def _write_logs(out: Path, history: list[dict]) -> None:
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    # every field any epoch has: a resumed run's older epochs may lack a newer one
    fields = list(dict.fromkeys(key for record in history for key in record))
    with open(out / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(history)


def store_key_of(store: str) -> str:
    """What a checkpoint records as its training store (``train_store``): the store's
    resolved path."""
    return str(Path(store).resolve())


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=list))
