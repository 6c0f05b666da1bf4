"""Alphabets: how letters of an alignment become integer states.

RNA has q=5 states ``A C G U -``; protein has q=21 (20 amino acids + gap).  Letters that
are legal in the molecule's wider vocabulary but are not one of the states (IUPAC
ambiguity codes, ``X``, selenocysteine …) become a gap and are *counted*, so a user sees
how much of the alignment was unknown.  Letters outside that vocabulary mean the file is
not an alignment of this molecule, and are an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tprna.errors import TprnaError

__all__ = ["Alphabet", "RNA", "PROTEIN", "get_alphabet"]

_GAP_CHARS = "-."


@dataclass(frozen=True)
class Alphabet:
    name: str
    states: str  # the model's states in channel order; the last one is the gap
    aliases: dict[str, str] = field(default_factory=dict)  # letters read as another state
    unknown: str = ""  # legal letters that carry no state: read as gap and counted

    @property
    def q(self) -> int:
        return len(self.states)

    @property
    def gap(self) -> int:
        return len(self.states) - 1

    def _table(self) -> np.ndarray:
        # 255 marks a letter that does not belong to this molecule at all.
        table = np.full(256, 255, dtype=np.uint8)
        for letters, code in [(s, i) for i, s in enumerate(self.states)]:
            for c in (letters, letters.lower()):
                table[ord(c)] = code
        for src, dst in self.aliases.items():
            table[ord(src)] = table[ord(src.lower())] = self.states.index(dst)
        for c in self.unknown + _GAP_CHARS:
            table[ord(c)] = table[ord(c.lower())] = self.gap
        return table

    def encode(self, rows: list[str], path: str | None = None) -> tuple[np.ndarray, int]:
        """Encode equal-length aligned rows to an (N, L) uint8 array of state indices.

        Returns the codes and the number of unknown letters that became gaps."""
        if not rows:
            raise TprnaError("no sequences to encode", path)
        raw = np.frombuffer("".join(rows).encode("ascii", "replace"), dtype=np.uint8)
        codes = _TABLES[self.name][raw]
        if (codes == 255).any():
            bad = sorted({chr(b) for b in raw[codes == 255]})
            raise TprnaError(
                f"letters {''.join(bad)!r} are not {self.name.upper()} "
                f"(expected {self.states[:-1]}, gaps '-' '.', or ambiguity codes); "
                f"is this the right molecule type?", path)
        gap_letters = np.frombuffer((self.unknown + self.unknown.lower()).encode(), np.uint8)
        n_unknown = int(np.isin(raw, gap_letters).sum())
        return codes.reshape(len(rows), -1), n_unknown

    def decode(self, codes: np.ndarray) -> str:
        return "".join(self.states[c] for c in np.asarray(codes).ravel())


RNA = Alphabet("rna", "ACGU-", aliases={"T": "U"}, unknown="RYSWKMBDHVNX")
PROTEIN = Alphabet("protein", "ARNDCQEGHILKMFPSTWYV-", unknown="BZXUOJ")
_ALPHABETS = {a.name: a for a in (RNA, PROTEIN)}
_TABLES = {a.name: a._table() for a in (RNA, PROTEIN)}


def get_alphabet(molecule: str) -> Alphabet:
    try:
        return _ALPHABETS[molecule.lower()]
    except KeyError:
        raise TprnaError(f"unknown molecule type {molecule!r}; use 'rna' or 'protein'") from None
