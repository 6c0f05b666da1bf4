"""Several checkpoints of one architecture and feature spec (seeds of one recipe) → one
ONNX graph that averages their probabilities (:class:`~tprna.models.ContactEnsemble`), with
the same interface, metadata and parity check as a single network's export."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from tprna.errors import TprnaError
from tprna.export.onnx_export import ExportReport, export_model

__all__ = ["export_ensemble"]


def export_ensemble(checkpoints: Sequence[str | os.PathLike], out_path: str | os.PathLike,
                    **options: Any) -> ExportReport:
    """Export the average of ``checkpoints`` (≥ 1) to ``out_path``; ``options`` as for
    :func:`~tprna.export.onnx_export.export_model` (fp16, opset, tolerance …)."""
    from tprna.models import ContactEnsemble  # lazy: torch (the [train] extra), only to export
    from tprna.train import load_checkpoint, model_from_checkpoint

    paths = [Path(p) for p in checkpoints]
    if not paths:
        raise TprnaError("an ensemble export needs at least one checkpoint")
    loaded = [load_checkpoint(p) for p in paths]
    specs = {json.dumps(c["feature_spec"], sort_keys=True) for c in loaded}
    if len(specs) > 1:
        raise TprnaError("the checkpoints were trained on different feature specs; an ensemble "
                         "averages networks that read the same input", paths[0])
    net = ContactEnsemble([model_from_checkpoint(c) for c in loaded])
    info = {"ensemble": [{"path": str(p.resolve()), "epoch": c.get("epoch")} for p, c in zip(paths, loaded)]}
    return export_model(net, loaded[0]["feature_spec"], out_path, train_store=loaded[0].get("train_store"),
                        checkpoint_info=info, train_config=loaded[0].get("train_config"), **options)
