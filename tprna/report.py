"""Tables and pictures of evaluation results: the paper's Table 4 layout (rows = methods,
columns = range × top-k) in Markdown and CSV, per Neff subset, contact maps of chosen RNAs
and precision against Neff."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping

import numpy as np

from tprna.metrics import RANGES, TOP_K

__all__ = ["COLUMNS", "precision_rows", "markdown_table", "write_csv", "plot_contact_map",
           "plot_precision_vs_neff"]

COLUMNS = [(r, k) for r in RANGES for k in TOP_K]


def precision_rows(results: Mapping[str, dict], subset: str = "all") -> list[tuple[str, int, list[float]]]:
    """(method, number of RNAs, precisions in :data:`COLUMNS` order) for one subset."""
    rows = []
    for method, result in results.items():
        summary = result["summary"].get(subset)
        if summary:
            prec = summary["precision"]
            rows.append((method, summary["n"], [prec[_key(prec, c)] for c in COLUMNS]))
    return rows


def _key(prec: Mapping, column: tuple[str, str]):
    # summaries loaded back from JSON have "range|k" string keys instead of tuples
    return column if column in prec else f"{column[0]}|{column[1]}"


def markdown_table(results: Mapping[str, dict], subset: str = "all") -> str:
    rows = precision_rows(results, subset)
    if not rows:
        return f"_no RNAs in subset {subset}_\n"
    best = np.max([r[2] for r in rows], axis=0)
    head = "| method | n | " + " | ".join(f"{r} {k}" for r, k in COLUMNS) + " |"
    rule = "|---|---:|" + "---:|" * len(COLUMNS)
    lines = [head, rule]
    for method, n, values in rows:
        cells = [f"**{v:.3f}**" if v == b and len(rows) > 1 else f"{v:.3f}" for v, b in zip(values, best)]
        lines.append(f"| {method} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(results: Mapping[str, dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["method", "subset", "n"] + [f"{r} {k}" for r, k in COLUMNS])
        subsets = sorted({s for r in results.values() for s in r["summary"]}, key=lambda s: s != "all")
        for subset in subsets:
            for method, n, values in precision_rows(results, subset):
                writer.writerow([method, subset, n] + [f"{v:.4f}" for v in values])
        writer.writerow([])
        writer.writerow(["method", "id"] + [f"{r} {k}" for r, k in COLUMNS])
        for method, result in results.items():
            for entry_id, prec in zip(result["ids"], result["per_rna"]):
                writer.writerow([method, entry_id] + [f"{prec[_key(prec, c)]:.4f}" for c in COLUMNS])


def plot_contact_map(prob: np.ndarray, contacts: np.ndarray, observed: np.ndarray, title: str,
                     path: Path, top: int | None = None) -> None:
    """Upper triangle: the top-L predicted pairs (|i−j| ≥ 6) coloured by hit/miss;
    lower triangle: the true contacts; unobserved pairs grey."""
    from matplotlib.figure import Figure

    length = prob.shape[0]
    top = top or length
    i, j = np.triu_indices(length, k=6)
    order = np.argsort(-prob[i, j], kind="stable")[:top]
    fig = Figure(figsize=(5, 5), dpi=110)
    ax = fig.subplots()
    ti, tj = np.nonzero(np.tril(contacts, -6))
    ax.scatter(tj, ti, s=4, c="0.25", marker="s", label="true contact")
    ui, uj = np.nonzero(np.tril(~observed.astype(bool), -1))
    if len(ui):
        ax.scatter(uj, ui, s=4, c="0.85", marker="s", label="unobserved")
    hit = contacts[i[order], j[order]].astype(bool)
    ax.scatter(j[order][hit], i[order][hit], s=6, c="tab:blue", label="predicted, correct")
    ax.scatter(j[order][~hit], i[order][~hit], s=6, c="tab:red", label="predicted, wrong")
    ax.set_xlim(-0.5, length - 0.5)
    ax.set_ylim(length - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_title(f"{title}: top-{top} predictions (upper) vs truth (lower)", fontsize=8)
    ax.legend(loc="lower left", fontsize=6, markerscale=2)
    fig.tight_layout()
    fig.savefig(path)


def plot_precision_vs_neff(results: Mapping[str, dict], neff: Mapping[str, float], path: Path,
                           column: tuple[str, str] = ("long", "L/5")) -> None:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    # One point per RNA and method: a distinct colour and marker per method (up to 20), the
    # methods of one RNA dodged side by side along Neff so that ties stay visible, and the
    # legend outside the axes so it never hides points.
    fig = Figure(figsize=(8.5, 4), dpi=110)
    ax = fig.subplots()
    colours, markers = colormaps["tab20"].colors, "osD^v<>ph*"
    for k, (method, result) in enumerate(results.items()):
        dodge = 10 ** (0.015 * (k - (len(results) - 1) / 2))
        x = [neff[i] * dodge for i in result["ids"]]
        y = [p[_key(p, column)] for p in result["per_rna"]]
        ax.plot(x, y, ls="none", ms=4, marker=markers[k % len(markers)], color=colours[k % len(colours)],
                label=method, alpha=0.9)
    ax.set_xscale("log")
    ax.set_xlabel("Neff (log scale)")
    ax.set_ylabel(f"top-{column[1]} {column[0]}-range precision")
    ax.axvline(1, color="0.7", lw=0.8)
    ax.axvline(10, color="0.7", lw=0.8)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
