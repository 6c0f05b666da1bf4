"""The contact network: stem → trunk of blocks (auxiliary head half-way) → head.

One class, :class:`ContactNet`, built from a block type and a depth per stage, and
one-line factories named after the paper's variants (the number in the name is the
paper's count of conv layers at 64 channels; how it maps to blocks is worked out in
:mod:`tprna.models.complexity`):

* ``mffnet30/36/42``  – 10/12/14 :class:`MFFBlock` (3 counted convs per block),
* ``resnet34…42``     – 17…21 :class:`BasicBlock` (2 convs per block),
* ``mobilenet33``     – MobileNetV2 trunk, stages of widths ``(64, 64, 80)``
  (``mobilenet33_96``: ``(64, 64, 96)``).

Layout (attribute names matter for transfer learning):

* ``stem``     – conv ``in_channels → channels`` (1×1 by default) + BN + activation.
  The only part that depends on the input features (25 channels for RNA
  covariance, 26 with the secondary-structure map, 441 for protein).
* ``trunk``    – ``nn.ModuleList`` of blocks.
* ``aux_head`` – 1×1 conv → logits, reading the trunk after ``aux_position`` blocks
  (default: half of them).  Trained with weight β in tpLoss.
* ``head``     – 1×1 conv → logits at the end of the trunk.

``forward(features, mask)`` returns ``{"logits", "aux_logits"}`` (raw per-pair
logits, ``(B, L, L)``; entries on padding are meaningless and masked out of every
loss).  :meth:`ContactNet.predict_proba` gives the output of the paper: sigmoid, then
``(P + Pᵀ)/2`` (exactly symmetric), zero on padding.  :class:`ContactProbability`
wraps that as a module for export.

Transfer learning (protein → RNA): :func:`transfer_state` / :func:`load_trunk` copy
every parameter and buffer except the stem's.  Checkpoints rebuild a model from
:class:`ModelConfig` (registry name + the factory's keyword arguments).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import TprnaError
from .blocks import (BasicBlock, ContactHead, ConvBNAct, InvertedResidual, MaskedBatchNorm2d,
                     MFFBlock, outer_mask)

__all__ = [
    "ContactNet",
    "ContactProbability",
    "ContactEnsemble",
    "ModelConfig",
    "MODELS",
    "build_model",
    "model_config",
    "load_trunk",
    "transfer_state",
    "STEM_PREFIX",
    "symmetric_probability",
    "mffnet30",
    "mffnet36",
    "mffnet42",
    "resnet34",
    "resnet36",
    "resnet38",
    "resnet40",
    "resnet42",
    "mobilenet33",
    "mobilenet33_96",
]

STEM_PREFIX = "stem."


class ContactNet(nn.Module):
    """2-D CNN over an ``L×L`` pair-feature map.

    Args:
        block: block class, constructed as ``block(in_channels, out_channels, **kwargs)``.
        layers: number of blocks per stage.
        widths: output channels per stage (default ``channels`` for every stage).
        in_channels: input feature channels (25 RNA cov, 26 cov+ss, 441 protein, …).
        channels: width of the stem output (and of every stage unless ``widths``).
        stem_kernel_size: kernel of the stem conv (1 = a per-pair linear map).
        activation: activation class of the stem.
        aux_position: number of trunk blocks before the auxiliary head
            (default ``len(trunk) // 2``; 0 = right after the stem).
        block_kwargs: keyword arguments for every block.
        stage_kwargs: per-stage keyword arguments, overriding ``block_kwargs``.
    """

    def __init__(self, block: type[nn.Module], layers: Sequence[int],
                 widths: Sequence[int] | None = None, in_channels: int = 25,
                 channels: int = 64, stem_kernel_size: int = 1,
                 activation: type[nn.Module] = nn.ReLU, aux_position: int | None = None,
                 block_kwargs: Mapping[str, Any] | None = None,
                 stage_kwargs: Sequence[Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        layers = tuple(int(n) for n in layers)
        widths = tuple(int(w) for w in widths) if widths is not None else (channels,) * len(layers)
        if len(widths) != len(layers):
            raise ValueError(f"{len(layers)} stages but {len(widths)} widths")
        if stage_kwargs is not None and len(stage_kwargs) != len(layers):
            raise ValueError(f"{len(layers)} stages but {len(stage_kwargs)} stage_kwargs")
        self.in_channels = in_channels
        self.stem = ConvBNAct(in_channels, channels, stem_kernel_size, activation=activation)

        blocks: list[nn.Module] = []
        out_widths: list[int] = []
        width = channels
        for i, (n, w) in enumerate(zip(layers, widths)):
            kwargs = dict(block_kwargs or {})
            kwargs.update(stage_kwargs[i] if stage_kwargs is not None else {})
            for _ in range(n):
                blocks.append(block(width, w, **kwargs))
                width = w
                out_widths.append(width)
        self.trunk = nn.ModuleList(blocks)

        self.aux_position = len(blocks) // 2 if aux_position is None else int(aux_position)
        if not 0 <= self.aux_position <= len(blocks):
            raise ValueError(f"aux_position {self.aux_position} outside 0..{len(blocks)}")
        aux_width = out_widths[self.aux_position - 1] if self.aux_position else channels
        self.aux_head = ContactHead(aux_width)
        self.head = ContactHead(width)
        self.config: ModelConfig | None = None  # set by the factories
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module.out_channels > 1:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, MaskedBatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, features: Tensor, mask: Tensor | None = None, *,
                aux: bool = True) -> dict[str, Tensor]:
        """``features`` ``(B, C, L, L)``, ``mask`` ``(B, L)`` bool/float (1 = real residue,
        None = all real) → ``{"logits": (B, L, L), "aux_logits": (B, L, L)}`` raw logits
        (``aux_logits`` left out when ``aux=False``)."""
        m = None if _unpadded(mask) else outer_mask(mask, features)
        x = self.stem(features if m is None else features * m, m)
        aux_logits = None
        for i, block in enumerate(self.trunk):
            if aux and i == self.aux_position:
                aux_logits = self.aux_head(x)
            x = block(x, m)
        out = {"logits": self.head(x)}
        if aux:
            out["aux_logits"] = self.aux_head(x) if aux_logits is None else aux_logits
        return out

    @torch.no_grad()
    def predict_proba(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """Contact probabilities ``(B, L, L)``: sigmoid, symmetrized ``(P + Pᵀ)/2``
        (exactly symmetric), 0 on padded pairs.  Uses the current mode; call
        ``eval()`` first for inference."""
        return symmetric_probability(self(features, mask, aux=False)["logits"], mask)


def _unpadded(mask: Tensor | None) -> bool:
    """True when no pair is padding, so the masking (a third of the CPU time of a training
    step) can be skipped.  Never while exporting: the exported graph must keep the mask."""
    if mask is None:
        return True
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
        return False
    return bool(mask.all())


def symmetric_probability(logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """``(B, L, L)`` logits → ``(σ(z) + σ(z)ᵀ)/2``, zeroed where ``mask_i·mask_j`` is 0."""
    p = torch.sigmoid(logits)
    if mask is not None:
        m = mask.to(p.dtype)
        p = p * (m[:, :, None] * m[:, None, :])
    return (p + p.transpose(-1, -2)) / 2


class ContactProbability(nn.Module):
    """Wrap a :class:`ContactNet` so that ``forward(features, mask)`` returns the
    symmetrized probabilities (the serving / ONNX-export graph; no auxiliary head)."""

    def __init__(self, net: ContactNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        return symmetric_probability(self.net(features, mask, aux=False)["logits"], mask)


class ContactEnsemble(nn.Module):
    """K trained networks of one architecture and input, averaged: its ``logits`` are
    logit(mean σ(zₖ)), so :class:`ContactProbability` over it gives exactly the mean of the
    members' symmetrized probabilities (one ONNX graph for a seed ensemble)."""

    def __init__(self, members: Sequence[ContactNet]) -> None:
        super().__init__()
        if not members:
            raise TprnaError("an ensemble needs at least one network")
        configs = {repr(model_config(m).to_dict()) for m in members}
        if len(configs) > 1:
            raise TprnaError("the networks of an ensemble must share one architecture and input")
        self.members = nn.ModuleList(members)
        self.config = model_config(members[0])
        self.in_channels = members[0].in_channels

    def forward(self, features: Tensor, mask: Tensor | None = None, aux: bool = False) -> dict[str, Tensor]:
        p = torch.stack([torch.sigmoid(m(features, mask, aux=False)["logits"]) for m in self.members]).mean(0)
        p = p.clamp(1e-7, 1 - 1e-7)  # keeps the logit finite; σ(logit(p)) returns p
        return {"logits": torch.log(p) - torch.log1p(-p)}


# ----------------------------------------------------------------------------- config

@dataclass(frozen=True)
class ModelConfig:
    """Enough to rebuild a model: registry name + the factory's keyword arguments
    (JSON-friendly: tuples may come back as lists, which the factories accept)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> ContactNet:
        return build_model(self.name, **self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name,
                "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.kwargs.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        try:
            return cls(str(data["name"]), dict(data.get("kwargs") or {}))
        except (KeyError, TypeError) as exc:
            raise TprnaError(f"model config {data!r} needs a 'name' and optional 'kwargs'") from exc


MODELS: dict[str, Callable[..., ContactNet]] = {}


def _register(fn: Callable[..., ContactNet]) -> Callable[..., ContactNet]:
    name = fn.__name__

    @functools.wraps(fn)
    def factory(**kwargs: Any) -> ContactNet:
        model = fn(**kwargs)
        model.config = ModelConfig(name, dict(kwargs))
        return model

    MODELS[name] = factory
    return factory


def build_model(name: str, **kwargs: Any) -> ContactNet:
    """Build a registered model by name, e.g. ``build_model("mffnet36", in_channels=26)``."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise TprnaError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise TprnaError(f"model {name!r} does not accept these arguments ({exc})") from exc


def model_config(model: nn.Module) -> ModelConfig:
    """The :class:`ModelConfig` a factory attached to ``model``."""
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TprnaError("model was not built by a registered factory (tprna.models.build_model); "
                         "its config cannot be recorded")
    return config


# --------------------------------------------------------------------------- transfer

def load_trunk(dst: nn.Module, state_dict: Mapping[str, Tensor],
               exclude: Sequence[str] = (STEM_PREFIX,)) -> list[str]:
    """Copy every entry of ``state_dict`` (parameters and buffers, e.g. BatchNorm
    running statistics) into ``dst`` except those under ``exclude`` (the stem, whose
    input width differs between protein and RNA).  Returns the copied keys.

    Raises :class:`TprnaError` when ``dst`` needs a key the state dict lacks or a shape
    differs (the trunks are not the same architecture)."""
    target = dst.state_dict()
    wanted = [k for k in target if not any(k.startswith(p) for p in exclude)]
    missing = [k for k in wanted if k not in state_dict]
    if missing:
        raise TprnaError(f"pretrained weights lack {len(missing)} trunk/head tensors "
                         f"(first: {missing[0]}); build the model with the same architecture")
    bad = [k for k in wanted if tuple(state_dict[k].shape) != tuple(target[k].shape)]
    if bad:
        k = bad[0]
        raise TprnaError(f"pretrained tensor {k} has shape {tuple(state_dict[k].shape)}, model needs "
                         f"{tuple(target[k].shape)}; build the model with the same architecture")
    with torch.no_grad():
        for k in wanted:
            target[k].copy_(state_dict[k])
    return wanted


def transfer_state(src: nn.Module, dst: nn.Module,
                   exclude: Sequence[str] = (STEM_PREFIX,)) -> list[str]:
    """Transfer learning: copy ``src``'s trunk and heads into ``dst`` (see :func:`load_trunk`)."""
    return load_trunk(dst, src.state_dict(), exclude)


# -------------------------------------------------------------------------- factories

def _mffnet(blocks: int, *, in_channels: int = 25, channels: int = 64, dilation: int = 2,
            se_reduction: int = 16, **kwargs: Any) -> ContactNet:
    return ContactNet(MFFBlock, (blocks,), in_channels=in_channels, channels=channels,
                      activation=nn.ReLU6,
                      block_kwargs={"dilation": dilation, "se_reduction": se_reduction}, **kwargs)


def _resnet(blocks: int, *, in_channels: int = 25, channels: int = 64, dilation: int = 1,
            **kwargs: Any) -> ContactNet:
    return ContactNet(BasicBlock, (blocks,), in_channels=in_channels, channels=channels,
                      activation=nn.ReLU, block_kwargs={"dilation": dilation}, **kwargs)


@_register
def mffnet30(**kwargs: Any) -> ContactNet:
    """MFFnet30: 10 MFF blocks at 64 channels."""
    return _mffnet(10, **kwargs)


@_register
def mffnet36(**kwargs: Any) -> ContactNet:
    """MFFnet36: 12 MFF blocks at 64 channels."""
    return _mffnet(12, **kwargs)


@_register
def mffnet42(**kwargs: Any) -> ContactNet:
    """MFFnet42: 14 MFF blocks at 64 channels."""
    return _mffnet(14, **kwargs)


@_register
def resnet34(**kwargs: Any) -> ContactNet:
    """ResNet34: 17 basic blocks (34 3×3 convs) at 64 channels."""
    return _resnet(17, **kwargs)


@_register
def resnet36(**kwargs: Any) -> ContactNet:
    """ResNet36: 18 basic blocks at 64 channels."""
    return _resnet(18, **kwargs)


@_register
def resnet38(**kwargs: Any) -> ContactNet:
    """ResNet38: 19 basic blocks at 64 channels."""
    return _resnet(19, **kwargs)


@_register
def resnet40(**kwargs: Any) -> ContactNet:
    """ResNet40: 20 basic blocks at 64 channels."""
    return _resnet(20, **kwargs)


@_register
def resnet42(**kwargs: Any) -> ContactNet:
    """ResNet42: 21 basic blocks at 64 channels."""
    return _resnet(21, **kwargs)


@_register
def mobilenet33(*, in_channels: int = 25, widths: Sequence[int] = (64, 64, 80),
                layers: Sequence[int] = (1, 7, 2), expand_ratios: Sequence[float] = (1, 2, 2),
                **kwargs: Any) -> ContactNet:
    """MobileNet33: MobileNetV2 trunk, stages ``(t, c, n)`` = (1, 64, 1), (2, 64, 7),
    (2, 80, 2); ``widths=(64, 64, 96)`` gives the paper's 64-64-96 variant."""
    if len(expand_ratios) != len(layers):
        raise ValueError(f"{len(layers)} stages but {len(expand_ratios)} expand_ratios")
    return ContactNet(InvertedResidual, layers, widths=widths, in_channels=in_channels,
                      channels=int(widths[0]), activation=nn.ReLU6,
                      stage_kwargs=[{"expand_ratio": t} for t in expand_ratios], **kwargs)


@_register
def mobilenet33_96(**kwargs: Any) -> ContactNet:
    """MobileNet33 with stage widths 64-64-96."""
    kwargs.setdefault("widths", (64, 64, 96))
    return mobilenet33.__wrapped__(**kwargs)
