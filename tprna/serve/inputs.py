"""What a user hands the predictor besides alignment files: bare sequences (``--seq``, a
Python string), text on standard input, and files of unrelated sequences (``--single``),
each record its own RNA.

* A Python string that is an existing path is a file; one of letters only (whitespace
  ignored) is a sequence; FASTA / Stockholm text (a ``>`` or ``# STOCKHOLM`` first line) is
  an alignment; anything else (a ``/``, a ``.``, a digit …) was meant as a file that does not
  exist, and is reported as such — never folded as an RNA.
* Ids come from the FASTA header (its first word, made safe as a file name), else
  ``seq1``, ``seq2`` … in input order.
* Folders expand into their alignment files, sorted (:func:`flatten_inputs`).
* A file's id is its name without suffixes; files of one job whose names collide (one folder
  per target, each with its ``seq.a3m``) take their folders' names too (:func:`distinct_ids`).
"""
from __future__ import annotations

import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from tprna.errors import TprnaError
from tprna.msa import MSA, detect_format, fasta_records, parse_msa, read_text

__all__ = ["NamedInput", "BadInput", "InputLike", "read_sequences", "sequence_records", "text_input",
           "string_input", "sequence_argument", "expand_inputs", "flatten_inputs", "describe", "safe_id",
           "file_stem", "path_id", "distinct_ids", "STDIN"]

# a file, an alignment, or (id, a sequence / an alignment / a file's Path)
InputLike = Any  # str | os.PathLike | MSA | NamedInput | BadInput | tuple[str, str | MSA | os.PathLike]

STDIN = "-"  # the input that means standard input
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_LETTERS = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class NamedInput:
    """An RNA without a file of its own: its id, and either one sequence or the text of an
    alignment (first record the query), with where it came from for messages."""

    id: str
    text: str
    source: str
    aligned: bool = False  # ``text`` is an alignment (FASTA / A3M / Stockholm / .aln)

    def to_msa(self, molecule: str = "rna") -> MSA:
        if self.aligned:
            return parse_msa(self.text, detect_format(self.text), molecule, source=self.source)
        sequence = "".join(self.text.split())
        if not sequence:
            raise TprnaError("empty sequence", self.source)
        return parse_msa(f">{self.id}\n{sequence}\n", "fasta", molecule, source=self.source)


@dataclass(frozen=True)
class BadInput:
    """An input that could not even be read into an RNA (reported, the rest go on)."""

    source: str
    reason: str


def safe_id(header: str, fallback: str) -> str:
    """A header's first word as an id that is safe as a file name: letters, digits, '.', '_'
    and '-' (any other run → '_'), no leading dot, at most 100 characters."""
    words = header.split()
    name = _UNSAFE.sub("_", words[0]).lstrip(".")[:100] if words else ""
    return name if name.strip("_") else fallback


def file_stem(entry_id: str) -> str:
    """An id as a file name: runs of characters other than letters, digits, '.', '_' and '-'
    become '_' (an id from a file name or a safe header is unchanged)."""
    stem = _UNSAFE.sub("_", entry_id).lstrip(".")[:200]
    return stem or "rna"


def sequence_records(text: str, source: str, prefix: str = "seq") -> list[NamedInput]:
    """Each FASTA record of ``text`` (or, without headers, each non-empty line) as its own
    RNA; ids from the headers, else ``<prefix>1``, ``<prefix>2`` …"""
    lines = [ln.strip() for ln in text.splitlines()]
    if any(ln.startswith(">") for ln in lines):
        records = fasta_records(text, source)
    else:
        records = [("", ln) for ln in lines if ln and not ln.startswith(("#", ";"))]
    if not records:
        raise TprnaError("no sequences found", source)
    out = []
    for n, (name, sequence) in enumerate(records, 1):
        entry_id = safe_id(name, f"{prefix}{n}")
        out.append(NamedInput(entry_id, sequence, f"{source}#{entry_id}"))
    return out


def read_sequences(path: str | os.PathLike) -> list[NamedInput]:
    """A file of unrelated sequences (multi-FASTA, or one sequence a line; gzip or not),
    each record its own RNA: the inputs of ``tprna infer --single``."""
    p = Path(path)
    return sequence_records(read_text(p), os.fspath(p), prefix=f"{safe_id(path_id(p), 'seq')}_")


def path_id(path: Path) -> str:
    """File name without ``.gz`` and the last suffix (the store's ids): x.fasta.gz → x."""
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


def text_input(text: str, source: str = "<stdin>", fallback_id: str = "stdin") -> NamedInput:
    """Alignment text (FASTA / A3M / Stockholm, or one aligned sequence a line) as one input,
    its id from the first FASTA header."""
    header = next((ln.strip()[1:] for ln in text.splitlines() if ln.strip().startswith(">")), "")
    return NamedInput(safe_id(header, fallback_id), text, source, aligned=True)


def string_input(value: str, index: int) -> NamedInput:
    """A Python string that is not an existing file: an alignment's text, a sequence
    (``seq<index + 1>``), or else a missing file (:class:`TprnaError`)."""
    head = value.lstrip()
    if "\n" in head and (head.startswith(">") or head.startswith("# STOCKHOLM")):
        return text_input(value, "<text>", f"seq{index + 1}")
    letters = "".join(value.split())
    if _LETTERS.fullmatch(letters):
        entry_id = f"seq{index + 1}"
        shown = letters if len(letters) <= 20 else letters[:20] + "…"
        return NamedInput(entry_id, letters, f"{entry_id} ({shown}, not a file: read as a sequence)")
    raise TprnaError("file not found (a sequence is letters only, e.g. 'GGGAAACCC')", value)


def sequence_argument(value: str, n: int) -> NamedInput:
    """``--seq ACGU…`` (id ``seq<n>``) or ``--seq NAME=ACGU…``."""
    name, sep, sequence = value.partition("=")
    if not sep:
        name, sequence = f"seq{n}", value
    elif not name.strip():
        raise TprnaError(f"--seq {value[:30]!r}: the name before '=' is empty")
    entry_id = safe_id(name, f"seq{n}")
    return NamedInput(entry_id, sequence, f"--seq {entry_id}")


def expand_inputs(inputs: Iterable[Any], single: bool = False,
                  stdin: TextIO | None = None) -> Iterator[Any]:
    """The CLI's inputs as predictor inputs: ``-`` reads standard input (an alignment, or
    with ``single`` one RNA per record); with ``single`` a file (or a folder's alignment
    files) holds unrelated sequences, each its own RNA.  A file that cannot be read becomes
    a :class:`BadInput` (reported, the rest go on); other inputs pass through."""
    for value in inputs:
        if isinstance(value, (str, os.PathLike)) and os.fspath(value) == STDIN:
            text = (stdin or sys.stdin).read()
            try:
                yield from (sequence_records(text, "<stdin>") if single else [text_input(text)])
            except TprnaError as e:
                yield BadInput("<stdin>", e.reason)
        elif single and isinstance(value, (str, os.PathLike)):
            try:
                paths = _files(Path(value))
            except TprnaError as e:
                yield BadInput(os.fspath(value), e.reason)
                continue
            for path in paths:
                try:
                    yield from read_sequences(path)
                except TprnaError as e:
                    yield BadInput(os.fspath(path), e.reason)
        else:
            yield value


def flatten_inputs(inputs: InputLike | Iterable[InputLike]) -> Iterator[tuple[int, InputLike]]:
    """Number the inputs, expanding folders into their alignment files (sorted); a folder
    that cannot be read becomes a :class:`BadInput`."""
    if isinstance(inputs, (str, os.PathLike, tuple, MSA, NamedInput)):
        inputs = [inputs]
    index = 0
    for value in inputs:
        if isinstance(value, (str, os.PathLike)) and Path(value).is_dir():
            try:
                expanded: list[Any] = _files(Path(value))
            except TprnaError as e:
                expanded = [BadInput(os.fspath(value), e.reason)]
        else:
            expanded = [value]
        for v in expanded:
            yield index, v
            index += 1


def distinct_ids(values: list[InputLike]) -> list[InputLike]:
    """The inputs, each file whose id (:func:`path_id`) another file of ``values`` shares
    given as ``(id, Path)`` with its folders' names before it: ``R1107/seq.a3m`` and
    ``R1108/seq.a3m`` → ``R1107_seq`` and ``R1108_seq`` (as many folders as tell them apart).
    Pipelines write one folder per target with the same file name in each, and one stem for
    all would keep the first and refuse the rest.  The same file named twice stays one id
    (a duplicate, reported); other inputs pass unchanged."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, value in enumerate(values):
        if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
            groups[path_id(Path(value))].append(i)
    out = list(values)
    for stem, members in groups.items():
        files = {i: Path(os.path.realpath(values[i])) for i in members}
        if len(set(files.values())) < 2:
            continue
        folders = {i: Path(os.path.abspath(values[i])).parent.parts for i in members}
        for depth in range(1, max(len(f) for f in folders.values()) + 1):
            names = {i: "_".join(folders[i][-depth:] + (stem,)) for i in members}
            if len({names[i] for i in members}) == len(set(files.values())):
                break
        for i in members:
            out[i] = (safe_id(names[i], stem), Path(values[i]))
    return out


def describe(value: InputLike) -> str:
    """Where an input comes from, for messages."""
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (BadInput, NamedInput)):
        return value.source
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], os.PathLike):
        return os.fspath(value[1])
    if isinstance(value, tuple) and value:
        return f"sequence {value[0]}"
    source = getattr(value, "source", "")
    return source or f"<{type(value).__name__}>"


def _files(path: Path) -> list[Path]:
    """A path, or a folder's alignment files as the store build finds them."""
    if not path.is_dir():
        return [path]
    from tprna.store import items_from_paths  # lazy: tprna.store loads zarr and h5py

    return [item.msa for item in items_from_paths([path])]

