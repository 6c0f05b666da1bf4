"""Training data from a feature store: a torch Dataset over a store split, batches formed
by length under a budget of L² pixels, and padding masks.

The network input, its padding and the length batches are the model's contract
(:mod:`tprna.contract`); a batch is padded to its longest member, ``mask`` (B, L) marks
real residues and ``observed`` (B, L, L) the pairs with a label, so padding never reaches
a loss or a metric.

**Depth sampling** (``depth_sampling`` > 0) teaches the network when to trust covariance:
each epoch, that fraction of the alignment entries is trained on a random subset of its
rows (the query always kept; a third of them on the query alone, the rest on a
log-uniform depth), with weights, covariance, profile and coupling maps recomputed from the
store's encoded alignment for the training window — the thermodynamic channel is the
query's and stays as stored.  The draws are a function of (seed, epoch), so a resumed run sees the same.

**Homolog sampling** (``homolog_sampling`` > 0) multiplies the single-sequence examples:
each epoch, that fraction of the alignment entries is trained as one of its homologs
alone — a row that covers most of the query's columns and differs from the query — with
its own base-pair probabilities and the query's labels on the columns it covers (a family
keeps its structure across homologs; that is what its alignment records).  The network
then learns to read thermodynamics on many sequences per structure instead of one.  A
homolog trained alone is a training RNA: :meth:`StoreDataset.screen_homologs` keeps out the
rows too close to the chains a model is validated or benchmarked on.

**Thermodynamics dropout** (``bpp_dropout`` > 0) makes the network read the alignment on its
own: each epoch, that fraction of the examples still trained on an alignment of ≥ 2 rows
(after depth and homolog sampling) has its base-pair-probability channel zeroed, so the
contacts must come from covariance and couplings — the single-sequence examples keep it.

**Homolog queries** (``homolog_query`` > 0) make the couplings, not the query's folding, what
stays constant for a structure: each epoch, that fraction of the examples still on an
alignment of ≥ 2 rows (after depth and homolog sampling; thermodynamics dropout then passes
them over) is trained with one of the family's homologs standing in for the query — its
own base-pair probabilities, the alignment's covariance, profile and couplings (whole or
depth-cut) on the query columns it covers, the query's labels there.  A family's
alignment then trains with many foldings of the same couplings, where before its
covariance always came beside the one query's folding.
"""
from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from tprna.alphabet import get_alphabet
from tprna.contract import (PAPER_PIXEL_BUDGET, length_batches, model_input, pad_batch, rounded,
                            rounded_features)
from tprna.errors import TprnaError
from tprna.features import (FEATURE_SETS, FeatureSpec, base_pair_probabilities, column_profile, coupling_map,
                            covariance, make_features, neff, plm_map, precision, sequence_weights)
from tprna.msa import MSA
from tprna.redundancy import close_to_any
from tprna.store import open_store

__all__ = ["StoreDataset", "LengthBatchSampler", "collate", "PAPER_PIXEL_BUDGET", "length_batches",
           "subsampled_features", "query_and_random_rows", "draw_depth", "DEPTH_SAMPLING_MAX",
           "query_shares", "homolog_rows", "homolog_example", "homolog_columns", "homolog_bpp",
           "HOMOLOG_ALONE", "HOMOLOG_QUERY"]

DEPTH_SAMPLING_MAX = 1000  # deepest subsample drawn: weights cost O(depth² · L)
# components recomputed from a row subset (neff: the subset's); "bpp" is the query's alone and stays as stored
_RESAMPLED = {"cov", "precision", "profile", "apc", "dca", "plm", "neff"}
# A homolog stands in for the query only when its labels carry over: it covers most query
# columns (few deletions to misplace) and is not a near copy (which would add nothing).
HOMOLOG_MIN_COVERAGE = 0.9
HOMOLOG_MAX_IDENTITY = 0.9
# the ``homolog`` field of a sampler key: a homolog trained alone, or as the query of its family's alignment
HOMOLOG_ALONE, HOMOLOG_QUERY = 1, 2


class StoreDataset(Dataset):
    """Examples of one feature spec from a store: model input, labels and masks.

    The store is opened lazily in each DataLoader worker (open handles do not pickle)."""

    def __init__(self, store_path: str | Path, spec: FeatureSpec | str | None = None,
                 split: str | None = None, ids: Sequence[str] | None = None,
                 require_labels: bool = True, max_length: int | None = None):
        self.store_path = str(store_path)
        store = open_store(self.store_path)
        try:
            self.spec = _resolve_spec(store, spec, self.store_path)
            chosen = list(ids) if ids is not None else _split_ids(store, split)
            metas = {i: store.entry_meta(i) for i in chosen}
        finally:
            store.close()
        self.ids = [i for i in chosen
                    if (not require_labels or metas[i]["has_labels"])
                    and self.spec.key in metas[i].get("specs", [self.spec.key])
                    and (max_length is None or metas[i]["length"] <= max_length)]
        if not self.ids:
            raise TprnaError(f"no labelled entries with feature spec {self.spec.key} "
                             f"in split {split or '(all)'}", self.store_path)
        self.lengths = [int(metas[i]["length"]) for i in self.ids]
        self.depths = [int(metas[i]["depth"]) for i in self.ids]
        self.homologs: dict[str, np.ndarray] = {}  # entry → its screened homolog rows (screen_homologs)
        self._store = None

    def keep(self, indices: Sequence[int]) -> None:
        """Keep only these entries (in this order)."""
        self.ids = [self.ids[i] for i in indices]
        self.lengths = [self.lengths[i] for i in indices]
        self.depths = [self.depths[i] for i in indices]

    def check_depth_sampling(self) -> None:
        """Refuse a feature set whose channels cannot be recomputed from a row subset."""
        fixed = set(self.spec.components) - _RESAMPLED - {"bpp"}
        if fixed:
            raise TprnaError(f"depth sampling cannot recompute {', '.join(sorted(fixed))} from a subset of rows; "
                             f"train feature set {self.spec.feature_set!r} without --depth-sampling",
                             self.store_path)

    def screen_homologs(self, references: Mapping[str, str], threshold: float = 0.7) -> tuple[int, int]:
        """Keep as homolog examples only the rows < ``threshold`` identical to every reference
        (the chains a model is validated or benchmarked on): a homolog trained alone is a
        training RNA.  Returns (rows eligible, rows left out)."""
        alphabet = get_alphabet(self.spec.molecule)
        store = open_store(self.store_path)
        eligible = left_out = 0
        try:
            for entry_id, depth in zip(self.ids, self.depths):
                if depth <= 1:
                    continue
                codes = store.read_msa(entry_id)
                rows = homolog_rows(codes, alphabet.gap)
                sequences = [alphabet.decode(codes[r][codes[r] != alphabet.gap]) for r in rows]
                close = close_to_any(sequences, references, threshold)
                self.homologs[entry_id] = np.array([r for r, c in zip(rows, close) if c is None], dtype=np.int64)
                eligible += len(rows)
                left_out += sum(c is not None for c in close)
        finally:
            store.close()
        return eligible, left_out

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: int | tuple) -> dict:
        """``key`` is an index, or (index, start, size[, depth, row_seed[, homolog[, no_bpp]]])
        for the window ``[start, start + size)`` of the RNA (a training crop, drawn by the
        sampler), on ``depth`` rows of its alignment drawn with ``row_seed`` (0: all rows);
        ``homolog`` is :data:`HOMOLOG_ALONE` for a homolog alone drawn with ``row_seed``
        (:func:`homolog_example`) or :data:`HOMOLOG_QUERY` for a homolog as the query of the
        alignment (:func:`homolog_columns`, :func:`homolog_bpp`), either the query's own
        example when no homolog qualifies; ``no_bpp`` zeroes the base-pair-probability channel
        (thermodynamics dropout)."""
        index, start, size, depth, row_seed, homolog, no_bpp = (tuple(key) + (0,) * 4)[:7] \
            if isinstance(key, tuple) else (key, 0, self.lengths[key], 0, 0, 0, 0)
        if self._store is None:
            self._store = open_store(self.store_path)
        entry_id = self.ids[index]
        labels = self._store.read_labels(entry_id)
        length = self.lengths[index]
        contacts, observed = labels if labels is not None else (
            np.zeros((length, length), np.uint8), np.zeros((length, length), bool))
        window = slice(start, start + size)
        codes = self._store.read_msa(entry_id) if depth or homolog else None
        example = homolog_example(codes, self.spec, row_seed, window, self.homologs.get(entry_id)) \
            if homolog == HOMOLOG_ALONE else None
        if example is not None:  # the homolog's own features: the stored ones are not read
            x, columns, entry_neff = example
            cut = np.ix_(columns + start, columns + start)  # window-relative → the entry's own
        else:
            features = self._store.read_features(entry_id, self.spec.key)
            # a stream of its own: a depth cut drawn with the same row_seed stays independent of it
            stand_in = homolog_columns(codes, self.spec, np.random.default_rng([row_seed, HOMOLOG_QUERY]), window,
                                       self.homologs.get(entry_id)) if homolog == HOMOLOG_QUERY else None
            if stand_in is not None:
                row, present, columns = stand_in
                features = {**features, "bpp": homolog_bpp(codes, row, present, self.spec)}
            if no_bpp and "bpp" in features:
                features = {**features, "bpp": np.zeros_like(features["bpp"])}
            if depth:
                features = subsampled_features(codes, features, self.spec, depth, row_seed, window)
                x = model_input(features, self.spec)
            else:
                x = model_input(features, self.spec)[:, window, window]
            cut, entry_neff = (window, window), float(features["neff"])
            if stand_in is not None:
                x = x[:, columns][:, :, columns]
                cut = np.ix_(columns + start, columns + start)
        return {"id": entry_id, "features": torch.from_numpy(np.ascontiguousarray(x)),
                "contacts": torch.from_numpy(np.asarray(contacts[cut], dtype=np.float32)),
                "observed": torch.from_numpy(np.asarray(observed[cut], dtype=bool)),
                "neff": entry_neff}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_store"] = None
        return state


def query_and_random_rows(n: int, depth: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of a ``depth``-row cut of an ``n``-row alignment: the query (row 0) and
    ``depth − 1`` others drawn without replacement, in alignment order."""
    return np.concatenate([[0], 1 + np.sort(rng.choice(n - 1, depth - 1, replace=False))])


def subsampled_features(codes: np.ndarray, stored: dict, spec: FeatureSpec, depth: int, row_seed: int,
                        window: slice) -> dict:
    """An entry's features on ``window`` as if its alignment held only ``depth`` rows: the
    query and ``depth − 1`` others drawn with ``row_seed``.  Weights come from the whole
    length of the subset (the identity rule is over the full query); covariance and profile
    need only the window's columns, the precision and the coupling maps (global) are
    computed on the full length and cut.  Rounded to the store's dtype
    (:func:`tprna.contract.rounded`), as stored ones are."""
    rows = query_and_random_rows(len(codes), depth, np.random.default_rng(row_seed))
    alphabet = get_alphabet(spec.molecule)
    sub = MSA(ids=tuple(map(str, rows)), codes=np.ascontiguousarray(codes[rows]), alphabet=alphabet)
    weights = sequence_weights(sub, spec.identity)
    parts = set(spec.components)
    glob = bool(parts & {"precision", "apc", "dca", "plm"})
    cols = slice(None) if glob else window
    part = MSA(ids=sub.ids, codes=np.ascontiguousarray(sub.codes[:, cols]), alphabet=alphabet)
    out: dict = {"weights": weights, "neff": np.float32(neff(sub, weights))}
    if parts & {"cov", "precision", "apc", "dca"}:
        cov = covariance(part, weights, spec.pseudocount)
        prec = precision(cov, spec.shrinkage) if parts & {"precision", "dca"} else None
        full = {"cov": cov, "precision": prec}
        if "apc" in parts:
            full["apc"] = coupling_map(cov)
        if "dca" in parts:
            full["dca"] = coupling_map(prec)
        cut = window if glob else slice(None)
        for name in parts & {"cov", "precision", "apc", "dca"}:
            out[name] = full[name][cut, cut]
    if "plm" in parts:
        out["plm"] = plm_map(sub, weights)[window, window]
    if "profile" in parts:
        out["profile"] = column_profile(part, weights)[window if glob else slice(None)]
    for name in list(out):
        if name in spec.stored_components:
            out[name] = rounded(name, out[name], spec.dtype)
    if "bpp" in parts:
        out["bpp"] = np.asarray(stored["bpp"])[window, window]
    return out


def query_shares(codes: np.ndarray, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's coverage of the query's (row 0's) residue columns and its identity to the
    query, both as shares of those columns."""
    present = codes != gap
    query_columns = max(int(present[0].sum()), 1)
    return ((present & present[0]).sum(1) / query_columns,
            ((codes == codes[0]) & present).sum(1) / query_columns)


def homolog_rows(codes: np.ndarray, gap: int) -> np.ndarray:
    """Rows of an alignment that may stand in for its query (row 0): they cover at least
    ``HOMOLOG_MIN_COVERAGE`` of the query's columns and share less than
    ``HOMOLOG_MAX_IDENTITY`` of them."""
    coverage, identity = query_shares(codes, gap)
    eligible = (coverage >= HOMOLOG_MIN_COVERAGE) & (identity < HOMOLOG_MAX_IDENTITY)
    eligible[0] = False
    return np.flatnonzero(eligible)


def homolog_columns(codes: np.ndarray, spec: FeatureSpec, rng: np.random.Generator, window: slice,
                    rows: np.ndarray | None = None) -> tuple[int, np.ndarray, np.ndarray] | None:
    """One homolog of an alignment, drawn with ``rng`` among ``rows`` (default: all
    :func:`homolog_rows`), and where its labels carry over: (its row, the query columns it
    covers, those of them inside ``window`` as indices into the window); ``None`` when no row
    qualifies or it covers nothing of the window."""
    gap = get_alphabet(spec.molecule).gap
    rows = homolog_rows(codes, gap) if rows is None else rows
    if not len(rows):
        return None
    row = int(rows[rng.integers(len(rows))])
    present = np.flatnonzero((codes[row] != gap) & (codes[0] != gap))
    inside = present[(present >= window.start) & (present < window.stop)] - window.start
    return (row, present, inside) if len(inside) else None


def homolog_bpp(codes: np.ndarray, row: int, present: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """The base-pair probabilities of homolog ``row`` folded on its letters in the query
    columns ``present``, placed on those columns of an (L, L) map (zero elsewhere) and rounded
    as the stored channel is: the ``bpp`` channel of the homolog standing in for the query."""
    alphabet = get_alphabet(spec.molecule)
    out = np.zeros((codes.shape[1],) * 2, np.float32)
    out[np.ix_(present, present)] = base_pair_probabilities(alphabet.decode(codes[row, present]))
    return rounded("bpp", out, spec.dtype)


def homolog_example(codes: np.ndarray, spec: FeatureSpec, row_seed: int, window: slice,
                    rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float] | None:
    """One homolog of an alignment, drawn with ``row_seed`` (:func:`homolog_columns`), as a
    single-sequence example: (its model input on the ``window`` columns it covers, those
    columns as indices into the window, its Neff); ``None`` when no row qualifies.  Its
    features are computed on its whole gap-free sequence (as a user's single sequence would
    be) and rounded as stored ones are."""
    drawn = homolog_columns(codes, spec, np.random.default_rng(row_seed), window, rows)
    if drawn is None:
        return None
    row, present, columns = drawn
    alone = MSA(ids=("homolog",), codes=np.ascontiguousarray(codes[row, present][None]),
                alphabet=get_alphabet(spec.molecule))
    features = rounded_features(make_features(alone, spec), spec)
    inside = np.searchsorted(present, columns + window.start)  # the covered window columns, in its own positions
    x = model_input(features, spec)[:, inside][:, :, inside]
    return np.ascontiguousarray(x), columns, float(features["neff"])


def repeated_alignments(depths: Sequence[int], repeats: int) -> list[int]:
    """Entry indices with each entry on an alignment of ≥ 2 rows ``repeats`` times in a row and
    each single sequence once: an epoch's weight moves toward the examples whose couplings say
    something.  Each copy is its own sampler item (its own place in the shuffle, crop window and
    depth / homolog draws), so with sampling on the copies are different views of the family."""
    return [i for i, depth in enumerate(depths) for _ in range(repeats if depth > 1 else 1)]


def draw_depth(rng: random.Random, depth: int, fraction: float) -> int:
    """0 (all rows) or the depth of one subsample: with probability ``fraction`` an alignment
    of ``depth`` > 1 rows is cut, to the query alone a third of the time, otherwise to a
    log-uniform depth in [2, min(depth − 1, DEPTH_SAMPLING_MAX)]."""
    if depth <= 1 or rng.random() >= fraction:
        return 0
    top = min(depth - 1, DEPTH_SAMPLING_MAX)
    if top < 2 or rng.random() < 1 / 3:
        return 1
    return min(top, max(2, round(math.exp(rng.uniform(math.log(2), math.log(top))))))


def _split_ids(store, split: str | None) -> list[str]:
    """Entries of one split, or of several joined by commas ("train,extra"), no repeats."""
    if split is None:
        return store.ids()
    chosen: dict[str, None] = {}  # ordered, no repeats
    for name in split.split(","):
        chosen.update(dict.fromkeys(store.ids(name.strip())))
    return list(chosen)


def _resolve_spec(store, spec: FeatureSpec | str | None, path: str) -> FeatureSpec:
    # Training must not pick one of several specs silently; otherwise the store decides.
    if spec is None and len(store.specs) > 1:
        held = ", ".join(f"{k} ({s.feature_set})" for k, s in store.specs.items())
        raise TprnaError(f"the store holds {len(store.specs)} feature specs ({held}); "
                         "name one with --features", path)
    key = store.resolve_spec(spec)
    if key not in store.specs:
        raise TprnaError(f"the store has no features for spec {key}", path)
    if isinstance(spec, FeatureSpec):  # its own feature set: one with derived channels shares the key
        return spec
    if isinstance(spec, str) and spec in FEATURE_SETS:
        return replace(store.specs[key], feature_set=spec)
    return store.specs[key]


def collate(batch: list[dict]) -> dict:
    """Pad to the longest member: features (B,C,L,L) and mask (B,L) as the contract pads
    them (:func:`tprna.contract.pad_batch`), contacts/observed (B,L,L) alike."""
    features, mask = pad_batch([np.asarray(item["features"]) for item in batch])
    longest = features.shape[-1]
    out = {"features": torch.from_numpy(features),
           "contacts": torch.zeros(len(batch), longest, longest),
           "observed": torch.zeros(len(batch), longest, longest, dtype=torch.bool),
           "mask": torch.from_numpy(mask),
           "ids": [item["id"] for item in batch],
           "neff": [item["neff"] for item in batch]}
    for b, item in enumerate(batch):
        n = item["features"].shape[-1]
        out["contacts"][b, :n, :n] = item["contacts"]
        out["observed"][b, :n, :n] = item["observed"]
    return out


class LengthBatchSampler(Sampler[list]):
    """Length-bucketed batches under a pixel budget, shuffled per epoch with a seed.

    Shuffling keeps batches length-homogeneous: indices are shuffled, cut into pools of
    ``pool`` items, each pool sorted by length and batched, then the batches shuffled.
    With ``crop``, an RNA longer than ``crop`` is trained on a random ``crop``-long window
    (the same window on both axes, so the diagonal and every pair inside it stay), drawn
    anew each epoch: activation memory is bounded and long RNAs still contribute.  Items
    are then ``(index, start, size)`` keys for :class:`StoreDataset`.
    ``num_replicas``/``rank`` shard whole batches for distributed training: rank ``r`` gets
    batches ``r, r + R, r + 2R, …`` of the epoch's list.  ``accumulate`` is the number of
    batches each rank adds up per optimiser step; the list is padded (cycling from its start)
    to a multiple of ``num_replicas × accumulate`` so every rank has the same number of full
    steps.  Step ``k`` of the run then covers the consecutive batches
    ``[k·R·A, (k+1)·R·A)`` of the list, whatever the split between ranks and accumulation —
    which is why ``R`` ranks and one process accumulating ``R`` batches see the same global
    batches.  Everything is a function of (seed, epoch), so a resumed run sees the same
    batches."""

    def __init__(self, lengths: Sequence[int], pixel_budget: int = PAPER_PIXEL_BUDGET,
                 shuffle: bool = True, seed: int = 0, pool: int = 64,
                 num_replicas: int = 1, rank: int = 0, crop: int | None = None,
                 accumulate: int = 1, depths: Sequence[int] | None = None, depth_sampling: float = 0.0,
                 homolog_sampling: float = 0.0, bpp_dropout: float = 0.0, homolog_query: float = 0.0):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise TprnaError(f"rank {rank} of {num_replicas} replicas is not a valid shard")
        if accumulate < 1:
            raise TprnaError(f"accumulate must be >= 1, got {accumulate}")
        self.full_lengths = list(lengths)
        self.crop = crop
        self.lengths = [min(n, crop) if crop else n for n in self.full_lengths]
        self.pixel_budget = pixel_budget
        self.shuffle, self.seed, self.pool = shuffle, seed, pool
        self.num_replicas, self.rank, self.accumulate = num_replicas, rank, accumulate
        for name, fraction in (("depth sampling", depth_sampling), ("homolog sampling", homolog_sampling),
                               ("bpp dropout", bpp_dropout), ("homolog query", homolog_query)):
            if fraction and (depths is None or len(depths) != len(self.full_lengths)):
                raise TprnaError(f"{name} needs every entry's alignment depth")
            if not 0 <= fraction <= 1:
                raise TprnaError(f"{name} is a fraction in [0, 1], got {fraction}")
        self.depths, self.depth_sampling, self.homolog_sampling = depths, depth_sampling, homolog_sampling
        self.bpp_dropout, self.homolog_query = bpp_dropout, homolog_query
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        if not self.shuffle:
            return length_batches(self.lengths, self.pixel_budget)
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        batches = []
        for start in range(0, len(order), self.pool):
            pool = sorted(order[start:start + self.pool], key=lambda i: (self.lengths[i], i))
            batches += length_batches(self.lengths, self.pixel_budget, pool)
        rng.shuffle(batches)
        return batches

    def _padded_count(self, n: int) -> int:
        group = self.num_replicas * self.accumulate
        return math.ceil(n / group) * group

    def __iter__(self) -> Iterator[list]:
        batches = self._batches()
        total = self._padded_count(len(batches))  # equal, whole steps on every rank
        batches = [batches[k % len(batches)] for k in range(total)]
        mine = batches[self.rank::self.num_replicas]
        if not (self.crop or self.depth_sampling or self.homolog_sampling or self.bpp_dropout or self.homolog_query):
            return iter(mine)
        starts = [0] * len(self.full_lengths)
        if self.crop:
            rng = random.Random(self.seed * 7_919 + self.epoch)
            starts = [rng.randrange(n - self.crop + 1) if n > self.crop else 0 for n in self.full_lengths]
        draws = [()] * len(self.full_lengths)
        if self.depth_sampling:
            rng = random.Random(self.seed * 104_729 + self.epoch)
            draws = [(draw_depth(rng, n, self.depth_sampling), rng.randrange(2 ** 32)) for n in self.depths]
        if self.homolog_sampling:  # its own stream: depth-sampled runs keep their draws
            rng = random.Random(self.seed * 130_003 + self.epoch)
            for i, n in enumerate(self.depths):
                chosen, row_seed = rng.random() < self.homolog_sampling, rng.randrange(2 ** 32)
                if n > 1 and chosen:
                    draws[i] = (0, row_seed, HOMOLOG_ALONE)
        if self.homolog_query:  # a depth cut keeps its row_seed (the homolog's is derived from it)
            # a named stream: the numeric seeds above all reduce to the epoch at seed 0, where a stream
            # drawing as the homolog one does would pick exactly its entries, and only those
            rng = random.Random(f"homolog query {self.seed} {self.epoch}")
            for i, n in enumerate(self.depths):
                chosen, row_seed = rng.random() < self.homolog_query, rng.randrange(2 ** 32)
                depth, drawn_seed, homolog = (tuple(draws[i]) + (0, 0, 0))[:3]
                if chosen and n > 1 and depth != 1 and not homolog:
                    draws[i] = (depth, drawn_seed if depth else row_seed, HOMOLOG_QUERY)
        if self.bpp_dropout:  # its own stream too; only examples still on ≥ 2 rows lose the channel
            rng = random.Random(self.seed * 150_001 + self.epoch)
            for i, n in enumerate(self.depths):
                dropped = rng.random() < self.bpp_dropout
                depth, row_seed, homolog = (tuple(draws[i]) + (0, 0, 0))[:3]
                if dropped and n > 1 and depth != 1 and not homolog:
                    draws[i] = (depth, row_seed, 0, 1)
        mine = [[(i, starts[i], self.lengths[i], *draws[i]) for i in batch] for batch in mine]
        return iter(mine)

    def __len__(self) -> int:
        return self._padded_count(len(self._batches())) // self.num_replicas
