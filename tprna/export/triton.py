"""A Triton Inference Server model repository for an exported tpRNA model (ONNX Runtime
backend)::

    <repo>/<name>/config.pbtxt
    <repo>/<name>/tprna_metadata.json      (the served version's tpRNA metadata, for clients)
    <repo>/<name>/<N>/model.onnx           one folder per version: 1, 2, …
    <repo>/<name>/<N>/tprna_metadata.json  (that version's metadata)

The config declares the ONNX model's own inputs and outputs with every non-batch dimension
variable (``-1``) except the feature channels, the batch dimension implied by
``max_batch_size``, and dynamic batching.  Triton batches only requests whose shapes
agree, so clients that want server-side batching pad L to a few bucket sizes (see
``serve/README.md``).

**Names and versions** follow Triton's repository rules: the model name is the name of its
folder (and of its URL ``/v2/models/<name>``), so it must be a plain, safe folder name —
letters, digits, ``_``, ``-`` and ``.``, starting with a letter, digit or ``_``, not ending
in ``.`` (no ``.``/``..``, no path separators, no hidden name), at most 128 characters.  A
version is a positive integer, written without leading zeros (Triton ignores version
folders that are not numeric or start with ``0``); by default the next free one.  Several
versions live side by side; one config serves them all, so ``version_policy`` is
``latest`` (serve the newest version; older ones stay for a rollback; the config must fit
the newest) or ``all`` (serve every version; each must have the same inputs and outputs).

Nothing is ever deleted without ``overwrite=True``, which replaces one version.  A new
model or version is assembled under a hidden name and renamed into place, so a live
Triton never sees half of one; files are created with the usual permissions (0644 /
0755 under a 022 umask), so a server running as another user can read them.
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
from tprna.export.onnx_export import default_permissions, onnx_io, read_model_metadata
from tprna.store.atomic import write_file_atomic

__all__ = ["export_triton", "triton_config", "check_model_name", "model_versions", "TRITON_DTYPES",
           "VERSION_POLICIES"]

TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bool": "TYPE_BOOL",
                 "int64": "TYPE_INT64", "int32": "TYPE_INT32", "uint8": "TYPE_UINT8"}
VERSION_POLICIES = {"latest": "version_policy: { latest: { num_versions: 1 } }",
                    "all": "version_policy: { all: { } }"}
MAX_VERSION = 2 ** 63 - 1  # Triton's versions are int64
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_VERSION_DIR = re.compile(r"[1-9][0-9]*")
_METADATA = "tprna_metadata.json"


def check_model_name(name: Any) -> str:
    """``name`` if it is a safe Triton model (folder) name (see the module doc), else a
    :class:`TprnaError` saying what is allowed."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith("."):
        raise TprnaError(f"Triton model name {name!r} is not a safe folder name: it may only use letters, "
                         "digits, '_', '-' and '.', must start with a letter, digit or '_', must not end "
                         "in '.', and has at most 128 characters (it names the model's folder and URL)")
    return name


def model_versions(model_dir: str | os.PathLike) -> list[int]:
    """The version folders Triton would see in ``model_dir``, in increasing order."""
    folder = Path(model_dir)
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and _VERSION_DIR.fullmatch(p.name))


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
                  max_queue_delay_us: int = 2000, version_policy: str = "latest") -> str:
    """The ``config.pbtxt`` text for an ONNX model with inputs/outputs ``io`` (see
    :func:`tprna.export.onnx_export.onnx_io`); the first dim of each must be the batch."""
    check_model_name(name)
    if version_policy not in VERSION_POLICIES:
        raise TprnaError(f"version policy {version_policy!r} is not one of: {', '.join(VERSION_POLICIES)}")
    for e in io["inputs"] + io["outputs"]:
        if not e["shape"] or isinstance(e["shape"][0], int):
            raise TprnaError(f"tensor {e['name']!r} has no dynamic batch dimension "
                             f"(shape {e['shape']}); re-export the model with 'tprna export onnx'")
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
        f"{VERSION_POLICIES[version_policy]}\n"
        "# cuDNN algorithm choice by heuristic (1): L changes from request to request, and an\n"
        "# exhaustive search (0, the default) would re-run for every new shape.\n"
        'parameters { key: "cudnn_conv_algo_search" value: { string_value: "1" } }\n'
    )


def _io_of_version(folder: Path, version: int) -> dict[str, Any]:
    path = folder / str(version) / "model.onnx"
    if not path.is_file():
        raise TprnaError(f"version {version} has no model.onnx; remove that folder or fix it by hand", folder)
    try:
        return onnx_io(path)
    except Exception as e:  # protobuf's DecodeError and friends
        raise TprnaError(f"version {version}'s model.onnx is not readable ({type(e).__name__})", folder) from None


def _io_key(io: dict[str, Any]) -> list:
    """What the config declares of a model's tensors: names, dtypes, non-batch dims."""
    return [(e["name"], e["dtype"], _dims(e["shape"])) for e in io["inputs"] + io["outputs"]]


def _write_file(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` and rename it into place (0644 under a 022 umask)."""
    write_file_atomic(path, text.encode())


def _stage_version(parent: Path, version: int, src: Path, meta_text: str) -> Path:
    """A hidden folder in ``parent`` holding the version's model.onnx and metadata."""
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=parent))
    default_permissions(staging)
    shutil.copyfile(src, staging / "model.onnx")
    default_permissions(staging / "model.onnx")
    (staging / _METADATA).write_text(meta_text)
    default_permissions(staging / _METADATA)
    return staging


def export_triton(onnx_path: str | os.PathLike, repo_dir: str | os.PathLike = "serve/models",
                  name: str | None = None, max_batch_size: int = 8, version: int | None = None,
                  version_policy: str = "latest", overwrite: bool = False) -> Path:
    """Add ``onnx_path`` as version ``version`` (default: the next free one, 1 for a new
    model) of the Triton model ``name`` (default: the ONNX file's stem) in the repository
    ``repo_dir``, and (re)write the model's config; returns the model's folder.  An
    existing version is replaced only with ``overwrite=True``; see the module doc."""
    src = Path(onnx_path)
    meta = read_model_metadata(src)  # also proves it is a tpRNA model
    if name is None:
        name = src.name[:-len(".onnx")] if src.name.lower().endswith(".onnx") else src.stem
        try:
            check_model_name(name)
        except TprnaError as e:
            raise TprnaError(f"{e}; give the model another name with --name") from None
    else:
        check_model_name(name)
    if max_batch_size < 1:
        raise TprnaError(f"max_batch_size must be at least 1, got {max_batch_size}")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or not 1 <= version <= MAX_VERSION):
        raise TprnaError(f"model version must be a whole number from 1 to {MAX_VERSION}, got {version!r}")
    io = onnx_io(src)
    config = triton_config(name, io, max_batch_size, version_policy=version_policy)
    meta_text = json.dumps(meta, indent=2, sort_keys=True) + "\n"

    repo = Path(repo_dir)
    repo.mkdir(parents=True, exist_ok=True)
    final = repo / name
    if final.parent.resolve() != repo.resolve() or final.resolve() == repo.resolve():
        raise TprnaError(f"model name {name!r} does not name a folder inside the repository", repo)
    if final.exists() and not final.is_dir():
        raise TprnaError(f"{name!r} in the repository is a file, not a model folder; remove it or choose "
                         "another --name", final)

    existing = model_versions(final)
    if version is None:
        version = existing[-1] + 1 if existing else 1
    if version in existing and not overwrite:
        free = existing[-1] + 1
        raise TprnaError(f"model {name!r} already has version {version}; pass --overwrite to replace it, "
                         f"or --version {free} (the next free one) to add a version", final)
    others = [v for v in existing if v != version]
    served = others if version_policy == "all" else [v for v in others if v > version][-1:]
    for v in served:
        if _io_key(_io_of_version(final, v)) != _io_key(io):
            why = ("every version is served (version policy 'all')" if version_policy == "all"
                   else f"version {v} is the newest and the config must fit it")
            raise TprnaError(f"version {v} of model {name!r} has other inputs/outputs than this model, and "
                             f"{why}; export it under another --name", final)
    newest = max([version, *others])

    if not final.exists():
        # a new model: assemble it all under a hidden name, then rename it into place
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=repo))
        try:
            default_permissions(staging)
            _stage_version(staging, version, src, meta_text).rename(staging / str(version))
            _write_file(staging / "config.pbtxt", config)
            _write_file(staging / _METADATA, meta_text)
            try:
                staging.rename(final)
            except OSError:
                raise TprnaError(f"model {name!r} appeared in the repository while it was written; "
                                 "run the export again", final) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    target = final / str(version)
    staged = _stage_version(final, version, src, meta_text)
    old = None
    try:
        if target.exists():  # overwrite: swap the version folder, then drop the old one
            old = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".old", dir=final))
            old.rmdir()
            target.rename(old)
        try:
            staged.rename(target)
        except OSError:  # another export wrote this version meanwhile
            raise TprnaError(f"version {version} of model {name!r} appeared while it was written; "
                             "run the export again", final) from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)
        if old is not None:
            if not target.exists():  # the swap failed half-way: put the old version back
                old.rename(target)
            shutil.rmtree(old, ignore_errors=True)
    _write_file(final / "config.pbtxt", config)
    if version == newest:
        _write_file(final / _METADATA, meta_text)
    return final
