"""Build a feature store: plan by content key, compute in parallel, write atomically.

Each item's *input key* hashes its files' bytes (alignment, structure / label), chain and
molecule.  The plan compares it with what the store holds (its entry index):

* no entry, or an entry with another input key → compute and write the whole entry;
* same input key, but no complete features for this spec → compute only that spec's group;
* same input key and spec present → nothing at all (no file is opened for writing).

One build loop serves both formats through the writer protocol
(:class:`~tprna.store.base.StoreWriter`), and one executor interface
(``concurrent.futures.Executor``) runs the tasks (:mod:`tprna.store.tasks`): inline
(``jobs`` 1), on a local process pool (``jobs`` processes, one numba thread each), or on
the workers of a Dask cluster (``scheduler``, :mod:`tprna.store.cluster`).  Where the
writer has a sink (Zarr) the task writes its entry itself, wherever it runs; otherwise
(HDF5: one writer) the payload comes back and the writer appends it.

A full disk stops the build with a :class:`~tprna.store.atomic.DiskFull` error: nothing
half-written is left, every entry published before stays whole, and the next build (with
space) finishes the job.  The manifest decides the split of every id it lists
(:mod:`tprna.store.splits`).
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from tprna.errors import TprnaError
from tprna.features import FeatureSpec
from tprna.store import index as entry_index
from tprna.store.atomic import DiskFull, disk_full, disk_full_error
from tprna.store.base import GroupSink
from tprna.store.cluster import check_workers, connect, dask_executor
from tprna.store.formats import open_writer, store_lock
from tprna.store.inputs import BuildItem
from tprna.store.location import is_hdf5_path, staging_dir, store_location
from tprna.store.schema import check_entry_id, check_is_store, file_sha256, input_key
from tprna.store.splits import assign_manifest_splits
from tprna.store.tasks import (MAX_LENGTH, FeatureLimits, Outcome, Task, reason, run_task,
                               run_task_single_threaded, shared_limits, single_thread)

__all__ = ["BuildReport", "build_store", "STORAGE_DTYPES"]

STORAGE_DTYPES = ("float16", "float32")


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


# --------------------------------------------------------------------------- planning


def _provenance(item: BuildItem) -> tuple[str, dict]:
    def source(p: Path | None) -> dict | None:
        return None if p is None else {"path": str(Path(p).resolve()), "sha256": file_sha256(p)}

    prov = {"msa": source(item.msa), "structure": source(item.structure),
            "label": source(item.label), "chain": item.chain, "molecule": item.molecule}
    key = input_key(prov["msa"]["sha256"], (prov["structure"] or {}).get("sha256"),
                    (prov["label"] or {}).get("sha256"), item.chain, item.molecule)
    return key, prov


def _plan(items: Sequence[BuildItem], spec: FeatureSpec, existing: dict, store: str,
          sink: GroupSink | None, report: BuildReport, limits: FeatureLimits) -> list[Task]:
    """The tasks for ``items`` against ``existing`` (id → (input key, spec keys held)); bad
    items and unchanged entries go straight into ``report``."""
    tasks: list[Task] = []
    seen: dict[str, str] = {}
    for item in items:
        why = check_entry_id(item.id)
        if why is None and item.id in seen:
            why = (f"duplicate id {item.id!r} (also from {seen[item.id]}); give each entry its own id "
                   "(a file's is its name without suffixes; a manifest names them in its column id)")
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
            report.failed.append((e.path or str(item.msa), reason(e)))
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
        tasks.append(Task(item, kind, key, prov, spec, store, sink, limits))
    return tasks


def _progress(enabled: bool, total: int):
    if not enabled or total == 0:
        return None
    return Progress(TextColumn("[bold]building[/] {task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=False)


class _Inline(cf.Executor):
    """Runs each call as it is submitted (``jobs`` 1): the same loop, no pool."""

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed to the caller through the future
            fut.set_exception(e)
        return fut


def _pool_worker() -> None:
    """Set up a local pool's worker process: one numba thread, and gone with its build."""
    single_thread()
    _exit_with_parent()


def _exit_with_parent() -> None:
    """Exit this process when the one that started it is gone.  A build stopped by SIGTERM
    or the OOM killer has no chance to shut its pool down, and the orphaned workers would
    go on computing their queued tasks (minutes each with ``plm``) for no one."""
    parent = multiprocessing.parent_process()  # spawn: its sentinel is a pipe the parent holds open
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns once that pipe is closed: the parent has exited, however it died
        os._exit(1)

    threading.Thread(target=watch, name="tprna-exit-with-build", daemon=True).start()


@dataclass
class _Runner:
    """Where the tasks run: inline, a local process pool, or a Dask cluster — each a
    ``concurrent.futures.Executor`` (Dask's is ``client.get_executor()``)."""

    jobs: int
    client: Any = None
    progress: bool = True

    def executor(self, n_tasks: int) -> tuple[cf.Executor, Callable[[Task], Outcome], int, str]:
        """(executor, the function it runs per task, how many tasks to keep in flight,
        what a lost task is called)."""
        if self.client is not None:
            # the scheduler places every task at once (as Client.submit of each did)
            return dask_executor(self.client), run_task_single_threaded, n_tasks, "Dask task"
        if self.jobs <= 1 or n_tasks <= 1:
            return _Inline(), run_task, 1, "task"
        workers = min(self.jobs, n_tasks)
        ctx = multiprocessing.get_context("spawn")  # numba's thread pools do not survive fork
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_pool_worker)
        return pool, run_task, 2 * workers, "worker process"

    def run(self, tasks: list[Task], on_done: Callable[[Outcome], None]) -> None:
        """Run ``tasks``, calling ``on_done`` with each outcome as it completes (in this
        process).  A task whose worker died becomes a failed outcome.  On an interrupt the
        tasks not yet started are cancelled; those running finish."""
        if not tasks:
            return
        bar = _progress(self.progress, len(tasks))
        handle = bar.add_task("entries", total=len(tasks)) if bar is not None else None
        if bar is not None:
            bar.start()
        executor, fn, window, label = self.executor(len(tasks))
        pending: dict[cf.Future, Task] = {}
        queue = iter(tasks)

        def fill() -> None:  # a bounded window: payloads coming back are not all held at once
            while len(pending) < window:
                task = next(queue, None)
                if task is None:
                    return
                try:
                    fut = executor.submit(fn, task)
                except Exception as e:  # noqa: BLE001 - a broken pool: the task is lost like the others
                    fut = cf.Future()
                    fut.set_exception(e)
                pending[fut] = task

        try:
            fill()
            while pending:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    task = pending.pop(fut)
                    try:
                        outcome = fut.result()
                    except Exception as e:  # noqa: BLE001 - a worker died (killed, OOM, KilledWorker)
                        why = " ".join(str(e).split())[:200]
                        outcome = Outcome(task, source=str(task.item.msa),
                                          error=f"{label} failed ({type(e).__name__}: {why})")
                    on_done(outcome)
                    if bar is not None:
                        bar.update(handle, advance=1, description=task.item.id)
                fill()
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        finally:
            if self.client is None:
                executor.shutdown(wait=True, cancel_futures=True)
            else:  # Dask's executor: release the finished futures, cancel any left
                executor.shutdown(wait=False)
            if bar is not None:
                bar.stop()


# --------------------------------------------------------------------------- the build


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
    refused and reported in :attr:`BuildReport.failed`; the ``jobs`` local processes share
    that limit (an input above a process's share computes alone among such inputs: see
    :meth:`~tprna.store.tasks.FeatureLimits.computing`).  A full disk raises
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
        if scheduler is not None and is_hdf5_path(path):
            raise TprnaError("an HDF5 store has one writer, so it cannot be built on a Dask cluster; "
                             "build a Zarr store (a folder path) with --scheduler, or drop --scheduler", path)
        client, owned = connect(scheduler) if scheduler is not None else (None, False)
        try:
            if client is not None:  # workers may run elsewhere: absolute paths (same bytes, same keys)
                path, items = path.absolute(), [_absolute(i) for i in items]
            # a cluster's workers have their own machines' memory; a local pool shares this one
            with shared_limits(limits, jobs if client is None else 1) as shared:
                _build(path, items, spec, report, shared, _Runner(jobs, client, progress),
                       checkpoint_every, checkpoint_seconds)
        finally:
            if owned:
                client.close()
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


def _build(path: Path, items: list[BuildItem], spec: FeatureSpec, report: BuildReport,
           limits: FeatureLimits, runner: _Runner, checkpoint_every: int | None,
           checkpoint_seconds: float) -> None:
    """The one build loop, for either format."""
    with store_lock(path):
        writer = open_writer(path, checkpoint_every, checkpoint_seconds)
        reader = writer.prepare()
        try:
            attrs = reader.read_attrs("")
            check_is_store(attrs, path)
            records = entry_index.load(reader)
            index_ok = records is not None
            if records is None:  # a killed build, or a store written before the index
                records = entry_index.scan(reader)
            existing = {e: (r["input_key"], set(r["neff"])) for e, r in records.items()}
            tasks = _plan(items, spec, existing, str(path), writer.sink, report, limits)
            state = {"attrs": _with_spec(attrs, spec)}
            present = set(existing) | {t.item.id for t in tasks}
            if not tasks and index_ok and state["attrs"] == attrs \
                    and assign_manifest_splits(attrs, items, present) == attrs:
                writer.commit()  # nothing to do (a resumed HDF5 partial is published)
                return
            if runner.client is not None and tasks:
                check_workers(runner.client, path, staging_dir(path))
            writer.begin(lambda: entry_index.make_index(records, state["attrs"].get("splits", {})))
            if state["attrs"] != attrs:
                writer.set_root_attrs(state["attrs"])

            def done(outcome: Outcome) -> None:
                if outcome.payload is not None:
                    writer.write_group(outcome.target, outcome.payload)
                if _record(outcome, report):
                    entry_id = outcome.task.item.id
                    if outcome.record is not None:
                        records[entry_id] = outcome.record
                    else:  # a new spec group of an entry already indexed
                        neff = {**records[entry_id]["neff"], spec.key: float(outcome.neff)}
                        records[entry_id] = {**records[entry_id], "neff": dict(sorted(neff.items()))}
                    writer.group_written()

            runner.run(tasks, done)
            assigned = assign_manifest_splits(state["attrs"], items, set(existing) | set(report.built))
            if assigned != state["attrs"]:
                state["attrs"] = assigned
                writer.set_root_attrs(assigned)
            writer.write_index(entry_index.make_index(records, assigned.get("splits", {})))
        except BaseException:
            writer.abandon()  # an HDF5 partial stays, to be resumed by the next build
            raise
        writer.commit()


def _record(outcome: Outcome, report: BuildReport) -> bool:
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
