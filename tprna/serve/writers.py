"""Output files of a prediction: the probability map (``.npz``), the CASP RR contact list
(``.rr``), a picture (``.png``) and the plain-text matrix (``.txt``), plus a reader for RR
files.

TXT: the L×L probability matrix, one row per line, values space-separated with a fixed
number of decimals (the layout SPOT-RNA-2D's users read: ``numpy.loadtxt`` reads it back).

RR (CASP format)::

    PFRMAT RR
    TARGET <id>
    METHOD tpRNA <version> <model>
    MODEL 1
    <sequence, 50 letters a line>
    i j 0 8 p          (1-based, i < j, |i − j| ≥ 6, probability descending)
    ...
    END
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from tprna.errors import TprnaError
from tprna.metrics import MIN_SEPARATION

__all__ = ["top_contacts", "write_npz", "write_rr", "read_rr", "write_png", "write_txt", "RRFile",
           "contact_map_figure", "parse_formats", "MIN_SEPARATION", "OUTPUT_FORMATS", "DEFAULT_FORMATS"]

OUTPUT_FORMATS = ("npz", "rr", "png", "txt")
DEFAULT_FORMATS = ("npz", "rr")
TXT_DECIMALS = 5  # as the RR file's probabilities
_SEQ_WRAP = 50


def parse_formats(values: Iterable[str] | str | None, png: bool = False) -> tuple[str, ...]:
    """Output formats from repeated and/or comma-separated names (default npz + rr), plus
    png when ``png``; an unknown name is an error."""
    if isinstance(values, str):
        values = [values]
    names = [n.strip().lower().lstrip(".") for v in (values or []) for n in v.split(",") if n.strip()]
    bad = [n for n in names if n not in OUTPUT_FORMATS]
    if bad:
        raise TprnaError(f"unknown output format {bad[0]!r}; use {', '.join(OUTPUT_FORMATS)} "
                         "(repeat --format or separate them with commas)")
    chosen = names or list(DEFAULT_FORMATS)
    if png:
        chosen.append("png")
    return tuple(dict.fromkeys(chosen))  # in order, once each


def top_contacts(probabilities: np.ndarray, top: int | None = None,
                 min_separation: int = MIN_SEPARATION) -> list[tuple[int, int, float]]:
    """The ``top`` most probable pairs (default 2·L) with ``j − i ≥ min_separation``, as
    1-based ``(i, j, p)`` with i < j, by probability descending (ties: by i, then j)."""
    p = np.asarray(probabilities)
    length = p.shape[0]
    if p.ndim != 2 or p.shape[1] != length:
        raise TprnaError(f"a contact map must be square, got shape {p.shape}")
    k = 2 * length if top is None else int(top)
    if k <= 0:
        return []
    iu, ju = np.triu_indices(length, k=max(1, int(min_separation)))
    values = p[iu, ju]
    order = np.argsort(-values, kind="stable")[:k]  # stable: ties stay in (i, j) order
    return [(int(iu[o]) + 1, int(ju[o]) + 1, float(values[o])) for o in order]


def _atomic_write_bytes(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise TprnaError(f"cannot write file ({e.strerror})", path) from None
    return path


def write_npz(path: str | os.PathLike, entry_id: str, sequence: str, probabilities: np.ndarray,
              **extra: Any) -> Path:
    """``probabilities`` (L, L) float32, ``sequence``, ``id`` and any scalar ``extra``."""
    buf = io.BytesIO()
    arrays = {"probabilities": np.asarray(probabilities, dtype=np.float32),
              "sequence": np.array(sequence), "id": np.array(entry_id)}
    arrays.update({k: np.asarray(v) for k, v in extra.items() if v is not None})
    np.savez_compressed(buf, **arrays)
    return _atomic_write_bytes(Path(path), buf.getvalue())


def format_rr(entry_id: str, sequence: str, probabilities: np.ndarray, top: int | None = None,
              min_separation: int = MIN_SEPARATION, method: str | None = None) -> str:
    lines = ["PFRMAT RR", f"TARGET {entry_id}"]
    if method:
        lines.append(f"METHOD {method}")
    lines.append("MODEL 1")
    lines += [sequence[i:i + _SEQ_WRAP] for i in range(0, len(sequence), _SEQ_WRAP)]
    lines += [f"{i} {j} 0 8 {p:.5f}" for i, j, p in top_contacts(probabilities, top, min_separation)]
    lines.append("END")
    return "\n".join(lines) + "\n"


def write_rr(path: str | os.PathLike, entry_id: str, sequence: str, probabilities: np.ndarray,
             top: int | None = None, min_separation: int = MIN_SEPARATION,
             method: str | None = None) -> Path:
    """The CASP RR file of the top contacts (default 2·L, |i − j| ≥ 6)."""
    if np.asarray(probabilities).shape[0] != len(sequence):
        raise TprnaError(f"{entry_id}: the map is {np.asarray(probabilities).shape[0]} long but the "
                         f"sequence has {len(sequence)} residues")
    text = format_rr(entry_id, sequence, probabilities, top, min_separation, method)
    return _atomic_write_bytes(Path(path), text.encode())


class RRFile:
    """A parsed RR file: target, sequence and contacts ``(i, j, d_min, d_max, p)``."""

    def __init__(self, target: str, sequence: str, contacts: list[tuple[int, int, float, float, float]],
                 methods: list[str]) -> None:
        self.target, self.sequence, self.contacts, self.methods = target, sequence, contacts, methods

    def __repr__(self) -> str:
        return f"RRFile({self.target!r}, L={len(self.sequence)}, {len(self.contacts)} contacts)"


_CONTACT = re.compile(r"^(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)$")


def read_rr(path: str | os.PathLike) -> RRFile:
    """Parse a CASP RR file (the subset :func:`write_rr` writes, plus AUTHOR/REMARK lines)."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as e:
        raise TprnaError(f"cannot read RR file ({e.strerror})", p) from None
    target, seq_parts, contacts, methods = None, [], [], []
    seen_format = seen_end = False
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        head = line.split()[0]
        if head == "PFRMAT":
            if line.split()[1:] != ["RR"]:
                raise TprnaError(f"line {lineno}: expected 'PFRMAT RR'", p)
            seen_format = True
        elif head == "TARGET":
            target = line.split(maxsplit=1)[1] if len(line.split()) > 1 else ""
        elif head == "METHOD":
            methods.append(line[len("METHOD"):].strip())
        elif head in ("AUTHOR", "REMARK", "MODEL"):
            continue
        elif head == "END":
            seen_end = True
            break
        elif (m := _CONTACT.match(line)) is not None:
            i, j = int(m.group(1)), int(m.group(2))
            contacts.append((i, j, float(m.group(3)), float(m.group(4)), float(m.group(5))))
        elif re.fullmatch(r"[A-Za-z\-]+", line) and not contacts:
            seq_parts.append(line)
        else:
            raise TprnaError(f"line {lineno}: not an RR line: {line[:40]!r}", p)
    if not seen_format or target is None or not seen_end:
        raise TprnaError("not a complete RR file (needs PFRMAT RR, TARGET and END)", p)
    return RRFile(target, "".join(seq_parts), contacts, methods)


def write_txt(path: str | os.PathLike, probabilities: np.ndarray, decimals: int = TXT_DECIMALS) -> Path:
    """The L×L matrix as text: one row per line, space-separated, ``decimals`` decimals."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise TprnaError(f"a contact map must be square, got shape {p.shape}")
    buf = io.BytesIO()
    np.savetxt(buf, p, fmt=f"%.{int(decimals)}f", delimiter=" ")
    return _atomic_write_bytes(Path(path), buf.getvalue())


def contact_map_figure(entry_id: str, probabilities: np.ndarray,
                       contacts: Iterable[tuple[int, int]] | None = None, top: int | None = None,
                       min_separation: int = MIN_SEPARATION) -> Any:
    """A matplotlib Figure (Agg canvas, no pyplot state) of the probability map as a heat
    map; the ``top`` most probable pairs (default L, |i − j| ≥ ``min_separation``) circled in
    the lower triangle, and known ``contacts`` (i, j) 0-based marked in red."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: start-up time (matplotlib)
    from matplotlib.figure import Figure

    p = np.asarray(probabilities, dtype=np.float32)
    length = p.shape[0]
    fig = Figure(figsize=(5.2, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(p, cmap="Blues", vmin=0.0, vmax=1.0, origin="upper", interpolation="nearest")
    pairs = top_contacts(p, length if top is None else top, min_separation)
    if pairs:
        ij = np.array([(i - 1, j - 1) for i, j, _ in pairs])
        # lower triangle (row j, column i): the map itself stays visible above the diagonal
        ax.scatter(ij[:, 0], ij[:, 1], s=10, facecolors="none", edgecolors="tab:orange",
                   linewidths=0.6, label=f"top {len(pairs)} (|i−j| ≥ {min_separation})")
    if contacts is not None:
        known = np.array(list(contacts))
        if known.size:
            ax.scatter(known[:, 1], known[:, 0], s=4, c="tab:red", marker="s", linewidths=0,
                       label="true contacts")
    if pairs or contacts is not None:
        ax.legend(loc="lower left", fontsize=7, frameon=False)
    ax.set_xlim(-0.5, length - 0.5)
    ax.set_ylim(length - 0.5, -0.5)
    ax.set_title(f"{entry_id}  (L={length})", fontsize=10)
    ax.set_xlabel("j")
    ax.set_ylabel("i")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="contact probability")
    fig.tight_layout()
    return fig


def write_png(path: str | os.PathLike, entry_id: str, probabilities: np.ndarray,
              contacts: Iterable[tuple[int, int]] | None = None, dpi: int = 110,
              top: int | None = None) -> Path:
    """A picture of the map (:func:`contact_map_figure`) as PNG."""
    fig = contact_map_figure(entry_id, probabilities, contacts, top)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return _atomic_write_bytes(Path(path), buf.getvalue())
