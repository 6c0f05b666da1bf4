"""Helpers shared by the export and serving tests."""
from __future__ import annotations

from pathlib import Path

import torch

from tprna.features import FeatureSpec
from tprna.models import build_model, model_config


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
