#!/usr/bin/env python
"""Train, choose, export and benchmark the model that ships inside tpRNA.

From ``../shared/data`` (or ``--data``), on this machine's CPU, resumably:

1. **Leakage rules, enforced and printed.**  The benchmark chains are the 14 coconet test
   queries and SPOT-RNA-2D's TS1–TS3 chains.  SPOT-RNA-2D TR/VL chains ≥ 70 % identical
   (:mod:`tprna.redundancy`) to any benchmark chain are dropped from training; the coconet
   train families stay (their alignments are the only covariance training data), so the
   TS chains ≥ 70 % identical to a coconet train query are scored apart, never in a
   headline figure (``--drop-families`` instead drops those families and scores every TS
   chain).
2. **Stores.**  ``store/release.zarr``: coconet families (split ``train``/``test``, with
   alignments) and the kept SPOT-RNA-2D chains as single-sequence entries (``spot_tr``,
   ``spot_vl``), under every candidate feature set.
3. **Candidates.**  Protein pretraining (MFFnet36 on the shared protein chains), then one
   MFFnet36 + tpLoss per candidate feature set and seed, fine-tuned on ``train,spot_tr``.
   SPOT-RNA-2D's validation chains (``spot_vl``) are held out of every candidate: they
   choose the shipped model (long-range top-L precision, single-sequence mode), never the
   test chains.  With several seeds of the winning set, their average (one ONNX graph)
   competes too.
4. **Ship.**  The winner is exported to ONNX (float32, parity-checked), copied into
   ``tprna/serve/model/`` with its sha256 and the validation figures, and
   ``scripts/release_benchmarks.py`` writes the model card and ``results/RELEASE.md``.

    python scripts/train_release.py [--epochs 14] [--seeds 0] [--features cov+ss,cov+ss+profile]

Budget (2-core CPU): stores ~10 min once, protein pretraining ~1 min, each candidate
~35 min at 14 epochs when two train side by side (``--parallel 2``, the default).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TPRNA = [sys.executable, "-m", "tprna"]
SELECTION_KEY = "long|L"  # long-range top-L precision on the validation chains


def log(message: str) -> None:
    print(f"[release {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(cmd: list, logfile: Path, env: dict | None = None) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    with open(logfile, "a") as fh:
        subprocess.run([str(c) for c in cmd], check=True, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                       env=env)


def start(cmd: list, logfile: Path, env: dict | None = None) -> subprocess.Popen:
    log("$ " + " ".join(str(c) for c in cmd) + " &")
    fh = open(logfile, "a")
    return subprocess.Popen([str(c) for c in cmd], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)


# --------------------------------------------------------------------------- data and leakage


def read_fasta_sequence(path: Path) -> str:
    return "".join(line.strip() for line in path.read_text().splitlines() if not line.startswith(">"))


def coconet_rows(data: Path) -> list[dict]:
    rows = list(csv.DictReader(open(data / "coconet/manifest.csv")))
    for row in rows:
        row["query"] = read_fasta_sequence(data / "coconet" / row["sequence"])
    return rows


def spot_rows(data: Path) -> list[dict]:
    return [r for r in csv.DictReader(open(data / "spot_rna_2d/manifest.csv")) if r["label"]]


def leakage_plan(data: Path, drop_families: bool) -> dict:
    """Which RNAs train, which are scored, and why each was left out: the rule is that no
    scored chain is ≥ 70 % identical to any RNA the scored model trained on."""
    from tprna.redundancy import drop_similar

    coconet, spot = coconet_rows(data), spot_rows(data)
    test_queries = {r["id"]: r["query"] for r in coconet if r["split"] == "test"}
    ts = {r["id"]: r["sequence"] for r in spot if r["split"].startswith("TS")}
    families = {r["id"]: r["query"] for r in coconet if r["split"] == "train"}
    if drop_families:
        kept_families, dropped_families = drop_similar(families, ts, 0.7)
    else:
        kept_families, dropped_families = list(families), {}
    # TS chains too close to a family that trains are scored apart, never in a headline
    _, ts_overlap = drop_similar(ts, {f: families[f] for f in kept_families}, 0.7)
    spot_train = {r["id"]: r["sequence"] for r in spot if r["split"] in ("TR", "VL")}
    kept_spot, dropped_spot = drop_similar(spot_train, test_queries | ts, 0.7)
    split_of = {r["id"]: r["split"] for r in spot}
    plan = {
        "rule": "no scored chain is >= 70 % identical (tprna.redundancy) to any RNA its model trained on",
        "coconet_train_families": sorted(kept_families),
        "coconet_families_dropped": {k: list(v) for k, v in dropped_families.items()},
        "spot_tr": sorted(i for i in kept_spot if split_of[i] == "TR"),
        "spot_vl": sorted(i for i in kept_spot if split_of[i] == "VL"),
        "spot_dropped": {k: list(v) for k, v in dropped_spot.items()},
        "ts_overlapping_training": {k: list(v) for k, v in ts_overlap.items()},
        "coconet_test": sorted(test_queries),
    }
    log(f"leakage: {len(kept_families)} coconet train families kept, {len(dropped_families)} dropped; "
        f"SPOT-RNA-2D TR/VL {len(plan['spot_tr'])}/{len(plan['spot_vl'])} kept, {len(dropped_spot)} dropped "
        f"(≥ 70 % to a benchmark chain); {len(ts_overlap)} of {len(ts)} TS chains ≥ 70 % to a training "
        "family: scored apart")
    return plan


def write_manifests(data: Path, work: Path, plan: dict) -> tuple[Path, Path]:
    """Two manifests: the coconet families (alignments), and the kept SPOT-RNA-2D chains as
    single-sequence FASTA files with the source's label matrices."""
    fam = work / "coconet_manifest.csv"
    keep = set(plan["coconet_train_families"]) | set(plan["coconet_test"])
    with open(fam, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "msa", "structure", "chain", "split"])
        for r in coconet_rows(data):
            if r["id"] in keep:
                writer.writerow([r["id"], data / "coconet" / r["msa"], data / "coconet" / r["structure"],
                                 r["chain"], r["split"]])
    spot = work / "spot_manifest.csv"
    (work / "msa").mkdir(parents=True, exist_ok=True)
    by_id = {r["id"]: r for r in spot_rows(data)}
    with open(spot, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "msa", "structure", "chain", "label", "split"])
        for split in ("spot_tr", "spot_vl"):
            for entry_id in plan[split]:
                fasta = work / "msa" / f"{entry_id}.fasta"
                fasta.write_text(f">{entry_id}\n{by_id[entry_id]['sequence']}\n")
                writer.writerow([entry_id, fasta, "", "", data / "spot_rna_2d" / by_id[entry_id]["label"], split])
    return fam, spot


# --------------------------------------------------------------------------- training


def slug(features: str, seed: int) -> str:
    return f"mffnet36_{features.replace('+', '_')}_seed{seed}"


def validation_score(results: Path, name: str) -> float:
    saved = json.loads(results.read_text())
    return float(saved[name]["summary"]["all"]["precision"][SELECTION_KEY])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "results" / "release")
    parser.add_argument("--store", type=Path, default=REPO / "store" / "release.zarr")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "release")
    parser.add_argument("--features", default="cov+ss,cov+ss+profile", help="Candidate feature sets")
    parser.add_argument("--seeds", default="0", help="Seeds per candidate")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--parallel", type=int, default=2, help="Candidates trained side by side")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--drop-families", action="store_true",
                        help="Drop coconet train families ≥ 70 %% identical to a TS chain instead of "
                             "scoring those chains apart")
    parser.add_argument("--no-ship", action="store_true", help="Train and validate only")
    args = parser.parse_args()
    if not (args.data / "coconet/manifest.csv").is_file():
        print(f"no coconet data under {args.data}; pass --data DIR", file=sys.stderr)
        return 2
    t0 = time.time()
    work = args.work / "work"
    work.mkdir(parents=True, exist_ok=True)
    logfile = args.work / "release.log"
    feature_sets = [f.strip() for f in args.features.split(",") if f.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]

    plan = leakage_plan(args.data, args.drop_families)
    (args.work / "leakage.json").write_text(json.dumps(plan, indent=1) + "\n")
    families, spot = write_manifests(args.data, work, plan)
    for features in feature_sets:
        for manifest in (families, spot):
            run(TPRNA + ["store", "build", args.store, "--manifest", manifest, "--features", features,
                         "--jobs", args.jobs, "-q"], logfile)
    protein = args.store.parent / "protein.zarr"
    run(TPRNA + ["store", "build", protein, "--manifest", args.data / "protein/manifest.csv",
                 "--molecule", "protein", "--jobs", args.jobs, "-q"], logfile)

    common = ["--crop", args.crop, "--workers", 0, "--resume"]
    pre = args.runs / "protein"
    run(TPRNA + ["train", protein, "--out", pre, "--model", "mffnet36", "--epochs", args.pretrain_epochs,
                 "--lr-milestones", int(args.pretrain_epochs * 0.7)] + common, logfile)

    # candidates, trained side by side on one thread each (2 cores: no oversubscription)
    env = os.environ | {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // args.parallel))}
    jobs = [(f, s) for f in feature_sets for s in seeds]
    running: list[tuple[subprocess.Popen, str]] = []
    for features, seed in jobs:
        out = args.runs / slug(features, seed)
        cmd = TPRNA + ["train", args.store, "--out", out, "--split", "train,spot_tr", "--features", features,
                       "--model", "mffnet36", "--loss", "tploss", "--epochs", args.epochs, "--seed", seed,
                       "--lr-milestones", int(args.epochs * 0.7), "--init-from", pre / "last.ckpt"] + common
        running.append((start(cmd, args.work / f"{slug(features, seed)}.log", env), slug(features, seed)))
        while len([p for p, _ in running if p.poll() is None]) >= args.parallel:
            time.sleep(10)
    for proc, name in running:
        if proc.wait() != 0:
            raise SystemExit(f"training {name} failed: see {args.work / (name + '.log')}")

    # validation (chooses) and coconet test (reported, never chooses)
    scores: dict[str, float] = {}
    for features, seed in jobs:
        name = slug(features, seed)
        for split in ("spot_vl", "test"):
            folder = args.work / "candidates" / f"{name}_{split}"
            if not (folder / "results.json").exists():
                run(TPRNA + ["evaluate", args.runs / name / "last.ckpt", args.store, "--split", split,
                             "--features", features, "--out", folder, "--name", name, "--no-baselines"], logfile)
        scores[name] = validation_score(args.work / "candidates" / f"{name}_spot_vl" / "results.json", name)
        log(f"{name}: validation (SPOT-RNA-2D VL, single sequence) long top-L {scores[name]:.3f}")
    winner = max(scores, key=scores.get)
    log(f"winner by validation: {winner} ({scores[winner]:.3f})")
    choice = {"selection": f"{SELECTION_KEY} precision on spot_vl (single-sequence)", "scores": scores,
              "winner": winner, "epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs,
              "crop": args.crop, "seeds": seeds, "feature_sets": feature_sets,
              "train_split": "train,spot_tr", "hours": round((time.time() - t0) / 3600, 2)}
    (args.work / "choice.json").write_text(json.dumps(choice, indent=1) + "\n")
    if args.no_ship:
        return 0

    onnx = args.work / "release.onnx"
    run(TPRNA + ["export", "onnx", args.runs / winner / "last.ckpt", "-o", onnx], logfile)
    run([sys.executable, REPO / "scripts" / "release_benchmarks.py", "--ship", "--model", onnx, "--data", args.data,
         "--work", args.work], logfile)
    log(f"done in {(time.time() - t0) / 3600:.2f} h: tprna/serve/model/, results/RELEASE.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
