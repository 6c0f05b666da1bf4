"""Training: Adam with the paper's step schedule, length-bucketed batches, per-epoch
logs, checkpoints that can rebuild the model and name its features, exact resume, and
transfer from a protein-pretrained trunk.

A checkpoint (``torch.save`` dict, written atomically) carries: the model config and
weights, the feature spec it was trained on, the training store's key, the optimiser and
scheduler state, the epoch and the metric history.  ``resume`` restarts from the last
finished epoch: batches are a function of (seed, epoch) and the model has no dropout, so a
resumed run reproduces the uninterrupted one.
"""
from __future__ import annotations

import csv
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from tprna.data import PAPER_PIXEL_BUDGET, LengthBatchSampler, StoreDataset, collate
from tprna.errors import TprnaError
from tprna.features import FeatureSpec
from tprna.losses import build_loss, pair_mask
from tprna.models import build_model, load_trunk, model_config
from tprna.models.contactnet import ModelConfig

__all__ = ["TrainConfig", "train", "initial_model", "load_checkpoint", "save_checkpoint",
           "model_from_checkpoint", "resolve_device", "CHECKPOINT_NAME"]

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


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TprnaError(f"device {device!r} requested but no CUDA device is available")
    return torch.device(device)


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
    """Train (or resume) and return the path of the final checkpoint."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_NAME
    device = resolve_device(config.device)
    _seed_everything(config.seed)

    dataset = StoreDataset(config.store, config.features, split=None if config.ids else config.split,
                           ids=config.ids, max_length=config.max_length)
    if config.exclude:
        keep = [i for i, entry in enumerate(dataset.ids) if entry not in set(config.exclude)]
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
    else:
        ckpt = None
        model = initial_model(config.model, spec, config.init_from)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=_epoch_lr(config, start_epoch))
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    loss_fn = build_loss(config.loss, **({"alpha": config.alpha} if config.loss != "ce" else {}),
                         **({"beta": config.beta} if config.loss == "tploss" else {}))

    sampler = LengthBatchSampler(dataset.lengths, config.pixel_budget, seed=config.seed, crop=config.crop)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                        num_workers=config.workers, persistent_workers=config.workers > 0)
    meta = {"model_config": model_config(model).to_dict(), "feature_spec": spec.to_dict(),
            "train_store": _store_key(config.store), "train_config": _jsonable(asdict(config))}

    for epoch in range(start_epoch, config.epochs):
        lr = _epoch_lr(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sampler.set_epoch(epoch)
        model.train()
        started, total, count = time.perf_counter(), 0.0, 0
        for batch in loader:
            x = batch["features"].to(device, non_blocking=True)
            mask = batch["mask"].to(device)
            valid = pair_mask(mask, batch["observed"].to(device))
            loss = loss_fn(model(x, mask), batch["contacts"].to(device), valid)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch["ids"])
            count += len(batch["ids"])
        record = {"epoch": epoch, "lr": lr, "loss": total / max(count, 1),
                  "seconds": round(time.perf_counter() - started, 3), "examples": count}
        history.append(record)
        save_checkpoint(ckpt_path, {**meta, "model": model.state_dict(),
                                    "optimizer": optimizer.state_dict(), "epoch": epoch,
                                    "history": history})
        _write_logs(out, history)  # from the checkpoint's history: a resume never duplicates
        if progress:
            progress(f"epoch {epoch + 1}/{config.epochs}  loss {record['loss']:.4f}  lr {lr:g}  "
                     f"{record['seconds']:.1f}s")
    if not ckpt_path.exists():
        raise TprnaError(f"nothing to train: epochs={config.epochs}", out)
    return ckpt_path


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
