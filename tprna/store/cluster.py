"""Run a store build's per-entry work on a Dask distributed cluster (the ``dask`` extra).

The process that calls :func:`tprna.store.build_store` stays the coordinator: it holds the
store lock, plans by content key and records what came back.  Each task runs on a worker,
which reads the entry's input files, computes its features and writes the entry into the
Zarr store itself (staging folder + atomic rename, as the local worker processes do).  So
every worker must see the store folder (and its staging folder beside it) and the input
files at the same paths — a local or shared (POSIX) filesystem; :func:`check_workers`
proves it before any work is sent.  The tasks go through :func:`dask_executor`, the same
``concurrent.futures`` interface as the local process pool.

A worker that dies mid-task leaves at most a folder in ``<store>.staging/`` (removed at
the next build's start) and the scheduler runs its task again elsewhere; a task whose
workers keep dying is reported as failed and is built by the next run.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from tprna.errors import TprnaError

__all__ = ["connect", "check_workers", "dask_executor"]

_EXTRA = "pip install 'tprna[dask]'"


def connect(scheduler: Any, timeout: float = 30.0) -> tuple[Any, bool]:
    """A ``distributed.Client`` for ``scheduler`` (an address such as ``tcp://host:8786``,
    a cluster object, or a Client, used as is) and whether this call created it (and so
    must close it)."""
    try:
        from distributed import Client
    except ImportError:
        raise TprnaError(f"--scheduler needs Dask distributed, which is not installed ({_EXTRA})") from None
    if isinstance(scheduler, Client):
        return scheduler, False
    if isinstance(scheduler, str):  # a bad address would leave a half-made Client that hangs on exit
        from distributed.comm.addressing import parse_address, parse_host_port

        try:
            proto, loc = parse_address(scheduler)
            if proto in ("tcp", "tls"):
                parse_host_port(loc)
        except ValueError as e:
            raise TprnaError(f"bad Dask scheduler address {scheduler!r} ({e}); "
                             "expected e.g. tcp://host:8786") from None
    try:
        client = Client(scheduler, set_as_default=False, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - OSError, TimeoutError, ValueError for a bad address
        raise TprnaError(f"cannot reach the Dask scheduler at {scheduler!s} "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    return client, True


def _probe(probe: str, token: str) -> str | None:
    """On a worker: None when it reads ``token`` from ``probe`` and can write beside it."""
    try:
        if Path(probe).read_text() != token:
            return "sees a different store at this path"
    except OSError as e:
        return f"cannot read the store ({e.strerror or e})"
    if not os.access(Path(probe).parent, os.W_OK):
        return "cannot write to the store"
    try:
        import tprna  # noqa: F401 - the tasks need it
    except ImportError:
        return "cannot import tprna"
    return None


def check_workers(client: Any, store: Path, folder: Path, wait: float = 30.0) -> int:
    """Raise a :class:`TprnaError` unless the cluster has workers and every one of them
    reads and can write the store's staging ``folder`` (a token file is written there and
    read back by each worker).  Returns the number of workers."""
    try:
        if not client.scheduler_info().get("workers"):
            client.wait_for_workers(1, timeout=wait)
    except Exception:  # noqa: BLE001 - TimeoutError, or the scheduler went away
        raise TprnaError(f"the Dask cluster at {client.scheduler.address} has no workers") from None
    folder.mkdir(exist_ok=True)
    token = uuid.uuid4().hex
    probe = folder / f"probe-{token}"
    probe.write_text(token)
    try:
        answers = client.run(_probe, str(probe), token)
    except Exception as e:  # noqa: BLE001 - e.g. workers cannot unpickle the call (no tprna)
        raise TprnaError(f"Dask workers cannot run tpRNA tasks ({type(e).__name__}: {e}); "
                         "install tprna in the workers' environment", store) from None
    finally:
        probe.unlink(missing_ok=True)
    bad = {addr: why for addr, why in answers.items() if why is not None}
    if bad:
        shown = "; ".join(f"{addr} {why}" for addr, why in sorted(bad.items())[:3])
        raise TprnaError(f"{len(bad)} of {len(answers)} Dask workers cannot use this store ({shown}); "
                         "the store and the inputs must be on a filesystem every worker mounts "
                         "at the same path", store)
    return len(answers)


def dask_executor(client: Any) -> Any:
    """The cluster as a ``concurrent.futures.Executor`` (each task a fresh call: not pure)."""
    return client.get_executor(pure=False)
