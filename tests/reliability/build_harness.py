"""A fork server for builds that get killed: tpRNA is imported (and its numba kernels,
ViennaRNA, zarr and h5py warmed) once, then every build runs in a child forked from it,
so a build starts in milliseconds instead of the seconds a fresh interpreter takes.

Server (this file run as a script; one JSON request per stdin line)::

    {"store": ..., "manifest": ..., "spec": {...}, "kill_at": N | null,
     "checkpoint_every": N | null, "result": "/path/result.json"}

For each request it forks a child that runs ``build_store`` and answers one line on
stdout when the child is gone: ``{"signal": 9}`` or ``{"exit": status}``.  With
``kill_after`` (and ``lock``) the server SIGKILLs the child that many seconds after the
build took the store lock (its own child, not yet reaped: no other process can have its
pid).  With ``kill_at`` the child SIGKILLs itself at that file-system event (Python audit events: opens,
renames, removals, folder creations, copies, and the ctypes calls of renameat2 and
fallocate) — a kill point spread over every step of the build, seeded by the client.
The child's result file says how many such events the build had and how it ended
(exit 0 built, 1 some input failed, 3 a TprnaError such as a full disk, 2 a crash).

numba runs with its ``workqueue`` threading layer here: GNU OpenMP (the default layer on
this machine) cannot run in a process forked after it started.

Client: :class:`BuildHarness`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EVENTS = frozenset({"open", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.truncate",
                    "shutil.copyfile", "shutil.rmtree", "ctypes.call_function", "os.listdir",
                    "os.scandir"})


# --------------------------------------------------------------------------- server


def _child(req: dict) -> None:
    """Run one build in this (forked) process; never returns."""
    import traceback

    count = 0
    active = True
    kill_at = req.get("kill_at")

    def hook(event: str, args: tuple) -> None:
        nonlocal count
        if active and event in EVENTS:
            count += 1
            if kill_at is not None and count >= kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)
    t0 = time.monotonic()
    code, out = 2, {}
    try:
        from tprna.errors import TprnaError
        from tprna.features import FeatureSpec
        from tprna.store import build_store, items_from_manifest

        try:
            report = build_store(req["store"], items_from_manifest(req["manifest"]),
                                 FeatureSpec(**req["spec"]), progress=False,
                                 checkpoint_every=req.get("checkpoint_every"))
            code, out = (0 if report.ok else 1), {"built": report.built, "failed": report.failed}
        except TprnaError as e:
            code, out = 3, {"error": str(e), "error_type": type(e).__name__}
    except BaseException:  # noqa: BLE001 - a crash is the finding
        out = {"error": traceback.format_exc()}
    active = False
    out.update(events=count, seconds=time.monotonic() - t0)
    try:  # atomically: a kill that lands while writing leaves no result rather than half of one
        partial = Path(req["result"] + ".part")
        partial.write_text(json.dumps(out))
        os.replace(partial, req["result"])
    finally:
        os._exit(code)


def _warm() -> None:
    """Run every code path a build takes once, so children start warm."""
    import tempfile

    from tprna.features import FeatureSpec
    from tprna.simulate import write_example_dataset
    from tprna.store import build_store, items_from_manifest, open_store

    with tempfile.TemporaryDirectory() as tmp:
        items = items_from_manifest(write_example_dataset(Path(tmp) / "sim", n_families=2, seed=1,
                                                          lengths=(20, 30), depths=(5, 20)))
        for name in ("w.zarr", "w.h5"):
            build_store(Path(tmp) / name, items, FeatureSpec(), progress=False)
            with open_store(Path(tmp) / name) as st:
                st.read_features(st.ids()[0])


def _kill_later(pid: int, req: dict) -> int | None:
    """Wait for the lock file, then ``kill_after`` seconds, then SIGKILL the child; its
    wait status when it ended first, else None (reaped by the caller)."""
    lock = Path(req["lock"]) if req.get("lock") else None
    deadline = time.monotonic() + 30
    while lock is not None and not lock.exists() and time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.001)
    until = time.monotonic() + req["kill_after"]
    while time.monotonic() < until:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.0005)
    os.kill(pid, signal.SIGKILL)  # our child, not reaped yet
    return None


def serve() -> None:
    _warm()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(req)
        status = _kill_later(pid, req) if req.get("kill_after") is not None else None
        if status is None:
            _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            answer = {"signal": os.WTERMSIG(status)}
        else:
            answer = {"exit": os.WEXITSTATUS(status)}
        print(json.dumps(answer), flush=True)


# --------------------------------------------------------------------------- client


class BuildHarness:
    """Runs builds in children of a warm fork server; see the module docstring."""

    def __init__(self, scratch: Path):
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_THREADING_LAYER": "workqueue"}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"the build harness did not start (exit {self.proc.wait()})")
        self.runs = 0

    def run(self, store: Path, manifest: Path, spec: dict, *, kill_at: int | None = None,
            kill_after: float | None = None, lock: Path | None = None,
            checkpoint_every: int | None = None) -> dict:
        """One build; killed at the ``kill_at``-th file-system event, or ``kill_after``
        seconds after ``lock`` appears (the client's SIGKILL).  Returns the child's result
        with ``signal`` (its killing signal) or ``exit`` (its exit status) added."""
        self.runs += 1
        result = self.scratch / f"result-{self.runs}.json"
        result.unlink(missing_ok=True)
        req = {"store": str(store), "manifest": str(manifest), "spec": spec, "kill_at": kill_at,
               "kill_after": kill_after, "lock": None if lock is None else str(lock),
               "checkpoint_every": checkpoint_every, "result": str(result)}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the build harness died (exit {self.proc.wait()})")
        answer = json.loads(line)
        out = json.loads(result.read_text()) if result.exists() else {}
        return {**out, **answer}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    serve()
