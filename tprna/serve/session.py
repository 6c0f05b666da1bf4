"""onnxruntime sessions for exported tpRNA models: provider choice, tuned options, and a
runner that feeds padded batches (IO binding on CUDA, a plain ``run`` on CPU).

``device``: ``"auto"`` (CUDA when onnxruntime-gpu sees a GPU, else CPU), ``"cpu"``,
``"cuda"`` or ``"cuda:N"``.  Asking for CUDA where it is not available is an error, never a
silent CPU fallback; the providers actually in use come from ``session.get_providers()``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tprna.contract import INPUT_FEATURES, INPUT_MASK, OUTPUT_CONTACTS, parse_metadata
from tprna.errors import TprnaError

__all__ = ["make_session", "available_providers", "physical_cores", "SessionRunner",
           "session_metadata"]

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def available_providers() -> list[str]:
    import onnxruntime as ort  # lazy: start-up time of `import tprna.serve` (writers, inputs)

    return list(ort.get_available_providers())


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads do not help convolutions)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in allowed:
        try:
            text = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_id").read_text().strip()
            pkg = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id").read_text().strip()
            cores.add((pkg, text))
        except OSError:
            cores.add(("", str(cpu)))
    return max(1, len(cores))


def _device_id(device: str) -> int:
    if ":" in device:
        try:
            return int(device.split(":", 1)[1])
        except ValueError:
            raise TprnaError(f"device {device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    return 0


def make_session(onnx_path: str | os.PathLike, device: str = "auto", threads: int | None = None,
                 sequential: bool = True) -> tuple[Any, list[str]]:
    """An ``onnxruntime.InferenceSession`` (graph optimisation ALL; intra-op threads =
    ``threads`` or the physical cores) and the providers it actually uses.

    On CUDA, cuDNN picks convolution algorithms heuristically: with a new L in almost every
    batch, an exhaustive search per shape would cost more than it saves."""
    import onnxruntime as ort  # lazy: start-up time of `import tprna.serve` (writers, inputs)

    path = Path(onnx_path)
    if not path.is_file():
        raise TprnaError("ONNX model not found", path)
    device = (device or "auto").lower()
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise TprnaError(f"device {device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'")
    have_cuda = CUDA in ort.get_available_providers()
    want_cuda = device.startswith("cuda") or (device == "auto" and have_cuda)
    if device.startswith("cuda") and not have_cuda:
        raise TprnaError(f"device {device!r} requested but this onnxruntime has no CUDA provider "
                         f"(providers: {', '.join(ort.get_available_providers())}); "
                         "install onnxruntime-gpu, or use --device cpu")

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads) if threads else physical_cores()
    options.inter_op_num_threads = 1
    if sequential:
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # warnings about fallbacks would repeat per session

    providers: list[Any] = [CPU]
    if want_cuda:
        providers = [(CUDA, {"device_id": _device_id(device), "cudnn_conv_algo_search": "HEURISTIC",
                             "arena_extend_strategy": "kSameAsRequested",
                             "do_copy_in_default_stream": True}), CPU]
    try:
        session = ort.InferenceSession(os.fspath(path), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / … types
        raise TprnaError(f"onnxruntime cannot load the model ({str(e).splitlines()[0]})", path) from None
    in_use = list(session.get_providers())
    if device.startswith("cuda") and CUDA not in in_use:
        raise TprnaError(f"device {device!r} requested but the CUDA provider did not start "
                         "(CUDA / cuDNN libraries missing?); use --device cpu", path)
    return session, in_use


def session_metadata(session: Any, source: str | os.PathLike | None = None) -> dict[str, Any]:
    """The tpRNA metadata of a loaded session's model (see :mod:`tprna.contract`)."""
    return parse_metadata(session.get_modelmeta().custom_metadata_map, source)


class SessionRunner:
    """Run padded batches through a session: ``run(features (B,C,L,L) float32, mask (B,L)
    bool) -> contacts (B,L,L) float32``.

    With the CUDA provider (or ``io_binding=True``) inputs are bound from numpy, the output
    is allocated on the device and copied back once — no per-run output allocation by
    Python, no implicit synchronisation between the two inputs."""

    def __init__(self, session: Any, providers: list[str], io_binding: bool | None = None,
                 device_id: int = 0) -> None:
        self.session = session
        self.providers = list(providers)
        self.on_cuda = CUDA in self.providers
        self.io_binding = self.on_cuda if io_binding is None else bool(io_binding)
        self.device_id = device_id
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        if set(inputs) != {INPUT_FEATURES, INPUT_MASK} or outputs != [OUTPUT_CONTACTS]:
            raise TprnaError(f"model inputs {sorted(inputs)} / outputs {outputs} are not tpRNA's "
                             f"({INPUT_FEATURES}, {INPUT_MASK} → {OUTPUT_CONTACTS})")
        self.mask_dtype = bool if inputs[INPUT_MASK].type == "tensor(bool)" else np.float32

    def run(self, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        features = np.ascontiguousarray(features, dtype=np.float32)
        mask = np.ascontiguousarray(mask, dtype=self.mask_dtype)
        if not self.io_binding:
            return self.session.run([OUTPUT_CONTACTS], {INPUT_FEATURES: features, INPUT_MASK: mask})[0]
        binding = self.session.io_binding()
        binding.bind_cpu_input(INPUT_FEATURES, features)
        binding.bind_cpu_input(INPUT_MASK, mask)
        binding.bind_output(OUTPUT_CONTACTS, "cuda" if self.on_cuda else "cpu",
                            self.device_id if self.on_cuda else 0)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]
