"""Homology search: one RNA sequence → a query-anchored alignment of its homologs in a
sequence database, so that a user with a bare sequence gets what an alignment gives the
model (covariance, profile, couplings) instead of single-sequence mode.

The search is HMMER's ``nhmmer`` through pyhmmer (the ``[search]`` extra), both strands,
HMMER's scoring, in rounds as jackhmmer does: the first with the query alone, each further
one with a profile HMM of the hits so far.  Every hit with E ≤ ``e_value``, best first, at
most ``max_sequences`` of them, becomes one row over the query's columns —
the hit's letter where it matches a query position, ``-`` where it skips one or lies
outside the hit, its insertions dropped (the A3M rule, without keeping them in lower case).
The rows are written as aligned FASTA and read back by :func:`tprna.msa.parse_msa`, so a
searched alignment is encoded exactly like an alignment file.

A database is one or more FASTA files of nucleotide sequences (gzip or not; ``T`` reads as
``U``): Rfam's family FASTA files, RNAcentral, a subset of nt.  It is read once and
searched for every query.  Searching builds no secondary-structure model (Infernal's
covariance models find remoter homologs of structured RNAs; nhmmer finds the closer ones).
"""
from __future__ import annotations

import gzip
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

from tprna.errors import TprnaError

if TYPE_CHECKING:  # the CLI reads this module's defaults at start-up: numpy and tprna.msa load on use
    from tprna.msa import MSA

__all__ = ["HomologSearch", "SearchResult", "hit_row", "DEFAULT_E_VALUE", "DEFAULT_ITERATIONS",
           "DEFAULT_MAX_SEQUENCES"]

DEFAULT_E_VALUE = 1e-3
DEFAULT_MAX_SEQUENCES = 5000  # rows kept, best E-value first: the covariance cost grows with them
DEFAULT_ITERATIONS = 3  # as jackhmmer: later rounds find the family's more distant members
_NOT_NUCLEOTIDE = re.compile(r"[^ACGUN]")
_INSTALL = "homology search needs pyhmmer: pip install 'tprna[search]'"


def hit_row(query_length: int, hmm_from: int, hmm_to: int, hmm_line: str, target_line: str) -> str:
    """One hit as a row over the query's ``query_length`` columns.

    ``hmm_from``/``hmm_to``: the 1-based query positions the hit's alignment spans;
    ``hmm_line``/``target_line``: the two aligned strings, where a ``.`` in the query line is a
    letter the hit inserts (dropped) and a ``-`` in the hit line a query position it skips."""
    if len(hmm_line) != len(target_line):
        raise ValueError("the aligned query and hit lines differ in length")
    row = ["-"] * query_length
    position = hmm_from - 1
    for q, t in zip(hmm_line, target_line):
        if q == ".":
            continue  # an insertion in the hit: no query column
        if position >= query_length:
            raise ValueError(f"the hit runs past the query's {query_length} columns")
        row[position] = t.upper() if t.isalpha() else "-"
        position += 1
    if position != hmm_to:
        raise ValueError(f"the hit's alignment covers query positions {hmm_from}..{position}, "
                         f"not {hmm_from}..{hmm_to}")
    return "".join(row)


@dataclass(frozen=True)
class SearchResult:
    """A query's searched alignment (the query first) and where its rows came from."""

    msa: MSA
    text: str  # the alignment as aligned FASTA, ready to write
    hits: int  # rows found beside the query (after the max_sequences cut)


class HomologSearch:
    """nhmmer over one sequence database, loaded on first use and shared by every query.

    Args:
        database: FASTA file(s) of nucleotide sequences.
        e_value: hits with a larger E-value are left out.
        max_sequences: at most this many hits, best first, join the query.
        iterations: search rounds; from the second on, with a profile of the last round's hits.
        cpus: threads of one search call (0: pyhmmer's choice, every core); they share the
            queries of :meth:`search_many`, so one query uses one thread.
    """

    def __init__(self, database: str | os.PathLike | Sequence[str | os.PathLike],
                 e_value: float = DEFAULT_E_VALUE, max_sequences: int = DEFAULT_MAX_SEQUENCES,
                 iterations: int = DEFAULT_ITERATIONS, cpus: int = 1) -> None:
        _pyhmmer()  # say at once, not once per query, that the search cannot run here
        paths = [database] if isinstance(database, (str, os.PathLike)) else list(database)
        if not paths:
            raise TprnaError("no sequence database given")
        self.paths = [Path(p).expanduser() for p in paths]
        for p in self.paths:
            if not p.is_file():
                raise TprnaError("sequence database not found", p)
        if not e_value > 0 or max_sequences < 1 or iterations < 1:
            raise TprnaError("the search's E-value must be positive, and max_sequences and iterations at least 1")
        self.e_value = float(e_value)
        self.max_sequences = int(max_sequences)
        self.iterations = int(iterations)
        self.cpus = int(cpus)
        self._sequences: Any = None  # pyhmmer DigitalSequenceBlock, read on first use
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.paths)

    def describe(self) -> str:
        rounds = f"{self.iterations} round{'s' if self.iterations > 1 else ''}"
        return f"nhmmer against {self.name} ({rounds}, E ≤ {self.e_value:g}, at most {self.max_sequences} hits)"

    def database(self) -> Any:
        """Every database sequence, digitised once (the first caller reads; the rest wait)."""
        with self._lock:
            if self._sequences is None:
                easel = _pyhmmer().easel
                rna = easel.Alphabet.rna()
                block = easel.DigitalSequenceBlock(rna)
                for path in self.paths:
                    block.extend(_read_database(path, rna))
                if not len(block):
                    raise TprnaError("the sequence database holds no sequences", self.paths[0])
                self._sequences = block
            return self._sequences

    def search(self, query_id: str, query: str) -> SearchResult:
        """The query's homologs in the database as a query-anchored alignment."""
        return self.search_many({query_id: query})[query_id]

    def search_many(self, queries: Mapping[str, str]) -> dict[str, SearchResult]:
        """Every query's alignment ({id: sequence} → {id: result}), the queries of each round
        searched in one nhmmer call (``cpus`` threads share them).  The first round searches
        with each query alone; each further round with a profile HMM built from that query's
        alignment so far (one match state per query column), which finds the family's more
        distant members (the jackhmmer scheme); a query without hits stops there."""
        from tprna.msa import parse_msa

        pyhmmer = _pyhmmer()
        rna = pyhmmer.easel.Alphabet.rna()
        letters = {}
        for query_id, query in queries.items():
            if not query:
                raise TprnaError("empty sequence", query_id)
            # a letter outside ACGU (N, a modified base written as X …) is searched as N
            letters[query_id] = _NOT_NUCLEOTIDE.sub("N", query.upper().replace("T", "U"))
        # searched under their position's name (q0, q1 …): an id may hold any character
        models: dict[str, Any] = {i: pyhmmer.easel.TextSequence(name=f"q{n}", sequence=q).digitize(rna)
                                  for n, (i, q) in enumerate(letters.items())}
        rows: dict[str, list[tuple[str, str]]] = {i: [] for i in queries}
        for round_ in range(self.iterations):
            found = self._hits(pyhmmer, models, {i: len(q) for i, q in letters.items()})
            rows.update(found)
            if round_ + 1 == self.iterations:
                break
            models = {i: _profile(pyhmmer, rna, _name(models[i].name), letters[i], found[i]) for i in models if found[i]}
            if not models:
                break
        results = {}
        for query_id, query in queries.items():
            text = "".join(f">{name}\n{row}\n" for name, row in [(query_id, query)] + rows[query_id])
            msa = parse_msa(text, "fasta", "rna", source=f"{query_id} (searched in {self.name})")
            results[query_id] = SearchResult(msa, text, len(rows[query_id]))
        return results

    def iter_search(self, queries: Mapping[str, str], chunk: int = 64) -> Iterator[tuple[str, SearchResult | TprnaError]]:
        """(id, result) for every query, ``chunk`` of them searched together (every core
        busy); a query that cannot be searched yields its error instead, and the rest go on."""
        names = list(queries)
        for start in range(0, len(names), chunk):
            part = {i: queries[i] for i in names[start:start + chunk]}
            try:
                yield from self.search_many(part).items()
            except TprnaError:  # one bad query: search this chunk one by one, so that only it fails
                for query_id, query in part.items():
                    try:
                        yield query_id, self.search(query_id, query)
                    except TprnaError as e:
                        yield query_id, e

    def _hits(self, pyhmmer: Any, models: dict[str, Any], lengths: dict[str, int]) -> dict[str, list[tuple[str, str]]]:
        """{query id: [(name/from-to, row) of every included hit, best first, at most
        ``max_sequences``]} of one round."""
        found: dict[str, list[tuple[str, str]]] = {}
        id_of = {_name(model.name): query_id for query_id, model in models.items()}
        every = pyhmmer.nhmmer(list(models.values()), self.database(), cpus=self.cpus, E=self.e_value,
                               incE=self.e_value)
        for hits in every:
            query_id = id_of[_name(hits.query.name)]
            rows = found[query_id] = []
            for hit in hits:
                if len(rows) >= self.max_sequences:
                    break
                if not hit.included:
                    continue
                for domain in hit.domains.included:
                    a = domain.alignment
                    rows.append((f"{_name(hit.name)}/{a.target_from}-{a.target_to}",
                                 hit_row(lengths[query_id], a.hmm_from, a.hmm_to, a.hmm_sequence, a.target_sequence)))
            del rows[self.max_sequences:]
        return found


def _profile(pyhmmer: Any, alphabet: Any, query_id: str, query: str, rows: list[tuple[str, str]]) -> Any:
    """A profile HMM of the query-anchored rows with one match state per query column (the
    'hand' architecture over a reference line of every column), so that its hits map back
    onto the query's positions."""
    easel = pyhmmer.easel
    sequences = [easel.TextSequence(name=query_id, sequence=query)]
    sequences += [easel.TextSequence(name=f"h{n}", sequence=row) for n, (_, row) in enumerate(rows)]
    msa = easel.TextMSA(name=query_id, sequences=sequences)
    msa.reference = "x" * len(query)
    builder = pyhmmer.plan7.Builder(alphabet, architecture="hand")
    hmm, _, _ = builder.build_msa(msa.digitize(alphabet), pyhmmer.plan7.Background(alphabet))
    return hmm


def _name(name: Any) -> str:
    text = name.decode() if isinstance(name, bytes) else str(name)
    return text.split()[0] if text.split() else "hit"


def _read_database(path: Path, alphabet: Any) -> Iterable[Any]:
    """The digitised sequences of one FASTA file (gzip or not)."""
    easel = _pyhmmer().easel
    try:
        with open(path, "rb") as head:
            opener = gzip.open if head.read(2) == b"\x1f\x8b" else open
        with opener(path, "rb") as handle, easel.SequenceFile(handle, format="fasta", digital=True,
                                                              alphabet=alphabet) as reader:
            return reader.read_block()
    except (ValueError, EOFError, OSError) as e:
        raise TprnaError(f"not a FASTA file of nucleotide sequences ({' '.join(str(e).split())})", path) from None


def _pyhmmer() -> Any:
    try:
        import pyhmmer
    except ImportError:
        raise TprnaError(_INSTALL) from None
    return pyhmmer
