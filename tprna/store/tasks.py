"""The per-entry work of a build: read the inputs, compute the features, make the groups
to write (:class:`~tprna.store.base.GroupPayload`), and — given a sink — write them.

A :class:`Task` is picklable and self-contained, so it runs the same inline, in a local
worker process or on a Dask worker; :func:`run_task` never raises for a bad input (it
returns an :class:`Outcome` naming the file and the reason).  An input whose features
would not fit (L above ``max_length``, or the estimate of
:func:`tprna.features.feature_memory_bytes` above ``memory_limit``, by default half the
memory available) is refused before anything is computed.  The worker processes of a local
build share that limit: an input needing more than its worker's share of it computes while
holding one lock file (:meth:`FeatureLimits.computing`), so large inputs wait for each other.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from tprna.contract import rounded
from tprna.errors import TprnaError
from tprna.features import PROFILE_COMPONENTS, FeatureSpec, feature_memory_bytes, make_features
from tprna.limits import check_feature_memory, default_limit, size
from tprna.msa import MSA, read_msa
from tprna.store.atomic import DiskFull, disk_full, disk_full_error
from tprna.store.base import GroupPayload, GroupSink
from tprna.store.index import entry_record
from tprna.store.inputs import BuildItem
from tprna.store.schema import PAIR_ARRAYS, entry_group, features_group, finalize, pack_component

__all__ = ["FeatureLimits", "shared_limits", "Task", "Outcome", "run_task", "run_task_single_threaded",
           "feature_payload", "entry_payload", "MAX_LENGTH", "reason", "single_thread"]

MAX_LENGTH = 2000  # default refusal above this query length (an L×L map of 100·L² bytes and more)


@dataclass(frozen=True)
class FeatureLimits:
    """What a build refuses to compute: a query longer than ``max_length`` residues, or an
    input whose features need (by estimate) more than ``memory_limit`` bytes — by default
    half the memory available when the input is reached."""

    max_length: int = MAX_LENGTH
    memory_limit: int | None = None
    workers: int = 1  # processes computing features at once (a local build's jobs)
    large_lock: str | None = None  # the lock file a computation above its share holds

    def check(self, msa: MSA, spec: FeatureSpec) -> None:
        if msa.length > self.max_length:
            need = size(feature_memory_bytes(spec, msa.length, msa.depth))
            raise TprnaError(f"query length {msa.length} is above the limit of {self.max_length} "
                             f"(its {spec.feature_set} features need ~{need} of memory); "
                             "raise it with --max-length if this machine has the memory", msa.source or None)
        check_feature_memory(msa, spec, self.memory_limit,
                             "raise it with --memory-limit or build on a larger machine")

    @contextmanager
    def computing(self, msa: MSA, spec: FeatureSpec) -> Iterator[None]:
        """Around the computation of ``msa``'s features: one needing more than a worker's
        share of the limit (limit / workers) holds ``large_lock``, so that at most one such
        computation runs at a time and all together stay under twice the limit (the memory
        available, by default).  The kernel drops a lock whose worker dies."""
        if self.large_lock is None or self.workers <= 1:
            yield
            return
        limit = default_limit(self.memory_limit)
        if limit is None or feature_memory_bytes(spec, msa.length, msa.depth) * self.workers <= limit:
            yield
            return
        fd = os.open(self.large_lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


@contextmanager
def shared_limits(limits: FeatureLimits, workers: int) -> Iterator[FeatureLimits]:
    """``limits`` for ``workers`` local processes computing at once: with more than one,
    their large inputs take turns through a lock file made here (removed after)."""
    if workers <= 1:
        yield limits
        return
    fd, path = tempfile.mkstemp(prefix="tprna-large-features-", suffix=".lock")
    os.close(fd)
    try:
        yield replace(limits, workers=workers, large_lock=path)
    finally:
        os.unlink(path)


# --------------------------------------------------------------------------- payloads


def _read_labels(item: BuildItem, msa: MSA) -> tuple[np.ndarray, np.ndarray] | None:
    source = item.label or item.structure
    if source is None:
        return None
    from tprna.structure import read_labels  # gemmi + scipy (0.2 s): only when labels are given

    contacts, observed = read_labels(source, msa.query, chain=item.chain, molecule=item.molecule)
    length = msa.length
    if contacts.shape != (length, length) or observed.shape != (length, length):
        raise TprnaError(f"labels are {contacts.shape[0]}x{contacts.shape[1]} but the alignment's "
                         f"query has {length} residues", source)
    return contacts.astype(np.uint8), observed.astype(bool)


def feature_payload(msa: MSA, spec: FeatureSpec,
                    limits: FeatureLimits | None = None) -> tuple[GroupPayload, float]:
    """The group ``features/<spec.key>`` of an entry, and its Neff (refused by ``limits``
    before anything is computed when given)."""
    if limits is not None:
        limits.check(msa, spec)
    return _features_group(msa, spec, limits)


def _features_group(msa: MSA, spec: FeatureSpec, limits: FeatureLimits | None) -> tuple[GroupPayload, float]:
    """:func:`feature_payload` of an input ``limits`` already let through (their share of
    memory still taken while computing)."""
    with limits.computing(msa, spec) if limits is not None else nullcontext():
        feats = make_features(msa, spec)
    arrays: dict[str, np.ndarray] = {"weights": np.asarray(feats["weights"], dtype=np.float32)}
    packing = {}
    for name in spec.stored_components:
        try:
            # the contract rounds (the model's input); packing only stores those values
            arrays[name] = pack_component(name, rounded(name, feats[name], spec.dtype), spec.dtype)
        except TprnaError as e:
            raise TprnaError(f"{name}: {e}", msa.source or None) from None
        packing[name] = ("(L, q) as it is" if name in PROFILE_COMPONENTS
                         else "upper triangle i<=j of (L, L, q, q) as (L(L+1)/2, q, q)" if name in PAIR_ARRAYS
                         else "upper triangle i<=j of (L, L) as (L(L+1)/2,)")
    neff = float(feats["neff"])
    attrs = finalize({"spec": spec.to_dict(), "spec_key": spec.key, "neff": neff,
                      "components": list(spec.stored_components), "dtype": spec.dtype,
                      "packing": packing}, arrays)
    return GroupPayload(attrs, arrays), neff


def entry_payload(item: BuildItem, spec: FeatureSpec, key: str, provenance: dict,
                  limits: FeatureLimits | None = None) -> tuple[GroupPayload, float]:
    """A whole entry: alignment, labels (when given) and the features of ``spec``."""
    msa = read_msa(item.msa, item.molecule)
    if limits is not None:
        limits.check(msa, spec)  # before the labels: a structure of a huge RNA is work too
    labels = _read_labels(item, msa)
    features, neff = _features_group(msa, spec, limits)
    arrays: dict[str, np.ndarray] = {"msa": np.ascontiguousarray(msa.codes, dtype=np.uint8)}
    if labels is not None:
        arrays["contacts"], arrays["observed"] = labels
    attrs = finalize({
        "id": item.id, "sequence": msa.query, "length": msa.length, "depth": msa.depth,
        "molecule": item.molecule, "alphabet": msa.alphabet.states, "input_key": key,
        "provenance": provenance, "has_labels": labels is not None,
        "n_unknown": int(msa.n_unknown), "n_dropped_columns": int(msa.n_dropped_columns),
    }, arrays)
    return GroupPayload(attrs, arrays, {"features": GroupPayload({}, {}, {spec.key: features})}), neff


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """One entry to compute: the whole entry ("new", "replace") or one spec group ("spec")."""

    item: BuildItem
    kind: str  # "new" | "replace" | "spec"
    key: str
    provenance: dict
    spec: FeatureSpec
    store: str
    sink: GroupSink | None  # where the task writes its group; None: it sends the payload back
    limits: FeatureLimits = FeatureLimits()


@dataclass
class Outcome:
    task: Task
    neff: float | None = None
    source: str | None = None
    error: str | None = None
    target: str | None = None
    payload: GroupPayload | None = None  # when the task has no sink: the coordinator writes it
    record: dict | None = None  # the entry's index record ("new" / "replace")
    disk_full: bool = False  # the write failed for space: the build stops


def reason(err: TprnaError) -> str:
    text = str(err)
    prefix = f"{err.path}: " if err.path else ""
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def run_task(task: Task) -> Outcome:
    """Compute (and, given a sink, write) one task.  Never raises for a bad input."""
    item = task.item
    try:
        record = None
        if task.kind == "spec":
            msa = read_msa(item.msa, item.molecule)
            payload, neff = feature_payload(msa, task.spec, task.limits)
            target = features_group(item.id, task.spec.key)
        else:
            payload, neff = entry_payload(item, task.spec, task.key, task.provenance, task.limits)
            target = entry_group(item.id)
            record = entry_record(payload.attrs, {task.spec.key: neff})
        if task.sink is not None:
            task.sink.write_group(target, payload)
            return Outcome(task, neff=neff, target=target, record=record)
        return Outcome(task, neff=neff, target=target, payload=payload, record=record)
    except Exception as e:
        if not disk_full(e):
            return _failure(task, e)
        full = e if isinstance(e, DiskFull) else disk_full_error(task.store, e)
        return Outcome(task, source=task.store, error=reason(full), disk_full=True)


def run_task_single_threaded(task: Task) -> Outcome:
    """:func:`run_task` with one numba thread: what a worker of a pool or a cluster runs
    (as many tasks at once as it has cores, not tasks × cores threads)."""
    single_thread()
    return run_task(task)


def _failure(task: Task, e: Exception) -> Outcome:
    """One bad input: reported, and the batch goes on."""
    source = str(task.item.msa)
    if isinstance(e, TprnaError):
        return Outcome(task, source=e.path or source, error=reason(e))
    if isinstance(e, MemoryError):
        return Outcome(task, source=source, error="out of memory computing features")
    return Outcome(task, source=source,
                    error=f"unexpected error ({type(e).__name__}: {' '.join(str(e).split())[:300]})")


def single_thread() -> None:
    import numba  # 0.13 s: only the worker processes that call this need it

    numba.set_num_threads(1)  # jobs processes × 1 thread, not jobs × cores
