#!/usr/bin/env python
"""What the alignment adds: exported models side by side on the coconet test families (with
their alignments and as the query alone, per Neff subset) and on the clean RNA-Puzzles
targets (both modes), scored by tpRNA's own metrics through the serving path.  Writes
``results/ALIGNMENT.md``.

    python scripts/alignment_report.py NAME=model.onnx [NAME=model.onnx …]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from release_benchmarks import (OURS, benchmark_arguments, coconet_benchmark,  # noqa: E402
                                puzzles_benchmark, training_sequences)
from tprna.report import markdown_table  # noqa: E402
from tprna.serve import Predictor  # noqa: E402

SUBSETS = ("all", "neff<1", "1<=neff<10", "neff>=10")


def renamed(results: dict, old: str, new: str) -> dict:
    return {m.replace(old, new): r for m, r in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="NAME=path.onnx")
    args = benchmark_arguments(parser, REPO / "results" / "ALIGNMENT.md").parse_args()
    leakage = json.loads((args.work / "leakage.json").read_text())
    trained = training_sequences(args.data, leakage)
    coconet: dict = {}
    puzzles: dict = {}
    for spec in args.models:
        name, _, path = spec.partition("=")
        predictor = Predictor(path, device="cpu")
        alignment, single = coconet_benchmark(args.data, predictor, args.store)
        if not coconet:  # the peers and baselines once
            coconet.update({m: r for m, r in alignment.items() if m != OURS})
        coconet.update(renamed({k: v for k, v in single.items() if k.startswith(OURS)}, OURS, name))
        found, info = puzzles_benchmark(args.data, predictor, trained)
        puzzles.update(renamed(found, OURS, name))
    lines = ["# What the alignment adds", "",
             "Each model with its family's alignment and with the query alone (an MSA of one), on the 14 "
             "coconet test families by Neff subset, and on the RNA-Puzzles targets < 70 % identical to every "
             f"training RNA ({', '.join(info['clean'])}). Written by `scripts/alignment_report.py`.", ""]
    for subset in SUBSETS:
        lines += [f"## coconet test, {subset}", "", markdown_table(coconet, subset)]
    lines += ["## RNA-Puzzles, clean targets", "", markdown_table(puzzles)]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
