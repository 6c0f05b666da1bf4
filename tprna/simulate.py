"""Simulated RNA families with a known structure: example data the project makes itself.

The quick-start must run without downloads, so this module evolves toy RNA families
whose alignments carry a *real* covariance signal and whose contact map is known:

1. :func:`random_secondary_structure` draws a nested (pseudoknot-free) secondary
   structure of several stems — hairpins side by side, interior loops/bulges and, when
   the RNA is long enough, multi-branch junctions (tRNA-like) — with ~50–60 % of the
   positions in stems.
2. :func:`simulate_family` draws an ancestor whose paired positions carry Watson–Crick
   or GU pairs and evolves it down a random ultrametric binary tree.  A base pair
   mutates **as a pair** (``(a, b)`` is replaced by another of AU, UA, GC, CG, GU, UG:
   compensatory change), an unpaired position mutates on its own; deletions (gaps) and
   a few insertions happen off the query's lineage.  The first leaf is the query and
   never has a gap.
   With ``tertiary_stems`` it also plants short long-range helices between unpaired
   stretches (:func:`random_tertiary_stems`: pseudoknots, kissing loops), which coevolve
   like any pair but which no nested-structure predictor (ViennaRNA) can find: contacts
   only covariation reveals, the kind that pretraining on these families teaches.
3. :func:`contact_map` turns the structure into a 3-D-like contact map (rule below).
4. :func:`write_example_dataset` writes a dozen such families as MSA files (aligned
   FASTA, Stockholm and A3M, so every parser format is exercised), contact lists and a
   ``manifest.csv``, plus a README saying loudly that the data are simulated.

Contact rule (symmetric, diagonal zero), for a structure with base pairs P::

    C[i, j] = 1  if  1 <= |i - j| <= 2                       (sequence-local)
              or  |i - i'| <= 1 and |j - j'| <= 1 for some (i', j') in P
                                                          (the pair and its stacking
                                                           neighbourhood, both orders)

Everything is deterministic given the random generator (or seed).
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tprna.errors import TprnaError

__all__ = [
    "SimulatedFamily",
    "random_secondary_structure",
    "random_tertiary_stems",
    "dot_bracket",
    "contact_map",
    "simulate_family",
    "write_example_dataset",
    "format_fasta",
    "format_a3m",
    "format_stockholm",
    "format_contacts",
    "CANONICAL_PAIRS",
]

NUCLEOTIDES = "ACGU"
_GAP = 4
_LETTERS = np.array(list(NUCLEOTIDES + "-"))
CANONICAL_PAIRS = ("AU", "UA", "GC", "CG", "GU", "UG")
_PAIR_CODES = np.array([[NUCLEOTIDES.index(a), NUCLEOTIDES.index(b)] for a, b in CANONICAL_PAIRS])
_PAIR_WEIGHTS = np.array([0.17, 0.17, 0.28, 0.28, 0.05, 0.05])  # ancestor & replacement
_PAIR_INDEX = np.full((5, 5), -1, dtype=np.int64)  # (base_i, base_j) -> canonical index
_PAIR_INDEX[_PAIR_CODES[:, 0], _PAIR_CODES[:, 1]] = np.arange(len(CANONICAL_PAIRS))
_UNPAIRED_WEIGHTS = np.array([0.35, 0.18, 0.22, 0.25])  # loops are A-rich
# A mutating pair becomes one of the other five, in proportion to their weights.
_PAIR_SWAP = np.tile(_PAIR_WEIGHTS, (6, 1)) * (1 - np.eye(6))
_PAIR_SWAP_CUM = np.cumsum(_PAIR_SWAP / _PAIR_SWAP.sum(1, keepdims=True), axis=1)
# A node's children sit at this fraction of its height: the tree's shape.
_SPLIT_HEIGHT = (0.7, 0.98)
_MAX_INSERT = 4


# --------------------------------------------------------------------------- structure


def random_secondary_structure(
    length: int,
    rng: np.random.Generator | int | None,
    min_loop: int = 3,
    stem_len: tuple[int, int] = (4, 9),
    paired_fraction: tuple[float, float] = (0.5, 0.6),
    max_tries: int = 200,
) -> list[tuple[int, int]]:
    """A random nested secondary structure: sorted 0-based pairs ``(i, j)``, ``i < j``.

    Stems of ``stem_len`` base pairs close hairpin loops of at least ``min_loop``
    unpaired bases, interior loops/bulges, or multi-branch junctions; several domains
    sit side by side along the chain.  Candidates are drawn until one puts a fraction of
    positions within ``paired_fraction`` in stems (and, from 60 nt on, branches at least
    twice); after ``max_tries`` the closest candidate is returned.  Too short a chain for
    one stem gives ``[]``.
    """
    rng = np.random.default_rng(rng)
    lo_s, hi_s = int(stem_len[0]), int(stem_len[1])
    if length < 0 or min_loop < 0 or lo_s < 1 or hi_s < lo_s:
        raise TprnaError(
            f"random_secondary_structure: need length >= 0, min_loop >= 0 and "
            f"1 <= stem_len[0] <= stem_len[1]; got length={length}, min_loop={min_loop}, "
            f"stem_len={stem_len}")
    if length < 2 * lo_s + min_loop:
        return []
    f_lo, f_hi = paired_fraction
    want_hairpins = 1 + (length >= 60) + (length >= 110)
    best, best_score = [], math.inf
    for _ in range(max(1, max_tries)):
        pairs = _StructureDrawer(rng, min_loop, lo_s, hi_s).draw(length)
        frac = 2 * len(pairs) / length
        miss = max(0.0, f_lo - frac, frac - f_hi)
        score = miss + 0.1 * max(0, want_hairpins - _count_hairpins(pairs))
        if score < best_score:
            best, best_score = pairs, score
        if score == 0:
            break
    return sorted(best)


class _StructureDrawer:
    """One recursive draw: regions hold domains, a domain is a stem plus its inside."""

    def __init__(self, rng: np.random.Generator, min_loop: int, lo_s: int, hi_s: int):
        self.rng, self.min_loop, self.lo_s, self.hi_s = rng, min_loop, lo_s, hi_s
        self.unit = 2 * lo_s + min_loop + 1  # smallest domain worth drawing
        self.pairs: list[tuple[int, int]] = []

    def draw(self, length: int) -> list[tuple[int, int]]:
        self.region(0, length - 1, top=True)
        return self.pairs

    def region(self, lo: int, hi: int, top: bool) -> None:
        """Domains side by side in [lo, hi], separated by short single strands."""
        rng, n = self.rng, hi - lo + 1
        if n < self.unit:
            return
        max_k = max(1, min(4 if top else 3, n // (self.unit + (10 if top else 4))))
        # Sometimes one closing helix around everything (tRNA's acceptor stem).
        k = 1 if top and rng.random() < 0.3 else int(rng.integers(1, max_k + 1))
        end_max, link_max = (6, 4) if top else (2, 3)
        links = [int(rng.integers(0, end_max + 1))]
        links += [int(rng.integers(0, link_max + 1)) for _ in range(k - 1)]
        links += [int(rng.integers(0, end_max + 1))]
        while n - sum(links) < k * self.unit:  # shrink linkers, then branches
            if any(links):
                links[int(np.argmax(links))] -= 1
            else:
                k -= 1
                links = links[:-1]
        spare = n - sum(links) - k * self.unit
        sizes = self.unit + rng.multinomial(spare, rng.dirichlet(np.full(k, 2.0)))
        start = lo + links[0]
        for d in range(k):
            self.domain(start, start + int(sizes[d]) - 1)
            start += int(sizes[d]) + links[d + 1]

    def domain(self, lo: int, hi: int) -> None:
        """A stem closing (lo, hi), then a hairpin loop or more structure inside."""
        rng, n = self.rng, hi - lo + 1
        max_s = min(self.hi_s, (n - self.min_loop) // 2)
        if max_s < self.lo_s:
            return
        s = int(rng.integers(self.lo_s, max_s + 1))
        self.pairs.extend((lo + t, hi - t) for t in range(s))
        ilo, ihi = lo + s, hi - s
        inner = ihi - ilo + 1
        if inner >= self.unit + 2 and (inner > 12 or rng.random() < 0.5):
            a, b = int(rng.integers(0, 3)), int(rng.integers(0, 3))
            if a == b == 0:  # a bulge or interior loop, never a silent stem extension
                a = 1
            self.region(ilo + a, ihi - b, top=False)


def random_tertiary_stems(
    pairs: list[tuple[int, int]],
    length: int,
    n_stems: int,
    rng: np.random.Generator | int | None,
    stem_len: tuple[int, int] = (2, 5),
    min_separation: int = 24,
) -> list[tuple[int, int]]:
    """Up to ``n_stems`` short helices (``stem_len`` base pairs) between positions that
    ``pairs`` leaves unpaired: each pairs a run of consecutive unpaired positions with
    another, antiparallel, at least ``min_separation`` apart (long range) and one position
    clear of every helix already planted.  They may cross ``pairs`` (pseudoknots, kissing
    loops); sorted 0-based ``(i, j)``.  A structure with too little room gets fewer."""
    rng = np.random.default_rng(rng)
    free = np.ones(length, dtype=bool)
    for i, j in pairs:
        free[i] = free[j] = False
    out: list[tuple[int, int]] = []
    for _ in range(max(0, n_stems)):
        s = int(rng.integers(stem_len[0], stem_len[1] + 1))
        # starts of s consecutive free positions
        run = np.convolve(free.astype(int), np.ones(s, dtype=int), "valid") == s
        starts = np.flatnonzero(run)
        # a 5' start a and a 3' start b pair (a + t, b + s - 1 - t); the closest pair of the
        # helix, (a + s - 1, b), must be min_separation apart
        ok = [(int(a), int(b)) for a in starts for b in starts if b - (a + s - 1) >= min_separation]
        if not ok:
            continue
        a, b = ok[int(rng.integers(len(ok)))]
        helix = [(a + t, b + s - 1 - t) for t in range(s)]
        out.extend(helix)
        for lo in (a, b):  # the helix and a position either side stay clear of the next
            free[max(lo - 1, 0):lo + s + 1] = False
    return sorted(out)


def _count_hairpins(pairs: list[tuple[int, int]]) -> int:
    """Pairs with no pair inside them: one per hairpin loop."""
    return sum(1 for i, j in pairs if not any(i < a and b < j for a, b in pairs))


def _check_pairs(pairs: list[tuple[int, int]], length: int) -> None:
    seen: set[int] = set()
    for i, j in pairs:
        if not (0 <= i < j < length) or i in seen or j in seen:
            raise TprnaError(f"invalid base pair ({i}, {j}) for length {length}: pairs must be "
                             "0-based (i, j) with i < j, each position in at most one pair")
        seen.update((i, j))


def dot_bracket(pairs: list[tuple[int, int]], length: int) -> str:
    """Dot-bracket string of a nested structure (0-based pairs)."""
    _check_pairs(pairs, length)
    chars = ["."] * length
    for i, j in pairs:
        chars[i], chars[j] = "(", ")"
    # Round-trip check: brackets only describe nested structures.
    stack, back = [], []
    for pos, c in enumerate(chars):
        if c == "(":
            stack.append(pos)
        elif c == ")":
            back.append((stack.pop(), pos))
    if sorted(back) != sorted((int(i), int(j)) for i, j in pairs):
        raise TprnaError("structure has crossing pairs (a pseudoknot): no dot-bracket string")
    return "".join(chars)


def contact_map(pairs: list[tuple[int, int]], length: int) -> np.ndarray:
    """The L×L uint8 contact map of a structure, by the module's documented rule:
    sequence neighbours ``1 <= |i-j| <= 2``, every base pair, and the 3×3 stacking
    neighbourhood ``(i±1, j±1)`` of every pair; symmetric, zero diagonal."""
    _check_pairs(pairs, length)
    c = np.zeros((length, length), dtype=np.uint8)
    idx = np.arange(length)
    sep = np.abs(idx[:, None] - idx[None, :])
    c[(sep >= 1) & (sep <= 2)] = 1
    for i, j in pairs:
        c[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2] = 1
    c |= c.T
    np.fill_diagonal(c, 0)
    return c


# --------------------------------------------------------------------------- evolution


@dataclass
class SimulatedFamily:
    """One simulated RNA family.

    ``sequences`` are aligned to the query column by column (all of length L, ``-`` for a
    deletion; the first one is the query, which has no gap).  ``insertions[n]`` maps a
    position k (1 <= k < L) to letters sequence n carries between query columns k-1 and
    k; they are not alignment columns (A3M writes them lowercase).
    """

    id: str
    query: str
    sequences: list[str]
    pairs: list[tuple[int, int]]
    contacts: np.ndarray
    insertions: list[dict[int, str]] = field(default_factory=list)
    tertiary: list[tuple[int, int]] = field(default_factory=list)  # planted helices (may cross ``pairs``)

    @property
    def length(self) -> int:
        return len(self.query)

    @property
    def depth(self) -> int:
        return len(self.sequences)

    @property
    def structure(self) -> str:
        return dot_bracket(self.pairs, self.length)


def simulate_family(
    length: int,
    n_seqs: int,
    rng: np.random.Generator | int | None,
    pair_mutation: float = 0.3,
    unpaired_mutation: float = 0.4,
    indel_rate: float = 0.01,
    insertion_rate: float = 0.005,
    family_id: str = "sim",
    pairs: list[tuple[int, int]] | None = None,
    tertiary_stems: int = 0,
) -> SimulatedFamily:
    """Evolve ``n_seqs`` sequences of ``length`` nt (query first) on a random tree.

    Rates are expected events per site along a root-to-leaf path of the ultrametric tree
    (total height 1): ``pair_mutation`` per base pair (the pair is replaced by another
    canonical pair), ``unpaired_mutation`` per unpaired base, ``indel_rate`` deletion
    events per site (1–4 nt each, inherited by descendants, never on the query's
    lineage), ``insertion_rate`` insertions of 1–4 nt per site on each non-query leaf.
    Two leaves joined at the root have evolved apart for twice these amounts.  ``pairs``
    fixes the structure; by default :func:`random_secondary_structure` draws it.
    ``tertiary_stems`` long-range helices (:func:`random_tertiary_stems`) evolve as pairs
    too and are contacts, but stay out of ``pairs`` and the dot-bracket structure.
    """
    rng = np.random.default_rng(rng)
    if length < 1 or n_seqs < 1:
        raise TprnaError(f"simulate_family: need length >= 1 and n_seqs >= 1 "
                         f"(got length={length}, n_seqs={n_seqs})")
    for name, v in (("pair_mutation", pair_mutation), ("unpaired_mutation", unpaired_mutation),
                    ("indel_rate", indel_rate), ("insertion_rate", insertion_rate)):
        if not (v >= 0 and math.isfinite(v)):
            raise TprnaError(f"simulate_family: {name} must be a finite rate >= 0, got {v}")
    if pairs is None:
        pairs = random_secondary_structure(length, rng)
    else:
        pairs = sorted((int(i), int(j)) for i, j in pairs)
        dot_bracket(pairs, length)  # validates
    tertiary = random_tertiary_stems(pairs, length, tertiary_stems, rng) if tertiary_stems > 0 else []
    evo = _Evolver(length, pairs + tertiary, rng, pair_mutation, unpaired_mutation, indel_rate)

    leaves = evo.run(n_seqs)
    rows = ["".join(_LETTERS[s]) for s in leaves]
    insertions: list[dict[int, str]] = [{}]
    for _ in rows[1:]:
        ins: dict[int, str] = {}
        if length >= 2:
            for _e in range(int(rng.poisson(insertion_rate * length))):
                k = int(rng.integers(1, length))
                size = int(rng.integers(1, _MAX_INSERT + 1))
                ins[k] = ins.get(k, "") + "".join(_LETTERS[rng.choice(4, size, p=_UNPAIRED_WEIGHTS)])
        insertions.append(dict(sorted(ins.items())))
    return SimulatedFamily(id=family_id, query=rows[0], sequences=rows, pairs=pairs,
                           contacts=contact_map(pairs + tertiary, length), insertions=insertions,
                           tertiary=tertiary)


class _Evolver:
    """Sequences as int8 codes (0..3 = ACGU, 4 = gap) down a random ultrametric tree."""

    def __init__(self, length, pairs, rng, pair_mutation, unpaired_mutation, indel_rate):
        self.L, self.rng = length, rng
        self.mu_p, self.mu_u, self.indel = pair_mutation, unpaired_mutation, indel_rate
        self.pi = np.array([i for i, _ in pairs], dtype=np.int64)
        self.pj = np.array([j for _, j in pairs], dtype=np.int64)
        paired = np.zeros(length, dtype=bool)
        paired[self.pi] = paired[self.pj] = True
        self.unpaired = np.flatnonzero(~paired)

    def ancestor(self) -> np.ndarray:
        rng = self.rng
        seq = np.empty(self.L, dtype=np.int8)
        seq[self.unpaired] = rng.choice(4, self.unpaired.size, p=_UNPAIRED_WEIGHTS)
        which = rng.choice(len(CANONICAL_PAIRS), self.pi.size, p=_PAIR_WEIGHTS)
        seq[self.pi], seq[self.pj] = _PAIR_CODES[which, 0], _PAIR_CODES[which, 1]
        return seq

    def run(self, n_seqs: int) -> list[np.ndarray]:
        """Leaves in depth-first order; the first (the query) descends along branches
        that never delete."""
        rng, leaves = self.rng, []
        stack = [(self.ancestor(), n_seqs, 1.0, True)]  # (sequence, leaves below, height, query lineage)
        while stack:
            seq, n, h, on_query = stack.pop()
            if n == 1:
                leaves.append(seq)
                continue
            n1 = int(rng.integers(1, n))
            children = []
            for m, first in ((n1, True), (n - n1, False)):
                ch = 0.0 if m == 1 else h * rng.uniform(*_SPLIT_HEIGHT)
                child = self.mutate(seq, h - ch, deletions=not (on_query and first))
                children.append((child, m, ch, on_query and first))
            stack.extend(reversed(children))  # left child first
        return leaves

    def mutate(self, seq: np.ndarray, b: float, deletions: bool) -> np.ndarray:
        rng, s = self.rng, seq.copy()
        # Unpaired bases: each changes to one of the three others.
        hit = self.unpaired[rng.poisson(b * self.mu_u, self.unpaired.size) > 0]
        hit = hit[s[hit] != _GAP]
        s[hit] = (s[hit] + rng.integers(1, 4, hit.size)) % 4
        # Base pairs: the pair changes as a whole to another canonical pair.
        ev = rng.poisson(b * self.mu_p, self.pi.size) > 0
        i, j = self.pi[ev], self.pj[ev]
        cur = _PAIR_INDEX[s[i], s[j]]
        both = cur >= 0  # a pair with a gapped side: the other side mutates alone
        r = rng.random(i.size)
        new = (r[both, None] > _PAIR_SWAP_CUM[cur[both]]).sum(1)
        s[i[both]], s[j[both]] = _PAIR_CODES[new, 0], _PAIR_CODES[new, 1]
        lone = np.concatenate([i[~both], j[~both]])
        lone = lone[s[lone] != _GAP]
        s[lone] = (s[lone] + rng.integers(1, 4, lone.size)) % 4
        # Deletions, 1–4 columns each.
        if deletions and self.indel > 0:
            for _ in range(int(rng.poisson(b * self.indel * self.L))):
                start = int(rng.integers(0, self.L))
                s[start:start + int(rng.integers(1, 5))] = _GAP
        return s


# --------------------------------------------------------------------------- writers


def _row_names(fam: SimulatedFamily) -> list[str]:
    return [f"{fam.id}_query"] + [f"{fam.id}_{n}" for n in range(1, fam.depth)]


def _expanded_rows(fam: SimulatedFamily) -> tuple[list[str], list[int]]:
    """Rows with insertion columns (query ``-`` there) as a plain aligner writes them,
    and the query column each alignment column comes from (-1 for an insertion column)."""
    width = {}
    for ins in fam.insertions:
        for k, s in ins.items():
            width[k] = max(width.get(k, 0), len(s))
    rows = []
    for seq, ins in zip(fam.sequences, fam.insertions or [{}] * fam.depth):
        parts = []
        for col, c in enumerate(seq):
            if col in width:
                parts.append(ins.get(col, "").ljust(width[col], "-"))
            parts.append(c)
        rows.append("".join(parts))
    origin: list[int] = []
    for col in range(fam.length):
        origin.extend([-1] * width.get(col, 0))
        origin.append(col)
    return rows, origin


def format_fasta(fam: SimulatedFamily, wrap: int = 60) -> str:
    """Aligned FASTA, lines wrapped at ``wrap``; insertion columns have a query gap."""
    rows, _ = _expanded_rows(fam)
    out = io.StringIO()
    for name, row in zip(_row_names(fam), rows):
        out.write(f">{name}\n")
        for k in range(0, len(row), wrap):
            out.write(row[k:k + wrap] + "\n")
    return out.getvalue()


def format_a3m(fam: SimulatedFamily) -> str:
    """A3M: the query as is; other rows with aligned columns upper case or ``-`` and
    insertions relative to the query as lower-case letters."""
    out = io.StringIO()
    for name, seq, ins in zip(_row_names(fam), fam.sequences, fam.insertions or [{}] * fam.depth):
        row = "".join(ins.get(col, "").lower() + c for col, c in enumerate(seq))
        out.write(f">{name}\n{row}\n")
    return out.getvalue()


def format_stockholm(fam: SimulatedFamily, blocks: int = 2) -> str:
    """Stockholm 1.0 in ``blocks`` interleaved blocks, each with its ``#=GC SS_cons``."""
    rows, origin = _expanded_rows(fam)
    db = fam.structure
    ss = "".join("." if o < 0 else db[o] for o in origin)
    names = _row_names(fam) + ["#=GC SS_cons"]
    pad = max(len(n) for n in names) + 2
    width = len(ss)
    step = max(1, -(-width // max(1, blocks)))
    out = io.StringIO()
    out.write("# STOCKHOLM 1.0\n")
    out.write(f"#=GF ID   {fam.id}\n")
    out.write("#=GF DE   SIMULATED RNA family (tprna.simulate), not a real RNA\n")
    for start in range(0, width, step):
        out.write("\n")
        for name, row in zip(names, rows + [ss]):
            out.write(f"{name:<{pad}}{row[start:start + step]}\n")
    out.write("//\n")
    return out.getvalue()


def format_contacts(fam: SimulatedFamily) -> str:
    """Plain contact list: ``i j`` per line, 1-based, i < j, after ``#`` header lines."""
    c = fam.contacts
    ii, jj = np.nonzero(np.triu(c, 1))
    head = (
        f"# SIMULATED contacts for {fam.id} (tprna.simulate), not a real RNA structure\n"
        f"# L={fam.length}; 1-based 'i j' with i < j; rule: base pairs, their (i+-1, j+-1) "
        "stacking neighbourhood, and |i-j| <= 2\n"
        f"# structure {fam.structure}\n"
        + (f"# tertiary pairs (not in the structure) {' '.join(f'{i + 1}-{j + 1}' for i, j in fam.tertiary)}\n"
           if fam.tertiary else "")
    )
    return head + "".join(f"{i + 1} {j + 1}\n" for i, j in zip(ii, jj))


# --------------------------------------------------------------------------- dataset


_README = """\
# SIMULATED example dataset: these are NOT real RNAs

Every file here was generated by `tprna.simulate.write_example_dataset(out_dir,
n_families={n}, seed={seed}, lengths={lengths}, depths={depths},
tertiary_stems={tertiary})`. None of these
sequences, alignments or contact maps comes from a real RNA: they are toy data that let
the quick-start run end to end without downloads. Do not report numbers measured on
them as results about RNA.

How each family was made:

1. A random nested secondary structure (hairpins, interior loops, multi-branch
   junctions; ~50-60% of positions paired), of length drawn from {lengths}.
2. An ancestor with Watson-Crick/GU pairs at the paired positions, evolved down a random
   ultrametric binary tree to the family's depth (drawn log-uniformly from {depths}).
   Base pairs mutate as pairs (compensatory changes among AU, UA, GC, CG, GU, UG),
   unpaired bases independently; deletions (gaps) and a few insertions happen off the
   query's lineage. Divergence varies per family so that Neff spans < 1 to > 10.
3. The first sequence of each alignment is the query (no gaps).
4. Long-range tertiary helices: 1 to `tertiary_stems` per family (none when 0). Each pairs two unpaired
   stretches at least 24 nt apart (a pseudoknot or kissing loop), evolves like a stem and
   is among the contacts, but not in the dot-bracket structure.

Files:

- `manifest.csv`: `id,split,msa,structure,chain,label,molecule`; paths are relative
  to this directory; `structure` and `chain` are empty (there are no 3-D structures);
  `split` is train for about 3/4 of the families and test for the rest.
- `msa/<id>.fasta|.sto|.a3m`: the alignment. FASTA and Stockholm files carry insertion
  columns where the query has a gap (a reader drops them); A3M writes insertions as
  lower-case letters; Stockholm files are in two blocks with a `#=GC SS_cons` line.
- `labels/<id>.contacts`: the known contacts, one `i j` per line (1-based, i < j).
  Rule: two positions are in contact when they form a base pair, when they lie in the
  3x3 stacking neighbourhood of a base pair ((i', j') with |i'-i| <= 1, |j'-j| <= 1), or
  when |i-j| <= 2. The `#` header repeats this and gives the dot-bracket structure.

Families:

| id | split | format | L | sequences | paired fraction | tertiary pairs |
|---|---|---|---|---|---|---|
{table}
"""


def write_example_dataset(
    out_dir: str | os.PathLike,
    n_families: int = 12,
    seed: int = 0,
    lengths: tuple[int, int] = (40, 120),
    depths: tuple[int, int] = (5, 400),
    tertiary_stems: int = 0,
) -> Path:
    """Write ``n_families`` simulated families under ``out_dir``; return the manifest path.

    Depths are spread log-uniformly over ``depths`` (shuffled), lengths uniformly over
    ``lengths``, and divergence grows with depth so that Neff spans < 1 to > 10 by
    default.  About a quarter of the families go to the test split, one from each depth
    stratum.  Two of every six families are
    written as Stockholm and A3M, the rest as aligned FASTA.  Rerunning with the same
    arguments rewrites byte-identical files.  With ``tertiary_stems`` > 0 each family also
    carries 1 to that many long-range helices (:func:`random_tertiary_stems`) among its
    contacts: data to pretrain on, where covariation alone reveals some contacts.
    """
    if n_families < 1:
        raise TprnaError(f"write_example_dataset: n_families must be >= 1, got {n_families}")
    lmin, lmax = int(lengths[0]), int(lengths[1])
    dmin, dmax = int(depths[0]), int(depths[1])
    if not (1 <= lmin <= lmax) or not (1 <= dmin <= dmax):
        raise TprnaError(f"write_example_dataset: need 1 <= lengths[0] <= lengths[1] and "
                         f"1 <= depths[0] <= depths[1]; got lengths={lengths}, depths={depths}")
    out = Path(out_dir)
    try:
        (out / "msa").mkdir(parents=True, exist_ok=True)
        (out / "labels").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TprnaError(f"cannot create the dataset directory ({e.strerror})", out) from None

    rng = np.random.default_rng(seed)
    # Depths evenly spaced on a log scale, then shuffled; divergence evenly spread too,
    # the deepest families getting the most diverse sequences (so that Neff > 10 occurs).
    grid = np.exp(np.linspace(math.log(dmin), math.log(dmax), n_families))
    fam_depths = np.rint(grid).astype(int)
    order = rng.permutation(n_families)
    scales = np.linspace(0.4, 2.0, n_families)
    # Test families: one drawn from each of n_test depth strata, so the test split
    # spans shallow to deep alignments (and so Neff < 1 to > 10).
    n_test = max(1 if n_families >= 2 else 0, int(round(n_families / 4)))
    by_depth = np.argsort(order, kind="stable")
    test = {int(rng.choice(stratum)) for stratum in np.array_split(by_depth, n_test)} if n_test else set()
    fam_rngs = rng.spawn(n_families)

    rows, table = [], []
    for k in range(n_families):
        fid = f"sim{k:03d}"
        depth, scale = int(fam_depths[order[k]]), float(scales[order[k]])
        frng = fam_rngs[k]
        length = int(frng.integers(lmin, lmax + 1))
        n_tertiary = int(frng.integers(1, tertiary_stems + 1)) if tertiary_stems > 0 else 0
        fam = simulate_family(length, depth, frng, pair_mutation=0.3 * scale,
                              unpaired_mutation=0.4 * scale, family_id=fid, tertiary_stems=n_tertiary)
        fmt = {1: "sto", 3: "a3m"}.get(k % 6, "fasta")
        text = {"sto": format_stockholm, "a3m": format_a3m, "fasta": format_fasta}[fmt](fam)
        msa_rel = f"msa/{fid}.{fmt}"
        label_rel = f"labels/{fid}.contacts"
        _write(out / msa_rel, text)
        _write(out / label_rel, format_contacts(fam))
        split = "test" if k in test else "train"
        rows.append({"id": fid, "split": split, "msa": msa_rel, "structure": "", "chain": "",
                     "label": label_rel, "molecule": "rna"})
        table.append(f"| {fid} | {split} | {fmt} | {length} | {depth} | "
                     f"{2 * len(fam.pairs) / length:.2f} | {len(fam.tertiary)} |")

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["id", "split", "msa", "structure", "chain",
                                             "label", "molecule"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest = out / "manifest.csv"
    _write(manifest, buf.getvalue())
    _write(out / "README.md", _README.format(n=n_families, seed=seed, lengths=tuple(lengths),
                                             depths=tuple(depths), tertiary=tertiary_stems,
                                             table="\n".join(table)))
    return manifest


def _write(path: Path, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
    except OSError as e:
        raise TprnaError(f"cannot write file ({e.strerror})", path) from None
