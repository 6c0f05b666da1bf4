"""What a prediction run yields for each input: a :class:`Prediction` (the contact map,
which writes itself in every output format) or a :class:`Failure` (the input and why it was
skipped)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tprna.errors import TprnaError
from tprna.serve import writers
from tprna.serve.inputs import file_stem

__all__ = ["Prediction", "Failure"]


@dataclass
class Prediction:
    """One RNA's contact probabilities ``(L, L)`` float32 (symmetric, |i−j| < 6 included).

    ``sequence`` is the query as written (an N or X stays an N or X), one letter a row."""

    id: str
    sequence: str
    probabilities: np.ndarray
    source: str = ""
    neff: float | None = None
    index: int = -1  # position among the inputs
    method: str = ""  # the RR file's METHOD line: tpRNA version and model

    @property
    def length(self) -> int:
        return len(self.sequence)

    def top(self, k: int | None = None, min_separation: int = 6) -> list[tuple[int, int, float]]:
        """The ``k`` (default L) most probable pairs with ``j − i ≥ min_separation`` as 1-based
        ``(i, j, p)``, most probable first."""
        return writers.top_contacts(self.probabilities, self.length if k is None else k, min_separation)

    def write(self, path: str | os.PathLike, format: str | Sequence[str] | None = None,
              top: int | None = None, min_separation: int = 6) -> list[Path]:
        """Write the prediction to the file ``path`` (its format from the suffix: ``.npz``,
        ``.rr``, ``.png``, ``.txt``), or into the folder ``path`` as ``<id>.<format>`` for each
        ``format`` (default npz and rr).  ``top``: RR contacts (default 2·L)."""
        target = Path(path)
        suffix = target.suffix.lower().lstrip(".")
        if format is None and suffix in writers.OUTPUT_FORMATS and not target.is_dir():
            return [self._write_one(target, suffix, top, min_separation)]
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TprnaError(f"cannot create the output folder ({e.strerror})", target) from None
        stem = file_stem(self.id)
        return [self._write_one(target / f"{stem}.{fmt}", fmt, top, min_separation)
                for fmt in writers.parse_formats(format)]

    def write_npz(self, path: str | os.PathLike) -> Path:
        return self._write_one(Path(path), "npz")

    def write_rr(self, path: str | os.PathLike, top: int | None = None, min_separation: int = 6) -> Path:
        return self._write_one(Path(path), "rr", top, min_separation)

    def write_png(self, path: str | os.PathLike) -> Path:
        return self._write_one(Path(path), "png")

    def write_txt(self, path: str | os.PathLike) -> Path:
        return self._write_one(Path(path), "txt")

    def _write_one(self, path: Path, fmt: str, top: int | None = None, min_separation: int = 6) -> Path:
        if fmt == "npz":
            return writers.write_npz(path, self.id, self.sequence, self.probabilities,
                                     neff=self.neff, source=self.source)
        if fmt == "rr":
            return writers.write_rr(path, self.id, self.sequence, self.probabilities, top,
                                    min_separation, self.method or None)
        if fmt == "png":
            return writers.write_png(path, self.id, self.probabilities)
        if fmt == "txt":
            return writers.write_txt(path, self.probabilities)
        raise TprnaError(f"unknown output format {fmt!r}; use {', '.join(writers.OUTPUT_FORMATS)}")


@dataclass
class Failure:
    """An input that was skipped, and why."""

    source: str
    reason: str
    id: str | None = None
    index: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.source, "id": self.id, "reason": self.reason}
