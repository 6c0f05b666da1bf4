"""Batched inference: MSAs (or store entries) → features → padded, length-bucketed batches
→ onnxruntime → contact maps, and the ``infer`` job that writes them to disk.

* **Same features as training.**  The feature spec comes from the model's metadata; MSAs
  go through :func:`tprna.features.make_features` + :func:`~tprna.features.model_input`
  and through the store's own packing (:func:`tprna.store.schema.pack_symmetric`, i.e.
  symmetrised and rounded to the spec's storage dtype), so a prediction from an MSA equals
  the prediction from a store entry built from it.  A store whose spec differs from the
  model's is refused, never silently used.
* **Batches by length** (:func:`tprna.data.length_batches` under a pixel budget, at most
  ``max_batch`` RNAs): padding stays small.  The model pads with zeros and masks, so a
  batched prediction equals the one-at-a-time prediction.
* **Overlap.**  Features of the next batch are computed in a thread pool while the model
  runs the current one (numba, BLAS and onnxruntime release the GIL).
* **Bad inputs are skipped.**  An unreadable / empty / wrong-alphabet MSA, or one longer than
  ``max_length``, becomes a :class:`Failure` (file, reason); the rest finish.
* **Inputs** are MSA files or folders, :class:`~tprna.msa.MSA` objects, ``(id, sequence)``
  or ``(id, MSA)`` pairs, :class:`~tprna.serve.inputs.NamedInput` records, and plain strings:
  an existing path, else a sequence (letters only) or alignment text
  (:func:`tprna.serve.inputs.string_input`).
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from tprna.errors import TprnaError
from tprna.serve.inputs import BadInput, NamedInput, file_stem, path_id, string_input

__all__ = ["Predictor", "Prediction", "Failure", "InferReport", "RunStats", "infer", "serving_input",
           "DEFAULT_BATCH_PIXELS", "DEFAULT_MAX_BATCH", "DEFAULT_MAX_LENGTH",
           "DEFAULT_MAX_PADDING"]

# 8 RNAs of L=181, or one of L=512, per batch: ~1.2 GB of float32 activations at most.
DEFAULT_BATCH_PIXELS = 1 << 18
DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_LENGTH = 1000
DEFAULT_MAX_PADDING = 0.25  # a batch pads at most 25 % more pixels than its RNAs have
_CHUNK = 256  # inputs resolved (MSAs held in memory) and bucketed at a time

InputLike = Any  # str | os.PathLike | MSA | NamedInput | tuple[str, str | MSA]


@dataclass
class Prediction:
    """One RNA's contact probabilities ``(L, L)`` float32 (symmetric, |i−j| < 6 included).

    ``sequence`` is the query as written (an N or X stays an N or X), one letter a row."""

    id: str
    sequence: str
    probabilities: np.ndarray
    source: str = ""
    neff: float | None = None
    index: int = -1  # position among the inputs
    method: str = ""  # the RR file's METHOD line: tpRNA version and model

    @property
    def length(self) -> int:
        return len(self.sequence)

    def top(self, k: int | None = None, min_separation: int = 6) -> list[tuple[int, int, float]]:
        """The ``k`` (default L) most probable pairs with ``j − i ≥ min_separation`` as 1-based
        ``(i, j, p)``, most probable first."""
        from tprna.serve.writers import top_contacts

        return top_contacts(self.probabilities, self.length if k is None else k, min_separation)

    def write(self, path: str | os.PathLike, format: str | Sequence[str] | None = None,
              top: int | None = None, min_separation: int = 6) -> list[Path]:
        """Write the prediction to the file ``path`` (its format from the suffix: ``.npz``,
        ``.rr``, ``.png``, ``.txt``), or into the folder ``path`` as ``<id>.<format>`` for each
        ``format`` (default npz and rr).  ``top``: RR contacts (default 2·L)."""
        from tprna.serve.writers import OUTPUT_FORMATS, parse_formats

        target = Path(path)
        suffix = target.suffix.lower().lstrip(".")
        if format is None and suffix in OUTPUT_FORMATS and not target.is_dir():
            return [self._write_one(target, suffix, top, min_separation)]
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TprnaError(f"cannot create the output folder ({e.strerror})", target) from None
        stem = file_stem(self.id)
        return [self._write_one(target / f"{stem}.{fmt}", fmt, top, min_separation)
                for fmt in parse_formats(format)]

    def write_npz(self, path: str | os.PathLike) -> Path:
        return self._write_one(Path(path), "npz")

    def write_rr(self, path: str | os.PathLike, top: int | None = None, min_separation: int = 6) -> Path:
        return self._write_one(Path(path), "rr", top, min_separation)

    def write_png(self, path: str | os.PathLike) -> Path:
        return self._write_one(Path(path), "png")

    def write_txt(self, path: str | os.PathLike) -> Path:
        return self._write_one(Path(path), "txt")

    def _write_one(self, path: Path, fmt: str, top: int | None = None, min_separation: int = 6) -> Path:
        from tprna.serve import writers

        if fmt == "npz":
            return writers.write_npz(path, self.id, self.sequence, self.probabilities,
                                     neff=self.neff, source=self.source)
        if fmt == "rr":
            return writers.write_rr(path, self.id, self.sequence, self.probabilities, top,
                                    min_separation, self.method or None)
        if fmt == "png":
            return writers.write_png(path, self.id, self.probabilities)
        if fmt == "txt":
            return writers.write_txt(path, self.probabilities)
        raise TprnaError(f"unknown output format {fmt!r}; use {', '.join(writers.OUTPUT_FORMATS)}")


@dataclass
class Failure:
    """An input that was skipped, and why."""

    source: str
    reason: str
    id: str | None = None
    index: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.source, "id": self.id, "reason": self.reason}


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


@dataclass
class _Item:
    index: int
    id: str
    source: str
    length: int
    sequence: str
    load: Callable[[], tuple[np.ndarray, float | None]]  # → ((C, L, L) float32, neff)
    aligned: bool = False  # features from several distinct rows: numba's compiled loops run


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
        max_batch: at most this many RNAs per batch.
        max_padding: at most this fraction of padded pixels over real ones per batch.
        threads: onnxruntime intra-op threads (default: physical cores).
        workers: feature-computing threads (default: half the cores, at least 1).
        feature_device: device of :func:`tprna.features.make_features` (``"cpu"``/``"auto"``/``"cuda"``).
    """

    def __init__(self, model_path: str | os.PathLike, device: str = "auto",
                 batch_pixels: int = DEFAULT_BATCH_PIXELS, max_length: int | None = DEFAULT_MAX_LENGTH,
                 max_batch: int = DEFAULT_MAX_BATCH, threads: int | None = None,
                 workers: int | None = None, feature_device: str = "cpu",
                 io_binding: bool | None = None, max_padding: float = DEFAULT_MAX_PADDING) -> None:
        from tprna import __version__
        from tprna.features import FEATURE_CODE_VERSION, FeatureSpec
        from tprna.serve.session import SessionRunner, _device_id, make_session, physical_cores, session_metadata

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
        self.max_batch = int(max_batch)
        self.max_padding = float(max_padding)
        self.workers = max(1, int(workers) if workers else physical_cores() // 2)
        self.feature_device = feature_device
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
        pairs = _flatten(inputs)
        for chunk in iter(lambda: list(islice(pairs, _CHUNK)), []):  # itertools.batched from 3.12
            items: list[_Item] = []
            for result in self._resolve_inputs(chunk, store, seen):
                if isinstance(result, Failure):
                    yield result
                else:
                    items.append(result)
            yield from self._run(items, stats)

    def iter_predict_store(self, store_path: str | os.PathLike, split: str | None = None,
                           ids: Sequence[str] | None = None,
                           stats: RunStats | None = None) -> Iterator[Prediction | Failure]:
        from tprna.store import open_store

        stats = stats if stats is not None else RunStats()
        store = open_store(store_path)
        try:
            self.check_store(store)
            chosen = list(ids) if ids is not None else store.ids(split)
            for start in range(0, len(chosen), _CHUNK):
                items: list[_Item] = []
                for index, entry_id in enumerate(chosen[start:start + _CHUNK], start):
                    result = self._store_item(store, entry_id, index)
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

    # ------------------------------------------------------------------ inputs

    def _resolve_inputs(self, chunk: list[tuple[int, InputLike]], store: Any,
                        seen: dict[str, str]) -> list[_Item | Failure]:
        """Read the chunk's MSAs (in the pool) and turn each into an item or a failure."""
        with ThreadPoolExecutor(self.workers) as pool:
            results = list(pool.map(lambda pair: self._input_item(pair[0], pair[1], store), chunk))
        out: list[_Item | Failure] = []
        for result in results:
            if isinstance(result, _Item):
                if result.id in seen:
                    result = Failure(result.source, f"duplicate id {result.id!r} (also from "
                                     f"{seen[result.id]}); rename one of the files", result.id, result.index)
                elif self.max_length is not None and result.length > self.max_length:
                    result = Failure(result.source, f"L={result.length} is over the maximum length "
                                     f"{self.max_length}; raise max_length if the memory allows",
                                     result.id, result.index)
                else:
                    seen[result.id] = result.source
            out.append(result)
        return out

    def _input_item(self, index: int, value: InputLike, store: Any) -> _Item | Failure:
        from tprna.msa import MSA, read_msa

        source = _describe(value)
        try:
            if isinstance(value, BadInput):
                return Failure(value.source, value.reason, None, index)
            if isinstance(value, str) and not os.path.exists(value):
                value = string_input(value, index)
                source = value.source
            if isinstance(value, NamedInput):
                return self._msa_item(index, value.id, value.source, value.to_msa(self.spec.molecule))
            if isinstance(value, MSA):
                entry_id = path_id(Path(value.source)) if value.source else value.ids[0]
                return self._msa_item(index, entry_id, source, value)
            if isinstance(value, tuple):
                if len(value) != 2 or not isinstance(value[0], str) or not isinstance(value[1], (str, MSA)):
                    raise TprnaError(f"expected (id, sequence) or (id, MSA), got {value!r:.60}")
                entry_id, content = value
                if isinstance(content, MSA):
                    return self._msa_item(index, entry_id, source, content)
                named = NamedInput(entry_id, content, entry_id)
                return self._msa_item(index, entry_id, source, named.to_msa(self.spec.molecule))
            path = Path(value)
            entry_id = path_id(path)
            if store is not None:
                reused = self._store_copy(store, entry_id, path, index)
                if reused is not None:
                    return reused
            return self._msa_item(index, entry_id, source, read_msa(path, self.spec.molecule))
        except TprnaError as e:
            return Failure(source, e.reason, None, index)
        except Exception as e:  # a parser bug must not stop the batch
            return Failure(source, f"{type(e).__name__}: {e}", None, index)

    def _msa_item(self, index: int, entry_id: str, source: str, msa: Any) -> _Item:
        spec, device = self.spec, self.feature_device
        aligned = msa.depth > 1 and bool((msa.codes != msa.codes[0]).any())
        return _Item(index, entry_id, source, msa.length, msa.query_text or msa.query,
                     lambda: serving_input(msa, spec, device), aligned)

    def _store_copy(self, store: Any, entry_id: str, path: Path, index: int) -> _Item | None:
        """The store's entry for this MSA file when it was built from the same bytes."""
        from tprna.store.schema import file_sha256

        with self._store_lock:
            if entry_id not in store:
                return None
            meta = store.entry_meta(entry_id)
        recorded = ((meta.get("provenance") or {}).get("msa") or {}).get("sha256")
        if self.spec.key not in meta.get("specs", []) or not recorded or not path.is_file():
            return None
        if recorded != file_sha256(path):
            return None
        return self._store_item(store, entry_id, index, source=str(path))

    def _store_item(self, store: Any, entry_id: str, index: int, source: str | None = None) -> _Item | Failure:
        source = source or f"{store.path}#{entry_id}"
        try:
            with self._store_lock:
                meta = store.entry_meta(entry_id)
        except TprnaError as e:
            return Failure(source, e.reason, entry_id, index)
        if self.spec.key not in meta.get("specs", []):
            return Failure(source, f"entry has no features for the model's spec {self.spec.key}; "
                           "build them with 'tprna store build'", entry_id, index)
        length = int(meta["length"])
        if self.max_length is not None and length > self.max_length:
            return Failure(source, f"L={length} is over the maximum length {self.max_length}",
                           entry_id, index)
        spec, lock = self.spec, self._store_lock

        def load() -> tuple[np.ndarray, float | None]:
            from tprna.features import model_input

            with lock:
                feats = store.read_features(entry_id, spec.key)
            return model_input(feats, spec), float(feats["neff"])

        return _Item(index, entry_id, source, length, str(meta["sequence"]), load)

    # ------------------------------------------------------------------ the loop

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped by length (:func:`tprna.contract.length_batches` under the pixel
        budget), then cut so that a batch has at most ``max_batch`` members and pads at most
        ``max_padding`` (padded pixels / real pixels − 1) — a few RNAs of very different
        lengths are better run apart than padded."""
        from tprna.contract import length_batches

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

    def _run(self, items: list[_Item], stats: RunStats) -> Iterator[Prediction | Failure]:
        if not items:
            return
        batches = [[items[i] for i in b] for b in self.batches([it.length for it in items])]
        # numba (and its thread start) only where an alignment needs its compiled loops
        share = any(it.aligned for it in items)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="tprna-features",
                                initializer=_share_cores if share else None,
                                initargs=(self.workers,) if share else ()) as pool:
            queue: deque[tuple[list[_Item], list[Future]]] = deque()
            upcoming = iter(batches)

            def submit_next() -> None:
                batch = next(upcoming, None)
                if batch is not None:
                    queue.append((batch, [pool.submit(item.load) for item in batch]))

            submit_next()
            while queue:
                batch, futures = queue.popleft()
                submit_next()  # the pool works on the next batch while the model runs this one
                ready: list[tuple[_Item, np.ndarray, float | None]] = []
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

    def _model(self, ready: list[tuple[_Item, np.ndarray, float | None]],
               stats: RunStats) -> Iterator[Prediction | Failure]:
        if not ready:
            return
        longest = max(item.length for item, _, _ in ready)
        channels = ready[0][1].shape[0]
        features = np.zeros((len(ready), channels, longest, longest), dtype=np.float32)
        mask = np.zeros((len(ready), longest), dtype=bool)
        for b, (item, x, _) in enumerate(ready):
            n = item.length
            if x.shape != (channels, n, n):
                raise TprnaError(f"{item.id}: features of shape {x.shape}, expected ({channels}, {n}, {n})",
                                 item.source)
            features[b, :, :n, :n] = x
            mask[b, :n] = True
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


# --------------------------------------------------------------------------- helpers


def serving_input(msa: Any, spec: Any, device: str = "cpu") -> tuple[np.ndarray, float]:
    """The network input ``(C, L, L)`` float32 of one MSA, and its Neff, exactly as the
    model saw it in training: :func:`tprna.features.make_features`, then the store's packing
    (upper triangle mirrored, rounded to ``spec.dtype``), then
    :func:`tprna.features.model_input`.  Clients of a Triton deployment call this too."""
    from tprna.features import make_features, model_input
    from tprna.store.schema import pack_component, unpack_component

    feats = dict(make_features(msa, spec, device))
    for name in spec.components:
        feats[name] = unpack_component(name, pack_component(name, feats[name], spec.dtype))
    return model_input(feats, spec), float(feats["neff"])


def _share_cores(workers: int) -> None:
    """Give each feature thread its share of numba's threads (the setting is per thread),
    so that several workers do not each start a full team on every core."""
    import numba

    numba.set_num_threads(max(1, numba.config.NUMBA_NUM_THREADS // max(1, workers)))


def _flatten(inputs: Iterable[InputLike]) -> Iterator[tuple[int, InputLike]]:
    """Number the inputs, expanding folders into their alignment files (sorted)."""
    from tprna.msa import MSA

    if isinstance(inputs, (str, os.PathLike, tuple, MSA, NamedInput)):
        inputs = [inputs]
    index = 0
    for value in inputs:
        if isinstance(value, (str, os.PathLike)) and Path(value).is_dir():
            from tprna.store.inputs import items_from_paths

            try:
                expanded: list[Any] = [item.msa for item in items_from_paths([value])]
            except TprnaError as e:
                expanded = [BadInput(os.fspath(value), e.reason)]
        else:
            expanded = [value]
        for v in expanded:
            yield index, v
            index += 1


def _describe(value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (BadInput, NamedInput)):
        return value.source
    if isinstance(value, tuple) and value:
        return f"sequence {value[0]}"
    source = getattr(value, "source", "")
    return source or f"<{type(value).__name__}>"


# --------------------------------------------------------------------------- the job


@dataclass
class InferReport:
    """The outcome of :func:`infer` (also written to ``<out_dir>/summary.json``)."""

    model: str
    model_name: str
    feature_spec_key: str
    out_dir: str
    providers: list[str]
    done: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    rnas_per_second: float = 0.0
    padding_overhead: float = 0.0
    batches: int = 0
    model_seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    neff: dict[str, float | None] = field(default_factory=dict)  # id → Neff of each done RNA
    # the model card's {"single_sequence" | "alignment": {"long|L": precision, …}}, if any
    expected_precision: dict[str, dict[str, float]] | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    def low_information_notices(self, many: int = 5) -> list[str]:
        """One line per done RNA whose Neff < 1 (one line for all when more than ``many``),
        with the model card's long-range top-L precision for single sequences, if known."""
        low = [(entry, n) for entry, n in self.neff.items() if n is not None and n < 1]
        if not low:
            return []
        figure = (self.expected_precision or {}).get("single_sequence", {}).get("long|L")
        tail = f": expected long-range top-L precision ≈ {figure:.2f} (model card)" if figure is not None else ""
        if len(low) <= many:
            return [f"{entry}: single-sequence mode (Neff {n:.2f} < 1){tail}" for entry, n in low]
        lowest = min(n for _, n in low)
        return [f"{len(low)} RNAs in single-sequence mode (Neff < 1, lowest {lowest:.2f}){tail}"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_done"], d["n_failed"] = len(self.done), len(self.failed)
        return d

    def summary(self) -> str:
        return (f"{len(self.done)} RNAs predicted, {len(self.failed)} failed, "
                f"{self.rnas_per_second:.2f} RNAs/s, padding overhead {100 * self.padding_overhead:.1f}%, "
                f"{self.batches} batches on {', '.join(self.providers)} → {self.out_dir}")


def infer(model_path: str | os.PathLike | None, inputs: Sequence[InputLike] | None, out_dir: str | os.PathLike,
          batch_pixels: int = DEFAULT_BATCH_PIXELS, max_batch: int = DEFAULT_MAX_BATCH,
          store: str | os.PathLike | None = None, split: str | None = None, png: bool = False,
          top: int | None = None, min_separation: int = 6, device: str = "auto",
          max_length: int | None = DEFAULT_MAX_LENGTH, max_padding: float = DEFAULT_MAX_PADDING,
          threads: int | None = None, workers: int | None = None, progress: bool = True,
          formats: Sequence[str] | str | None = None, single: bool = False) -> InferReport:
    """Predict every input and write ``<id>.<format>`` under ``out_dir`` for each of
    ``formats`` (npz, rr, png, txt; default npz + rr, ``png=True`` adds png), plus
    ``summary.json``.

    ``model_path``: an exported ONNX model, or None for the shipped one.  ``inputs``: MSA
    files or folders of them, ``-`` (standard input) and anything :meth:`Predictor.predict`
    takes; with ``single``, each record of a file (or of standard input) is its own RNA
    (:func:`tprna.serve.inputs.expand_inputs`).  ``store``: a feature store — alone, its
    entries (``split`` or all) are predicted from their stored features; with ``inputs``,
    an MSA whose entry is in the store (same file content, the model's spec) is read from
    the store rather than recomputed.  Bad inputs are reported in the summary and skipped."""
    from tprna.serve.inputs import expand_inputs
    from tprna.serve.shipped import load
    from tprna.serve.writers import parse_formats

    t0 = time.perf_counter()
    chosen = parse_formats(formats, png)
    inputs = list(expand_inputs(inputs or [], single))
    if not inputs and store is None:
        raise TprnaError("give sequences, MSA files / folders, or a feature store")
    if split is not None and store is None:
        raise TprnaError("a split names entries of a store: give the store too")
    predictor = load(model_path, device=device, batch_pixels=batch_pixels, max_length=max_length,
                     max_batch=max_batch, threads=threads, workers=workers, max_padding=max_padding)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TprnaError(f"cannot create the output folder ({e.strerror})", out) from None
    card = predictor.card
    report = InferReport(model=str(predictor.model_path), model_name=predictor.model_name,
                         feature_spec_key=predictor.spec.key, out_dir=str(out),
                         providers=predictor.providers, outputs=list(chosen),
                         expected_precision={k: dict(v) for k, v in card.expected_precision.items()}
                         if card is not None else None)
    stats = RunStats()

    opened = None
    if store is not None:
        from tprna.store import open_store

        if inputs:
            opened = open_store(store)
            stream = predictor.iter_predict(inputs, store=opened, stats=stats)
        else:
            stream = predictor.iter_predict_store(store, split, stats=stats)
    else:
        stream = predictor.iter_predict(inputs, stats=stats)

    def write(pred: Prediction) -> Failure | None:
        try:
            pred.write(out, chosen, top, min_separation)
        except Exception as e:
            why = e.reason if isinstance(e, TprnaError) else e
            return Failure(pred.source, f"writing the outputs failed ({why})", pred.id, pred.index)
        return None

    bar = _ProgressCounter(progress)
    # One writer thread: outputs (compression, PNG) are written while the model runs on.
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="tprna-writer") as writer, bar as task:
            pending: list[tuple[Prediction, Future]] = []
            for result in stream:
                if isinstance(result, Failure):
                    report.failed.append(result.to_dict())
                    task(1)
                    continue
                pending.append((result, writer.submit(write, result)))
                while pending and pending[0][1].done():
                    _collect(pending.pop(0), report)
                    task(1)
            for entry in pending:
                entry[1].result()
                _collect(entry, report)
                task(1)
    finally:
        if opened is not None:
            opened.close()

    report.seconds = round(time.perf_counter() - t0, 3)
    report.rnas_per_second = len(report.done) / report.seconds if report.seconds > 0 else 0.0
    report.padding_overhead = stats.padding_overhead
    report.batches = stats.batches
    report.model_seconds = round(stats.model_seconds, 3)
    (out / "summary.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _collect(entry: tuple[Prediction, Future], report: InferReport) -> None:
    pred, future = entry
    failure = future.result()
    if failure is None:
        report.done.append(pred.id)
        report.neff[pred.id] = None if pred.neff is None else round(float(pred.neff), 4)
    else:
        report.failed.append(failure.to_dict())


class _ProgressCounter:
    """A rich progress counter of finished RNAs (total unknown while folders are read)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                 TextColumn("{task.completed} RNAs"), TimeElapsedColumn(), transient=True)
        self.progress.__enter__()
        task = self.progress.add_task("predicting", total=None)
        return lambda n: self.progress.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)
