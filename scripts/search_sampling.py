#!/usr/bin/env python
"""An experiment, not part of the release: does the model read searched alignments better when
it also trains on them?  The release's coupling-stage recipe (``cov+ss+profile+dca``, depth and
homolog sampling, the same 14 held-out coconet train families, clusters and screen) is
trained again, two seeds, with every training family seen twice: with its Rfam alignment and
with its query's nhmmer-searched alignment (:mod:`tprna.search`, the defaults, in the database
of ``scripts/search_benchmark.py``).  Both it and the stage's own runs are then scored on the
held-out families (Rfam alignment, searched alignment, query alone) and on the stage's 54
single sequences (long top-L).

Needs what ``scripts/train_release.py`` left: ``store/release.zarr``, ``results/release/work``,
the protein checkpoint and the coupling-stage runs, and ``scripts/search_benchmark.py``'s
database.  About 30 min on 2 cores (two runs side by side).

    python scripts/search_sampling.py [--data ../shared/data] [--runs runs/search_sampling]
        [--out results/SEARCH_SAMPLING.md]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tprna.evaluate import load_evaluation_set, predict_with_checkpoint, score_maps  # noqa: E402
from tprna.msa import read_msa  # noqa: E402
from tprna.search import HomologSearch  # noqa: E402
from tprna.serve import Predictor  # noqa: E402
from search_benchmark import family_labels, long_top_l, searched  # noqa: E402  (scripts/)
from train_release import finished, held_out_clusters, leakage_plan, long_range, slug  # noqa: E402

RECIPE = "cov+ss+profile+dca/depth+homolog"
EPOCHS = 14
RELEASE = REPO / "results" / "release"


def prepare(runs: Path, database: Path) -> tuple[Path, Path]:
    """The searched alignments of the training families (split ``train_searched``) and the
    ids to leave out: the stage's, and the held-out families' searched twins."""
    rows = [r for r in csv.DictReader(open(RELEASE / "work" / "coconet_manifest.csv")) if r["split"] == "train"]
    found = HomologSearch(database, cpus=0).search_many({r["id"]: read_msa(r["msa"]).query for r in rows})
    (runs / "msa").mkdir(parents=True, exist_ok=True)
    manifest = runs / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "msa", "structure", "chain", "split"])
        for r in rows:
            path = runs / "msa" / f"{r['id']}_nhmmer.afa"
            path.write_text(found[r["id"]].text)
            out.writerow([f"{r['id']}_nhmmer", str(path.resolve()), r["structure"], r["chain"], "train_searched"])
    held = (RELEASE / "work" / "held_out_families.txt").read_text().split()
    exclude = runs / "exclude.txt"
    exclude.write_text("\n".join(held + [f"{h}_nhmmer" for h in held if h in found]) + "\n")
    return manifest, exclude


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "search_sampling")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "SEARCH_SAMPLING.md")
    args = parser.parse_args()
    database = RELEASE / "search" / "coconet_sequences.fa"
    store = REPO / "store" / "search_sampling.zarr"  # a copy: the release store stays as it is
    tprna = [sys.executable, "-m", "tprna"]
    jobs = []
    if not all(finished(args.runs / f"seed{s}", EPOCHS) for s in (0, 1)):
        manifest, exclude = prepare(args.runs, database)
        if not store.exists():
            shutil.copytree(REPO / "store" / "release.zarr", store)
        subprocess.run(tprna + ["store", "build", str(store), "--manifest", str(manifest), "--features",
                                "cov+ss+profile+dca", "--jobs", "2", "-q"], check=True)
        env = os.environ | {"OMP_NUM_THREADS": "1"}  # two runs side by side on two cores
        for seed in (0, 1):
            cmd = tprna + ["train", str(store), "--out", str(args.runs / f"seed{seed}"),
                           "--split", "train,spot_tr,train_searched", "--features", "cov+ss+profile+dca",
                           "--model", "mffnet36", "--loss", "tploss", "--epochs", str(EPOCHS), "--seed", str(seed),
                           "--lr-milestones", str(int(EPOCHS * 0.7)),
                           "--init-from", str(REPO / "runs" / "release" / "protein" / "last.ckpt"),
                           "--depth-sampling", "0.5", "--homolog-sampling", "0.5",
                           "--homolog-exclude", str(RELEASE / "work" / "held_out_chains_clusters_and_families.fasta"),
                           "--exclude", str(exclude), "--crop", "128", "--workers", "0", "--resume"]
            jobs.append(subprocess.Popen(cmd, env=env, stdout=open(args.runs / f"seed{seed}.log", "w"),
                                         stderr=subprocess.STDOUT))
        if any(job.wait() for job in jobs):
            raise SystemExit(f"a training run failed: see {args.runs}/seed*.log")

    families = json.loads((RELEASE / "choice.json").read_text())["coupling_stage"]["scored"]
    plan = leakage_plan(args.data, drop_families=False)
    chains = plan["spot_vl"] + held_out_clusters(args.data, plan)["scored"]
    single = load_evaluation_set(str(REPO / "store" / "release.zarr"), None, "cov+ss+profile+dca", ids=chains)
    labels, msas = family_labels(args.data, REPO / "store" / "release.zarr", families)
    queries = {i: msas[i].query for i in families}
    found = searched(HomologSearch(database, cpus=0), queries)
    runs = {"coupling stage (Rfam alignments only)":
            [REPO / "runs" / "release" / "held_out_families" / slug(RECIPE, s) / "last.ckpt" for s in (0, 1)],
            "search sampling (Rfam and searched alignments)": [args.runs / f"seed{s}" / "last.ckpt" for s in (0, 1)]}
    lines = ["# Training on searched alignments too (an experiment, not the shipped recipe)", "",
             f"Written by `scripts/search_sampling.py`. The release's coupling-stage recipe `{RECIPE}` trained "
             f"without the same {len(families)} coconet train families (and held-out clusters), two seeds, once on "
             "the training families' Rfam alignments only (the stage's own runs) and once with every training "
             "family seen twice: with its Rfam alignment and with its query's alignment searched by "
             "`tprna.search` (defaults) in `scripts/search_benchmark.py`'s database. Long top-L on the held-out "
             f"families given each input, and on the stage's {len(chains)} single sequences (SPOT-RNA-2D VL and "
             "held-out TR chains); mean (seed 0 / seed 1).", "",
             "| runs | Rfam alignment | searched alignment | query alone | single sequences |", "|---|---|---|---|---|"]
    for name, checkpoints in runs.items():
        figures: dict[str, list[float]] = {"rfam": [], "searched": [], "alone": [], "single": []}
        for checkpoint in checkpoints:
            onnx = checkpoint.parent / "model.onnx"
            if not onnx.is_file():
                subprocess.run(tprna + ["export", "onnx", str(checkpoint), "--out", str(onnx)], check=True,
                               capture_output=True)
            predictor = Predictor(onnx, device="cpu")
            figures["rfam"].append(long_top_l(predictor, msas, labels))
            figures["searched"].append(long_top_l(predictor, found, labels))
            figures["alone"].append(long_top_l(predictor, queries, labels))
            maps = predict_with_checkpoint(checkpoint, single, device="cpu")
            figures["single"].append(long_range(score_maps(maps, single.labels)["summary"])["long|L"])
        cells = [f"{np.mean(v):.3f} ({' / '.join(f'{x:.3f}' for x in v)})" for v in figures.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    report = "\n".join(lines) + "\n"
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
