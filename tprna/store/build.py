"""Build a feature store: plan by content key, compute in parallel, write atomically.

Each item's *input key* hashes its files' bytes (alignment, structure / label), chain and
molecule.  The plan compares it with what the store holds:

* no entry, or an entry with another input key → compute and write the whole entry;
* same input key, but no complete features for this spec → compute only that spec's group;
* same input key and spec present → nothing at all (no file is opened for writing).

Workers (``jobs`` processes, one numba thread each — or the workers of a Dask cluster,
``scheduler``, see :mod:`tprna.store.cluster`) read the inputs and compute the features.
For Zarr the worker also writes the entry (staging folder + rename, see
:func:`tprna.store.backends.zarr_write_group`), so the write can run wherever the
computation runs; for HDF5 the payload comes back and the one writer appends it to
``<file>.partial`` (so HDF5 builds are local only).

An input whose features would not fit (L above ``max_length``, or the estimate of
:func:`tprna.features.feature_memory_bytes` above ``memory_limit``, by default half the
memory available) is refused before anything is computed.  A full disk stops the build
with a :class:`~tprna.store.atomic.DiskFull` error: nothing half-written is left, every
entry published before stays whole, and the next build (with space) finishes the job.
The manifest decides the split of every id it lists (:mod:`tprna.store.splits`).
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tprna.errors import TprnaError
from tprna.features import PROFILE_COMPONENTS, FeatureSpec, feature_memory_bytes, make_features
from tprna.msa import MSA, read_msa
from tprna.store.atomic import DiskFull, disk_full, disk_full_error
from tprna.store.backends import (STAGING, GroupPayload, Hdf5Backend, Hdf5Session, ZarrBackend,
                                  is_hdf5_path, store_location, zarr_clean_stale, zarr_init_store,
                                  zarr_require_entries, zarr_set_root_attrs, zarr_write_group, _decode_attrs)
from tprna.store.splits import assign_manifest_splits
from tprna.store.inputs import BuildItem
from tprna.store.schema import (ENTRIES, FORMAT, PAIR_ARRAYS, check_entry_id, checksum,
                                entry_group, features_group, file_sha256, finalize, input_key,
                                pack_component, root_attrs, store_lock)

__all__ = ["BuildReport", "FeatureLimits", "build_store", "entry_payload", "feature_payload",
           "repair_partial", "available_memory"]

STORAGE_DTYPES = ("float16", "float32")
MAX_LENGTH = 2000  # default refusal above this query length (an L×L map of 100·L² bytes and more)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class FeatureLimits:
    """What a build refuses to compute: a query longer than ``max_length`` residues, or an
    input whose features need (by estimate) more than ``memory_limit`` bytes — by default
    half the memory available when the input is reached."""

    max_length: int = MAX_LENGTH
    memory_limit: int | None = None

    def check(self, msa: MSA, spec: FeatureSpec) -> None:
        need = feature_memory_bytes(spec, msa.length, msa.depth)
        gib = need / 2 ** 30
        if msa.length > self.max_length:
            raise TprnaError(f"query length {msa.length} is above the limit of {self.max_length} "
                             f"(its {spec.feature_set} features need ~{gib:.1f} GiB of memory); "
                             "raise it with --max-length if this machine has the memory", msa.source or None)
        limit = self.memory_limit
        if limit is None:
            free = available_memory()
            limit = None if free is None else free // 2
        if limit is not None and need > limit:
            raise TprnaError(f"L={msa.length}, N={msa.depth}: its {spec.feature_set} features need "
                             f"~{gib:.1f} GiB of memory, above the limit of {limit / 2 ** 30:.1f} GiB "
                             "(default: half the memory available); raise it with --memory-limit "
                             "or build on a larger machine", msa.source or None)


@dataclass
class BuildReport:
    """What a build did.  ``built`` lists every entry whose features were computed in this
    run (``replaced`` is the part of it whose inputs had changed); ``failed`` pairs the
    offending file with the reason."""

    store: str
    spec_key: str
    built: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    skipped_unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    failed_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        return (f"{len(self.built)} built ({len(self.replaced)} replaced), "
                f"{len(self.skipped_unchanged)} unchanged, {len(self.failed)} failed "
                f"in {self.seconds:.1f} s")


# --------------------------------------------------------------------------- payloads


def _read_labels(item: BuildItem, msa: MSA) -> tuple[np.ndarray, np.ndarray] | None:
    source = item.label or item.structure
    if source is None:
        return None
    from tprna.structure import read_labels

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
    feats = make_features(msa, spec)
    arrays: dict[str, np.ndarray] = {"weights": np.asarray(feats["weights"], dtype=np.float32)}
    packing = {}
    for name in spec.components:
        try:
            arrays[name] = pack_component(name, feats[name], spec.dtype)
        except TprnaError as e:
            raise TprnaError(f"{name}: {e}", msa.source or None) from None
        packing[name] = ("(L, q) as it is" if name in PROFILE_COMPONENTS
                         else "upper triangle i<=j of (L, L, q, q) as (L(L+1)/2, q, q)" if name in PAIR_ARRAYS
                         else "upper triangle i<=j of (L, L) as (L(L+1)/2,)")
    neff = float(feats["neff"])
    attrs = finalize({"spec": spec.to_dict(), "spec_key": spec.key, "neff": neff,
                      "components": list(spec.components), "dtype": spec.dtype,
                      "packing": packing}, arrays)
    return GroupPayload(attrs, arrays), neff


def entry_payload(item: BuildItem, spec: FeatureSpec, key: str, provenance: dict,
                  limits: FeatureLimits | None = None) -> tuple[GroupPayload, float]:
    """A whole entry: alignment, labels (when given) and the features of ``spec``."""
    msa = read_msa(item.msa, item.molecule)
    if limits is not None:
        limits.check(msa, spec)  # before the labels: a structure of a huge RNA is work too
    labels = _read_labels(item, msa)
    features, neff = feature_payload(msa, spec)
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
class _Task:
    item: BuildItem
    kind: str  # "new" | "replace" | "spec"
    key: str
    provenance: dict
    spec: FeatureSpec
    store: str
    backend: str  # "zarr" | "hdf5"
    limits: FeatureLimits = FeatureLimits()


@dataclass
class _Outcome:
    task: _Task
    neff: float | None = None
    source: str | None = None
    error: str | None = None
    target: str | None = None
    payload: GroupPayload | None = None  # HDF5 only: the coordinator writes it
    disk_full: bool = False  # the write failed for space: the build stops


def _reason(err: TprnaError) -> str:
    text = str(err)
    prefix = f"{err.path}: " if err.path else ""
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def _run_task(task: _Task) -> _Outcome:
    """Compute (and for Zarr, write) one task.  Never raises for a bad input."""
    item = task.item
    try:
        if task.kind == "spec":
            msa = read_msa(item.msa, item.molecule)
            payload, neff = feature_payload(msa, task.spec, task.limits)
            target = features_group(item.id, task.spec.key)
        else:
            payload, neff = entry_payload(item, task.spec, task.key, task.provenance, task.limits)
            target = entry_group(item.id)
        if task.backend == "zarr":
            zarr_write_group(task.store, target, payload)
            return _Outcome(task, neff=neff, target=target)
        return _Outcome(task, neff=neff, target=target, payload=payload)
    except Exception as e:
        if not disk_full(e):
            return _failure(task, e)
        full = e if isinstance(e, DiskFull) else disk_full_error(task.store, e)
        return _Outcome(task, source=task.store, error=_reason(full), disk_full=True)


def _failure(task: _Task, e: Exception) -> _Outcome:
    """One bad input: reported, and the batch goes on."""
    source = str(task.item.msa)
    if isinstance(e, TprnaError):
        return _Outcome(task, source=e.path or source, error=_reason(e))
    if isinstance(e, MemoryError):
        return _Outcome(task, source=source, error="out of memory computing features")
    return _Outcome(task, source=source,
                    error=f"unexpected error ({type(e).__name__}: {' '.join(str(e).split())[:300]})")


def _init_worker() -> None:
    import numba

    numba.set_num_threads(1)  # jobs processes × 1 thread, not jobs × cores


# --------------------------------------------------------------------------- planning


def _existing(reader: Any) -> dict[str, tuple[str, set[str]]]:
    """entry id → (input key, keys of its complete spec groups), complete entries only."""
    out = {}
    for e in reader.list_groups(ENTRIES):
        attrs = reader.read_attrs(entry_group(e))
        if not attrs or attrs.get("complete") is not True:
            continue
        keys = set()
        for k in reader.list_groups(f"{entry_group(e)}/features"):
            fattrs = reader.read_attrs(features_group(e, k))
            if fattrs and fattrs.get("complete") is True:
                keys.add(k)
        out[e] = (attrs.get("input_key", ""), keys)
    return out


def _provenance(item: BuildItem) -> tuple[str, dict]:
    def source(p: Path | None) -> dict | None:
        return None if p is None else {"path": str(Path(p).resolve()), "sha256": file_sha256(p)}

    prov = {"msa": source(item.msa), "structure": source(item.structure),
            "label": source(item.label), "chain": item.chain, "molecule": item.molecule}
    key = input_key(prov["msa"]["sha256"], (prov["structure"] or {}).get("sha256"),
                    (prov["label"] or {}).get("sha256"), item.chain, item.molecule)
    return key, prov


def _plan(items: Sequence[BuildItem], spec: FeatureSpec, existing: dict, store: str, backend: str,
          report: BuildReport, limits: FeatureLimits = FeatureLimits()) -> list[_Task]:
    tasks: list[_Task] = []
    seen: dict[str, str] = {}
    for item in items:
        why = check_entry_id(item.id)
        if why is None and item.id in seen:
            why = f"duplicate id {item.id!r} (also from {seen[item.id]})"
        if why is None and item.molecule != spec.molecule:
            why = f"item is {item.molecule} but the feature spec is {spec.molecule}"
        if why is not None:
            report.failed.append((str(item.msa), why))
            report.failed_ids.append(item.id)
            continue
        seen[item.id] = str(item.msa)
        try:
            key, prov = _provenance(item)
        except TprnaError as e:
            report.failed.append((e.path or str(item.msa), _reason(e)))
            report.failed_ids.append(item.id)
            continue
        have = existing.get(item.id)
        if have is None:
            kind = "new"
        elif have[0] != key:
            kind = "replace"
        elif spec.key not in have[1]:
            kind = "spec"
        else:
            report.skipped_unchanged.append(item.id)
            continue
        tasks.append(_Task(item, kind, key, prov, spec, store, backend, limits))
    return tasks


# --------------------------------------------------------------------------- HDF5 resume


def repair_partial(f: Any) -> bool:
    """Make a leftover ``<file>.partial`` safe to resume: groups a killed writer left
    incomplete are deleted, and groups it wrote (absent or different in the live file)
    are checksum-verified and deleted when wrong.  False: discard the partial."""
    import h5py

    meta = _decode_attrs(f.attrs).get("tprna_store")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or ENTRIES not in f:
        return False
    live_path = Path(f.filename[: -len(".partial")])
    live = None
    if live_path.exists():
        try:
            live = h5py.File(live_path, "r")
        except OSError:
            live = None
    try:
        for e in list(f[ENTRIES].keys()):
            group = entry_group(e)
            groups = [group]
            if f.get(f"{group}/features", getclass=True) is h5py.Group:
                groups += [features_group(e, k) for k in list(f[f"{group}/features"].keys())]
            for g in groups:
                attrs = _decode_attrs(f[g].attrs)
                ok = attrs.get("complete") is True and isinstance(attrs.get("checksums"), dict)
                if ok and not (live is not None and g in live and _decode_attrs(live[g].attrs) == attrs):
                    ok = all(checksum(np.asarray(f[f"{g}/{n}"][()])) == s
                             for n, s in attrs["checksums"].items())
                if not ok:
                    del f[g]
                    if g == group:
                        break
        f.flush()
    finally:
        if live is not None:
            live.close()
    return True


# --------------------------------------------------------------------------- the build


def _progress(enabled: bool, total: int):
    if not enabled or total == 0:
        return None
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("[bold]building[/] {task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=False)


def _execute(tasks: list[_Task], jobs: int, progress: bool, on_done, client: Any = None) -> None:
    """Run ``tasks`` serially (``jobs`` 1), on a local process pool, or on a Dask cluster
    (``client``), calling ``on_done`` with each outcome as it completes."""
    bar = _progress(progress, len(tasks))
    handle = None
    if bar is not None:
        bar.start()
        handle = bar.add_task("entries", total=len(tasks))

    def finished(outcome: _Outcome) -> None:
        on_done(outcome)
        if bar is not None:
            bar.update(handle, advance=1, description=outcome.task.item.id)

    def lost(task: _Task, why: str) -> _Outcome:
        return _Outcome(task, source=str(task.item.msa), error=why)

    try:
        if client is not None:
            from tprna.store.cluster import run_tasks

            run_tasks(client, tasks, finished, lost)
            return
        if jobs <= 1 or len(tasks) <= 1:
            for task in tasks:
                finished(_run_task(task))
            return
        ctx = multiprocessing.get_context("spawn")  # numba's thread pools do not survive fork
        with cf.ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=ctx,
                                    initializer=_init_worker) as pool:
            futures = {pool.submit(_run_task, t): t for t in tasks}
            try:
                for fut in cf.as_completed(futures):
                    task = futures[fut]
                    try:
                        outcome = fut.result()
                    except Exception as e:  # noqa: BLE001 - a worker died (killed, OOM)
                        outcome = lost(task, f"worker process failed ({type(e).__name__}: {e})")
                    finished(outcome)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        if bar is not None:
            bar.stop()


def build_store(
    path: str | os.PathLike,
    items: Sequence[BuildItem],
    spec: FeatureSpec,
    jobs: int = 1,
    progress: bool = True,
    *,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float = 300.0,
    scheduler: Any = None,
    max_length: int = MAX_LENGTH,
    memory_limit: int | None = None,
) -> BuildReport:
    """Build (or bring up to date) the store at ``path`` for ``items`` under ``spec``.

    ``.h5``/``.hdf5`` paths are HDF5 files, anything else a Zarr directory (a path or a
    ``file://`` URL).  Bad inputs are reported in :attr:`BuildReport.failed` and skipped;
    the rest are built.  For HDF5 the live file is replaced every ``checkpoint_every``
    entries / ``checkpoint_seconds`` and at the end.

    ``scheduler`` (a Dask scheduler address such as ``tcp://host:8786``, a cluster object or
    a ``distributed.Client``) runs the per-entry work on that cluster instead of ``jobs``
    local processes; Zarr stores only, on a filesystem every worker mounts.

    An input whose query is longer than ``max_length``, or whose features need (by
    estimate) more than ``memory_limit`` bytes (default: half the memory available), is
    refused and reported in :attr:`BuildReport.failed`.  A full disk raises
    :class:`~tprna.store.atomic.DiskFull`, leaving no half-written entry (nor an HDF5
    partial) behind."""
    t0 = time.perf_counter()
    path = store_location(path)
    if spec.dtype not in STORAGE_DTYPES:
        raise TprnaError(f"storage dtype {spec.dtype!r} is not supported; use float16 or float32")
    if jobs < 1:
        raise TprnaError(f"jobs must be at least 1, not {jobs}")
    if max_length < 1:
        raise TprnaError(f"max_length must be at least 1, not {max_length}")
    limits = FeatureLimits(max_length, memory_limit)
    report = BuildReport(store=str(path), spec_key=spec.key)
    items = list(items)
    try:
        if is_hdf5_path(path):
            if scheduler is not None:
                raise TprnaError("an HDF5 store has one writer, so it cannot be built on a Dask cluster; "
                                 "build a Zarr store (a folder path) with --scheduler, or drop --scheduler",
                                 path)
            _build_hdf5(path, items, spec, jobs, progress, report, checkpoint_every, checkpoint_seconds,
                        limits)
        elif scheduler is not None:
            from tprna.store.cluster import connect

            client, owned = connect(scheduler)
            try:
                # Workers may run elsewhere: give them absolute paths (same bytes, same keys).
                _build_zarr(path.absolute(), [_absolute(i) for i in items], spec, jobs, progress,
                            report, limits, client)
            finally:
                if owned:
                    client.close()
        else:
            _build_zarr(path, items, spec, jobs, progress, report, limits)
    except DiskFull:
        raise
    except Exception as e:  # a full disk met outside an entry write (metadata, the lock, a copy)
        if disk_full(e):
            raise disk_full_error(path, e) from None
        raise
    report.seconds = time.perf_counter() - t0
    return report


def _absolute(item: BuildItem) -> BuildItem:
    def fix(p: Path | None) -> Path | None:
        return None if p is None else Path(os.path.abspath(p))

    return replace(item, msa=fix(item.msa), structure=fix(item.structure), label=fix(item.label))


def _with_spec(attrs: dict, spec: FeatureSpec) -> dict:
    specs = dict(attrs.get("specs", {}))
    specs.setdefault(spec.key, spec.to_dict())
    return {**attrs, "specs": specs}


def _check_is_store(attrs: dict | None, path: Path) -> None:
    meta = (attrs or {}).get("tprna_store")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TprnaError("exists but is not a tpRNA feature store; choose a new path", path)


def _build_zarr(path: Path, items: list[BuildItem], spec: FeatureSpec, jobs: int, progress: bool,
                report: BuildReport, limits: FeatureLimits, client: Any = None) -> None:
    if path.exists() and not path.is_dir():
        raise TprnaError("exists and is not a folder (HDF5 stores need a .h5 suffix)", path)
    if path.is_dir() and not (path / "zarr.json").exists() and any(
            not n.startswith(".") for n in os.listdir(path)):
        raise TprnaError("folder exists, is not empty and is not a feature store; choose a new path", path)
    with store_lock(path):
        reader = ZarrBackend(path)
        if not reader.exists():
            zarr_init_store(path, root_attrs())
        attrs = reader.read_attrs("")
        _check_is_store(attrs, path)
        zarr_require_entries(path)
        zarr_clean_stale(path)
        if spec.key not in attrs.get("specs", {}):
            attrs = _with_spec(attrs, spec)
            zarr_set_root_attrs(path, attrs)
        existing = _existing(reader)
        tasks = _plan(items, spec, existing, str(path), "zarr", report, limits)
        if client is not None and tasks:
            from tprna.store.cluster import check_workers

            check_workers(client, path, STAGING)

        def done(outcome: _Outcome) -> None:
            _record(outcome, report)

        _execute(tasks, jobs, progress, done, client)
        assigned = assign_manifest_splits(attrs, items, set(existing) | set(report.built))
        if assigned != attrs:
            zarr_set_root_attrs(path, assigned)


def _record(outcome: _Outcome, report: BuildReport) -> bool:
    task = outcome.task
    if outcome.disk_full:  # not this input's fault, and every next write would fail too
        raise DiskFull(outcome.error, task.store)
    if outcome.error is not None:
        report.failed.append((outcome.source or str(task.item.msa), outcome.error))
        report.failed_ids.append(task.item.id)
        return False
    report.built.append(task.item.id)
    if task.kind == "replace":
        report.replaced.append(task.item.id)
    return True


def _build_hdf5(path: Path, items: list[BuildItem], spec: FeatureSpec, jobs: int, progress: bool,
                report: BuildReport, checkpoint_every: int | None, checkpoint_seconds: float,
                limits: FeatureLimits) -> None:
    if path.exists() and not path.is_file():
        raise TprnaError("exists and is not a file", path)
    with store_lock(path):
        session = Hdf5Session(path, root_attrs(), repair=repair_partial)
        session.clean_stale()
        live_reader = None
        try:
            if session.partial.exists() or not path.exists():
                session.open()  # resume a killed build's partial, or start a new file
                reader: Any = Hdf5Backend(path, file=session.file)
            else:  # plan against the live file; copy it only when there is work
                live_reader = Hdf5Backend(path)
                live_reader.refresh()
                reader = live_reader
            attrs = reader.read_attrs("")
            _check_is_store(attrs, path)
            existing = _existing(reader)
            tasks = _plan(items, spec, existing, str(path), "hdf5", report, limits)
            present = set(existing) | {t.item.id for t in tasks}
            needs_meta = (spec.key not in attrs.get("specs", {})
                          or assign_manifest_splits(attrs, items, present) != attrs)
        except BaseException:
            session.abandon()
            raise
        finally:
            if live_reader is not None:
                live_reader.close()
        if session.file is None:
            if not tasks and not needs_meta:
                return  # nothing to do: the live file is not touched
            session.open()
        try:
            attrs = _with_spec(session.read_root_attrs(), spec)
            session.set_root_attrs(attrs)
            written, last = 0, time.monotonic()

            def done(outcome: _Outcome) -> None:
                nonlocal written, last
                if outcome.payload is not None:
                    session.write_group(outcome.target, outcome.payload)
                if _record(outcome, report):
                    written += 1
                    due = (checkpoint_every and written % checkpoint_every == 0) or \
                        time.monotonic() - last >= checkpoint_seconds
                    if due:
                        session.checkpoint()
                        last = time.monotonic()

            _execute(tasks, jobs, progress, done)
            assigned = assign_manifest_splits(attrs, items, set(existing) | set(report.built))
            if assigned != attrs:
                session.set_root_attrs(assigned)
        except BaseException:
            session.abandon()  # the partial stays, to be resumed by the next build
            raise
        session.commit()
