#!/usr/bin/env python
"""Is another source of base-pair probabilities a better ``bpp`` channel?  Long-range top-L
precision of the raw probabilities, no learning, on SPOT-RNA-2D's TR and VL chains (the
training and validation side; never the test chains), for ViennaRNA's energy parameter sets
(Turner 2004, the default; Langdon 2018, trained on Eterna data; Andronescu 2007; Turner
1999), their mean, and — when the ``linearpartition`` module (``linearpartition-unofficial``,
non-commercial licence, so never a dependency) is importable — LinearPartition with the
EternaFold and the Vienna parameters.

    python scripts/bpp_sources.py [--data ../shared/data] [--max-length 300]
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tprna.metrics import top_k_precision  # noqa: E402
from tprna.structure import read_label_matrix  # noqa: E402

PARAMETER_SETS = ("Turner2004", "Langdon2018", "Andronescu2007", "Turner1999")


def vienna(sequence: str, parameters: str) -> np.ndarray:
    import RNA

    getattr(RNA, f"params_load_RNA_{parameters}")()
    fc = RNA.fold_compound(sequence)
    _, mfe = fc.mfe()
    fc.exp_params_rescale(mfe)
    fc.pf()
    upper = np.array(fc.bpp())[1:, 1:]
    return upper + upper.T


def linear_partition(sequence: str, mode: str) -> np.ndarray:
    import linearpartition

    found = linearpartition.partition(re.sub("[^ACGU]", "A", sequence), mode=mode)["bpp"]
    m = np.zeros((len(sequence), len(sequence)))
    m[found["i"], found["j"]] = found["prob"]
    return m + m.T


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--max-length", type=int, default=300)
    args = parser.parse_args()
    root = args.data / "spot_rna_2d"
    rows = [r for r in csv.DictReader(open(root / "manifest.csv"))
            if r["split"] in ("TR", "VL") and r["label"] and int(r["length"]) <= args.max_length]
    sources = {f"ViennaRNA {p}": (lambda s, p=p: vienna(s, p)) for p in PARAMETER_SETS}
    from importlib.util import find_spec

    if find_spec("linearpartition") is not None:
        sources["LinearPartition EternaFold"] = lambda s: linear_partition(s, "eterna")
        sources["LinearPartition Vienna"] = lambda s: linear_partition(s, "vienna")
    scores: dict[str, list[float]] = {name: [] for name in [*sources, "mean of the ViennaRNA sets"]}
    seconds = dict.fromkeys(sources, 0.0)
    for r in rows:
        sequence = r["sequence"].upper().replace("T", "U")
        contacts, observed = read_label_matrix(root / r["label"])
        maps = {}
        for name, source in sources.items():
            start = time.perf_counter()
            maps[name] = source(sequence)
            seconds[name] += time.perf_counter() - start
        maps["mean of the ViennaRNA sets"] = np.mean([maps[f"ViennaRNA {p}"] for p in PARAMETER_SETS], axis=0)
        for name, m in maps.items():
            scores[name].append(top_k_precision(m, contacts, observed, "long", len(sequence)))
    import RNA

    RNA.params_load_RNA_Turner2004()  # back to the default
    print(f"{len(rows)} SPOT-RNA-2D TR/VL chains (L ≤ {args.max_length}); long-range top-L of the raw probabilities")
    print("| source | long top-L | seconds |\n|---|---:|---:|")
    for name, values in scores.items():
        print(f"| {name} | {np.mean(values):.3f} | {seconds.get(name, 0.0):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
