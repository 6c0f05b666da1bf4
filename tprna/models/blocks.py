"""Building blocks of the contact networks, all mask-aware.

Every block has ``forward(x, m)`` where ``x`` is a ``(B, C, L, L)`` feature map and ``m``
the ``(B, 1, L, L)`` pair mask ``mask_i * mask_j`` (1 on real residue pairs, 0 on the
padding of shorter sequences in a batch).  Each block returns its output with the
padded region set to exactly zero, so the next convolution sees the same zeros there
that its own zero-padding would show a sequence run alone: a batch of different
lengths padded to the longest gives every sample the prediction it gets alone.

Two things would break that and are handled here:

* **BatchNorm.**  :class:`MaskedBatchNorm2d` is a drop-in ``nn.BatchNorm2d`` (same
  parameters, buffers and state-dict keys) whose *training* statistics are the mean
  and variance over the valid pixels only, so padding never leaks into the batch
  statistics or the running averages.  In eval mode it is plain BatchNorm with the
  running statistics (what ONNX export sees), followed by the mask.
* **Squeeze-Excitation.**  :class:`SqueezeExcitation` pools by the mean over valid
  pixels only.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "outer_mask",
    "conv1x1",
    "conv3x3",
    "MaskedBatchNorm2d",
    "ConvBNAct",
    "SqueezeExcitation",
    "MFFBlock",
    "BasicBlock",
    "InvertedResidual",
    "ContactHead",
]


def outer_mask(mask: Tensor | None, x: Tensor) -> Tensor:
    """``(B, L)`` residue mask (bool or float, or None = all real) → ``(B, 1, L, L)``
    pair mask ``mask_i * mask_j`` in ``x``'s dtype."""
    b, _, h, w = x.shape
    if mask is None:
        return x.new_ones(b, 1, h, w)
    if mask.dim() != 2 or mask.shape[0] != b or mask.shape[1] != h or h != w:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit features {tuple(x.shape)}")
    m = mask.to(dtype=x.dtype)
    return (m[:, :, None] * m[:, None, :]).unsqueeze(1)


def _masked(x: Tensor, m: Tensor | None) -> Tensor:
    """Zero the padded pairs; ``m`` None means the batch has no padding."""
    return x if m is None else x * m


def conv3x3(in_channels: int, out_channels: int, dilation: int = 1, groups: int = 1) -> nn.Conv2d:
    """3×3 'same' convolution without bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation,
                     groups=groups, bias=False)


def conv1x1(in_channels: int, out_channels: int, groups: int = 1) -> nn.Conv2d:
    """1×1 convolution without bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=False)


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose batch statistics cover the valid pixels only.

    ``forward(x, m)``: with batch statistics (training, or no running stats) the
    per-channel mean and biased variance are taken over pixels where ``m`` is 1, and
    the running averages are updated with them (unbiased variance, as torch does).
    With running statistics (eval) it is ``nn.BatchNorm2d``.  The output is multiplied
    by ``m``.  With ``m`` all ones it equals ``nn.BatchNorm2d`` exactly in both modes.
    """

    def forward(self, x: Tensor, m: Tensor | None = None) -> Tensor:  # type: ignore[override]
        use_batch_stats = self.training or self.running_mean is None
        if m is None or not use_batch_stats:
            y = super().forward(x)
        else:
            y = self._masked_batch_norm(x, m)
        return y if m is None else y * m

    def _masked_batch_norm(self, x: Tensor, m: Tensor) -> Tensor:
        # statistics in at least float32 (also under autocast): sums over B·L² pixels
        dtype = torch.promote_types(x.dtype, torch.float32)
        xf, mf = x.to(dtype), m.to(dtype)
        count = mf.sum().clamp_min(1.0)  # valid pixels (m is (B, 1, L, L): one count per channel)
        mean = (xf * mf).sum(dim=(0, 2, 3)) / count
        centred = (xf - mean[None, :, None, None]) * mf
        var = centred.pow(2).sum(dim=(0, 2, 3)) / count
        if self.training and self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (self.momentum if self.momentum is not None
                            else 1.0 / float(self.num_batches_tracked))
                unbiased = var * count / (count - 1).clamp_min(1.0)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


class ConvBNAct(nn.Module):
    """Conv2d ('same' padding, stride 1) → MaskedBatchNorm2d → activation → mask."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: int = 1, groups: int = 1,
                 activation: type[nn.Module] | None = nn.ReLU6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size,
                              padding=dilation * (kernel_size - 1) // 2, dilation=dilation,
                              groups=groups, bias=False)
        self.bn = MaskedBatchNorm2d(out_channels)
        self.act = activation(inplace=True) if activation is not None else nn.Identity()

    def forward(self, x: Tensor, m: Tensor | None) -> Tensor:
        # the BatchNorm output is already masked and every activation here maps 0 to 0
        return self.act(self.bn(self.conv(x), m))


class SqueezeExcitation(nn.Module):
    """Channel attention (Hu et al. 2018) with masked global pooling: the squeeze is the
    mean over valid pixels, then 1×1 conv → ReLU → 1×1 conv → sigmoid gates the input."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        squeeze = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, m: Tensor | None) -> Tensor:
        if m is None:
            pooled = x.mean(dim=(2, 3), keepdim=True)
        else:
            pooled = (x * m).sum(dim=(2, 3), keepdim=True) / m.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
        gate = torch.sigmoid(self.fc2(self.act(self.fc1(pooled))))
        return x * gate


class MFFBlock(nn.Module):
    """Multi-view Feature Fusion block (paper eqs. 1–3).

    Two branches, each entered by a grouped 3×3 conv (``groups = channels/2``, so two
    input channels per group) that halves the width:

    * branch 1: grouped conv → dilated 3×3 conv (wider receptive field),
    * branch 2: grouped conv → plain 3×3 conv,

    concatenated back to ``channels`` (``out = [b1, b2]``), re-weighted by
    Squeeze-Excitation, added to the input, then ReLU6.  Each conv is followed by
    BatchNorm; ReLU6 follows the grouped convs.  At 64 channels a block has
    2·576 + 2·9,216 = 19,584 conv weights (≈ 0.78 GMACs at 200×200), i.e. the cost of
    three 64-channel conv "layers" of the kind the paper counts (see
    :mod:`tprna.models.complexity`).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, dilation: int = 2,
                 se_reduction: int = 16, groups: int | None = None) -> None:
        super().__init__()
        channels = in_channels
        if out_channels is not None and out_channels != in_channels:
            raise ValueError("MFFBlock is residual: out_channels must equal in_channels")
        if channels % 2:
            raise ValueError(f"MFFBlock needs an even channel count, got {channels}")
        half = channels // 2
        groups = half if groups is None else groups
        self.branch1 = nn.ModuleList([
            ConvBNAct(channels, half, 3, groups=groups, activation=nn.ReLU6),
            ConvBNAct(half, half, 3, dilation=dilation, activation=None),
        ])
        self.branch2 = nn.ModuleList([
            ConvBNAct(channels, half, 3, groups=groups, activation=nn.ReLU6),
            ConvBNAct(half, half, 3, dilation=1, activation=None),
        ])
        self.se = SqueezeExcitation(channels, se_reduction) if se_reduction else None
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: Tensor, m: Tensor | None) -> Tensor:
        b1 = self.branch1[1](self.branch1[0](x, m), m)
        b2 = self.branch2[1](self.branch2[0](x, m), m)
        y = torch.cat([b1, b2], dim=1)
        if self.se is not None:
            y = self.se(y, m)
        return _masked(self.act(x + y), m)


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3×3 convs with BatchNorm, identity
    shortcut (1×1 projection when the width changes), ReLU."""

    def __init__(self, in_channels: int, out_channels: int | None = None, dilation: int = 1) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.conv1 = ConvBNAct(in_channels, out_channels, 3, dilation=dilation, activation=nn.ReLU)
        self.conv2 = ConvBNAct(out_channels, out_channels, 3, dilation=dilation, activation=None)
        self.shortcut = (ConvBNAct(in_channels, out_channels, 1, activation=None)
                         if in_channels != out_channels else None)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, m: Tensor | None) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x, m)
        return _masked(self.act(self.conv2(self.conv1(x, m), m) + identity), m)


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual (Sandler et al. 2018), stride 1: 1×1 expansion to
    ``in_channels·expand_ratio`` (skipped when the ratio is 1) → depthwise 3×3 →
    linear 1×1 projection; identity shortcut when the width is unchanged."""

    def __init__(self, in_channels: int, out_channels: int | None = None,
                 expand_ratio: float = 2, kernel_size: int = 3) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        hidden = int(round(in_channels * expand_ratio))
        self.expand = (ConvBNAct(in_channels, hidden, 1, activation=nn.ReLU6)
                       if expand_ratio != 1 else None)
        self.depthwise = ConvBNAct(hidden, hidden, kernel_size, groups=hidden, activation=nn.ReLU6)
        self.project = ConvBNAct(hidden, out_channels, 1, activation=None)
        self.use_residual = in_channels == out_channels

    def forward(self, x: Tensor, m: Tensor | None) -> Tensor:
        y = x if self.expand is None else self.expand(x, m)
        y = self.project(self.depthwise(y, m), m)
        return x + y if self.use_residual else y


class ContactHead(nn.Module):
    """1×1 conv to one channel: per-pair contact logits ``(B, L, L)``."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x).squeeze(1)
