"""Training losses over the valid pairs of a padded batch.

Every loss is a **mean over valid pairs** (both residues real, the pair observed in
the structure, ``|i − j| ≥ min_separation``), not the sum the paper writes (Σ): a
mean keeps the loss, and so the effective learning rate, independent of batch size
and sequence length.  Up to that constant factor per batch the optimum is the paper's.
Both triangles ``(i, j)`` and ``(j, i)`` are scored (the network's raw logits are not
symmetric; the symmetrization happens on the probabilities at prediction time).
With ``long_weight`` ≠ 1 the mean is weighted: a long-range pair (``|i − j| ≥ 24``, the
range the headline metric ranks) counts ``long_weight`` times (:func:`pair_weights`).

Losses share one signature, ``loss(out, target, pair_mask, **options)``, where
``out`` is the network's output dict (``{"logits", "aux_logits"}``) or a logits
tensor, ``target`` the ``(B, L, L)`` 0/1 contact map and ``pair_mask`` the output of
:func:`pair_mask`.  ``ce`` and ``wce`` use the final head only; ``tploss`` also the
auxiliary one.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from .errors import TprnaError
from .metrics import MIN_SEPARATION, RANGES

__all__ = ["pair_mask", "pair_weights", "ce_loss", "wce_loss", "tp_loss", "LOSSES", "build_loss",
           "MIN_SEPARATION"]


LossOutput = Tensor | Mapping[str, Tensor]


def pair_mask(mask: Tensor, observed: Tensor | None = None,
              min_separation: int = MIN_SEPARATION) -> Tensor:
    """``(B, L, L)`` bool: pairs that count — both residues real (``mask``, ``(B, L)``
    bool/float), observed in the structure (``observed``, ``(B, L, L)``, or None = all)
    and ``|i − j| ≥ min_separation``."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be (B, L), got shape {tuple(mask.shape)}")
    real = mask.bool()
    valid = real[:, :, None] & real[:, None, :]
    length = mask.shape[1]
    idx = torch.arange(length, device=mask.device)
    valid = valid & ((idx[:, None] - idx[None, :]).abs() >= min_separation)
    if observed is not None:
        if observed.shape != valid.shape:
            raise ValueError(f"observed mask of shape {tuple(observed.shape)} does not fit "
                             f"{tuple(valid.shape)}")
        valid = valid & observed.bool()
    return valid


def pair_weights(pair_mask: Tensor, long_weight: float = 1.0) -> Tensor:
    """Each pair's weight in a loss's mean: 0 off ``pair_mask``, ``long_weight`` for a valid
    long-range pair, 1 for the others (their sum is what a batch's mean divides by)."""
    weights = pair_mask.float()
    if long_weight == 1.0:
        return weights
    idx = torch.arange(pair_mask.shape[-1], device=pair_mask.device)
    far = (idx[:, None] - idx[None, :]).abs() >= RANGES["long"][0]
    return weights * torch.where(far, long_weight, 1.0)


def _logits(out: LossOutput, key: str = "logits") -> Tensor:
    if isinstance(out, Mapping):
        if key not in out:
            raise TprnaError(f"the model gives no {key!r}; use a loss that does not need it "
                             "(ce or wce) or a model with an auxiliary head")
        return out[key]
    return out


def _masked_mean(values: Tensor, valid: Tensor, long_weight: float = 1.0) -> Tensor:
    weights = pair_weights(valid, long_weight).to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def ce_loss(out: LossOutput, target: Tensor, pair_mask: Tensor, long_weight: float = 1.0) -> Tensor:
    """Binary cross-entropy, mean over valid pairs (final head only)."""
    logits = _logits(out)
    values = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    return _masked_mean(values, pair_mask, long_weight)


def wce_loss(out: LossOutput, target: Tensor, pair_mask: Tensor, alpha: float = 0.2,
             long_weight: float = 1.0) -> Tensor:
    """Weighted BCE (paper): ``−mean[α·y·log p + (1−α)·(1−y)·log(1−p)]`` over valid
    pairs, ``p = σ(z)``, computed with ``log σ(z)`` and ``log(1−σ(z)) = log σ(−z)``."""
    logits = _logits(out)
    y = target.to(logits.dtype)
    values = -(alpha * y * F.logsigmoid(logits) + (1 - alpha) * (1 - y) * F.logsigmoid(-logits))
    return _masked_mean(values, pair_mask, long_weight)


def tp_loss(out: LossOutput, target: Tensor, pair_mask: Tensor, alpha: float = 0.2,
            beta: float = 0.1, long_weight: float = 1.0) -> Tensor:
    """tpLoss = β·WCE(auxiliary head) + (1−β)·WCE(final head)."""
    aux = _logits(out, "aux_logits")
    return (beta * wce_loss(aux, target, pair_mask, alpha, long_weight)
            + (1 - beta) * wce_loss(_logits(out), target, pair_mask, alpha, long_weight))


LOSSES: dict[str, Callable[..., Tensor]] = {"ce": ce_loss, "wce": wce_loss, "tploss": tp_loss}


def build_loss(name: str, **options: Any) -> Callable[[LossOutput, Tensor, Tensor], Tensor]:
    """The loss ``name`` with its options bound, e.g. ``build_loss("tploss", beta=0.2)``."""
    try:
        fn = LOSSES[name]
    except KeyError:
        raise TprnaError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}") from None
    if not options.get("long_weight", 1.0) > 0:
        raise TprnaError(f"long_weight must be > 0, got {options['long_weight']}")
    return functools.partial(fn, **options)
