#!/usr/bin/env python
"""Where the shipped model's long-range precision stops on the coconet test families, and
whether anything the alignment or thermodynamics says points past it. A diagnosis: nothing
is chosen on it (the test families never choose).

Per family (``L`` residues, ``T`` its true contacts with ``|i − j| ≥ 24``):

- **attainable**: ``min(|T|, L) / L``, what a perfect top-L long list scores;
- **model**: the shipped model's top-L long precision, given the alignment and the query alone;
- **evidence**: the true contacts that some signal ranks in its own top-L long list: the
  model, the raw plm couplings of the alignment (the model's own ``plm`` channel, APC), the
  shrunk precision (APC), CoCoNet's published map and the query's ViennaRNA base-pair
  probabilities;
  ``min(|evidence|, L) / L`` is what a perfect chooser among those candidates would score;
- **unused**: true contacts outside the model's top-L that a coevolution signal (plm,
  precision or CoCoNet) ranks in its top-L — the alignment's evidence the model leaves out;
- **swapped in**: the model's precision had its false positives been replaced by the unused hits
  (an oracle: it knows which coevolution hits are true);
- **family bootstrap**: the families drawn again with replacement, the model's mean with the
  alignment, alone and their difference (paired: one draw for both), 95 % intervals: how much
  the mean over 14 families can move with which families happen to be in the test set;
- **kinds**: each true long contact is a base pair of the structure's dot-bracket (the coconet
  ``secstruct`` file, pseudoknot brackets included), a helix neighbour of one (within 2 on both
  strands: stacked across the helix, not paired) or neither (tertiary), with the model's and
  plm's recall of each kind within their top-L.

Labels and the APC / bpp baselines come from a store holding the coconet test families'
``cov+ss`` entries: the release store (``scripts/train_release.py``), or one built in seconds
with ``tprna store build store/coconet.zarr --manifest ../shared/data/coconet/manifest.csv
--features cov+ss``; the model and plm read the alignment files (~4 min for the plm fits, seconds
once the benchmark scripts' feature cache, ``results/release/feature_cache``, holds them).

    python scripts/alignment_headroom.py [--store store/release.zarr] [--model tprna-rna.onnx]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from feature_cache import shared_features  # noqa: E402
from release_benchmarks import MODEL_FILE, PACKAGE_MODEL, benchmark_arguments  # noqa: E402
from tprna import features  # noqa: E402
from tprna.evaluate import baseline_maps, load_evaluation_set, peer_maps  # noqa: E402
from tprna.metrics import RANGES, top_pairs  # noqa: E402
from tprna.msa import read_msa  # noqa: E402
from tprna.serve import Predictor  # noqa: E402

LONG = RANGES["long"][0]
COEVOLUTION = ("plm", "APC (precision)", "CoCoNet")
OPENING, CLOSING = "([{<", ")]}>"


def top_long(score: np.ndarray, observed: np.ndarray, k: int) -> set[tuple[int, int]]:
    """The ``k`` highest-scoring observed long-range pairs, as the metrics rank them."""
    i, j = top_pairs(score, observed, "long", k)
    return set(zip(i.tolist(), j.tolist()))


def dot_bracket_pairs(structure: str) -> set[tuple[int, int]]:
    """Base pairs ``(i, j)``, ``i < j``, of a dot-bracket string with ``()[]{}<>`` and Aa pairs."""
    stacks: dict[str, list[int]] = {}
    pairs = set()
    for n, c in enumerate(structure):
        if c in OPENING or c.isupper():
            stacks.setdefault(c if c in OPENING else c.lower(), []).append(n)
        elif c in CLOSING or c.islower():
            key = OPENING[CLOSING.index(c)] if c in CLOSING else c
            if stacks.get(key):
                pairs.add((stacks[key].pop(), n))
    return pairs


def secondary_structure(path: Path, query: str) -> set[tuple[int, int]] | None:
    """The coconet secstruct file's base pairs on the query, or None when its sequence is not
    the query (then the family's contacts are not split by kind)."""
    fields = dict(line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    sequence, structure = fields.get("SEQUENCE", "").strip(), fields.get("SECSTRUCT", "").strip()
    if sequence.upper().replace("T", "U") != query.upper().replace("T", "U") or len(structure) != len(query):
        return None
    return dot_bracket_pairs(structure)


def family(entry_id: str, lab, maps: dict[str, np.ndarray], pairs_ss: set | None) -> dict:
    length = lab.contacts.shape[0]
    i, j = np.nonzero(np.triu(lab.contacts.astype(bool) & lab.observed.astype(bool), k=LONG))
    true = set(zip(i.tolist(), j.tolist()))
    tops = {name: top_long(m, lab.observed, length) for name, m in maps.items()}
    hits = {name: len(t & true) / length for name, t in tops.items()}
    evidence = true & set().union(*tops.values())
    unused = (true - tops["model"]) & set().union(*(tops[n] for n in COEVOLUTION if n in tops))
    found = len(tops["model"] & true)
    row = {"id": entry_id, "L": length, "true": len(true), "attainable": min(len(true), length) / length,
           "evidence": min(len(evidence), length) / length, "unused": len(unused), "fp": length - found,
           "swapped": (found + min(len(unused), length - found)) / length,
           **{f"P {n}": h for n, h in hits.items()}}
    if pairs_ss is not None:
        stacked = {(p + a, q + b) for p, q in pairs_ss for a in range(-2, 3) for b in range(-2, 3)}
        kinds = {"pair": true & pairs_ss, "helix": (true & stacked) - pairs_ss, "tertiary": true - stacked}
        for kind, members in kinds.items():
            row[f"n {kind}"] = len(members)
            for name in ("model", "plm"):
                row[f"{name} {kind}"] = len(tops[name] & members)
    return row


def table(rows: list[dict]) -> list[str]:
    mean = lambda k: np.mean([r[k] for r in rows])  # noqa: E731
    out = ["| family | L | true long | attainable | model, alignment | model, query alone | plm | APC (precision) "
           "| CoCoNet | bpp | evidence ceiling | unused coevolution hits | model's false positives "
           "| model with them swapped in |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows + [{"id": "mean", **{k: mean(k) for k in rows[0] if k != "id"}}]:
        out.append(f"| {r['id']} | {r['L']:.0f} | {r['true']:.0f} | {r['attainable']:.3f} | {r['P model']:.3f} | "
                   f"{r['P alone']:.3f} | {r['P plm']:.3f} | {r['P APC (precision)']:.3f} | "
                   f"{r.get('P CoCoNet', float('nan')):.3f} | {r['P bpp']:.3f} | {r['evidence']:.3f} | "
                   f"{r['unused']:.0f} | {r['fp']:.0f} | {r['swapped']:.3f} |")
    return out


def kinds(rows: list[dict]) -> list[str]:
    split = [r for r in rows if "n pair" in r]
    names = {"pair": "base pairs of the dot-bracket", "helix": "their helix neighbours (within 2 of a pair "
             "on both strands)", "tertiary": "the rest (tertiary)"}
    n = {k: sum(r[f"n {k}"] for r in split) for k in names}
    found = {(m, k): sum(r[f"{m} {k}"] for r in split) for m in ("model", "plm") for k in names}
    return [f"Contacts by kind ({len(split)} of {len(rows)} families whose secstruct sequence is the query; "
            f"{sum(n.values())} true long-range contacts), found in the top-L of the model / of plm:", "",
            "| kind | contacts | model | plm |", "|---|---:|---:|---:|",
            *(f"| {names[k]} | {n[k]} | {found['model', k]} ({found['model', k] / max(n[k], 1):.0%}) | "
              f"{found['plm', k]} ({found['plm', k] / max(n[k], 1):.0%}) |" for k in names)]


def verdict(rows: list[dict]) -> str:
    """The means in one sentence: how far the model is from each ceiling."""
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("attainable", "P model", "evidence", "swapped")}
    return (f"The model reaches {mean['P model']:.3f} of an attainable {mean['attainable']:.3f}. A perfect chooser "
            f"among every signal's own top-L would reach {mean['evidence']:.3f}; the model with its false positives "
            f"swapped for the coevolution hits it leaves out, {mean['swapped']:.3f}: that much of the gap is "
            "evidence the alignment holds (an upper bound: which of those hits are true is known only here). "
            "The rest no signal ranks high.")


def family_bootstrap(rows: list[dict], goal: float = 0.75, gain: float = 0.10, draws: int = 10000,
                     seed: int = 0) -> dict:
    """Means over families drawn again with replacement (``draws`` times, one draw shared by
    both modes, so the gain is paired): each mean's 95 % interval, and the share of draws in
    which the model with alignments reaches ``goal`` and its gain over the query alone ``gain``."""
    model = np.array([r["P model"] for r in rows])
    alone = np.array([r["P alone"] for r in rows])
    picks = np.random.default_rng(seed).integers(0, len(rows), size=(draws, len(rows)))
    means = {"alignment": model[picks].mean(1), "alone": alone[picks].mean(1),
             "gain": (model - alone)[picks].mean(1)}
    return {"intervals": {k: tuple(np.percentile(v, [2.5, 97.5]).tolist()) for k, v in means.items()},
            "reaches goal": float((means["alignment"] >= goal).mean()),
            "reaches gain": float((means["gain"] >= gain - 1e-12).mean()), "goal": goal, "gain": gain,
            "draws": draws, "families": len(rows)}


def bootstrap_text(boot: dict) -> str:
    (a0, a1), (s0, s1), (g0, g1) = (boot["intervals"][k] for k in ("alignment", "alone", "gain"))
    return (f"Which families happen to be in the test set moves these means a lot: drawing the {boot['families']} "
            f"families again with replacement ({boot['draws']:,} draws), the model's mean lies in [{a0:.3f}, {a1:.3f}] "
            f"with the alignment and [{s0:.3f}, {s1:.3f}] alone (95 %), and the gain in [{g0:.3f}, {g1:.3f}] (paired). "
            f"The mean with alignments reaches {boot['goal']:.2f} in {boot['reaches goal']:.0%} of the draws, the gain "
            f"{boot['gain']:.2f} in {boot['reaches gain']:.0%}.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=PACKAGE_MODEL / MODEL_FILE)
    args = benchmark_arguments(parser, REPO / "results" / "HEADROOM.md").parse_args()
    if not (args.data / "coconet" / "manifest.csv").is_file() or not args.store.exists():
        print(f"needs the coconet data under {args.data} and a store of its test families at {args.store} "
              "(build one: see this script's docstring)", file=sys.stderr)
        return 2
    evaluation = load_evaluation_set(str(args.store), "test", "cov+ss")
    labels = evaluation.labels
    manifest = {r["id"]: r for r in csv.DictReader(open(args.data / "coconet" / "manifest.csv"))}
    predictor = Predictor(args.model, device="cpu")
    msas = {i: read_msa(args.data / "coconet" / manifest[i]["msa"]) for i in labels}
    with shared_features(args.work / "feature_cache"):  # the benchmark scripts' cache: plm fitted once
        model = {p.id: p.probabilities for p in predictor.predict(list(msas.items()))}
        alone = {p.id: p.probabilities for p in predictor.predict([(i, lab.sequence) for i, lab in labels.items()])}
        plms = {i: features.make_features(m, predictor.spec)["plm"] for i, m in msas.items()}
    base = baseline_maps(evaluation)
    lengths = {i: lab.contacts.shape[0] for i, lab in labels.items()}
    peers = peer_maps(args.data / "coconet" / "peer_predictions", lengths)
    rows = []
    for i, lab in labels.items():
        maps = {"model": model[i], "alone": alone[i], "plm": plms[i], "APC (precision)": base["APC (precision)"][i],
                "bpp": base["Thermodynamics (bpp)"][i]}
        if i in peers.get("CoCoNet (7x7)", {}):
            maps["CoCoNet"] = peers["CoCoNet (7x7)"][i]
        rows.append(family(i, lab, maps, secondary_structure(args.data / "coconet" / manifest[i]["secstruct"],
                                                             lab.sequence)))
        print(rows[-1], file=sys.stderr, flush=True)
    text = ["# Headroom: what the alignment holds that the shipped model leaves out", "",
            "Written by `python scripts/alignment_headroom.py` (what each column is: the "
            "script's docstring). Long-range top-L on the 14 coconet test families, each given its Rfam "
            "alignment; a diagnosis, never a choice.", "", *table(rows), "", verdict(rows), "",
            bootstrap_text(family_bootstrap(rows)), "", *kinds(rows), ""]
    args.out.write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
