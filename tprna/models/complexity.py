"""Model size and cost, against the paper's complexity table.

Counting rules (the paper's, as far as they can be inferred):

* **MACs** – multiply-accumulates of every ``Conv2d`` and ``Linear`` for one input of
  25×200×200: ``output elements × in_channels/groups × kh × kw``.  BatchNorm,
  activations, additions and the SE pooling are not counted.  Counted with forward
  hooks on a copy of the model on the ``meta`` device, so nothing is computed.
* **Parameters** – every trainable parameter, BatchNorm affine and both heads
  included (the auxiliary head is 65 parameters, 2.6 MMACs: it does not move the
  numbers).

How the paper's numbers arise (one pair map of 200×200 = 40,000 pixels):

* **ResNet-N** = N/2 basic blocks, i.e. N 3×3 convs 64→64: 36,864 weights and
  1.475 GMACs each.  ResNet34: 34 × 36,864 = 1.253 M conv weights + 4.4 k BN + 1.7 k
  stem/heads = 1.260 M (paper 1.26); 34 × 1.475 + 0.064 (1×1 stem 25→64) = 50.21 GMACs
  (paper 50.31).  Every step of 2 in N adds 2.95 GMACs and 0.074 M, as in the paper.
* **MFFnet-N** = N/3 MFF blocks.  One block: two grouped 3×3 convs 64→32 with 32
  groups (576 weights each) + two 3×3 convs 32→32 (one dilated; 9,216 each) =
  19,584 weights → 0.783 GMACs, plus 256 BN and 580 SE parameters ≈ 20.4 k.  The two
  grouped entry convs together cost what one 64→64 grouped conv costs, so a block is
  three counted conv layers; the paper's steps of 6 layers (+1.55 GMACs, +0.039 M)
  are 2 blocks (+1.567 GMACs, +0.041 M).  MFFnet30/36/42 come out at 7.90 / 9.47 /
  11.04 GMACs (paper 7.86 / 9.41 / 10.97, +0.6 %) and 0.206 / 0.247 / 0.288 M
  (paper 0.198 / 0.237 / 0.276, +4 %: BN and SE parameters, which the paper may not
  count or may size differently).
* **MobileNet33** = MobileNetV2 trunk with stages (t, c, n) = (1, 64, 1), (2, 64, 7),
  (2, w, 2), w = 80 or 96 (the paper's "64-64-80 / 64-64-96"): one t=1 block
  (depthwise + projection, 2 convs), then 9 inverted residuals with expansion 2
  (3 convs each), 1×1 stem.  The paper does not give the stage split; this one is the
  nearest fit over splits and expansion ratios in {1, 2, 3, 4, 6}: 7.03 / 7.58 GMACs
  (paper 7.26 / 7.86, −3.1 % / −3.6 %) and 0.182 / 0.196 M (paper 0.179 / 0.194,
  +1.7 % / +1.0 %).  Conv layers: stem + 2 + 27 + heads = 32, one short of the name.

Run ``python -m tprna.models.complexity`` for the table.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .contactnet import MODELS

__all__ = [
    "PaperComplexity",
    "PAPER_TABLE",
    "ComplexityRow",
    "count_parameters",
    "count_macs",
    "complexity_table",
    "format_complexity_table",
]


@dataclass(frozen=True)
class PaperComplexity:
    """One row of the paper's table (25×200×200 input)."""

    gmacs: float
    params_m: float


PAPER_TABLE: dict[str, PaperComplexity] = {
    "resnet34": PaperComplexity(50.31, 1.26),
    "resnet36": PaperComplexity(53.27, 1.33),
    "resnet38": PaperComplexity(56.22, 1.40),
    "resnet40": PaperComplexity(59.17, 1.48),
    "resnet42": PaperComplexity(62.13, 1.55),
    "mobilenet33": PaperComplexity(7.26, 0.179),
    "mobilenet33_96": PaperComplexity(7.86, 0.194),
    "mffnet30": PaperComplexity(7.86, 0.198),
    "mffnet36": PaperComplexity(9.41, 0.237),
    "mffnet42": PaperComplexity(10.97, 0.276),
}


class ComplexityRow(NamedTuple):
    name: str
    params_m: float
    gmacs: float
    paper_params_m: float
    paper_gmacs: float
    params_ratio: float  # ours / paper
    gmacs_ratio: float   # ours / paper


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, length: int = 200, in_channels: int | None = None) -> int:
    """Multiply-accumulates of Conv2d/Linear layers for one ``in_channels × length ×
    length`` input (``in_channels`` defaults to the model's).  Runs on a meta-device copy."""
    if in_channels is None:
        in_channels = int(getattr(model, "in_channels"))
    meta = copy.deepcopy(model).to(device="meta").eval()
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in meta.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            meta(torch.empty(1, in_channels, length, length, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total


def complexity_table(names: list[str] | None = None, length: int = 200,
                     in_channels: int = 25) -> list[ComplexityRow]:
    """Our parameters and GMACs beside the paper's, for the models of ``PAPER_TABLE``
    (or ``names``; a model absent from the paper gets NaN paper columns)."""
    rows = []
    for name in names or list(PAPER_TABLE):
        with torch.device("meta"):
            model = MODELS[name](in_channels=in_channels)
        params_m = count_parameters(model) / 1e6
        gmacs = count_macs(model, length, in_channels) / 1e9
        paper = PAPER_TABLE.get(name, PaperComplexity(float("nan"), float("nan")))
        rows.append(ComplexityRow(name, params_m, gmacs, paper.params_m, paper.gmacs,
                                  params_m / paper.params_m, gmacs / paper.gmacs))
    return rows


def format_complexity_table(rows: list[ComplexityRow]) -> str:
    """Plain-text table of :func:`complexity_table` rows."""
    lines = [f"{'model':<16}{'params M':>10}{'paper':>8}{'ratio':>7}"
             f"{'GMACs':>9}{'paper':>8}{'ratio':>7}"]
    for r in rows:
        lines.append(f"{r.name:<16}{r.params_m:>10.3f}{r.paper_params_m:>8.3f}{r.params_ratio:>7.3f}"
                     f"{r.gmacs:>9.2f}{r.paper_gmacs:>8.2f}{r.gmacs_ratio:>7.3f}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(format_complexity_table(complexity_table()))
