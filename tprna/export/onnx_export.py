"""Checkpoint → ONNX: the symmetrized, sigmoid-ended network with dynamic batch and length,
its metadata, and a parity check that every export must pass.

The graph (``ContactProbability`` in eval mode, BatchNorm folded into the convolutions):

* input ``features``  ``(B, C, L, L)`` float32 — :func:`tprna.contract.model_input` of each
  RNA, zero-padded to the longest member of the batch (:func:`tprna.contract.pad_batch`);
* input ``mask``      ``(B, L)`` **bool** — True on real residues, False on padding (the
  same convention as :func:`tprna.data.collate`);
* output ``contacts`` ``(B, L, L)`` float32 — ``(σ(z) + σ(z)ᵀ)/2``, exactly 0 on padded pairs.

``B`` and ``L`` are dynamic.  The fp16 variant keeps that float32/bool interface and casts
inside the graph; its Squeeze-Excitation pooling (a sum over all L² pixels, which overflows
float16 for long RNAs) stays in float32.

Metadata (``ModelProto.metadata_props``, each value a JSON string, keys ``tprna.<name>``):
feature spec and its key, model name and config, training store, tpRNA version, precision,
opset, I/O description, source checkpoint and the parity figures of the export check.
:func:`read_model_metadata` reads them back.  Names, axes and the metadata encoding are the
model's contract (:mod:`tprna.contract`), which serving reads too.

Every export is checked before it is kept: ``onnx.checker.check_model``, then onnxruntime
against PyTorch at each parity length alone and on one zero-padded batch of all of them.
Above the tolerance the export fails with :class:`~tprna.errors.TprnaError` and no file is
left behind (the model is written under a temporary name and renamed only after passing).

The graph comes from torch's TorchScript exporter (``dynamo=False``), not the maintained
``dynamo=True`` one: tried with torch 2.13 / onnxscript 0.7.2, the dynamo exporter has no
opset-17 implementations (it exports opset 18 and down-converts, "which may not be
successful") and did not finish even a 16-channel MFFnet30 within 15 minutes on a shared 2-core
machine, so it could not be run through the parity checks; hence no onnxscript dependency.
"""
from __future__ import annotations

import copy
import datetime as _dt
import functools
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tprna import __version__
from tprna.contract import (DYNAMIC_AXES, INPUT_FEATURES, INPUT_MASK, OUTPUT_CONTACTS, metadata_props,
                            pad_batch, parse_metadata)
from tprna.errors import TprnaError
from tprna.export.optimize import optimize_graph
from tprna.features import FeatureSpec
from tprna.serve.session import make_session
from tprna.store.atomic import atomic_output
from tprna.store.schema import file_sha256

__all__ = [
    "DEFAULT_EXPORT_DIR", "ExportReport", "export_onnx", "export_model", "read_model_metadata",
    "default_export_path", "onnx_io",
]

DEFAULT_EXPORT_DIR = Path("export")
DEFAULT_TOLERANCE = {"float32": 1e-4, "float16": 1e-2}
# Checkpoint names that say nothing about the model: the export is named after it instead.
_GENERIC_STEMS = {"last", "best", "checkpoint", "model", "final"}


@dataclass
class ExportReport:
    """What an export wrote and how closely onnxruntime reproduces PyTorch."""

    path: str
    model_name: str
    feature_spec_key: str
    precision: str
    opset: int
    parity: dict[str, float]  # "L=17" / "padded batch L=17,48,97" → max |onnx − torch|
    max_abs_diff: float
    tolerance: float
    providers: list[str]
    size_bytes: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    graph_rewrites: dict[str, int] = field(default_factory=dict)  # see tprna.export.optimize

    def summary(self) -> str:
        figures = ", ".join(f"{k}: {v:.2e}" for k, v in self.parity.items())
        notes = f"; exporter warnings: {' | '.join(self.warnings)}" if self.warnings else ""
        return (f"exported {self.model_name} ({self.precision}, opset {self.opset}) to {self.path} "
                f"[{self.size_bytes / 1e6:.2f} MB]; max |onnxruntime − torch| = {self.max_abs_diff:.2e} "
                f"(tolerance {self.tolerance:g}; {figures}){notes}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- metadata

def read_model_metadata(onnx_path: str | os.PathLike) -> dict[str, Any]:
    """The metadata an exported model carries (see the module doc), as plain Python values."""
    import onnx  # lazy: onnx comes with the [train] extra; a serving install has none

    path = Path(onnx_path)
    if not path.is_file():
        raise TprnaError("ONNX model not found", path)
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends for a corrupt file
        raise TprnaError(f"not a readable ONNX model ({type(e).__name__})", path) from None
    return parse_metadata({p.key: p.value for p in model.metadata_props}, path)


def onnx_io(model_or_path: Any) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs of an ONNX model: name, numpy dtype name and shape (a dim is an
    int or the name of a dynamic axis)."""
    import onnx  # lazy: onnx comes with the [train] extra; a serving install has none
    from onnx import helper

    model = onnx.load(os.fspath(model_or_path), load_external_data=False) \
        if isinstance(model_or_path, (str, os.PathLike)) else model_or_path

    def describe(values) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
            out.append({"name": v.name, "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name,
                        "shape": dims})
        return out

    initializers = {i.name for i in model.graph.initializer}
    return {"inputs": describe([i for i in model.graph.input if i.name not in initializers]),
            "outputs": describe(model.graph.output)}


# --------------------------------------------------------------------------- export

def default_export_path(checkpoint: str | os.PathLike | None, model_name: str) -> Path:
    """``export/<checkpoint stem>.onnx``; a generic stem (``last``, ``best``…) gives way to
    ``<run folder>-<model name>`` so that two runs do not overwrite each other."""
    if checkpoint is None:
        return DEFAULT_EXPORT_DIR / f"{model_name}.onnx"
    ckpt = Path(checkpoint)
    stem = ckpt.name.split(".")[0] or model_name
    if stem.lower() in _GENERIC_STEMS:
        run = ckpt.resolve().parent.name
        stem = f"{run}-{model_name}" if run else model_name
    return DEFAULT_EXPORT_DIR / f"{stem}.onnx"


def export_onnx(checkpoint: str | os.PathLike | Mapping[str, Any], out_path: str | os.PathLike | None = None,
                fp16: bool = False, opset: int = 17, parity_lengths: Sequence[int] = (17, 48, 97),
                tolerance: float | None = None, seed: int = 0, optimize: bool = True) -> ExportReport:
    """Export a training checkpoint (path, or the dict :func:`tprna.train.load_checkpoint`
    returns) to ONNX, check it, and return the :class:`ExportReport`.

    ``tolerance`` bounds max |onnxruntime − torch| over the parity checks; ``None`` means
    1e-4 for float32 and 1e-2 for ``fp16=True`` (whose reference is the float32 network).
    ``optimize`` applies the exact graph rewrites of :mod:`tprna.export.optimize`."""
    from tprna.train import load_checkpoint, model_from_checkpoint  # lazy: torch, only to export

    if isinstance(checkpoint, Mapping):
        ckpt, ckpt_path = dict(checkpoint), None
    else:
        ckpt_path = Path(checkpoint)
        ckpt = load_checkpoint(ckpt_path)
    try:
        net = model_from_checkpoint(ckpt, ckpt_path)
    except TprnaError:
        raise
    except Exception as e:  # state-dict mismatch and the like
        raise TprnaError(f"checkpoint does not rebuild its model ({type(e).__name__}: {e})", ckpt_path) from None
    model_name = ckpt["model_config"]["name"]
    out = Path(out_path) if out_path is not None else default_export_path(ckpt_path, model_name)
    checkpoint_info = {"path": str(ckpt_path.resolve()) if ckpt_path else None,
                       "sha256": file_sha256(ckpt_path) if ckpt_path else None,
                       "epoch": ckpt.get("epoch")}
    return export_model(net, ckpt["feature_spec"], out, fp16=fp16, opset=opset,
                        parity_lengths=parity_lengths, tolerance=tolerance, seed=seed, optimize=optimize,
                        train_store=ckpt.get("train_store"), checkpoint_info=checkpoint_info,
                        train_config=ckpt.get("train_config"))


def _one_torch_thread(fn):
    """Trace and run the parity reference on one torch thread: the inputs are small, and on
    a busy machine torch's thread team waits on itself (measured here: 8× slower with two)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch  # lazy: torch, only to export (read_model_metadata and onnx_io need none)

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper


@_one_torch_thread
def export_model(net: Any, feature_spec: Mapping[str, Any], out_path: str | os.PathLike, fp16: bool = False,
                 opset: int = 17, parity_lengths: Sequence[int] = (17, 48, 97),
                 tolerance: float | None = None, seed: int = 0, train_store: str | None = None,
                 checkpoint_info: Mapping[str, Any] | None = None,
                 train_config: Mapping[str, Any] | None = None, optimize: bool = True) -> ExportReport:
    """Export a :class:`~tprna.models.ContactNet` (built by a registered factory) whose input
    is ``feature_spec``; the checked, metadata-carrying model lands at ``out_path``."""
    import onnx  # lazy: onnx and torch (the [train] extra) only to export
    import torch

    from tprna.models import ContactProbability, model_config

    t0 = time.perf_counter()
    spec = FeatureSpec.from_dict(feature_spec)
    config = model_config(net)
    if getattr(net, "in_channels", spec.channels) != spec.channels:
        raise TprnaError(f"the model takes {net.in_channels} input channels but feature spec "
                         f"{spec.key} ({spec.feature_set}, {spec.molecule}) gives {spec.channels}")
    lengths = sorted({int(n) for n in parity_lengths})
    if not lengths or lengths[0] < 1:
        raise TprnaError(f"parity lengths must be positive integers, got {list(parity_lengths)}")
    if not 7 <= opset <= 23:
        raise TprnaError(f"opset {opset} is outside what this exporter supports (7–23; 17 recommended)")
    precision = "float16" if fp16 else "float32"
    tol = DEFAULT_TOLERANCE[precision] if tolerance is None else float(tolerance)
    out = Path(out_path)
    if out.suffix.lower() != ".onnx":
        raise TprnaError("the exported model's file name must end in .onnx", out)

    reference = ContactProbability(copy.deepcopy(net).float()).eval()
    graph = _half_precision_graph(net) if fp16 else ContactProbability(copy.deepcopy(net).float())
    graph.eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:  # a failed check or a kill leaves no file behind
        caught = _torch_export(graph, spec.channels, tmp, opset)
        plain = onnx.load(os.fspath(tmp))
        _check(plain, out)
        io = onnx_io(plain)
        model, rewrites = plain, {}
        if optimize:
            model, rewrites = optimize_graph(plain, INPUT_MASK)
            del model.graph.value_info[:]  # stale after the rewrites; re-inferred by the runtime
            _check(model, out)
            onnx.save(model, os.fspath(tmp))
        # float32 is checked on the CPU provider: exact kernels, whereas CUDA may compute
        # convolutions in TF32.  float16 is checked where it will run: the GPU if any.
        device = "auto" if fp16 else "cpu"
        parity, providers = _parity(tmp, reference, spec.channels, lengths, seed, device)
        worst = max(parity.values())
        if (not np.isfinite(worst) or worst > tol) and model is not plain:
            # A rewrite that breaks the numbers is a bug of ours, not the user's: fall back.
            onnx.save(plain, os.fspath(tmp))
            parity, providers = _parity(tmp, reference, spec.channels, lengths, seed, device)
            caught.append(f"graph rewrites {rewrites} gave max |diff| {worst:.2e}; exported without them")
            model, rewrites, worst = plain, {}, max(parity.values())
        if not np.isfinite(worst) or worst > tol:
            detail = ", ".join(f"{k}: {v:.2e}" for k, v in parity.items())
            raise TprnaError(f"export check failed: onnxruntime and PyTorch differ by up to {worst:.2e} "
                             f"(tolerance {tol:g}; {detail}); nothing was written", out)
        meta = {
            "feature_spec": spec.to_dict(), "feature_spec_key": spec.key,
            "model_name": config.name, "model_config": config.to_dict(),
            "train_store": train_store, "tprna_version": __version__, "precision": precision,
            "opset": opset, "io": io, "parity": {"max_abs_diff": parity, "tolerance": tol,
                                                  "providers": providers, "reference": "torch float32"},
            "graph_rewrites": rewrites,
            "checkpoint": dict(checkpoint_info or {}),
            "train_config": dict(train_config or {}),
            "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch_version": torch.__version__, "onnx_version": onnx.__version__,
        }
        del model.metadata_props[:]
        for key, value in metadata_props(meta).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        model.producer_name, model.producer_version = "tprna", __version__
        model.doc_string = (f"tpRNA {config.name} contact probabilities; inputs features (B,{spec.channels},L,L) "
                            f"float32 and mask (B,L) bool, output contacts (B,L,L) float32")
        onnx.save(model, os.fspath(tmp))
    return ExportReport(path=str(out), model_name=config.name, feature_spec_key=spec.key,
                        precision=precision, opset=opset, parity=parity, max_abs_diff=worst,
                        tolerance=tol, providers=providers, size_bytes=out.stat().st_size,
                        seconds=round(time.perf_counter() - t0, 3), warnings=caught,
                        graph_rewrites=rewrites)


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (/proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_permissions(path: str | os.PathLike) -> None:
    """Give ``path`` the mode an ordinary ``open``/``mkdir`` would: 0666 (files) or 0777
    (folders) less the umask — tempfile's mkstemp/mkdtemp make them owner-only, and an
    exported model must be readable by whoever serves it."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def _check(model: Any, out: Path) -> None:
    import onnx  # lazy: the [train] extra

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise TprnaError(f"the exported graph fails the ONNX checker ({e})", out) from None


def _half_precision_graph(net: Any) -> Any:
    """The fp16 export graph: float32/bool interface, float16 inside, with each
    Squeeze-Excitation run in float32 (its pooled sum over L² pixels overflows float16)."""
    import torch  # lazy: the [train] extra

    from tprna.models import ContactProbability, SqueezeExcitation

    class FloatIsland(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner.float()

        def forward(self, x, m):
            return self.inner(x.float(), m.float()).to(x.dtype)

    class HalfGraph(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, features, mask):
            return self.inner(features.half(), mask).float()

    half = copy.deepcopy(net).half()
    for module in list(half.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, SqueezeExcitation):
                setattr(module, name, FloatIsland(child))
    return HalfGraph(ContactProbability(half))


def _torch_export(graph: Any, channels: int, path: Path, opset: int) -> list[str]:
    """TorchScript-based export (fast and reliable for this conv net) with dynamic B and L;
    returns the warnings it raised, less the known-harmless ones."""
    import torch  # lazy: the [train] extra

    example = (torch.randn(2, channels, 24, 24), torch.ones(2, 24, dtype=torch.bool))
    example[1][1, 20:] = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.onnx.export(graph, example, os.fspath(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_FEATURES, INPUT_MASK], output_names=[OUTPUT_CONTACTS],
                              dynamic_axes=DYNAMIC_AXES, do_constant_folding=True)
        except Exception as e:
            raise TprnaError(f"torch.onnx.export failed ({type(e).__name__}: {e})", path) from None
    kept = []
    for w in caught:
        text = str(w.message)
        # The legacy exporter announces its own deprecation; outer_mask's shape check (a
        # validation branch) is traced as a constant.  Neither affects the graph.
        if "legacy TorchScript-based ONNX export" in text or "feature will be removed" in text:
            continue
        if issubclass(w.category, torch.jit.TracerWarning) and w.filename.endswith(
                os.path.join("models", "blocks.py")):
            continue
        kept.append(f"{w.category.__name__}: {text.splitlines()[0] if text else ''}")
    return list(dict.fromkeys(kept))


def _parity(path: Path, reference: Any, channels: int, lengths: list[int], seed: int,
            device: str = "cpu") -> tuple[dict[str, float], list[str]]:
    """max |onnxruntime − torch| at each length alone and on a zero-padded batch of all."""
    import torch  # lazy: the [train] extra

    session, providers = make_session(path, device=device)
    rng = np.random.default_rng(seed)
    samples = [rng.standard_normal((channels, n, n), dtype=np.float32) * 0.5 for n in lengths]
    for x in samples:  # the inputs are symmetric pair features, as make_features gives
        x += x.transpose(0, 2, 1)
    parity: dict[str, float] = {}
    with torch.inference_mode():
        for n, x in zip(lengths, samples):
            mask = np.ones((1, n), dtype=bool)
            ref = reference(torch.from_numpy(x[None]), torch.from_numpy(mask)).numpy()
            got = session.run([OUTPUT_CONTACTS], {INPUT_FEATURES: x[None], INPUT_MASK: mask})[0]
            parity[f"L={n}"] = _max_diff(got, ref)
        batch, mask = pad_batch(samples)
        ref = reference(torch.from_numpy(batch), torch.from_numpy(mask)).numpy()
        got = session.run([OUTPUT_CONTACTS], {INPUT_FEATURES: batch, INPUT_MASK: mask})[0]
    parity[f"padded batch L={','.join(map(str, lengths))}"] = _max_diff(got, ref)
    return parity, providers


def _max_diff(got: np.ndarray, ref: np.ndarray) -> float:
    if got.shape != ref.shape:
        return float("inf")
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    return float("inf") if not np.all(np.isfinite(diff)) else float(diff.max(initial=0.0))
