"""A Triton Inference Server model repository for an exported tpRNA model (ONNX Runtime
backend)::

    <repo>/<name>/config.pbtxt
    <repo>/<name>/1/model.onnx
    <repo>/<name>/tprna_metadata.json   (the model's tpRNA metadata, for clients)

The config declares the ONNX model's own inputs and outputs with every non-batch dimension
variable (``-1``) except the feature channels, the batch dimension implied by
``max_batch_size``, and dynamic batching.  Triton batches only requests whose shapes
agree, so clients that want server-side batching pad L to a few bucket sizes (see
``serve/README.md``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tprna.errors import TprnaError
from tprna.export.onnx_export import onnx_io, read_model_metadata

__all__ = ["export_triton", "triton_config", "TRITON_DTYPES"]

TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bool": "TYPE_BOOL",
                 "int64": "TYPE_INT64", "int32": "TYPE_INT32", "uint8": "TYPE_UINT8"}
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _dims(shape: list[Any]) -> list[int]:
    """Non-batch dims: fixed sizes kept, dynamic axes → -1."""
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape[1:]]


def _tensor_block(entries: list[dict[str, Any]]) -> str:
    rows = []
    for e in entries:
        try:
            dtype = TRITON_DTYPES[e["dtype"]]
        except KeyError:
            raise TprnaError(f"tensor {e['name']!r} has dtype {e['dtype']}, which this writer "
                             "does not map to a Triton type") from None
        dims = ", ".join(str(d) for d in _dims(e["shape"]))
        rows.append(f'  {{\n    name: "{e["name"]}"\n    data_type: {dtype}\n    dims: [ {dims} ]\n  }}')
    return ",\n".join(rows)


def triton_config(name: str, io: dict[str, list[dict[str, Any]]], max_batch_size: int = 8,
                  max_queue_delay_us: int = 2000) -> str:
    """The ``config.pbtxt`` text for an ONNX model with inputs/outputs ``io`` (see
    :func:`tprna.export.onnx_export.onnx_io`); the first dim of each must be the batch."""
    for e in io["inputs"] + io["outputs"]:
        if not e["shape"] or isinstance(e["shape"][0], int):
            raise TprnaError(f"tensor {e['name']!r} has no dynamic batch dimension "
                             f"(shape {e['shape']}); re-export the model with 'tprna export'")
    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        'backend: "onnxruntime"\n'
        f"max_batch_size: {int(max_batch_size)}\n"
        f"input [\n{_tensor_block(io['inputs'])}\n]\n"
        f"output [\n{_tensor_block(io['outputs'])}\n]\n"
        "dynamic_batching {\n"
        f"  max_queue_delay_microseconds: {int(max_queue_delay_us)}\n"
        "}\n"
        "version_policy: { latest: { num_versions: 1 } }\n"
        "# cuDNN algorithm choice by heuristic (1): L changes from request to request, and an\n"
        "# exhaustive search (0, the default) would re-run for every new shape.\n"
        'parameters { key: "cudnn_conv_algo_search" value: { string_value: "1" } }\n'
    )


def export_triton(onnx_path: str | os.PathLike, repo_dir: str | os.PathLike = "serve/models",
                  name: str | None = None, max_batch_size: int = 8, version: int = 1) -> Path:
    """Write (or replace) the Triton model ``name`` (default: the ONNX file's stem) in the
    repository ``repo_dir``; returns the model's folder."""
    src = Path(onnx_path)
    meta = read_model_metadata(src)  # also proves it is a tpRNA model
    name = name or src.stem
    if not _NAME.match(name):
        raise TprnaError(f"Triton model name {name!r} may only use letters, digits, '_', '-' and '.'")
    if max_batch_size < 1:
        raise TprnaError(f"max_batch_size must be at least 1, got {max_batch_size}")
    if version < 1:
        raise TprnaError(f"model version must be at least 1, got {version}")
    io = onnx_io(src)
    config = triton_config(name, io, max_batch_size)

    repo = Path(repo_dir)
    repo.mkdir(parents=True, exist_ok=True)
    final = repo / name
    # Assemble beside the final folder and swap it in, so a live Triton never sees half a model.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
    try:
        (staging / str(version)).mkdir()
        shutil.copyfile(src, staging / str(version) / "model.onnx")
        (staging / "config.pbtxt").write_text(config)
        (staging / "tprna_metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if final.exists():
            old = final.with_name(f".{name}.old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            staging.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
