"""Contact labels and observed masks: from a PDB / mmCIF structure, a contact list,
or a SPOT-RNA-2D label matrix, always on the query sequence's positions.

RNA: two nucleotides are in contact when any pair of their heavy atoms is closer
than the cutoff.  Protein: Cβ–Cβ (Cα for glycine).  Structure residues are placed
on the query by a global alignment, so missing, modified and extra residues, and
structures that cover only part of the query, all land where they belong; query
positions without coordinates are unobserved (masked), never negatives.
"""
from __future__ import annotations

import gzip
import os
import re
import zlib
from pathlib import Path
from typing import Callable, Literal

import gemmi
import numpy as np
from scipy.spatial import cKDTree

from tprna.errors import TprnaError

__all__ = [
    "contacts_from_structure",
    "read_contact_list",
    "read_label_matrix",
    "read_labels",
]

Molecule = Literal["rna", "protein"]
Labels = tuple[np.ndarray, np.ndarray]  # (contacts uint8 L×L, observed bool L×L)
PathLike = str | os.PathLike

_CUTOFF = 8.0  # Å, the paper's contact distance
_UNKNOWN = {"rna": "N", "protein": "X"}
# Atoms whose distance tells whether two consecutive residues are covalently linked.
_LINK_ATOMS = {"rna": ("O3'", "P"), "protein": ("C", "N")}
_MAX_LINK = 2.5  # Å; a longer O3'–P / C–N gap is a chain break (missing residues)
_MIN_IDENTITY = 0.5  # aligned identity below this: the structure is not the query
_PDB_RECORDS = ("HEADER", "ATOM  ", "HETATM", "MODEL ", "REMARK", "CRYST1", "SEQRES",
                "TITLE ", "COMPND", "EXPDTA", "SOURCE", "KEYWDS", "AUTHOR")


# --------------------------------------------------------------------------- structures


def contacts_from_structure(
    path: PathLike,
    chain: str | None,
    sequence: str,
    molecule: Molecule = "rna",
    cutoff: float = _CUTOFF,
) -> Labels:
    """Contacts and observed mask of one chain of a PDB / mmCIF file (plain or gzip),
    on the positions of `sequence`.  `chain` is the author's chain name (or, failing
    that, mmCIF's label_asym_id); None or "" picks the file's only chain of that
    molecule type.  First model only, first conformer only, no hydrogens."""
    return _structure_labels(_read_text(path), path, chain, sequence, molecule, cutoff)


def _structure_labels(
    text: str, path: PathLike, chain: str | None, sequence: str, molecule: Molecule, cutoff: float
) -> Labels:
    if molecule not in _UNKNOWN:
        raise TprnaError(f"molecule must be 'rna' or 'protein', not {molecule!r}", path)
    query = _normalise_query(sequence, molecule, path)
    model = _first_model(text, path)
    residues = _chain_residues(model, chain, molecule, path)
    to_query = _map_onto_query(residues, query, molecule, path)
    if molecule == "rna":
        coords, owner = _heavy_atoms(residues)
    else:
        coords, owner = _beta_atoms(residues)
    if not np.isfinite(coords).all():
        raise TprnaError("atom coordinates include nan or inf: a damaged coordinate field", path)
    pairs = _residue_pairs(coords, owner, cutoff)
    return _project(pairs, np.unique(owner), to_query, len(query))


def _normalise_query(sequence: str, molecule: Molecule, path: PathLike) -> str:
    query = "".join(sequence.split()).upper()
    if not query:
        raise TprnaError("the query sequence is empty; give the sequence the labels are for", path)
    return query.replace("T", "U") if molecule == "rna" else query


def _first_model(text: str, path: PathLike) -> gemmi.Model:
    """Parse the file and keep model 1, its first conformers and heavy atoms only."""
    structure = _parse_structure(text, path)
    if len(structure) == 0 or not any(len(ch) for ch in structure[0]):
        raise TprnaError("no atoms found: empty or not a PDB / mmCIF file", path)
    structure.setup_entities()  # tags polymer vs ligand / water residues
    model = structure[0]
    model.remove_alternative_conformations()  # altloc: blank or the first (A)
    model.remove_hydrogens()  # H and D
    return model


def _parse_structure(text: str, path: PathLike) -> gemmi.Structure:
    """mmCIF or PDB, told apart by content so any file name (and .gz) works."""
    # PDB and mmCIF are ASCII; a stray non-ASCII byte would reach gemmi's fixed-column
    # fields and come back as a residue / chain name Python cannot decode.
    text = text.encode("ascii", "replace").decode("ascii")
    try:
        if _first_line(text).startswith("data_"):
            structure = gemmi.make_structure_from_block(gemmi.cif.read_string(text).sole_block())
        else:
            # A TER inside a chain (common at chain breaks) would make gemmi call the
            # residues after it ligands; ignore TER and let gemmi find the polymer's end.
            structure = gemmi.read_pdb_string(text, ignore_ter=True)
    except Exception as exc:  # gemmi raises RuntimeError / ValueError on bad syntax
        raise TprnaError(f"cannot parse structure: {exc}", path) from exc
    structure.merge_chain_parts()  # one Chain per name: polymer, ligands and waters together
    return structure


def _chain_residues(
    model: gemmi.Model, chain: str | None, molecule: Molecule, path: PathLike
) -> list[gemmi.Residue]:
    """Polymer residues of the molecule type in the requested (or the only) chain."""
    by_name = _polymers(model, molecule, lambda ch: ch.name)
    names = ", ".join(repr(n) for n in by_name) or "none"
    with_type = ", ".join(repr(n) for n, residues in by_name.items() if residues) or "none"
    if not chain:
        candidates = [n for n, residues in by_name.items() if residues]
        if not candidates:
            raise TprnaError(f"no {molecule} chains in the file; chains present: {names}", path)
        if len(candidates) > 1:
            raise TprnaError(f"several {molecule} chains ({with_type}); name the one to use", path)
        return by_name[candidates[0]]
    # The author's chain name first; failing that, mmCIF's label_asym_id.
    residues = by_name.get(chain)
    if residues is None:
        residues = _polymers(model, molecule, _label_asym_id).get(chain)
    if residues is None:
        raise TprnaError(f"chain {chain!r} is not in the file; chains present: {names}", path)
    if not residues:
        raise TprnaError(
            f"chain {chain!r} has no {molecule} residues; {molecule} chains: {with_type}", path
        )
    return residues


def _polymers(
    model: gemmi.Model, molecule: Molecule, key: Callable[[gemmi.Chain], str]
) -> dict[str, list[gemmi.Residue]]:
    """Polymer residues of the molecule type per chain (possibly none), keyed by key(chain)."""
    return {key(ch): [r for r in ch.get_polymer() if _is_of(r, molecule)] for ch in model}


def _label_asym_id(chain: gemmi.Chain) -> str:
    polymer = chain.get_polymer()
    return polymer.subchain_id() if len(polymer) else ""


def _is_of(residue: gemmi.Residue, molecule: Molecule) -> bool:
    info = gemmi.find_tabulated_residue(residue.name)
    if info is not None and (info.is_nucleic_acid() or info.is_amino_acid()):
        return info.is_nucleic_acid() if molecule == "rna" else info.is_amino_acid()
    # A residue gemmi does not class (untabulated modification, a 5' GTP) inside the
    # polymer: judge by the backbone atom every nucleotide / amino acid has.
    marker = "C1'" if molecule == "rna" else "CA"
    return residue.find_atom(marker, "*") is not None


def _residue_letter(residue: gemmi.Residue, molecule: Molecule) -> str:
    """One-letter code; a modified residue reads as its parent ('PSU' → 'U')."""
    info = gemmi.find_tabulated_residue(residue.name)
    letter = info.one_letter_code.strip().upper() if info is not None else ""
    if not letter or not letter.isalpha():
        return _UNKNOWN[molecule]
    return "U" if molecule == "rna" and letter == "T" else letter


def _map_onto_query(
    residues: list[gemmi.Residue], query: str, molecule: Molecule, path: PathLike
) -> np.ndarray:
    """Query position of each structure residue (-1 where it aligns to no query residue)."""
    letters = [_residue_letter(r, molecule) for r in residues]
    scoring = _scoring()
    gapo = _gap_openings(residues, molecule, scoring)
    result = gemmi.align_string_sequences(list(query), letters, gapo, scoring)
    to_query = np.full(len(residues), -1, dtype=np.int64)
    q = s = 0
    for count, op in _cigar(result.cigar_str()):
        if op == "M":
            to_query[s : s + count] = np.arange(q, q + count)
        q += count if op in "MI" else 0
        s += count if op in "MD" else 0
    _check_match(to_query, letters, query, path)
    return to_query


def _scoring() -> gemmi.AlignmentScoring:
    """Match +1, mismatch -1, gap -1 per residue, plus -10 to open a gap anywhere but at
    the ends or a chain break.  Cheap gaps let an unrelated sequence reach ~60 % identity
    over its aligned residues; with these it stays near 35 %, so the identity check
    below separates the right chain from a wrong one."""
    scoring = gemmi.AlignmentScoring("s")
    scoring.gapo = scoring.bad_gapo = -10
    scoring.good_gapo = 0
    return scoring


def _gap_openings(
    residues: list[gemmi.Residue], molecule: Molecule, scoring: gemmi.AlignmentScoring
) -> list[int]:
    """Per-position gap-opening penalty in the structure: free at the ends and at chain
    breaks (missing residues), costly inside a continuous stretch, so gaps land where
    residues are really missing (gemmi's own align_sequence_to_polymer rule)."""
    first, second = _LINK_ATOMS[molecule]
    gapo = [0]
    for prev, cur in zip(residues, residues[1:]):
        a, b = prev.find_atom(first, "*"), cur.find_atom(second, "*")
        linked = a is not None and b is not None and a.pos.dist(b.pos) < _MAX_LINK
        gapo.append(scoring.bad_gapo if linked else scoring.good_gapo)
    return gapo + [0]


def _cigar(cigar: str) -> list[tuple[int, str]]:
    ops, number = [], ""
    for char in cigar:
        if char.isdigit():
            number += char
        else:
            ops.append((int(number), char))
            number = ""
    return ops


def _check_match(to_query: np.ndarray, letters: list[str], query: str, path: PathLike) -> None:
    aligned = np.flatnonzero(to_query >= 0)
    same = sum(letters[s] == query[to_query[s]] for s in aligned)
    if len(aligned) * 2 < len(letters) or same < _MIN_IDENTITY * len(aligned):
        raise TprnaError(
            f"structure does not match the query: {len(aligned)} of {len(letters)} "
            f"residues align, {same} identical; check the chain and the sequence",
            path,
        )


def _heavy_atoms(residues: list[gemmi.Residue]) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of every (heavy) atom and the index of the residue it belongs to."""
    coords = [a.pos.tolist() for r in residues for a in r]
    owner = [i for i, r in enumerate(residues) for _ in r]
    return np.asarray(coords, dtype=float).reshape(-1, 3), np.asarray(owner, dtype=np.int64)


def _beta_atoms(residues: list[gemmi.Residue]) -> tuple[np.ndarray, np.ndarray]:
    """Cβ of each residue (Cα for glycine); a residue without it has no coordinates."""
    coords, owner = [], []
    for i, r in enumerate(residues):
        atom = r.find_atom("CA" if _residue_letter(r, "protein") == "G" else "CB", "*")
        if atom is not None:
            coords.append(atom.pos.tolist())
            owner.append(i)
    return np.asarray(coords, dtype=float).reshape(-1, 3), np.asarray(owner, dtype=np.int64)


def _residue_pairs(coords: np.ndarray, owner: np.ndarray, cutoff: float) -> np.ndarray:
    """Distinct residue pairs (n×2) with at least one atom pair closer than `cutoff`."""
    atom_pairs = cKDTree(coords).query_pairs(cutoff, output_type="ndarray")
    if len(atom_pairs):  # query_pairs includes = cutoff; the rule is strictly below
        delta = coords[atom_pairs[:, 0]] - coords[atom_pairs[:, 1]]
        atom_pairs = atom_pairs[np.einsum("ij,ij->i", delta, delta) < cutoff * cutoff]
    pairs = owner[atom_pairs].reshape(-1, 2)
    return pairs[pairs[:, 0] != pairs[:, 1]]


def _project(
    pairs: np.ndarray, with_coords: np.ndarray, to_query: np.ndarray, length: int
) -> Labels:
    """Residue-index pairs → L×L query matrices; unaligned residues are dropped."""
    contacts = np.zeros((length, length), dtype=np.uint8)
    observed = np.zeros((length, length), dtype=bool)
    seen = to_query[with_coords]
    seen = seen[seen >= 0]
    observed[np.ix_(seen, seen)] = True
    i, j = to_query[pairs[:, 0]], to_query[pairs[:, 1]]
    keep = (i >= 0) & (j >= 0) & (i != j)
    contacts[i[keep], j[keep]] = 1
    contacts[j[keep], i[keep]] = 1
    return contacts, observed


# --------------------------------------------------------------------- text label files


def read_contact_list(path: PathLike, length: int) -> Labels:
    """`i j [score]` per line (1-based); `#` comments and blank lines are skipped.
    Every pair is observed: a list names contacts, and the rest are negatives."""
    return _parse_contact_list(_read_text(path), length, path)


def read_label_matrix(path: PathLike) -> Labels:
    """SPOT-RNA-2D label matrix (gzip or not): L×L, upper triangle 1 / 0 / -1
    (contact / none / a residue without coordinates); symmetrised here."""
    return _parse_label_matrix(_read_text(path), path)


def read_labels(
    path: PathLike, sequence: str, chain: str | None = None, molecule: Molecule = "rna"
) -> Labels:
    """Labels from any supported file, recognised by its content: a PDB / mmCIF
    structure, a square label matrix, or an `i j` contact list."""
    text = _read_text(path)
    length = len("".join(sequence.split()))
    if _looks_like_structure(text):
        return _structure_labels(text, path, chain, sequence, molecule, _CUTOFF)
    rows = _data_lines(text)
    first = rows[0][1].split() if rows else []
    # `i j [score]` with 1-based positions; a matrix row has more fields or a 0 in front.
    if 2 <= len(first) <= 3 and all(_is_int(t) and int(t) >= 1 for t in first[:2]):
        labels = _parse_contact_list(text, length, path)
    else:
        labels = _parse_label_matrix(text, path)
    size = labels[0].shape[0]
    if size != length:
        raise TprnaError(
            f"label matrix is {size}x{size} but the query has {length} residues", path
        )
    return labels


def _read_text(path: PathLike) -> str:
    """Whole file as text, gunzipped when it starts with the gzip magic bytes."""
    try:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8", errors="replace")  # stray bytes in PDB remarks happen
    except FileNotFoundError as exc:
        raise TprnaError("file not found", path) from exc
    except (OSError, EOFError, zlib.error) as exc:  # includes a truncated gzip
        raise TprnaError(f"cannot read file: {exc}", path) from exc
    if not text.strip():
        raise TprnaError("file is empty", path)
    return text


def _data_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, content) of lines that are neither blank nor `#` comments."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if content:
            rows.append((number, content))
    return rows


def _parse_contact_list(text: str, length: int, path: PathLike) -> Labels:
    contacts = np.zeros((length, length), dtype=np.uint8)
    for number, content in _data_lines(text):
        fields = content.split()
        if len(fields) < 2 or not all(_is_int(f) for f in fields[:2]):
            raise TprnaError(
                f"line {number}: expected two residue numbers 'i j', got {content!r}", path
            )
        i, j = int(fields[0]), int(fields[1])
        if not (1 <= i <= length and 1 <= j <= length) or i == j:
            raise TprnaError(
                f"line {number}: pair {i} {j} is not two different positions in 1..{length}", path
            )
        contacts[i - 1, j - 1] = contacts[j - 1, i - 1] = 1
    return contacts, np.ones((length, length), dtype=bool)


def _parse_label_matrix(text: str, path: PathLike) -> Labels:
    rows = _data_lines(text)
    if not rows:
        raise TprnaError("label matrix has no rows, only comments", path)
    try:
        matrix = np.array([[float(v) for v in content.split()] for _, content in rows])
    except ValueError as exc:
        raise TprnaError(f"label matrix has a non-numeric entry ({exc})", path) from exc
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        widths = sorted({len(content.split()) for _, content in rows})
        raise TprnaError(f"label matrix is not square: {len(rows)} rows of {widths} values", path)
    upper = np.triu(matrix, k=1)
    if not np.isin(upper, (-1.0, 0.0, 1.0)).all():
        raise TprnaError(
            "label matrix entries must be 1, 0 or -1 (is it a probability map?)", path
        )
    contact, unknown = upper == 1, upper == -1
    contacts = (contact | contact.T).astype(np.uint8)
    observed = ~(unknown | unknown.T)
    # The diagonal is never labelled: a residue is observed when any of its pairs is.
    np.fill_diagonal(observed, (observed.sum(axis=1) > 1) | (len(observed) == 1))
    return contacts, observed


def _looks_like_structure(text: str) -> bool:
    # Real PDB files may open with any record (1p6v.pdb starts with JRNL), so also look for
    # coordinate records anywhere: label matrices and contact lists hold only numbers.
    line = _first_line(text)
    return (line.startswith("data_") or line.startswith(_PDB_RECORDS)
            or re.search(r"^(ATOM  |HETATM)", text, re.MULTILINE) is not None)


def _first_line(text: str) -> str:
    """First line that is neither blank nor a `#` comment."""
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            return line
    return ""


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True
