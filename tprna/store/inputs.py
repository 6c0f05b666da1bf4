"""What to build: a manifest, folders or files of alignments → a list of :class:`BuildItem`.

Nothing here reads an alignment or a structure; a path that does not exist is kept as
given and reported as a failure (file, reason) when the build reaches it.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tprna.errors import TprnaError

__all__ = ["BuildItem", "items_from_manifest", "items_from_paths", "MSA_SUFFIXES",
           "STRUCTURE_SUFFIXES"]

MSA_SUFFIXES = (".fa", ".fasta", ".faclean", ".afa", ".fas", ".a3m", ".sto", ".stk",
                ".stockholm", ".aln", ".msa")
STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
# "1ehz_A" names chain A; "RF00005_1" does not (a chain suffix must contain a letter).
_CHAIN_SUFFIX = re.compile(r"^(?P<base>.+)_(?P<chain>(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{1,4})$")


@dataclass(frozen=True)
class BuildItem:
    """One entry to build: its id, alignment, and optionally a structure (with chain) or a
    label file (contact list / label matrix) giving its contact labels, and a split name.
    When both a structure and a label file are given, the labels come from the label file
    (both are hashed into the entry's key and recorded in its provenance)."""

    id: str
    msa: Path
    molecule: str = "rna"
    structure: Path | None = None
    chain: str | None = None
    label: Path | None = None
    split: str | None = None


def _cell(row: dict, name: str) -> str | None:
    value = (row.get(name) or "").strip()
    return value or None


def items_from_manifest(csv_path: str | os.PathLike, molecule: str | None = None) -> list[BuildItem]:
    """Rows of a CSV with columns ``id`` and ``msa`` (required), ``structure``, ``chain``,
    ``label``, ``split`` and ``molecule`` (optional; others are ignored).  Relative paths
    are taken from the manifest's folder; ``molecule`` is the default for rows without one
    (``rna`` when neither is given)."""
    path = Path(csv_path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a byte-order mark is no column name
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except FileNotFoundError:
        raise TprnaError("manifest not found", path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TprnaError(f"cannot read manifest ({e})", path) from None
    if not rows:
        raise TprnaError("manifest has no rows", path)
    missing = [c for c in ("id", "msa") if c not in header]
    if missing:
        raise TprnaError(f"manifest lacks column(s) {', '.join(missing)} "
                         f"(has: {', '.join(k for k in header if k)})", path)
    base = path.parent

    def resolve(value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(value)
        try:
            p = p.expanduser()
        except RuntimeError:  # "~nosuchuser/…": kept as given, reported when the build reaches it
            pass
        return p if p.is_absolute() else base / p

    items = []
    for lineno, row in enumerate(rows, start=2):
        entry_id, msa = _cell(row, "id"), _cell(row, "msa")
        if entry_id is None or msa is None:
            raise TprnaError(f"line {lineno}: empty 'id' or 'msa'", path)
        if any("\0" in (v or "") for v in row.values() if isinstance(v, str)):
            raise TprnaError(f"line {lineno}: a cell contains a NUL byte", path)
        items.append(BuildItem(
            id=entry_id, msa=resolve(msa),
            molecule=(_cell(row, "molecule") or molecule or "rna").lower(),
            structure=resolve(_cell(row, "structure")), chain=_cell(row, "chain"),
            label=resolve(_cell(row, "label")), split=_cell(row, "split"),
        ))
    return items


def _strip_gz(name: str) -> str:
    return name[:-3] if name.lower().endswith(".gz") else name


def _stem(path: Path) -> str:
    """File name without ``.gz`` and the last suffix: RF00005_1.faclean.gz → RF00005_1."""
    name = _strip_gz(path.name)
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


def _is_msa_file(path: Path) -> bool:
    suffix = Path(_strip_gz(path.name)).suffix.lower()
    return path.is_file() and not path.name.startswith(".") and suffix in MSA_SUFFIXES


def _expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = sorted(c for c in p.iterdir() if _is_msa_file(c))
            if not found:
                raise TprnaError(f"no alignment files ({', '.join(MSA_SUFFIXES)}, optionally .gz) "
                                 f"in this folder{_subfolder_hint(p)}", p)
            out.extend(found)
        else:
            out.append(p)  # a missing file is reported when the build reaches it
    return out


def _subfolder_hint(folder: Path) -> str:
    """How to give a folder of per-target folders (it is not walked: one level, one rule)."""
    inner = [c for sub in sorted(folder.iterdir()) if sub.is_dir() and not sub.name.startswith(".")
             for c in sub.iterdir() if _is_msa_file(c)]
    if not inner:
        return ""
    names = {c.name for c in inner}
    pattern = folder / "*" / (names.pop() if len(names) == 1 else "*")
    return f"; its subfolders hold {len(inner)}: give them as files, e.g. {pattern}"


def _match(folder: Path | None, names: list[str], prefer: tuple[str, ...]) -> Path | None:
    """The file in ``folder`` named ``<name>.<anything>`` for the first name that has one,
    preferring ``prefer`` suffixes."""
    if folder is None:
        return None
    files = sorted(c for c in folder.iterdir() if c.is_file() and not c.name.startswith("."))
    for name in names:
        hits = [f for f in files if _strip_gz(f.name) == name or f.name.startswith(name + ".")]
        if hits:
            hits.sort(key=lambda f: (Path(_strip_gz(f.name)).suffix.lower() not in prefer, f.name))
            return hits[0]
    return None


def items_from_paths(
    paths: Iterable[str | os.PathLike],
    structures_dir: str | os.PathLike | None = None,
    labels_dir: str | os.PathLike | None = None,
    molecule: str = "rna",
    chain: str | None = None,
) -> list[BuildItem]:
    """Alignment files, or folders of them, as build items with id = file stem.

    A structure in ``structures_dir`` is matched by the id, or by the id without a chain
    suffix (``1ehz_A`` → ``1ehz.cif``); a label file in ``labels_dir`` by the id
    (``1ehz_A.true.gz``).  The chain is ``chain`` when given, otherwise the id's ``_X``
    suffix (1–4 characters with a letter), otherwise the structure's only chain."""
    sdir = Path(structures_dir).expanduser() if structures_dir else None
    ldir = Path(labels_dir).expanduser() if labels_dir else None
    for d in (sdir, ldir):
        if d is not None and not d.is_dir():
            raise TprnaError("not a folder", d)
    items = []
    for msa in _expand(paths):
        entry_id = _stem(msa)
        m = _CHAIN_SUFFIX.match(entry_id)
        names = [entry_id] + ([m.group("base")] if m else [])
        items.append(BuildItem(
            id=entry_id, msa=msa, molecule=molecule.lower(),
            structure=_match(sdir, names, STRUCTURE_SUFFIXES),
            chain=chain or (m.group("chain") if m else None),
            label=_match(ldir, [entry_id], ()),
        ))
    return items
