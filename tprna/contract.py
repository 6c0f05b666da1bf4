"""The model's contract: what training, the store, export and serving must agree on about
the network's input and output.  numpy only (never torch), so that serving can use it
without the training stack.

* **Rounding** (:func:`rounded`, :func:`rounded_features`): a feature component as the
  network reads it — cast to the spec's storage dtype and back to float32, and the pair
  components made exactly symmetric from their i ≤ j half (C[j, i, b, a] = C[i, j, a, b]
  for cov/precision, M[j, i] = M[i, j] for the (L, L) maps).  The store keeps these arrays
  losslessly; serving from an MSA rounds the same way, so both give the same prediction.
* **Network input** (:func:`model_input`): the components stacked into (C, L, L) float32.
* **Batches**: :func:`pad_batch` (zero padding, a (B, L) residue mask) and
  :func:`length_batches` (by length under a budget of padded L² pixels).  The paper batched
  3 RNAs below L=100, 2 up to 150 and 1 above; a budget of 3·100² = 30,000 padded pixels
  gives 3 below 100, 2 up to 122 and 1 above, and generalises to any length mix.
* **ONNX interface**: the input/output names and dynamic axes of an exported model, and its
  ``tprna.*`` metadata properties (:func:`metadata_props`, :func:`parse_metadata`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from tprna.errors import TprnaError
from tprna.features import (DERIVED_COMPONENTS, PAIR_COMPONENTS, PROFILE_COMPONENTS, FeatureDict, FeatureSpec,
                            depth_channel)

__all__ = [
    "PAPER_PIXEL_BUDGET", "INPUT_FEATURES", "INPUT_MASK", "OUTPUT_CONTACTS", "DYNAMIC_AXES",
    "METADATA_PREFIX", "rounded", "rounded_features", "model_input", "pad_batch", "length_batches",
    "metadata_props", "parse_metadata",
]

PAPER_PIXEL_BUDGET = 3 * 100 ** 2

# The exported graph: features (B, C, L, L) float32 and mask (B, L) bool → contacts (B, L, L).
INPUT_FEATURES = "features"
INPUT_MASK = "mask"
OUTPUT_CONTACTS = "contacts"
DYNAMIC_AXES = {
    INPUT_FEATURES: {0: "batch", 2: "length", 3: "length"},
    INPUT_MASK: {0: "batch", 1: "length"},
    OUTPUT_CONTACTS: {0: "batch", 1: "length", 2: "length"},
}
# ModelProto.metadata_props keys are tprna.<name>, each value a JSON string.
METADATA_PREFIX = "tprna."
_REQUIRED_METADATA = ("feature_spec", "model_config")

_FLOAT16_MAX = float(np.finfo(np.float16).max)


# --------------------------------------------------------------------------- network input

def rounded(name: str, array: np.ndarray, dtype: str) -> np.ndarray:
    """Component ``name`` as the network reads it, float32: per-residue ones (``profile``,
    (L, q)) cast to ``dtype`` and back; the pair ones cast likewise from their i ≤ j half
    and mirrored (the (j, i) block is the (i, j) block transposed over its last two axes).

    Raises :class:`TprnaError` when a pair value is outside the float16 range."""
    values = np.asarray(array)
    if name in PROFILE_COMPONENTS:
        return values.astype(dtype).astype(np.float32, copy=False)
    length = values.shape[0]
    # only the i ≤ j half is kept, so only it must fit (the cheap whole-array test first)
    if dtype == "float16" and values.size and float(np.abs(values).max()) > _FLOAT16_MAX \
            and float(np.abs(values[np.triu_indices(length)]).max()) > _FLOAT16_MAX:
        raise TprnaError("feature values exceed the float16 range; rebuild with --dtype float32")
    out = np.empty(values.shape, dtype=np.float32)
    # the i ≤ j half row by row: short contiguous casts that stay in cache beat one whole-array pass
    for i in range(length):
        out[i, i:] = values[i, i:].astype(dtype, copy=False)
    mirrored = out.transpose((1, 0) + tuple(range(values.ndim - 1, 1, -1)))  # (j, i, b, a)
    for i in range(1, length):
        out[i, :i] = mirrored[i, :i]
    return out


def rounded_features(features: FeatureDict, spec: FeatureSpec) -> dict[str, Any]:
    """``features`` with each of ``spec``'s stored components :func:`rounded` to ``spec.dtype``."""
    out = dict(features)
    for name in spec.stored_components:
        out[name] = rounded(name, features[name], spec.dtype)
    return out


def model_input(features: FeatureDict, spec: FeatureSpec) -> np.ndarray:
    """Stack an entry's components into the network's (C, L, L) float32 input; a derived
    component (``neff``) is computed here from the entry's Neff."""
    channels = []
    length = len(features[spec.stored_components[0]])  # every stored component starts with L
    for name in spec.components:
        if name in DERIVED_COMPONENTS:
            channels.append(np.full((1, length, length), depth_channel(features["neff"]), np.float32))
            continue
        arr = np.asarray(features[name], dtype=np.float32)
        if name in PAIR_COMPONENTS:  # (L, L, q, q) → q² channels, channel = a·q + b
            channels.append(arr.reshape(length, length, -1).transpose(2, 0, 1))
        elif name in PROFILE_COMPONENTS:  # (L, q) → q² channels f_i(a)·f_j(b), same layout
            outer = arr.T[:, None, :, None] * arr.T[None, :, None, :]  # (q, q, L, L)
            channels.append(outer.reshape(-1, length, length))
        else:
            channels.append(arr[None])
    return np.ascontiguousarray(np.concatenate(channels, axis=0))


# --------------------------------------------------------------------------- batches

def pad_batch(inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Network inputs (C, Lᵢ, Lᵢ) → ``x`` (B, C, L, L) float32 zero-padded to the longest
    and ``mask`` (B, L) bool, True on real residues."""
    if not inputs:
        raise TprnaError("an empty batch")
    channels = inputs[0].shape[0]
    longest = max(x.shape[-1] for x in inputs)
    x = np.zeros((len(inputs), channels, longest, longest), dtype=np.float32)
    mask = np.zeros((len(inputs), longest), dtype=bool)
    for b, item in enumerate(inputs):
        n = item.shape[-1]
        if item.shape != (channels, n, n):
            raise TprnaError(f"network input of shape {item.shape}, expected ({channels}, {n}, {n})")
        x[b, :, :n, :n] = item
        mask[b, :n] = True
    return x, mask


def length_batches(lengths: Sequence[int], pixel_budget: int = PAPER_PIXEL_BUDGET,
                   order: Sequence[int] | None = None) -> list[list[int]]:
    """Group indices, in ascending length, into batches whose padded size
    (members × longest²) stays within ``pixel_budget``; a longer RNA goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i)) if order is None else order
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max([lengths[j] for j in current] + [lengths[i]])
        if current and (len(current) + 1) * longest ** 2 > pixel_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


# --------------------------------------------------------------------------- metadata

def metadata_props(meta: Mapping[str, Any]) -> dict[str, str]:
    """Metadata values → ``tprna.<name>`` properties, each a JSON string."""
    return {METADATA_PREFIX + key: json.dumps(value, sort_keys=True, default=str) for key, value in meta.items()}


def parse_metadata(props: Mapping[str, str], source: str | os.PathLike | None = None) -> dict[str, Any]:
    """``tprna.*`` metadata properties (JSON strings) → a dict without the prefix.

    Raises :class:`TprnaError` when the model carries no tpRNA metadata."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        if not key.startswith(METADATA_PREFIX):
            continue
        try:
            out[key[len(METADATA_PREFIX):]] = json.loads(value)
        except json.JSONDecodeError:
            raise TprnaError(f"model metadata {key!r} is not valid JSON; re-export the model", source) from None
    if not all(k in out for k in _REQUIRED_METADATA):
        raise TprnaError("not a tpRNA ONNX model (no feature spec / model config in its metadata); "
                         "export one with 'tprna export'", source)
    _check_metadata(out, source)
    return out


def _check_metadata(meta: Mapping[str, Any], source: str | os.PathLike | None) -> None:
    """The feature spec and model config a model carries must be whole: features computed
    from a half-read spec (defaults filled in) would be silently wrong."""
    spec = meta["feature_spec"]
    fields = set(FeatureSpec.__dataclass_fields__)
    if not isinstance(spec, dict) or not {"molecule", "feature_set"} <= set(spec):
        raise TprnaError("model metadata 'feature_spec' is malformed (a mapping with at least 'molecule' and "
                         "'feature_set' expected); re-export the model with 'tprna export'", source)
    unknown = sorted(str(k) for k in spec if k not in fields)
    if unknown:
        raise TprnaError(f"model metadata 'feature_spec' has fields this tpRNA does not know "
                         f"({', '.join(unknown)}): the model was exported by another version; "
                         "upgrade tpRNA or re-export the model", source)
    try:
        parsed = FeatureSpec.from_dict(spec)
    except TprnaError as e:
        raise TprnaError(f"model metadata 'feature_spec' is invalid ({e}); re-export the model", source) from None
    except (TypeError, ValueError):
        raise TprnaError("model metadata 'feature_spec' has fields of the wrong type; re-export the model",
                         source) from None
    key = meta.get("feature_spec_key")
    if key is not None and key != parsed.key:
        raise TprnaError(f"model metadata 'feature_spec_key' {key!r} does not match its feature spec "
                         f"({parsed.key}); re-export the model", source)
    config = meta["model_config"]
    if not isinstance(config, dict) or not isinstance(config.get("name"), str) \
            or not isinstance(config.get("kwargs", {}), dict):
        raise TprnaError("model metadata 'model_config' is malformed ({'name': str, 'kwargs': dict} "
                         "expected); re-export the model", source)
