"""Read multiple sequence alignments (FASTA, A3M, Stockholm, PSICOV .aln; gzip or not)
into a query-anchored, encoded :class:`MSA`.

The format is chosen by content, the suffix only breaking the one real tie (aligned
FASTA vs A3M whose rows happen to have equal length).  The first sequence is the query;
columns where the query has a gap are dropped, so ``L`` is the query's length.
"""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tprna.alphabet import Alphabet, get_alphabet
from tprna.errors import TprnaError

__all__ = ["MSA", "read_msa", "parse_msa", "detect_format", "write_msa", "fasta_records", "FORMATS"]

FORMATS = ("fasta", "a3m", "stockholm", "aln")
_GAPS = "-."


@dataclass(frozen=True)
class MSA:
    """An encoded alignment: ``codes[n, i]`` is the state of sequence n at query column i."""

    ids: tuple[str, ...]
    codes: np.ndarray  # (N, L) uint8, indices into alphabet.states
    alphabet: Alphabet
    source: str = ""
    n_unknown: int = 0  # letters outside the states that were read as gaps
    n_dropped_columns: int = 0  # alignment columns dropped because the query has a gap there
    # The query's letters as written (upper case, gap columns dropped): an N, X or T stays
    # what it was, where ``query`` decodes states (N → '-', T → 'U').  Empty: not known.
    query_text: str = ""

    @property
    def depth(self) -> int:
        return self.codes.shape[0]

    @property
    def length(self) -> int:
        return self.codes.shape[1]

    @property
    def query(self) -> str:
        return self.alphabet.decode(self.codes[0])


def read_text(path: str | os.PathLike) -> str:
    """The file's text, gunzipped when it starts with the gzip magic bytes, without a
    leading UTF-8 byte-order mark."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise TprnaError("file not found", p) from None
    except OSError as e:
        raise TprnaError(f"cannot read file ({e.strerror})", p) from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:  # zlib.error: a corrupt deflate block
            raise TprnaError(f"corrupt gzip data ({e})", p) from None
    text = data.decode("utf-8", errors="replace")
    return text[1:] if text.startswith("\ufeff") else text  # a UTF-8 byte-order mark is no content


def read_msa(path: str | os.PathLike, molecule: str = "rna", fmt: str | None = None) -> MSA:
    """Read an alignment file; ``fmt`` overrides detection (one of :data:`FORMATS`)."""
    text = read_text(path)
    fmt = fmt or detect_format(text, suffix=_suffix(path))
    return parse_msa(text, fmt, molecule, source=os.fspath(path))


def _suffix(path: str | os.PathLike) -> str:
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    return suffixes[-1] if suffixes else ""


def detect_format(text: str, suffix: str = "") -> str:
    """Guess the format from the text itself."""
    head = text.lstrip()
    if not head:
        return "fasta"  # the parser reports the empty file
    if head.startswith("# STOCKHOLM"):
        return "stockholm"
    if head.startswith(">") or "\n>" in head:
        try:
            records = _fasta_records(text)
        except TprnaError:
            return "fasta"  # let the parser report it, naming the file
        lengths = {len(s) for _, s in records}
        has_lower = any(any(c.islower() for c in s) for _, s in records)
        # unequal rows only make sense with lowercase insertions, which the query (it
        # defines the columns) never has: a lowercase query is plain, unaligned FASTA
        query_lower = bool(records) and any(c.islower() for c in records[0][1])
        if len(lengths) > 1 and has_lower and not query_lower:
            return "a3m"
        return "a3m" if suffix == ".a3m" and has_lower else "fasta"
    return "aln"


def parse_msa(text: str, fmt: str, molecule: str = "rna", source: str = "") -> MSA:
    if fmt not in FORMATS:
        raise TprnaError(f"unknown alignment format {fmt!r}; use one of {', '.join(FORMATS)}", source or None)
    alphabet = get_alphabet(molecule)
    path = source or None
    records = {"fasta": _fasta_records, "a3m": _a3m_records,
               "stockholm": _stockholm_records, "aln": _aln_records}[fmt](text, path)
    if not records:
        raise TprnaError(f"no sequences found ({fmt} format)", path)
    if fmt == "fasta":
        records = [(name, seq.upper()) for name, seq in records]
    lengths = {len(seq) for _, seq in records}
    if len(lengths) > 1:
        bad = next(name for name, seq in records if len(seq) != len(records[0][1]))
        if not any(c in _GAPS for _, seq in records for c in seq):
            # Rows of different lengths with no gap at all were never aligned: reading them
            # as an alignment would predict the first one from unrelated rows.
            raise TprnaError(
                f"{len(records)} sequences of unequal lengths {sorted(lengths)[:4]} and no gaps: "
                "these are unaligned sequences, not an alignment; to predict each on its own use "
                "'tprna infer --single' (Python: tprna.serve.read_sequences)", path)
        raise TprnaError(
            f"aligned sequences have unequal lengths {sorted(lengths)[:4]} (first mismatch: "
            f"{bad!r}); is this an A3M file with insertions, or a truncated alignment?", path)
    ids, rows = zip(*records)
    codes, n_unknown = alphabet.encode(list(rows), path)
    # Drop the query's gap columns only: an unknown letter (N, X…) in the query is still a
    # residue of the chain, so its column stays (as the gap state) and L stays its length.
    keep = ~np.isin(np.frombuffer(rows[0].encode("ascii", "replace"), np.uint8), np.frombuffer(b"-.", np.uint8))
    if not keep.any() or (codes[0, keep] == alphabet.gap).all():
        raise TprnaError(f"the query (first sequence) has no {alphabet.states[:-1]} residues", path)
    query_text = "".join(c for c, k in zip(rows[0], keep) if k).upper()
    return MSA(ids=tuple(ids), codes=np.ascontiguousarray(codes[:, keep]), alphabet=alphabet,
               source=source, n_unknown=n_unknown, n_dropped_columns=int((~keep).sum()),
               query_text=query_text)


def fasta_records(text: str, path: str | None = None) -> list[tuple[str, str]]:
    """``(name, sequence)`` of each FASTA record as written (name: the header's first word)."""
    return _fasta_records(text, path)


def _fasta_records(text: str, path: str | None = None) -> list[tuple[str, str]]:
    records: list[tuple[str, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(";") or line.startswith("#"):
            continue
        if line.startswith(">"):
            records.append((line[1:].split()[0] if line[1:].split() else f"seq{len(records)}", []))
        elif not records:
            raise TprnaError(f"line {lineno}: sequence before the first '>' header", path)
        else:
            records[-1][1].append(line.replace(" ", ""))
    return [(name, "".join(parts)) for name, parts in records]


def _a3m_records(text: str, path: str | None = None) -> list[tuple[str, str]]:
    # Lowercase letters and '.' are insertions relative to the query: not alignment columns.
    return [(name, "".join(c for c in seq if not (c.islower() or c == ".")))
            for name, seq in _fasta_records(text, path)]


def _stockholm_records(text: str, path: str | None = None) -> list[tuple[str, str]]:
    order: list[str] = []
    parts: dict[str, list[str]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue  # header and markup (#=GF, #=GS, #=GR, #=GC)
        if line == "//":
            break  # only the first alignment of a multi-alignment file
        fields = line.split()
        if len(fields) != 2:
            raise TprnaError(f"line {lineno}: expected 'name sequence', got {len(fields)} fields", path)
        name, seq = fields
        if name not in parts:
            order.append(name)
            parts[name] = []
        parts[name].append(seq)
    return [(name, "".join(parts[name]).upper()) for name in order]


def _aln_records(text: str, path: str | None = None) -> list[tuple[str, str]]:
    rows = [line.strip() for line in text.splitlines() if line.strip()]
    for lineno, row in enumerate(rows, 1):
        if len(row.split()) != 1:
            raise TprnaError(f"sequence {lineno}: PSICOV .aln rows are one sequence with no spaces", path)
    return [(f"seq{i}", row.upper()) for i, row in enumerate(rows)]


def write_msa(msa: MSA, path: str | os.PathLike, fmt: str = "fasta") -> Path:
    """Write the (query-anchored) alignment; reading it back gives the same MSA."""
    rows = [msa.alphabet.decode(r) for r in msa.codes]
    if fmt in ("fasta", "a3m"):
        text = "".join(f">{name}\n{row}\n" for name, row in zip(msa.ids, rows))
    elif fmt == "stockholm":
        width = max(len(n) for n in msa.ids) + 2
        text = "# STOCKHOLM 1.0\n" + "".join(f"{n:<{width}}{r}\n" for n, r in zip(msa.ids, rows)) + "//\n"
    elif fmt == "aln":
        text = "".join(f"{row}\n" for row in rows)
    else:
        raise TprnaError(f"unknown alignment format {fmt!r}; use one of {', '.join(FORMATS)}")
    p = Path(path)
    p.write_text(text)
    return p
