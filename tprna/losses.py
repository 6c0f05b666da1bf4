"""Training losses over the valid pairs of a padded batch.

Every loss is a **mean over valid pairs** (both residues real, the pair observed in
the structure, ``|i − j| ≥ min_separation``), not the sum the paper writes (Σ): a
mean keeps the loss, and so the effective learning rate, independent of batch size
and sequence length.  Up to that constant factor per batch the optimum is the paper's.
Both triangles ``(i, j)`` and ``(j, i)`` are scored (the network's raw logits are not
symmetric; the symmetrization happens on the probabilities at prediction time).

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
from .metrics import MIN_SEPARATION

__all__ = ["pair_mask", "ce_loss", "wce_loss", "tp_loss", "LOSSES", "build_loss",
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


def _logits(out: LossOutput, key: str = "logits") -> Tensor:
    if isinstance(out, Mapping):
        if key not in out:
            raise TprnaError(f"the model gives no {key!r}; use a loss that does not need it "
                             "(ce or wce) or a model with an auxiliary head")
        return out[key]
    return out


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    weights = valid.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def ce_loss(out: LossOutput, target: Tensor, pair_mask: Tensor) -> Tensor:
    """Binary cross-entropy, mean over valid pairs (final head only)."""
    logits = _logits(out)
    values = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    return _masked_mean(values, pair_mask)


def wce_loss(out: LossOutput, target: Tensor, pair_mask: Tensor, alpha: float = 0.2) -> Tensor:
    """Weighted BCE (paper): ``−mean[α·y·log p + (1−α)·(1−y)·log(1−p)]`` over valid
    pairs, ``p = σ(z)``, computed with ``log σ(z)`` and ``log(1−σ(z)) = log σ(−z)``."""
    logits = _logits(out)
    y = target.to(logits.dtype)
    values = -(alpha * y * F.logsigmoid(logits) + (1 - alpha) * (1 - y) * F.logsigmoid(-logits))
    return _masked_mean(values, pair_mask)


def tp_loss(out: LossOutput, target: Tensor, pair_mask: Tensor, alpha: float = 0.2,
            beta: float = 0.1) -> Tensor:
    """tpLoss = β·WCE(auxiliary head) + (1−β)·WCE(final head)."""
    aux = _logits(out, "aux_logits")
    return (beta * wce_loss(aux, target, pair_mask, alpha)
            + (1 - beta) * wce_loss(_logits(out), target, pair_mask, alpha))


LOSSES: dict[str, Callable[..., Tensor]] = {"ce": ce_loss, "wce": wce_loss, "tploss": tp_loss}


def build_loss(name: str, **options: Any) -> Callable[[LossOutput, Tensor, Tensor], Tensor]:
    """The loss ``name`` with its options bound, e.g. ``build_loss("tploss", beta=0.2)``."""
    try:
        fn = LOSSES[name]
    except KeyError:
        raise TprnaError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}") from None
    return functools.partial(fn, **options)
