"""Helpers shared by the test modules: simulated stores, real coconet items, tiny models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from tprna.features import FeatureSpec
from tprna.models import build_model, model_config
from tprna.msa import MSA, parse_msa
from tprna.simulate import write_example_dataset
from tprna.store import BuildItem, build_store, items_from_manifest


def rna(*rows: str) -> MSA:
    """An RNA alignment of ``rows`` (the first is the query)."""
    return parse_msa("".join(f">s{i}\n{r}\n" for i, r in enumerate(rows)), "fasta", "rna")


def coupled_alignment(n: int, length: int = 12, seed: int = 0) -> MSA:
    """``n`` random rows whose columns 1 and 9 co-vary perfectly (G-C / A-U / C-G / U-A);
    every other column is mixed at random."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        row = list(rng.choice(list("ACGU"), length))
        row[1], row[9] = ["GC", "AU", "CG", "UA"][k % 4]
        rows.append("".join(row))
    return rna(*rows)


def simulated_store(root: Path, name: str = "sim.zarr", feature_set: str = "cov", **simulation) -> Path:
    """Simulated families (``write_example_dataset(**simulation)``) built into ``root/name``
    on ``feature_set``; every entry must build."""
    manifest = write_example_dataset(root / "data", **simulation)
    store = root / name
    report = build_store(store, items_from_manifest(manifest), FeatureSpec(feature_set=feature_set), progress=False)
    assert not report.failed
    return store


def train_one_epoch(store: Path, out: Path, **option) -> tuple[dict, dict]:
    """One tiny training epoch on ``store``'s train split with a training ``option``
    (``depth_sampling=0.5``…): the checkpoint it leaves and its first epoch record."""
    from tprna.train import TrainConfig, load_checkpoint, train

    config = TrainConfig(store=str(store), out=str(out), split="train", model="mffnet30", epochs=1, crop=24,
                         workers=0, device="cpu", **option)
    checkpoint = load_checkpoint(train(config))
    return checkpoint, json.loads((out / "metrics.jsonl").read_text().splitlines()[0])


def coconet_items(ids: tuple[str, ...]) -> list[BuildItem]:
    """The real coconet families ``ids`` from ../shared/data; skips when it is absent."""
    manifest = SHARED_DATA / "coconet" / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (a fresh clone has no ../shared/data)")
    items = [i for i in items_from_manifest(manifest) if i.id in ids]
    assert len(items) == len(ids)
    return items


def make_checkpoint(path: Path, spec: FeatureSpec, name: str = "mffnet30", seed: int = 0,
                    channels: int = 16) -> Path:
    """A checkpoint as train.save_checkpoint writes it, with non-trivial BatchNorm (a
    narrow MFFnet30 by default: the same graph, 16× fewer multiply-adds)."""
    torch.manual_seed(seed)
    model = build_model(name, in_channels=spec.channels, channels=channels)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + 0.5 * torch.rand(n, generator=g)
            m.bias.data = 0.2 * torch.randn(n, generator=g)
            m.running_mean.data = 0.1 * torch.randn(n, generator=g)
            m.running_var.data = 0.5 + torch.rand(n, generator=g)
    torch.save({"model_config": model_config(model).to_dict(), "model": model.state_dict(),
                "feature_spec": spec.to_dict(), "train_store": "test-store", "train_config": {},
                "history": [], "epoch": 0}, path)
    return path


def export_tiny_model(root: Path, spec: FeatureSpec) -> Path:
    """``make_checkpoint`` exported to ONNX (parity-checked at two short lengths)."""
    from tprna.export import export_onnx

    return Path(export_onnx(make_checkpoint(root / "mff.ckpt", spec), root / "mff.onnx",
                            parity_lengths=(9, 30)).path)
