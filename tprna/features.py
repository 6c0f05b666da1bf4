"""Features of an MSA: sequence weights, Neff, covariance, precision and base-pair
probabilities — ONE implementation, used by ``store build`` and by inference alike.

Formulas (DESIGN.md, paper eqs. 7 and 9):

* identity(n, m) = fraction of the L query columns where n and m carry the same state,
  gaps included; w_n = 1 / #{m : identity(n, m) ≥ 0.8} (n itself included);
  Neff = Σ w_n / √L.
* f_i(a) = Σ_n w̃_n [x_ni = a], f_ij(a, b) = Σ_n w̃_n [x_ni = a][x_nj = b] with
  w̃ = w / Σw; C[i, j, a, b] = f_ij(a, b) − f_i(a)·f_j(b).

No pseudocount by default, as in the paper; ``pseudocount=λ`` mixes the frequencies with
the uniform distribution, f ← (1−λ)f + λ/q (and λ/q² off the diagonal blocks), and is
recorded in the :class:`FeatureSpec`.

Speed: identical rows are merged first (their multiplicity kept), the N×N identity count
is a compiled (numba) loop over the row pairs, and the covariance is one BLAS GEMM of the
weighted, centred one-hot matrix for RNA (taken in blocks of rows so memory stays bounded
for deep alignments) and a compiled scatter over column pairs for proteins, where q = 21
makes the one-hot GEMM 20× wasteful.  The compiled loops live in
:mod:`tprna.feature_kernels`, imported when first needed: a single sequence never is.  With a CUDA device and
``device="cuda"``/``"auto"`` both become GEMMs in torch on the GPU.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Mapping

import numpy as np
from threadpoolctl import threadpool_limits

from tprna.errors import TprnaError
from tprna.metrics import apc
from tprna.msa import MSA

__all__ = [
    "FEATURE_CODE_VERSION", "FEATURE_SETS", "PAIR_COMPONENTS", "PROFILE_COMPONENTS", "DERIVED_COMPONENTS",
    "FeatureSpec", "FeatureDict", "stored_feature_set", "depth_channel",
    "sequence_weights", "neff", "single_frequencies", "covariance", "precision",
    "base_pair_probabilities", "consensus_base_pair_probabilities", "apc_frobenius",
    "coupling_map", "plm_map", "column_profile", "make_features", "default_feature_set",
    "feature_memory_bytes",
]

# Bump when a change to this module changes any number it produces: the store keys on it.
FEATURE_CODE_VERSION = "1"

# Named feature sets: which arrays feed the network, in channel order.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "cov": ("cov",),
    "cov+ss": ("cov", "bpp"),
    "precision": ("precision",),
    "precision+ss": ("precision", "bpp"),
    # The query's own letters (its column profile, one-hot for a single sequence): without
    # them an MSA of one gives all-zero covariance and the network sees only the bpp map.
    "cov+ss+profile": ("cov", "bpp", "profile"),
    # Coupling maps a network reads directly (issue: make the alignment count): APC-corrected
    # Frobenius norms of the covariance and of its inverse (mean-field DCA couplings), and
    # RNAalifold's consensus base-pair probabilities over the alignment.
    "cov+ss+profile+coupling": ("cov", "bpp", "profile", "apc", "dca", "alifold"),
    # ... and each coupling map alone beside cov and bpp, to measure what each adds
    "cov+ss+apc": ("cov", "bpp", "apc"),
    "cov+ss+dca": ("cov", "bpp", "dca"),
    "cov+ss+alifold": ("cov", "bpp", "alifold"),
    # the best of those (dca) beside the profile the shipped model reads
    "cov+ss+profile+dca": ("cov", "bpp", "profile", "dca"),
    # pseudo-likelihood couplings (plmDCA, :mod:`tprna.plmdca`) in place of the mean-field ones
    "cov+ss+plm": ("cov", "bpp", "plm"),
    "cov+ss+profile+plm": ("cov", "bpp", "profile", "plm"),
    # ... and the alignment's depth as a channel: the coupling maps are standardised to one
    # scale at every depth, so without it the network cannot tell a deep alignment's
    # couplings from a handful of rows' noise
    "cov+ss+profile+plm+neff": ("cov", "bpp", "profile", "plm", "neff"),
}

# Components the network reads but the store does not hold: each is a function of what an
# entry stores.  "neff" is log10(1 + Neff) on every pair of one channel (Neff per √L, as the
# paper and the evaluation's depth subsets measure it: about 0.05 for a single sequence).
DERIVED_COMPONENTS = ("neff",)

PAIR_COMPONENTS = ("cov", "precision")  # (L, L, q, q) → q² channels, channel = a·q + b
PROFILE_COMPONENTS = ("profile",)  # (L, q) → q² channels f_i(a)·f_j(b)

FeatureDict = Mapping[str, np.ndarray]

_ROW_BLOCK = 4096  # rows of the one-hot matrix per BLAS update: bounds memory for deep MSAs


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that determines the feature numbers; its key names them in the store."""

    molecule: str = "rna"
    feature_set: str = "cov+ss"
    identity: float = 0.8
    pseudocount: float = 0.0
    shrinkage: float = 0.1  # ridge of the precision matrix, as a fraction of mean variance
    dtype: str = "float16"  # storage dtype of the 2-D features
    code_version: str = field(default=FEATURE_CODE_VERSION)

    def __post_init__(self) -> None:
        if self.feature_set not in FEATURE_SETS:
            raise TprnaError(f"unknown feature set {self.feature_set!r}; use one of {', '.join(FEATURE_SETS)}")
        if self.molecule not in ("rna", "protein"):
            raise TprnaError(f"unknown molecule type {self.molecule!r}; use 'rna' or 'protein'")
        if {"bpp", "alifold"} & set(self.components) and self.molecule != "rna":
            raise TprnaError(f"feature set {self.feature_set!r} needs RNA base-pair probabilities; "
                             "use 'cov' or 'precision' for proteins")
        if not 0 < self.identity <= 1 or not 0 <= self.pseudocount < 1:
            raise TprnaError("identity must be in (0, 1] and pseudocount in [0, 1)")
        if self.dtype not in ("float16", "float32"):
            raise TprnaError(f"feature dtype {self.dtype!r} is not supported; use float16 or float32")

    @property
    def components(self) -> tuple[str, ...]:
        return FEATURE_SETS[self.feature_set]

    @property
    def stored_components(self) -> tuple[str, ...]:
        return tuple(c for c in self.components if c not in DERIVED_COMPONENTS)

    @property
    def q(self) -> int:
        return 5 if self.molecule == "rna" else 21

    @property
    def channels(self) -> int:
        return sum(self.q ** 2 if c in PAIR_COMPONENTS + PROFILE_COMPONENTS else 1 for c in self.components)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "FeatureSpec":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @cached_property  # every store read names its spec: hash the fields once
    def key(self) -> str:
        """The stored numbers' name: a feature set with derived components shares its key
        with the set of its stored ones, whose arrays it reads."""
        fields = {**self.to_dict(), "feature_set": stored_feature_set(self.feature_set)}
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def stored_feature_set(name: str) -> str:
    """The feature set of the components ``name`` stores (``name`` itself without derived
    components)."""
    stored = tuple(c for c in FEATURE_SETS[name] if c not in DERIVED_COMPONENTS)
    if stored == FEATURE_SETS[name]:
        return name
    return next(other for other, parts in FEATURE_SETS.items() if parts == stored)


def depth_channel(neff_value: float) -> np.float32:
    """The ``neff`` component's value: log10(1 + Neff), near 0 for a single sequence, 1 at
    Neff 9 (the evaluation's deep subset starts at 10)."""
    return np.float32(np.log10(1.0 + float(neff_value)))


def default_feature_set(molecule: str) -> str:
    return "cov+ss" if molecule == "rna" else "cov"


# --------------------------------------------------------------------------- weights

def _unique_rows(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rows, the row each sequence maps to, and each distinct row's multiplicity."""
    codes = np.ascontiguousarray(codes)
    as_bytes = codes.view(np.dtype((np.void, codes.shape[1]))).ravel()  # 20× faster than axis=0
    _, first, inverse, counts = np.unique(as_bytes, return_index=True, return_inverse=True, return_counts=True)
    return codes[first], inverse.ravel(), counts




def _min_matches(length: int, identity: float) -> int:
    # identity ≥ t ⇔ matches ≥ t·L; the tolerance keeps 0.8·L exact when it is an integer.
    return int(math.ceil(identity * length - 1e-9))


def sequence_weights(msa: MSA, identity: float = 0.8, device: str = "cpu") -> np.ndarray:
    """w_n = 1 / (number of sequences ≥ ``identity`` identical to n, itself included)."""
    uniq, inverse, counts = _unique_rows(msa.codes)
    threshold = _min_matches(msa.length, identity)
    if len(uniq) == 1:
        # one distinct row (a single sequence): its neighbours are its copies, exactly what
        # the kernel returns, without importing numba or starting its threads
        neighbours = counts.astype(np.float64)
    elif _use_cuda(device):
        neighbours = _neighbour_counts_torch(uniq, counts, threshold)
    else:
        from tprna import feature_kernels

        # thread start-up costs more than a small alignment's whole count
        threads = 1 if len(uniq) ** 2 * msa.length < 2e7 else feature_kernels.get_num_threads()
        neighbours = feature_kernels.neighbour_counts(uniq, counts.astype(np.float64), threshold, threads)
    return (1.0 / neighbours[inverse]).astype(np.float32)


def neff(msa: MSA, weights: np.ndarray | None = None, identity: float = 0.8) -> float:
    """Effective number of sequences per √L (paper eq. 9): Σ w_n / √L."""
    w = sequence_weights(msa, identity) if weights is None else weights
    return float(np.sum(w, dtype=np.float64) / math.sqrt(msa.length))


# --------------------------------------------------------------------------- covariance

def _merge_duplicates(msa: MSA, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows with the summed weight of their copies: same frequencies, fewer rows."""
    uniq, inverse, _ = _unique_rows(msa.codes)
    merged = np.bincount(inverse, weights=weights.astype(np.float64), minlength=len(uniq))
    return uniq, merged


def single_frequencies(rows: np.ndarray, w: np.ndarray, q: int) -> np.ndarray:
    """f_i(a) = Σ_n w_n [x_ni = a] for normalised weights w, (L, q) float64."""
    length = rows.shape[1]
    flat = (np.arange(length) * q + rows).ravel()
    counts = np.bincount(flat, weights=np.repeat(w.astype(np.float64), length), minlength=length * q)
    return counts.reshape(length, q)


def covariance(msa: MSA, weights: np.ndarray, pseudocount: float = 0.0, device: str = "cpu") -> np.ndarray:
    """C[i, j, a, b] = f_ij(a, b) − f_i(a)·f_j(b), float32 (L, L, q, q), states in alphabet order."""
    if weights.shape != (msa.depth,):
        raise TprnaError(f"{len(weights)} weights for an alignment of {msa.depth} sequences", msa.source or None)
    rows, w = _merge_duplicates(msa, weights)
    w = (w / w.sum()).astype(np.float32)
    q = msa.alphabet.q
    fi = single_frequencies(rows, w, q)
    if _use_cuda(device):
        cov = _centred_gram_torch(rows, w, fi, q)
    elif q * q <= _DENSE_MAX_Q2:
        cov = _centred_gram_blas(rows, w, fi.astype(np.float32), q)
    else:
        from tprna import feature_kernels

        cov = feature_kernels.covariance_scatter(np.ascontiguousarray(rows.T), w, fi.astype(np.float32),
                                                 feature_kernels.get_num_threads())
    if pseudocount:
        cov = _with_pseudocount(cov, fi, pseudocount)
    return cov


# The dense Gram costs 2·N·(Lq)² flops at BLAS speed, the scatter N·L²/2 memory updates:
# measured here, dense wins for RNA (q = 5) and loses ~10× for protein (q = 21).
_DENSE_MAX_Q2 = 64


def _centred_gram_blas(rows: np.ndarray, w: np.ndarray, fi: np.ndarray, q: int) -> np.ndarray:
    """Σ_n w_n (x_n − f)(x_n − f)ᵀ over one-hot rows x_n: the covariance in one GEMM, with
    no f_ij − f_i·f_j cancellation.  Rows are taken in blocks so memory stays bounded."""
    length = rows.shape[1]
    eye = np.eye(q, dtype=np.float32)
    mean = fi.reshape(1, -1)
    cov = np.zeros((length * q, length * q), dtype=np.float32)
    # Small GEMMs run slower on two BLAS threads than on one when the other core is busy
    # (a parallel store build): keep them single-threaded.
    small = 2 * len(rows) * (length * q) ** 2 < 4e9
    with threadpool_limits(limits=1 if small else None, user_api="blas"):
        for start in range(0, len(rows), _ROW_BLOCK):
            block = eye[rows[start:start + _ROW_BLOCK]].reshape(-1, length * q) - mean
            cov += (block * w[start:start + _ROW_BLOCK, None]).T @ block
    return np.ascontiguousarray(cov.reshape(length, q, length, q).transpose(0, 2, 1, 3))




def _with_pseudocount(cov: np.ndarray, fi: np.ndarray, lam: float) -> np.ndarray:
    """Mix frequencies with the uniform distribution: f ← (1−λ)f + λ/q (λ/q² for pairs),
    keeping the diagonal blocks consistent with f_i (f_ii(a, b) = δ_ab f_i(a))."""
    length, _, q, _ = cov.shape
    fij = cov.astype(np.float64) + fi[:, None, :, None] * fi[None, :, None, :]
    diag = fij[np.arange(length), np.arange(length)]
    fi = (1 - lam) * fi + lam / q
    fij = (1 - lam) * fij + lam / q ** 2
    fij[np.arange(length), np.arange(length)] = (1 - lam) * diag + lam / q * np.eye(q)
    return (fij - fi[:, None, :, None] * fi[None, :, None, :]).astype(np.float32)


def precision(cov: np.ndarray, shrinkage: float = 0.1) -> np.ndarray:
    """The shrunk inverse covariance (the paper's stated next step), (L, L, q, q) float32.

    The one-hot covariance is singular (each block's rows sum to zero), so a ridge of
    ``shrinkage`` × the mean variance (at least 1e-3) is added before inverting."""
    length, _, q, _ = cov.shape
    mat = cov.transpose(0, 2, 1, 3).reshape(length * q, length * q).astype(np.float64)
    ridge = max(shrinkage * float(np.mean(np.diag(mat))), 1e-3)
    mat[np.diag_indices_from(mat)] += ridge
    inv = np.linalg.inv(mat)
    inv = (inv + inv.T) / 2  # exact symmetry: the store keeps only the i ≤ j blocks
    return inv.reshape(length, q, length, q).transpose(0, 2, 1, 3).astype(np.float32)


# --------------------------------------------------------------------------- secondary structure

def base_pair_probabilities(query: str) -> np.ndarray:
    """ViennaRNA partition-function base-pair probabilities of the query, L×L symmetric float32."""
    import RNA  # the viennarna package; imported here so protein-only use does not need it

    seq = query.upper().replace("T", "U").replace("-", "N")
    fc = RNA.fold_compound(seq)
    _, mfe = fc.mfe()
    fc.exp_params_rescale(mfe)  # scale Boltzmann weights so long sequences do not overflow
    fc.pf()
    upper = np.array(fc.bpp(), dtype=np.float64)[1:, 1:]  # 1-based, upper triangle
    return (upper + upper.T).astype(np.float32)


# --------------------------------------------------------------------------- assembly

def feature_memory_bytes(spec: FeatureSpec, length: int, depth: int) -> int:
    """An estimate of the peak memory :func:`make_features` (and packing for the store)
    needs for an alignment of ``depth`` sequences and ``length`` columns.  The covariance
    alone is L²·q²·4 bytes as float32 (100·L² for RNA); the Gram and its transposed copy,
    the packed upper triangle and its indices make ≈10·L²·q²; the precision matrix adds
    float64 (Lq)² matrices (≈20·L²·q², the dca map too), a pseudocount ≈24·L²·q², ViennaRNA's
    partition function ≈64·L².  The plm map's (Lq)² couplings are held by scipy's L-BFGS-B
    as float64 with 10 pairs of history and 5 work vectors (200·L²·q²) plus our float32 and
    float64 copies (≈32·L²·q²) and four (N, Lq) float32 arrays; a single sequence fits
    nothing.  Measured with tracemalloc at L = 300: 230·L² (cov+ss), 700·L² (precision+ss)
    for RNA, within these bounds."""
    q, sq = spec.q, length * length
    parts = set(spec.components)
    per_q2 = 10 + (20 if parts & {"precision", "dca"} else 0) + (24 if spec.pseudocount else 0)
    fit = "plm" in parts and depth > 1  # one row: nothing to fit, the map is all zero
    per_q2 += 232 if fit else 0
    total = per_q2 * sq * q * q + depth * length * 2
    total += 16 * depth * length * q if fit else 0
    total += min(depth, _ROW_BLOCK) * length * q * 8  # one-hot row blocks of the Gram
    if "bpp" in spec.components:
        total += 64 * sq
    return int(total)


def make_features(msa: MSA, spec: FeatureSpec, device: str = "cpu") -> dict[str, np.ndarray]:
    """All arrays of one entry for ``spec``: weights, neff and the feature set's components
    (``cov``/``precision`` as (L, L, q, q) float32, ``bpp`` as (L, L) float32)."""
    if msa.alphabet.name != spec.molecule:
        raise TprnaError(f"alignment is {msa.alphabet.name} but the feature spec is {spec.molecule}",
                         msa.source or None)
    weights = sequence_weights(msa, spec.identity, device)
    out: dict[str, np.ndarray] = {"weights": weights, "neff": np.float32(neff(msa, weights))}
    if {"cov", "precision", "apc", "dca"} & set(spec.components):
        cov = covariance(msa, weights, spec.pseudocount, device)
        if "cov" in spec.components:
            out["cov"] = cov
        if "precision" in spec.components:
            out["precision"] = precision(cov, spec.shrinkage)
    if "bpp" in spec.components:
        out["bpp"] = base_pair_probabilities(msa.query)
    if "profile" in spec.components:
        out["profile"] = column_profile(msa, weights)
    if "apc" in spec.components:
        out["apc"] = coupling_map(cov)
    if "dca" in spec.components:
        out["dca"] = coupling_map(out["precision"] if "precision" in out else precision(cov, spec.shrinkage))
    if "plm" in spec.components:
        out["plm"] = plm_map(msa, weights)
    if "alifold" in spec.components:
        out["alifold"] = consensus_base_pair_probabilities(msa)
    return out


def apc_frobenius(blocks: np.ndarray) -> np.ndarray:
    """APC-corrected Frobenius norms of (L, L, q, q) coupling blocks over the residue
    states (the gap state left out), the classic coevolution score; diagonal 0."""
    b = np.asarray(blocks, dtype=np.float64)[:, :, :-1, :-1]
    norms = np.sqrt((b ** 2).sum(axis=(2, 3)))
    np.fill_diagonal(norms, 0.0)
    return apc(norms)


def coupling_map(blocks: np.ndarray) -> np.ndarray:
    """:func:`apc_frobenius`, standardised over the off-diagonal pairs (mean 0, sd 1) so the
    network sees the same scale at every depth; all zero when there is no signal (an MSA of
    one), float32 (L, L)."""
    s = apc_frobenius(blocks)
    off = ~np.eye(s.shape[0], dtype=bool)
    sd = float(s[off].std()) if off.any() else 0.0
    if sd < 1e-12:
        return np.zeros(s.shape, np.float32)
    z = (s - s[off].mean()) / sd
    z[~off] = 0.0
    return z.astype(np.float32)


def plm_map(msa: MSA, weights: np.ndarray) -> np.ndarray:
    """:func:`coupling_map` of the pseudo-likelihood couplings (:func:`tprna.plmdca.plm_couplings`)
    fitted on the distinct rows with their summed weights; all zero for one distinct row."""
    rows, w = _merge_duplicates(msa, weights)
    if len(rows) < 2:  # the map of zero couplings, without building their (L, L, q, q) zeros
        return np.zeros((msa.length, msa.length), np.float32)
    from tprna.plmdca import plm_couplings  # scipy's optimiser: loaded only for a fit

    return coupling_map(plm_couplings(rows, w, msa.alphabet.q))


ALIFOLD_MAX_SEQUENCES = 256  # RNAalifold's cost grows with depth; the first rows carry the query's family


def consensus_base_pair_probabilities(msa: MSA, max_sequences: int = ALIFOLD_MAX_SEQUENCES) -> np.ndarray:
    """RNAalifold's consensus base-pair probabilities (partition function with its
    covariation bonus) over the query-anchored alignment's first ``max_sequences`` rows,
    i.e. on the query's positions, L×L symmetric float32; the query alone gives RNAfold's."""
    import RNA

    states = msa.alphabet.states
    rows = ["".join(states[c] for c in row) for row in msa.codes[:max_sequences]]
    fc = RNA.fold_compound(rows)
    _, mfe = fc.mfe()
    fc.exp_params_rescale(mfe)
    fc.pf()
    upper = np.array(fc.bpp(), dtype=np.float64)[1:, 1:]
    return (upper + upper.T).astype(np.float32)


def column_profile(msa: MSA, weights: np.ndarray) -> np.ndarray:
    """f_i(a), the weighted frequency of each state in each query column, (L, q) float32;
    the query's one-hot encoding when the alignment is the query alone."""
    w = weights.astype(np.float64)
    return single_frequencies(msa.codes, w / w.sum(), msa.alphabet.q).astype(np.float32)


# --------------------------------------------------------------------------- GPU path

def _use_cuda(device: str) -> bool:
    if device == "cpu":
        return False
    import torch

    if device == "auto":
        return torch.cuda.is_available()
    if not torch.cuda.is_available():
        raise TprnaError(f"device {device!r} requested but no CUDA device is available")
    return True


def _neighbour_counts_torch(rows: np.ndarray, mult: np.ndarray, min_matches: int) -> np.ndarray:
    import torch

    # 0/1 inputs with fp32 accumulation: the match counts are exact integers.
    x = torch.nn.functional.one_hot(torch.from_numpy(rows).long().cuda()).flatten(1).float()
    m = torch.from_numpy(mult).double().cuda()
    counts = torch.zeros(len(rows), dtype=torch.float64, device="cuda")
    for start in range(0, len(rows), _ROW_BLOCK):
        matches = x[start:start + _ROW_BLOCK] @ x.T
        counts[start:start + _ROW_BLOCK] = ((matches >= min_matches).double() * m).sum(1)
    return counts.cpu().numpy()


def _centred_gram_torch(rows: np.ndarray, w: np.ndarray, fi: np.ndarray, q: int) -> np.ndarray:
    import torch

    length = rows.shape[1]
    x = torch.nn.functional.one_hot(torch.from_numpy(rows).long().cuda(), q).flatten(1).float()
    x -= torch.from_numpy(fi.reshape(1, -1)).float().cuda()
    cov = ((x * torch.from_numpy(w).cuda()[:, None]).T @ x).cpu().numpy()
    return np.ascontiguousarray(cov.reshape(length, q, length, q).transpose(0, 2, 1, 3))
