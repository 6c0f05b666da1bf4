#!/usr/bin/env python
"""Does a network read contacts that only covariation reveals?  Planted helices, by checkpoint.

The release's sim stage (``scripts/train_release.py``) pretrains on simulated families whose
alignments carry 1–3 planted long-range helices each (:func:`tprna.simulate.random_tertiary_stems`:
pseudoknots and kissing loops, which coevolve like stems but which no nested-structure predictor
finds).  Their label files name those pairs (``# tertiary pairs`` header).  This scores, on the
dataset's test split (families no run trained on), the fraction of planted pairs each model
ranks within its long-range top-L, L/5 and L/10, beside the same for the learning-free baselines, and each
model's long-range top-L precision on all contacts.

    python scripts/planted_helices.py NAME=run/last.ckpt [NAME=…] [--store store/simulated.zarr]
        [--dataset results/release/work/simulated]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from tprna.metrics import top_pairs

REPO = Path(__file__).resolve().parents[1]
TOPS = ("L", "L/5", "L/10")  # a family of L nt has ~L/5 long-range pairs planted or paired: top-L is lenient


def planted_pairs(label_file: Path) -> list[tuple[int, int]]:
    """The planted helices' pairs (0-based) a simulated family's contact file names; [] if none."""
    with open(label_file) as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            m = re.match(r"# tertiary pairs \(not in the structure\) (.*)", line)
            if m:
                return [tuple(int(x) - 1 for x in pair.split("-")) for pair in m.group(1).split()]
    return []


def found(score: np.ndarray, pairs: list[tuple[int, int]], fraction: int = 1) -> float:
    """The fraction of ``pairs`` among the L/``fraction`` highest-scoring long-range pairs of
    ``score`` (L×L)."""
    i, j = top_pairs(score, None, "long", max(1, score.shape[0] // fraction))
    ranked = set(zip(i.tolist(), j.tolist()))
    return float(np.mean([(min(a, b), max(a, b)) in ranked for a, b in pairs]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="NAME=checkpoint")
    parser.add_argument("--store", type=Path, default=REPO / "store" / "simulated.zarr")
    parser.add_argument("--dataset", type=Path, default=REPO / "results" / "release" / "work" / "simulated")
    parser.add_argument("--features", default="cov+ss+profile+plm")
    args = parser.parse_args()
    from tprna.evaluate import baseline_maps, load_evaluation_set, predict_with_checkpoint, score_maps

    if not (args.store / "zarr.json").is_file():
        print(f"no simulated store at {args.store}: run scripts/train_release.py (its sim stage builds it)",
              file=sys.stderr)
        return 2
    evaluation = load_evaluation_set(str(args.store), "test", args.features)
    planted = {i: planted_pairs(args.dataset / "labels" / f"{i}.contacts") for i in evaluation.labels}
    planted = {i: p for i, p in planted.items() if p}
    maps = {name: predict_with_checkpoint(path, evaluation, device="cpu")
            for name, _, path in (m.partition("=") for m in args.models)}
    maps |= baseline_maps(evaluation)
    print(f"{len(planted)} simulated test families with planted helices ({sum(map(len, planted.values()))} pairs), "
          f"`{args.store}`\n")
    print("| model | " + " | ".join(f"planted pairs in long top-{k}" for k in TOPS)
          + " | long top-L, all contacts |\n|---|" + "---:|" * (len(TOPS) + 1))
    for name, by_id in maps.items():
        shares = [np.mean([found(by_id[i], p, int(k.partition("/")[2] or 1)) for i, p in planted.items()])
                  for k in TOPS]
        precision = score_maps(by_id, evaluation.labels)["summary"]["all"]["precision"][("long", "L")]
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in shares) + f" | {precision:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
