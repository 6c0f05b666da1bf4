"""Input resolution: each input the predictor is handed (see :mod:`tprna.serve.inputs`)
becomes a :class:`WorkItem` — id, sequence, length and a loader of its network input — or
a :class:`~tprna.serve.results.Failure` saying why it cannot be predicted.

* **Same input as training.**  An MSA goes through :func:`tprna.features.make_features`
  and the model's contract (:func:`tprna.contract.rounded_features`, then
  :func:`~tprna.contract.model_input`): symmetrised and rounded to the spec's storage dtype
  exactly as a store entry holds it, so a prediction from an MSA equals the prediction from
  its store entry.
* **Store reuse.**  An MSA file whose entry is in an open store (built from the same bytes,
  with the model's spec) is read from the store instead of recomputed.
* **Homology search.**  With a :class:`~tprna.search.HomologSearch`, a bare sequence (an
  MSA of one row) is predicted from its searched alignment instead of alone.
* **Bad inputs are failures**, never exceptions: an unreadable / empty / wrong-alphabet MSA,
  a duplicate id, one longer than ``max_length``, or one whose features would not fit in
  memory (``memory_limit``, by default half the memory available).  The inputs that pass
  share that limit while their features are computed (:class:`~tprna.limits.MemoryBudget`):
  the feature threads never run fits that only fit one at a time together.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tprna import features
from tprna.contract import model_input, rounded_features
from tprna.errors import TprnaError
from tprna.features import FeatureSpec, feature_memory_bytes
from tprna.limits import MemoryBudget, check_feature_memory
from tprna.msa import MSA, read_msa
from tprna.search import HomologSearch
from tprna.serve.inputs import BadInput, InputLike, NamedInput, describe, path_id, string_input
from tprna.serve.results import Failure

__all__ = ["WorkItem", "InputResolver", "serving_input"]


def serving_input(msa: MSA, spec: FeatureSpec, device: str = "cpu") -> tuple[np.ndarray, float]:
    """The network input ``(C, L, L)`` float32 of one MSA, and its Neff, exactly as the
    model saw it in training: :func:`tprna.features.make_features`, rounded as the store
    keeps it (:func:`tprna.contract.rounded_features`), then
    :func:`tprna.contract.model_input`.  Clients of a Triton deployment call this too."""
    # through the module, so that a test can tell whether features were computed
    feats = rounded_features(features.make_features(msa, spec, device), spec)
    return model_input(feats, spec), float(feats["neff"])


@dataclass
class WorkItem:
    """One RNA to predict, its network input computed (or read) when ``load`` is called."""

    index: int
    id: str
    source: str
    length: int
    sequence: str
    load: Callable[[], tuple[np.ndarray, float | None]]  # → ((C, L, L) float32, neff)
    msa: MSA | None = None  # the alignment its input is computed from (None: read from a store)

    @property
    def aligned(self) -> bool:
        """Its features come from several distinct rows: numba's compiled loops run."""
        msa = self.msa
        return msa is not None and msa.depth > 1 and bool((msa.codes != msa.codes[0]).any())


@dataclass
class InputResolver:
    """Turns inputs into work items for the model of ``spec``; ``store_lock`` serialises
    reads of the one store handle shared by the feature threads."""

    spec: FeatureSpec
    feature_device: str
    max_length: int | None
    store_lock: threading.Lock
    search: HomologSearch | None = None  # a bare sequence's alignment comes from this search
    memory_limit: int | None = None  # bytes of features one input may need (None: half the memory available)
    # what the feature threads may need together (the same limit): two fits that each fit
    # alone wait for each other rather than run at once
    budget: MemoryBudget = field(init=False)

    def __post_init__(self) -> None:
        self.budget = MemoryBudget(self.memory_limit)

    def resolve(self, chunk: list[tuple[int, InputLike]], store: Any, seen: dict[str, str],
                workers: int) -> list[WorkItem | Failure]:
        """Read the chunk's MSAs (in a pool of ``workers``) and turn each into an item or a
        failure; ``seen`` (id → source) carries over between chunks to refuse duplicates."""
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda pair: self.input_item(pair[0], pair[1], store), chunk))
        if self.search is not None:
            results = self.with_homologs(results)
        out: list[WorkItem | Failure] = []
        for result in results:
            if isinstance(result, WorkItem):
                if result.id in seen:
                    why = ("given twice" if _same_file(seen[result.id], result.source) else
                           f"duplicate id {result.id!r} (also from {seen[result.id]}); rename one of the files")
                    result = Failure(result.source, why, result.id, result.index)
                elif self.max_length is not None and result.length > self.max_length:
                    result = Failure(result.source, f"L={result.length} is over the maximum length "
                                     f"{self.max_length}; raise max_length if the memory allows",
                                     result.id, result.index)
                elif (refused := self.over_memory(result)) is not None:
                    result = refused
                else:
                    seen[result.id] = result.source
            out.append(result)
        return out

    def over_memory(self, item: WorkItem) -> Failure | None:
        """A failure when the item's features would not fit in memory (the rule the store's
        build applies: :func:`tprna.limits.check_feature_memory`); None when they fit or are
        read from a store."""
        if item.msa is None:
            return None
        try:
            check_feature_memory(item.msa, self.spec, self.memory_limit,
                                 "raise it with --memory-limit or predict on a larger machine")
        except TprnaError as e:
            return Failure(item.source, e.reason, item.id, item.index)
        return None

    def input_item(self, index: int, value: InputLike, store: Any) -> WorkItem | Failure:
        source = describe(value)
        try:
            if isinstance(value, BadInput):
                return Failure(value.source, value.reason, None, index)
            if isinstance(value, str) and not os.path.exists(value):
                value = string_input(value, index)
                source = value.source
            if isinstance(value, NamedInput):
                return self.msa_item(index, value.id, value.source, value.to_msa(self.spec.molecule))
            if isinstance(value, MSA):
                entry_id = path_id(Path(value.source)) if value.source else value.ids[0]
                return self.msa_item(index, entry_id, source, value)
            if isinstance(value, tuple):
                if len(value) != 2 or not isinstance(value[0], str) or \
                        not isinstance(value[1], (str, MSA, os.PathLike)):
                    raise TprnaError(f"expected (id, sequence), (id, MSA) or (id, Path), got {value!r:.60}")
                entry_id, content = value
                if isinstance(content, MSA):
                    return self.msa_item(index, entry_id, source, content)
                if isinstance(content, os.PathLike):  # a file named apart from its stem
                    return self.msa_item(index, entry_id, source, read_msa(Path(content), self.spec.molecule))
                named = NamedInput(entry_id, content, entry_id)
                return self.msa_item(index, entry_id, source, named.to_msa(self.spec.molecule))
            path = Path(value)
            entry_id = path_id(path)
            if store is not None:
                reused = self.store_copy(store, entry_id, path, index)
                if reused is not None:
                    return reused
            return self.msa_item(index, entry_id, source, read_msa(path, self.spec.molecule))
        except TprnaError as e:
            return Failure(source, e.reason, None, index)
        except Exception as e:  # a parser bug must not stop the batch
            return Failure(source, f"{type(e).__name__}: {e}", None, index)

    def with_homologs(self, results: list[WorkItem | Failure]) -> list[WorkItem | Failure]:
        """The bare sequences (MSAs of one row) among ``results`` given their searched
        alignments, the chunk's searches run together (every core busy); a sequence whose
        search fails becomes a failure."""
        bare = {str(r.index): r for r in results if isinstance(r, WorkItem) and r.msa is not None and r.msa.depth == 1}
        if not bare:
            return results
        found = dict(self.search.iter_search({k: r.msa.query_text or r.msa.query for k, r in bare.items()}))
        out: list[WorkItem | Failure] = []
        for r in results:
            got = found.get(str(r.index)) if isinstance(r, WorkItem) else None
            if isinstance(got, TprnaError):
                r = Failure(r.source, got.reason, r.id, r.index)
            elif got is not None:
                r = self.msa_item(r.index, r.id, f"{r.source} + {got.hits} homologs from {self.search.name}", got.msa)
            out.append(r)
        return out

    def msa_item(self, index: int, entry_id: str, source: str, msa: MSA) -> WorkItem:
        spec, device, budget = self.spec, self.feature_device, self.budget

        def load() -> tuple[np.ndarray, float | None]:
            with budget.reserve(feature_memory_bytes(spec, msa.length, msa.depth)):
                return serving_input(msa, spec, device)

        return WorkItem(index, entry_id, source, msa.length, msa.query_text or msa.query, load, msa)

    def store_copy(self, store: Any, entry_id: str, path: Path, index: int) -> WorkItem | None:
        """The store's entry for this MSA file when it was built from the same bytes."""
        from tprna.store.schema import file_sha256  # lazy: tprna.store loads zarr and h5py

        with self.store_lock:
            if entry_id not in store:
                return None
            meta = store.entry_meta(entry_id)
        recorded = ((meta.get("provenance") or {}).get("msa") or {}).get("sha256")
        if self.spec.key not in meta.get("specs", []) or not recorded or not path.is_file():
            return None
        if recorded != file_sha256(path):
            return None
        return self.store_item(store, entry_id, index, source=str(path))

    def store_item(self, store: Any, entry_id: str, index: int, source: str | None = None) -> WorkItem | Failure:
        """An entry of an open store, its features read from there."""
        source = source or f"{store.path}#{entry_id}"
        try:
            with self.store_lock:
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
        spec, lock = self.spec, self.store_lock

        def load() -> tuple[np.ndarray, float | None]:
            with lock:
                feats = store.read_features(entry_id, spec.key)
            return model_input(feats, spec), float(feats["neff"])

        return WorkItem(index, entry_id, source, length, str(meta["sequence"]), load)


def _same_file(a: str, b: str) -> bool:
    """Two sources are one file (two --seq of one name are not: their sources are no files)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False
