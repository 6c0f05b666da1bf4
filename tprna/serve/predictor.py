"""Batched inference: inputs (resolved by :mod:`tprna.serve.items`) → network inputs →
padded, length-bucketed batches → onnxruntime → contact maps.

* **Same features as training.**  The feature spec comes from the model's metadata and the
  network input from the model's contract (:mod:`tprna.contract`), so a prediction from an
  MSA equals the prediction from a store entry built from it.  A store whose spec differs
  from the model's is refused, never silently used.
* **Batches by length** (:func:`tprna.contract.length_batches` under a pixel budget, at most
  ``max_batch`` RNAs), padded by :func:`tprna.contract.pad_batch`: padding stays small.  The
  model pads with zeros and masks, so a batched prediction equals the one-at-a-time one.
* **Overlap.**  Features of the next batch are computed in a thread pool while the model
  runs the current one (numba, BLAS and onnxruntime release the GIL).
* **Bad inputs are skipped.**  An unreadable / empty / wrong-alphabet MSA, or one longer than
  ``max_length``, becomes a :class:`~tprna.serve.results.Failure` (file, reason); the rest finish.
* **Inputs** are MSA files or folders, :class:`~tprna.msa.MSA` objects, ``(id, sequence)``
  or ``(id, MSA)`` pairs, :class:`~tprna.serve.inputs.NamedInput` records, and plain strings:
  an existing path, else a sequence (letters only) or alignment text
  (:func:`tprna.serve.inputs.string_input`).
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from tprna import __version__
from tprna.contract import length_batches, pad_batch
from tprna.errors import TprnaError
from tprna.features import FEATURE_CODE_VERSION, FeatureSpec
from tprna.search import HomologSearch
from tprna.serve.inputs import InputLike, flatten_inputs
from tprna.serve.items import InputResolver, WorkItem
from tprna.serve.results import Failure, Prediction
from tprna.serve.session import SessionRunner, _device_id, make_session, physical_cores, session_metadata

__all__ = ["Predictor", "RunStats", "DEFAULT_BATCH_PIXELS", "DEFAULT_MAX_BATCH", "DEFAULT_MAX_LENGTH",
           "DEFAULT_MAX_PADDING"]

# 8 RNAs of L=181, or one of L=512, per batch: ~1.2 GB of float32 activations at most.
DEFAULT_BATCH_PIXELS = 1 << 18
DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_LENGTH = 1000
DEFAULT_MAX_PADDING = 0.25  # a batch pads at most 25 % more pixels than its RNAs have
_CHUNK = 256  # inputs resolved (MSAs held in memory) and bucketed at a time


@dataclass
class RunStats:
    """What a prediction run did: batches, padding, and where the time went."""

    batches: int = 0
    rnas: int = 0
    real_pixels: int = 0
    padded_pixels: int = 0
    model_seconds: float = 0.0
    feature_wait_seconds: float = 0.0  # time the model loop waited on features

    @property
    def padding_overhead(self) -> float:
        """padded pixels / real pixels − 1 (0 = no padding at all)."""
        return self.padded_pixels / self.real_pixels - 1.0 if self.real_pixels else 0.0


def _in_order(results: Iterable[Prediction | Failure], skip_errors: bool) -> list[Prediction]:
    """Predictions in input order; a failure raises unless ``skip_errors``."""
    out = []
    for result in results:
        if isinstance(result, Failure):
            if not skip_errors:
                raise TprnaError(result.reason, result.source)
            continue
        out.append(result)
    return sorted(out, key=lambda p: p.index)


class Predictor:
    """An exported model ready to predict.

    Args:
        model_path: ONNX file written by :func:`tprna.export.export_onnx`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (onnxruntime provider).
        batch_pixels: budget of padded pixels (members × longest²) per batch.
        max_length: longer RNAs are skipped (reported as failures).
        memory_limit: bytes the features of one input may need, by estimate; more is
            skipped (reported as a failure).  The feature threads share it: inputs whose
            estimates add up to more are computed one after another.  Default: half the
            memory available.
        max_batch: at most this many RNAs per batch.
        max_padding: at most this fraction of padded pixels over real ones per batch.
        threads: onnxruntime intra-op threads (default: physical cores).
        workers: feature-computing threads (default: half the cores, at least 1).
        feature_device: device of :func:`tprna.features.make_features` (``"cpu"``/``"auto"``/``"cuda"``).
        search: a bare sequence is predicted from the alignment this homology search finds.
    """

    def __init__(self, model_path: str | os.PathLike, device: str = "auto",
                 batch_pixels: int = DEFAULT_BATCH_PIXELS, max_length: int | None = DEFAULT_MAX_LENGTH,
                 max_batch: int = DEFAULT_MAX_BATCH, threads: int | None = None,
                 workers: int | None = None, feature_device: str = "cpu",
                 io_binding: bool | None = None, max_padding: float = DEFAULT_MAX_PADDING,
                 search: HomologSearch | None = None, memory_limit: int | None = None) -> None:
        self.model_path = Path(model_path)
        if batch_pixels < 1 or max_batch < 1 or (max_length is not None and max_length < 1):
            raise TprnaError("batch_pixels, max_batch and max_length must be positive")
        self.session, self.providers = make_session(self.model_path, device, threads)
        self.metadata = session_metadata(self.session, self.model_path)
        self.spec = FeatureSpec.from_dict(self.metadata["feature_spec"])
        if self.spec.code_version != FEATURE_CODE_VERSION:
            raise TprnaError(f"the model was trained on features of code version {self.spec.code_version} "
                             f"but this tpRNA computes version {FEATURE_CODE_VERSION}: its predictions "
                             "would not match; retrain / re-export, or use the tpRNA it was made with",
                             self.model_path)
        channels = self.session.get_inputs()[0].shape[1]
        if isinstance(channels, int) and channels != self.spec.channels:
            raise TprnaError(f"the model takes {channels} channels but its feature spec gives "
                             f"{self.spec.channels}; the metadata does not belong to this graph",
                             self.model_path)
        self.runner = SessionRunner(self.session, self.providers, io_binding,
                                    _device_id(device) if device.startswith("cuda") else 0)
        self.device = device
        self.batch_pixels = int(batch_pixels)
        self.max_length = max_length
        self.memory_limit = memory_limit
        self.max_batch = int(max_batch)
        self.max_padding = float(max_padding)
        self.workers = max(1, int(workers) if workers else physical_cores() // 2)
        self.feature_device = feature_device
        self.search = search
        self.method = f"tpRNA {__version__} {self.model_name} (ONNX)"
        self.card: Any = None  # the model card (tprna.serve.shipped.ModelCard), set by tprna.load
        self._store_lock = threading.Lock()  # one store handle, read from several threads

    # ------------------------------------------------------------------ public API

    @property
    def model_name(self) -> str:
        return str(self.metadata.get("model_name", self.metadata["model_config"].get("name")))

    def predict(self, inputs: InputLike | Iterable[InputLike], skip_errors: bool = False) -> list[Prediction]:
        """Contact maps for MSA paths (files or folders), sequences (a plain string of letters),
        :class:`~tprna.msa.MSA` objects or ``(id, sequence)`` pairs — one input or a list —
        in input order.  A bad input raises :class:`TprnaError` unless ``skip_errors`` (then
        it is left out)."""
        return _in_order(self.iter_predict(inputs), skip_errors)

    def predict_store(self, store_path: str | os.PathLike, split: str | None = None,
                      ids: Sequence[str] | None = None, skip_errors: bool = False) -> list[Prediction]:
        """Contact maps for a store's entries (a split, given ids, or all), read from the
        store instead of recomputed; the store must hold the model's feature spec."""
        return _in_order(self.iter_predict_store(store_path, split, ids), skip_errors)

    def iter_predict(self, inputs: Iterable[InputLike], store: Any = None,
                     stats: RunStats | None = None) -> Iterator[Prediction | Failure]:
        """Stream predictions and failures, batch by batch (batches ordered by length).
        With an open ``store`` (from :func:`tprna.store.open_store`), an MSA file whose entry
        is in the store with the same file content and the model's spec is read from there."""
        stats = stats if stats is not None else RunStats()
        if store is not None:
            self.check_store(store)
        seen: dict[str, str] = {}
        pairs = flatten_inputs(inputs)
        resolver = self._resolver()
        for chunk in iter(lambda: list(islice(pairs, _CHUNK)), []):  # itertools.batched from 3.12
            items: list[WorkItem] = []
            for result in resolver.resolve(chunk, store, seen, self.workers):
                if isinstance(result, Failure):
                    yield result
                else:
                    items.append(result)
            yield from self._run(items, stats)

    def iter_predict_store(self, store_path: str | os.PathLike, split: str | None = None,
                           ids: Sequence[str] | None = None,
                           stats: RunStats | None = None) -> Iterator[Prediction | Failure]:
        from tprna.store import open_store  # lazy: tprna.store loads zarr and h5py

        stats = stats if stats is not None else RunStats()
        resolver = self._resolver()
        store = open_store(store_path)
        try:
            self.check_store(store)
            chosen = list(ids) if ids is not None else store.ids(split)
            for start in range(0, len(chosen), _CHUNK):
                items: list[WorkItem] = []
                for index, entry_id in enumerate(chosen[start:start + _CHUNK], start):
                    result = resolver.store_item(store, entry_id, index)
                    if isinstance(result, Failure):
                        yield result
                    else:
                        items.append(result)
                yield from self._run(items, stats)
        finally:
            store.close()

    def check_store(self, store: Any) -> None:
        """Refuse a store that does not hold the model's feature spec."""
        specs = store.specs
        if self.spec.key not in specs:
            have = ", ".join(f"{k} ({s.feature_set}, {s.molecule}, {s.dtype}, code v{s.code_version})"
                             for k, s in specs.items()) or "none"
            raise TprnaError(
                f"feature spec mismatch: the model {self.model_path.name} needs features "
                f"{self.spec.key} ({self.spec.feature_set}, {self.spec.molecule}, {self.spec.dtype}, "
                f"code v{self.spec.code_version}) but the store holds {have}; build the store with "
                "the model's spec, or predict from the MSAs", getattr(store, "path", None))

    def _resolver(self) -> InputResolver:
        # made per run, so that settings changed on the predictor since apply
        return InputResolver(self.spec, self.feature_device, self.max_length, self._store_lock, self.search,
                             self.memory_limit)

    # ------------------------------------------------------------------ the loop

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped by length (:func:`tprna.contract.length_batches` under the pixel
        budget), then cut so that a batch has at most ``max_batch`` members and pads at most
        ``max_padding`` (padded pixels / real pixels − 1) — a few RNAs of very different
        lengths are better run apart than padded."""
        out: list[list[int]] = []
        for batch in length_batches(list(lengths), self.batch_pixels):
            current: list[int] = []
            real = 0
            for i in batch:  # ascending length: the newcomer is the longest
                n = int(lengths[i])
                if current and (len(current) >= self.max_batch or
                                (len(current) + 1) * n * n > (1 + self.max_padding) * (real + n * n)):
                    out.append(current)
                    current, real = [], 0
                current.append(i)
                real += n * n
            if current:
                out.append(current)
        return out

    def _run(self, items: list[WorkItem], stats: RunStats) -> Iterator[Prediction | Failure]:
        if not items:
            return
        batches = [[items[i] for i in b] for b in self.batches([it.length for it in items])]
        # numba (and its thread start) only where an alignment needs its compiled loops
        share = any(it.aligned for it in items)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="tprna-features",
                                initializer=_share_cores if share else None,
                                initargs=(self.workers,) if share else ()) as pool:
            queue: deque[tuple[list[WorkItem], list[Future]]] = deque()
            upcoming = iter(batches)

            def submit_next() -> None:
                batch = next(upcoming, None)
                if batch is not None:
                    queue.append((batch, [pool.submit(item.load) for item in batch]))

            submit_next()
            while queue:
                batch, futures = queue.popleft()
                submit_next()  # the pool works on the next batch while the model runs this one
                ready: list[tuple[WorkItem, np.ndarray, float | None]] = []
                t0 = time.perf_counter()
                for item, future in zip(batch, futures):
                    try:
                        x, neff = future.result()
                        ready.append((item, x, neff))
                    except TprnaError as e:
                        yield Failure(item.source, e.reason, item.id, item.index)
                    except Exception as e:
                        yield Failure(item.source, f"features failed ({type(e).__name__}: {e})",
                                      item.id, item.index)
                stats.feature_wait_seconds += time.perf_counter() - t0
                yield from self._model(ready, stats)

    def _model(self, ready: list[tuple[WorkItem, np.ndarray, float | None]],
               stats: RunStats) -> Iterator[Prediction | Failure]:
        if not ready:
            return
        channels = ready[0][1].shape[0]
        for item, x, _ in ready:  # a loader must give its RNA's own length
            n = item.length
            if x.shape != (channels, n, n):
                raise TprnaError(f"{item.id}: features of shape {x.shape}, expected ({channels}, {n}, {n})",
                                 item.source)
        features, mask = pad_batch([x for _, x, _ in ready])
        longest = features.shape[-1]
        t0 = time.perf_counter()
        try:
            out = self.runner.run(features, mask)
        except Exception as e:
            if len(ready) > 1:  # e.g. out of device memory: try the members one at a time
                for one in ready:
                    yield from self._model([one], stats)
                return
            item = ready[0][0]
            yield Failure(item.source, f"model run failed ({str(e).splitlines()[0]})", item.id, item.index)
            return
        stats.model_seconds += time.perf_counter() - t0
        stats.batches += 1
        stats.rnas += len(ready)
        stats.padded_pixels += len(ready) * longest ** 2
        stats.real_pixels += sum(item.length ** 2 for item, _, _ in ready)
        for b, (item, _, neff) in enumerate(ready):
            n = item.length
            yield Prediction(item.id, item.sequence, np.ascontiguousarray(out[b, :n, :n]),
                             item.source, neff, item.index, self.method)


def _share_cores(workers: int) -> None:
    """Give each feature thread its share of numba's threads (the setting is per thread),
    so that several workers do not each start a full team on every core."""
    import numba  # lazy: start-up time, and a single sequence never needs it

    numba.set_num_threads(max(1, numba.config.NUMBA_NUM_THREADS // max(1, workers)))
