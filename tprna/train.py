"""Training: Adam with the paper's step schedule, length-bucketed batches, per-epoch
logs, checkpoints that can rebuild the model and name its features, exact resume, and
transfer from a protein-pretrained trunk.

A checkpoint (``torch.save`` dict, written atomically) carries: the model config and
weights, the feature spec it was trained on, the training store's key, the optimiser and
scheduler state, the epoch and the metric history.  ``resume`` restarts from the last
finished epoch: batches are a function of (seed, epoch) and the model has no dropout, so a
resumed run reproduces the uninterrupted one.

**Distributed training.**  Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment)
:func:`train` joins the process group itself — NCCL with one GPU per rank
(``cuda:LOCAL_RANK``), gloo on CPU — and wraps the model in DistributedDataParallel, e.g.
``torchrun --nproc_per_node 2 -m tprna train STORE --out RUN``.  What is matched:

* **The global batch.**  Every rank builds the same epoch's batch list (same seed) and
  takes every ``R``-th batch (:class:`~tprna.data.LengthBatchSampler`); an optimiser step
  covers ``R × accumulate`` consecutive batches of that list — the *global batch*.
* **The gradient.**  Each batch's loss is a mean over its valid pairs; it is weighted by
  its share of the global batch's valid pairs (one all-reduce of the count per step), so
  the step's gradient is that of the mean over every valid pair of the global batch,
  whatever the ranks' batch sizes and lengths.  ``R`` ranks with ``accumulate=A`` and one
  process with ``accumulate=R·A`` therefore take the same steps, up to floating-point
  summation order (tests/test_distributed.py checks the loss curve and the weights).
* **BatchNorm** uses each batch's own (masked) statistics, as plain BatchNorm under DDP
  does — no SyncBatchNorm, and the same in the one-process accumulation: a global batch
  is never normalised as one padded tensor.  The running statistics (eval mode only) are
  rank 0's, broadcast to every rank at each forward (DDP's default).
* **Logs and checkpoints** are written by rank 0 only (the others wait at a barrier);
  the epoch loss is the all-reduced mean over every rank's examples.  ``resume`` loads the
  checkpoint on every rank, so all continue from the same state (the run folder must be
  shared between nodes).
"""
from __future__ import annotations

import csv
import json
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import distributed as dist
from torch.utils.data import DataLoader

from tprna.data import PAPER_PIXEL_BUDGET, LengthBatchSampler, StoreDataset, collate
from tprna.errors import TprnaError
from tprna.features import FeatureSpec
from tprna.losses import build_loss, pair_mask
from tprna.models import build_model, load_trunk, model_config
from tprna.models.contactnet import ModelConfig

__all__ = ["TrainConfig", "train", "initial_model", "load_checkpoint", "save_checkpoint",
           "model_from_checkpoint", "resolve_device", "is_main_process", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "last.ckpt"


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
    epochs: int = 200
    lr: float = 0.01
    lr_milestones: tuple[int, ...] = (100,)  # the paper: 0.01 for epochs 0–100, then 0.001
    lr_gamma: float = 0.1
    pixel_budget: int = PAPER_PIXEL_BUDGET
    max_length: int | None = None
    crop: int | None = 160  # train on random windows of at most this length (memory, speed)
    seed: int = 0
    device: str = "auto"
    workers: int = 1
    init_from: str | None = None  # checkpoint whose trunk and heads seed this model
    resume: bool = False
    ids: list[str] | None = None  # train on these entries only (overrides split)
    exclude: list[str] = field(default_factory=list)
    accumulate: int = 1  # batches per rank added up per optimiser step (see the module doc)


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
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a kill mid-write never leaves a truncated checkpoint


def load_checkpoint(path: str | Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise TprnaError("checkpoint not found", path) from None
    except Exception as e:  # torch raises many types for a corrupt file
        raise TprnaError(f"not a readable tpRNA checkpoint ({type(e).__name__})", path) from None
    if not isinstance(ckpt, dict) or "model_config" not in ckpt or "feature_spec" not in ckpt:
        raise TprnaError("not a tpRNA checkpoint (no model config / feature spec)", path)
    return ckpt


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    model = ModelConfig.from_dict(ckpt["model_config"]).build()
    model.load_state_dict(ckpt["model"])
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
        load_trunk(model, source["model"])
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
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_NAME
    _seed_everything(config.seed)

    dataset = StoreDataset(config.store, config.features, split=None if config.ids else config.split,
                           ids=config.ids, max_length=config.max_length)
    if config.exclude:
        excluded = set(config.exclude)
        keep = [i for i, entry in enumerate(dataset.ids) if entry not in excluded]
        dataset.ids = [dataset.ids[i] for i in keep]
        dataset.lengths = [dataset.lengths[i] for i in keep]
    spec: FeatureSpec = dataset.spec

    start_epoch, history = 0, []
    if config.resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        if ckpt["feature_spec"] != spec.to_dict():
            raise TprnaError("the checkpoint to resume was trained on another feature spec", ckpt_path)
        model = model_from_checkpoint(ckpt)
        start_epoch, history = ckpt["epoch"] + 1, ckpt["history"]
        before = ckpt.get("world_size", 1) * ckpt.get("train_config", {}).get("accumulate", 1)
        if progress and before != ranks.world * config.accumulate and start_epoch < config.epochs:
            progress(f"note: resuming with {ranks.world * config.accumulate} batches per step "
                     f"(was {before}): the run will not reproduce an uninterrupted one")
    else:
        ckpt = None
        model = initial_model(config.model, spec, config.init_from)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=_epoch_lr(config, start_epoch))
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    loss_fn = build_loss(config.loss, **({"alpha": config.alpha} if config.loss != "ce" else {}),
                         **({"beta": config.beta} if config.loss == "tploss" else {}))
    needs_aux = config.loss == "tploss"  # ce/wce never run (nor train) the auxiliary head
    net = _wrap_ddp(model, device, needs_aux) if ranks.world > 1 else model

    sampler = LengthBatchSampler(dataset.lengths, config.pixel_budget, seed=config.seed, crop=config.crop,
                                 num_replicas=ranks.world, rank=ranks.rank, accumulate=config.accumulate)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                        num_workers=config.workers, persistent_workers=config.workers > 0)
    meta = {"model_config": model_config(model).to_dict(), "feature_spec": spec.to_dict(),
            "train_store": _store_key(config.store), "train_config": _jsonable(asdict(config)),
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
            # each batch's loss is a mean over its valid pairs: weight it by its share of
            # the global batch's pairs (all ranks, all accumulated batches)
            pairs = [int(v.sum()) for _, _, v, _, _ in inputs]
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
                  "seconds": round(time.perf_counter() - started, 3), "examples": int(count)}
        history.append(record)
        if ranks.main:
            save_checkpoint(ckpt_path, {**meta, "model": model.state_dict(),
                                        "optimizer": optimizer.state_dict(), "epoch": epoch,
                                        "history": history})
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


def _wrap_ddp(model: torch.nn.Module, device: torch.device, needs_aux: bool) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    if not needs_aux:  # the aux head gets no gradient on any rank: DDP must not wait for it
        ignored = [name for name, _ in [*model.named_parameters(), *model.named_buffers()]
                   if name.startswith("aux_head.")]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=False)


def _all_sum(values: list[float], device: torch.device, ranks: _Ranks) -> list[float]:
    """Sum ``values`` over the ranks (as float64); the values themselves on one process."""
    if ranks.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _write_logs(out: Path, history: list[dict]) -> None:
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    with open(out / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _store_key(store: str) -> str:
    from tprna.store import open_store

    s = open_store(store)
    try:
        return str(getattr(s, "content_key", None) or Path(store).resolve())
    finally:
        s.close()


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=list))
