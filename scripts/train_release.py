#!/usr/bin/env python
"""Train, choose, export and benchmark the model that ships inside tpRNA.

From ``../shared/data`` (or ``--data``), on this machine's CPU, resumably:

1. **Leakage rules, enforced and printed.**  The benchmark chains are the 14 coconet test
   queries and SPOT-RNA-2D's TS1–TS3 chains.  SPOT-RNA-2D TR/VL chains ≥ 70 % identical
   (:mod:`tprna.redundancy`) to any benchmark chain are dropped from training; the coconet
   train families stay (their alignments are the only covariance training data), so the
   TS chains ≥ 70 % identical to a coconet train query are scored apart, never in a
   headline figure (``--drop-families`` instead drops those families and scores every TS
   chain).  Recipes with homolog sampling train homologs of the families alone, so every
   validation and benchmark chain (with the RNA-Puzzles targets) is written to
   ``held_out_chains.fasta`` and homologs ≥ 70 % identical to one of them never train.
2. **Stores.**  ``store/release.zarr``: coconet families (split ``train``/``test``, with
   alignments) and the kept SPOT-RNA-2D chains as single-sequence entries (``spot_tr``,
   ``spot_vl``), under every candidate feature set.
3. **Candidates.**  Protein pretraining (MFFnet36 on the shared protein chains), then one
   MFFnet36 + tpLoss per candidate feature set and seed, fine-tuned on ``train,spot_tr``.
   SPOT-RNA-2D's validation chains (``spot_vl``) are held out of every candidate: they
   choose the shipped model (long-range top-L precision, single-sequence mode), never the
   test chains.  With several seeds of a recipe, their average (one ONNX graph) competes too.
   VL is 28 chains of 33–64 nt and no tRNA, so the recipe is chosen first on more
   (:func:`held_out_clusters`), by runs trained without 37 TR chains (whole 70 % clusters) and
   scored on VL plus the 26 of those < 70 % identical to every RNA that still trains: first the
   feature set (``cov+ss`` and ``cov+ss+profile``, two seeds each), then its schedule (depth
   sampling, depth + homolog sampling, against the plain recipe; two seeds each).  Those chains
   are single sequences, where an alignment channel cannot show anything, so the coupling
   stage (:func:`held_out_families`) then trains the chosen recipe without and with each
   coupling channel (``dca``, the mean-field couplings, and ``plm``, the pseudo-likelihood
   ones; two seeds each) without 14 coconet train families and scores them with those
   families' alignments: the best channel is added when it wins there and costs the single
   sequences at most 0.01.  The search stage then trains that recipe again, by the same rule and
   on the same families, with every training family also seen with its query's alignment
   searched by :mod:`tprna.search` in the training families' own sequences (the ``search``
   option, :func:`searched_manifest`): the input ``tprna infer --database`` gives a bare
   sequence.  The spot stage then does the same with the SPOT-RNA-2D TR chains that have a hit
   in that search also trained with their searched alignment (the ``spot`` option,
   :func:`spot_searched_manifest`: structures that otherwise train as single sequences); its runs
   leave out the chains whose alignments read a held-out family.  The sim stage then does the
   same with the RNA runs starting from a network pretrained on simulated families whose
   alignments carry planted long-range helices, contacts only covariation reveals (the ``sim``
   option, :func:`pretrains_simulated`).  The bppdrop stage then does the same with half the
   examples still on an alignment trained without their base-pair-probability channel each
   epoch (the ``bppdrop`` option: thermodynamics dropout, so that the network learns to find
   contacts in covariation alone).  The light stage then does the same with depth and homolog
   sampling on a quarter of the alignment examples each instead of half (the ``light`` option),
   so that more than half of them train on their whole alignment.  The long, heavy and far
   stages then do the same with ``LONG_EPOCHS`` times the epochs, with depth and homolog
   sampling on three quarters of them, and with the long-range pairs weighted ``FAR_WEIGHT``
   times in the loss.  The swa stage then does the same with the model the mean of the
   weights after each epoch from the learning-rate step on (the ``swa`` option: stochastic
   weight averaging, which evens out where each seed's last steps leave the weights), and
   also scores its runs with their own last weights (:func:`score_before_averaging`).  The neff
   stage then does the same with the network also reading the alignment's depth, one channel of
   log10(1 + Neff) (the ``neff`` feature set, :func:`stage_variant`): the coupling maps are
   standardised to one scale at every depth, so without it the network cannot tell a deep
   alignment's couplings from a few rows' noise.  The hquery stage then does the same with half
   the examples still on an alignment trained each epoch with one of the family's homologs
   standing in for the query (the ``hquery`` option: its own base-pair probabilities beside the
   alignment's couplings on the columns it covers), so that a family's couplings train beside
   many foldings instead of the query's one.  The deep stage then does the same with a larger
   network (MFFnet42: 14 MFF blocks instead of 12, a wider receptive field), pretrained on the
   protein chains like the release's MFFnet36 (the ``deep`` option, :func:`recipe_model`), and
   the shallow stage with a smaller one (MFFnet30: 10 blocks; the ``shallow`` option).  The repeat stage
   then does the same with each example on an alignment trained ``ALIGNMENT_REPEATS`` times an epoch
   (the ``repeat`` option: each copy its own crop and depth / homolog draws), the single sequences
   once, so that more of each epoch is spent where couplings can teach anything.  The window stage
   then does the same on training windows of ``WINDOW_CROP`` residues instead of ``--crop``'s (the
   ``window`` option, :func:`recipe_crop`): with 128-residue windows no pair farther apart than 127
   ever trains, and the long families' tertiary contacts are among the farthest.
   ``--noise-seeds`` trains the last stage's choice with more seeds, on the same families,
   and records what they score (:func:`seed_spread`): how far a two-seed mean, which every
   stage compares, moves with the seeds alone; it chooses nothing.  ``--check-seeds shallow:2,3``
   does the same for an option stage's variant (``<option>_seed_check`` in the record), so that a
   stage's two-seed loss or win is checked over four seeds.  The ensemble stage then asks, of the
   recipes with runs of all ``ENSEMBLE_SEEDS`` (a stage's and its seed check's), whether the
   average of the four networks beats that of two (:func:`choose_ensemble`, the same rule, on the
   same families; it needs no training): its choice is how many seeds the chosen recipe's
   candidates train, and their average ships (VL reports it).
4. **Ship.**  The winner is exported to ONNX (float32, parity-checked), copied into
   ``tprna/serve/model/`` with its sha256 and the validation figures, and
   ``scripts/release_benchmarks.py`` writes the model card and ``results/RELEASE.md``.

    python scripts/train_release.py [--epochs 14] [--candidates 'cov+ss:0,1 cov+ss/depth:0']
        [--from-record] [--stages-only] [--noise-seeds 2,3] [--check-seeds shallow:2,3]

Runs are not kept in git; ``--from-record`` keeps the figures ``choice.json`` records for the
runs no longer on disk instead of training them again, so a fresh clone trains only what the
record lacks, and the chosen recipe's release candidates (their checkpoints are what ships; with
``--candidates '<recipe>:0,1,2,3'`` they count as gone too, and the shipped model is benchmarked
again).  ``--stages-only`` stops after the stages and writes them into ``choice.json``.

Budget (2-core CPU): stores ~10 min once, protein pretraining ~1 min, each candidate
~35 min at 14 epochs when two train side by side (``--parallel 2``, the default): the
default candidates (fifteen networks from scratch, eight continued) take ~5.5 h (a ``more``
recipe ~10 min; homolog recipes spend ~3 min first screening their homologs), the stage's
four feature-set runs ~1 h more and its four schedule runs ~1 h, and scoring each
candidate on the validation and test sets ~1 min; the coupling stage's six runs ~2 h; the
searches ~1 min and the search stage's two runs ~30 min (a ``search`` candidate ~40 min); the
SPOT-RNA-2D chains' searches ~2 min, their features ~9 min once, the spot stage's runs ~50 min;
the simulated families' features ~20 min once, their pretraining ~15 min, the sim stage's runs ~45 min;
the bppdrop stage's runs ~45 min; the light stage's runs ~1 h (four runs sharing the cores); the long
stage's runs ~50 min (21 epochs, two runs); the heavy stage's runs ~35 min; the far stage's ~35 min;
the swa stage's ~40 min (and ~1 min scoring its runs before averaging); the neff stage's ~40 min;
the hquery stage's ~40 min; the deep stage's ~45 min, the shallow stage's ~35 min (and under a
minute pretraining each network on the proteins); the repeat stage's ~50 min; the window stage's ~40 min;
``--noise-seeds 2,3`` ~35 min more, ``--check-seeds`` as long as the stage's own runs; the ensemble
stage ~5 min scoring; the chosen recipe's four candidates ~1.5 h (two at a time).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the package is imported inside the functions that use it
    from tprna.search import HomologSearch, SearchResult

REPO = Path(__file__).resolve().parents[1]
TPRNA = [sys.executable, "-m", "tprna"]
SELECTION_KEY = "long|L"  # long-range top-L precision on the validation chains
# What this release measured: two seeds of the issue's recipe, the query's profile as extra
# channels, the coupling maps (apc, dca, RNAalifold) on top, the shrunk precision instead of
# the covariance, depth and homolog sampling from the first epoch, and the first two
# continued for EXTRA_EPOCHS with and without depth or homolog sampling (the same extra
# epochs, so each sampling is measured against its own control; cov+ss's with both seeds), and
# the dca and RNAalifold maps each alone beside cov+ss (two seeds), and the stage's schedule
# options on cov+ss+profile.  Not yet measured: cov+ss+apc.
DEFAULT_CANDIDATES = ("cov+ss:0,1 cov+ss+profile:0 cov+ss+profile+coupling:0 precision+ss:0 "
                      "cov+ss+alifold:0,1 cov+ss+dca:0,1 "
                      "cov+ss/depth:0 cov+ss+profile/depth:0 cov+ss/homolog:0 "
                      "cov+ss/more:0,1 cov+ss/more+depth:0,1 cov+ss/more+homolog:0,1 "
                      "cov+ss+profile/more:0 cov+ss+profile/more+depth:0 cov+ss+profile/depth+homolog:0,1")


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


def write_held_out_chains(data: Path, work: Path, plan: dict) -> Path:
    """Every chain a release model is validated or benchmarked on (SPOT-RNA-2D VL and TS1–TS3,
    the coconet test queries, the RNA-Puzzles targets), as one FASTA: homolog sampling never
    trains a homolog ≥ 70 % identical to one of them."""
    spot = {r["id"]: r["sequence"] for r in spot_rows(data)
            if r["split"].startswith("TS") or r["id"] in plan["spot_vl"]}
    tests = {r["id"]: r["query"] for r in coconet_rows(data) if r["split"] == "test"}
    root = data / "rhofold_puzzles"
    puzzles = {f"puzzles:{r['id']}": read_fasta_sequence(root / r["fasta"])
               for r in csv.DictReader(open(root / "manifest.csv"))}
    out = work / "held_out_chains.fasta"
    out.write_text("".join(f">{name}\n{seq}\n" for name, seq in (spot | tests | puzzles).items()))
    return out


def close_to(sequence: str, others: dict[str, str]) -> str | None:
    """The first of ``others`` ≥ 70 % identical to ``sequence`` in either direction of
    :func:`tprna.redundancy.sequence_identity` (the aligner's identity can differ by a few
    points with the order near the threshold), or None."""
    from tprna.redundancy import sequence_identity

    return next((name for name, other in others.items()
                 if max(sequence_identity(sequence, other), sequence_identity(other, sequence)) >= 0.7), None)


HELD_OUT_CHAINS = 35  # TR chains (whole clusters) the feature-set stage holds out and scores


def held_out_clusters(data: Path, plan: dict) -> dict:
    """Whole clusters of the kept SPOT-RNA-2D TR chains (single linkage at ≥ 70 % identity,
    :mod:`tprna.redundancy`), drawn with a fixed seed until ``HELD_OUT_CHAINS`` chains: no chain
    that still trains is ≥ 70 % identical to one held out.  SPOT-RNA-2D's VL is 28 chains of
    33–64 nt with no tRNA; these add chains of the lengths and kinds users bring (tRNAs,
    riboswitches up to ~130 nt).  Clusters link in :func:`sequence_identity`'s one direction,
    as the leakage rule does; a held-out chain is scored only when it is < 70 % identical in both
    directions to every chain that still trains and to every coconet train query."""
    import numpy as np

    from tprna.redundancy import sequence_identity

    sequence = {r["id"]: r["sequence"] for r in spot_rows(data)}
    chains = plan["spot_tr"]
    parent = {c: c for c in chains}

    def root(c: str) -> str:
        while parent[c] != c:
            c = parent[c]
        return c

    for a, first in enumerate(chains):
        for second in chains[a + 1:]:
            if root(first) != root(second) and sequence_identity(sequence[first], sequence[second]) >= 0.7:
                parent[root(first)] = root(second)
    clusters: dict[str, list[str]] = {}  # in the order of each cluster's first chain
    for c in chains:
        clusters.setdefault(root(c), []).append(c)
    groups = list(clusters.values())
    held: list[str] = []
    for k in np.random.default_rng(0).permutation(len(groups)):
        if len(held) >= HELD_OUT_CHAINS:
            break
        held += groups[k]
    # scored: the held-out chains < 70 % identical, in both directions (the aligner's identity can
    # differ by a few points with the order near the threshold), to every chain that still trains
    # and to every coconet train query (those families train every run)
    queries = {r["id"]: r["query"] for r in coconet_rows(data) if r["id"] in plan["coconet_train_families"]}
    training = {c: sequence[c] for c in chains if c not in set(held)}
    closest = {c: close_to(sequence[c], queries | training) for c in held}
    not_scored = {c: name for c, name in closest.items() if name is not None}
    scored = [c for c in held if c not in not_scored]
    log(f"feature-set stage: {len(held)} TR chains held out ({len(groups)} clusters at 70 %), {len(scored)} "
        f"scored beside the {len(plan['spot_vl'])} VL chains")
    return {"held_out": held, "scored": scored, "clusters": len(groups), "not_scored": not_scored}


HELD_OUT_FAMILIES = 14  # coconet train families the coupling stage holds out and scores with alignments


def held_out_families(data: Path, plan: dict, stage: dict) -> dict:
    """Coconet train families drawn with a fixed seed, for the coupling stage: its runs train
    without them, without the SPOT-RNA-2D TR chains ≥ 70 % identical (either direction) to
    their queries, and without the held-out clusters of ``stage`` (so the same runs are scored
    on the single sequences too).  The stage scores single sequences only, where an alignment
    channel (dca) cannot show anything; these families are scored with their alignments.  A
    held-out family is scored only when its query is < 70 % identical, both directions, to
    every family query and SPOT-RNA-2D chain that still trains."""
    import numpy as np

    query = {r["id"]: r["query"] for r in coconet_rows(data) if r["id"] in plan["coconet_train_families"]}
    families = sorted(query)
    held = sorted(families[k] for k in np.random.default_rng(1).permutation(len(families))[:HELD_OUT_FAMILIES])
    sequence = {r["id"]: r["sequence"] for r in spot_rows(data)}
    tr = [c for c in plan["spot_tr"] if c not in set(stage["held_out"])]
    held_queries = {f: query[f] for f in held}
    spot_left_out = sorted(c for c in tr if close_to(sequence[c], held_queries) is not None)
    training = {f: query[f] for f in families if f not in held} | {
        c: sequence[c] for c in tr if c not in set(spot_left_out)}
    closest = {f: close_to(query[f], training) for f in held}
    not_scored = {f: name for f, name in closest.items() if name is not None}
    scored = [f for f in held if f not in not_scored]
    log(f"coupling stage: {len(held)} coconet train families held out (with {len(spot_left_out)} SPOT-RNA-2D TR "
        f"chains close to them), {len(scored)} scored with their alignments")
    return {"held_out": held, "spot_left_out": spot_left_out, "scored": scored, "not_scored": not_scored,
            "exclude": held + spot_left_out + list(stage["held_out"]), "queries": held_queries}


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


def sequence_database(files: list[Path], path: Path) -> int:
    """Every sequence of the alignment files, gaps removed (≥ 10 nt), as one FASTA file (named
    by file stem and number): a database for :mod:`tprna.search`.  Returns the count."""
    from tprna.msa import fasta_records

    n = 0
    with open(path, "w") as out:
        for f in files:
            for _, aligned in fasta_records(f.read_text(), str(f)):
                sequence = aligned.replace("-", "").replace(".", "")
                if len(sequence) >= 10:
                    out.write(f">{f.stem}_{n}\n{sequence}\n")
                    n += 1
    return n


def searched_manifest(work: Path, families: Path) -> tuple[Path, dict, dict[str, list[str]]]:
    """The ``search`` recipes' extra training entries: each training family's query searched by
    :mod:`tprna.search` (its defaults) in the sequences of the training families' own Rfam
    alignments (never a test family's: a searched alignment may reach into related families),
    one alignment each, as a manifest of split ``SEARCHED_SPLIT`` (ids ``<family>_nhmmer``, the
    family's structure), the database's description and, per entry, the families its rows come
    from (a stage holding families out leaves out the entries that read them).  Deterministic, so
    the store keeps the same entries run after run."""
    from tprna.errors import TprnaError
    from tprna.search import HomologSearch

    rows = [r for r in csv.DictReader(open(families)) if r["split"] == "train"]
    folder = work / "searched"
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "train_family_sequences.fa"
    n = sequence_database([Path(r["msa"]) for r in rows], database)
    try:
        search = HomologSearch(database, cpus=0)
    except TprnaError as e:  # pyhmmer missing: one line, before any training starts
        raise SystemExit(f"the release's search stage: {e}") from None
    found = kept_searches(search, {r["id"]: query_letters(r["msa"]) for r in rows}, folder / "searches.json")
    manifest = work / "searched_manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "msa", "structure", "chain", "split"])
        for r in rows:
            path = folder / f"{r['id']}_nhmmer.afa"
            path.write_text(found[r["id"]].text)
            writer.writerow([f"{r['id']}_nhmmer", path, r["structure"], r["chain"], SEARCHED_SPLIT])
    sources = {f"{r['id']}_nhmmer": source_families(found[r["id"]].msa.ids) for r in rows}
    (folder / "sources.json").write_text(json.dumps(sources, indent=1) + "\n")
    hits = sorted(found[r["id"]].hits for r in rows)
    log(f"searched alignments: {len(rows)} training families' queries, {search.describe()} ({n} sequences); "
        f"hits per query: median {hits[len(hits) // 2]}, {sum(h == 0 for h in hits)} with none")
    return manifest, {"families": len(rows), "sequences": n, "search": search.describe(),
                      "median_hits": hits[len(hits) // 2], "without_hits": sum(h == 0 for h in hits)}, sources


def kept_searches(search: HomologSearch, queries: dict[str, str], kept: Path) -> dict[str, SearchResult]:
    """``search.search_many(queries)``, kept in ``kept`` under a key of everything its results
    depend on (the database's bytes, the search's settings, pyhmmer's version, the queries): an
    invocation that changes none of them reads them back instead of searching for minutes again
    (the searches are deterministic); any change searches again and replaces the record."""
    from tprna.msa import parse_msa
    from tprna.search import SearchResult, _pyhmmer
    from tprna.store.schema import file_sha256

    key = hashlib.sha256(json.dumps([[file_sha256(p) for p in search.paths], search.describe(),
                                     _pyhmmer().__version__, queries]).encode()).hexdigest()
    try:
        record = json.loads(kept.read_text()) if kept.is_file() else {}
    except ValueError:  # not a record this function wrote (it writes whole ones): search again
        record = {}
    if record.get("key") == key and set(record["found"]) == set(queries):
        log(f"{len(queries)} searches read back from {kept.name} (nothing they depend on changed)")
        return {i: SearchResult(parse_msa(text, "fasta", "rna", source=f"{i} (searched in {search.name})"),
                                text, hits) for i, (text, hits) in record["found"].items()}
    found = search.search_many(queries)
    partial = kept.with_name(kept.name + ".partial")  # written whole, then renamed: never half a record
    partial.write_text(json.dumps({"key": key, "found": {i: [r.text, r.hits] for i, r in found.items()}}))
    partial.replace(kept)
    return found


def query_letters(path: Path) -> str:
    """An alignment's query as written: a letter outside ACGU (a modified base written X) stays
    a residue of the searched alignment instead of becoming a gap column its parser drops."""
    from tprna.msa import read_msa

    msa = read_msa(path)
    return msa.query_text or msa.query


def source_families(row_ids: tuple[str, ...]) -> list[str]:
    """The families a searched alignment's rows come from: a hit is named
    ``<family>_<n>/<start>-<end>`` after :func:`sequence_database`'s ``<file stem>_<n>``; the
    first row is the query."""
    return sorted({name.partition("/")[0].rsplit("_", 1)[0] for name in row_ids[1:]})


def spot_searched_manifest(work: Path, spot: Path, database: Path) -> tuple[Path, dict]:
    """The ``spot`` recipes' extra training entries: every kept SPOT-RNA-2D TR chain searched
    like the families' queries (:mod:`tprna.search`'s defaults, the training families' sequences),
    those with a hit as split ``SPOT_SEARCHED_SPLIT`` (ids ``<chain>_nhmmer``, the chain's own
    labels): alignments for structures that otherwise train as single sequences.  Returns the
    manifest and, per entry, the families its rows come from, so that a stage holding families
    out can leave out the entries that read them."""
    from tprna.search import HomologSearch

    rows = [r for r in csv.DictReader(open(spot)) if r["split"] == "spot_tr"]
    folder = work / "searched_spot"
    folder.mkdir(parents=True, exist_ok=True)
    found = kept_searches(HomologSearch(database, cpus=0), {r["id"]: query_letters(r["msa"]) for r in rows},
                          folder / "searches.json")
    manifest = work / "spot_searched_manifest.csv"
    sources = {}
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "msa", "structure", "chain", "label", "split"])
        for r in rows:
            if found[r["id"]].hits == 0:
                continue
            path = folder / f"{r['id']}_nhmmer.afa"
            path.write_text(found[r["id"]].text)
            writer.writerow([f"{r['id']}_nhmmer", path, "", "", r["label"], SPOT_SEARCHED_SPLIT])
            sources[f"{r['id']}_nhmmer"] = source_families(found[r["id"]].msa.ids)
    (folder / "sources.json").write_text(json.dumps(sources, indent=1) + "\n")
    log(f"searched SPOT-RNA-2D chains: {len(sources)} of {len(rows)} TR chains with a hit")
    return manifest, sources


def stage_exclusions(sources: dict[str, list[str]], families: list[str], chains: list[str]) -> list[str]:
    """The searched entries a stage holding ``families`` and ``chains`` out must not train: those
    whose rows come from a held-out family, and those of a held-out chain."""
    held = set(families)
    return sorted(e for e, found in sources.items()
                  if held & set(found) or e.removesuffix("_nhmmer") in chains)


# --------------------------------------------------------------------------- training


DEPTH_SAMPLING = 0.5  # the "depth" recipes: half the alignment examples cut to a random depth per epoch
HOMOLOG_SAMPLING = 0.5  # the "homolog" recipes: half the alignment examples trained as a homolog alone
BPP_DROPOUT = 0.5  # the "bppdrop" recipes: half the examples still on an alignment trained without bpp
MODEL = "mffnet36"  # the release's network
# recipe options that train another network of the same width: "deep" two MFF blocks more, "shallow" two fewer
MODEL_OPTIONS = {"deep": "mffnet42", "shallow": "mffnet30"}
MFF_BLOCKS = {"mffnet30": 10, "mffnet36": 12, "mffnet42": 14}  # what the model card says of each
HOMOLOG_QUERY = 0.5  # the "hquery" recipes: half the examples still on an alignment trained with a homolog as query
ALIGNMENT_REPEATS = 2  # the "repeat" recipes: each example on an alignment twice an epoch, each single sequence once
CROP = 128  # the release's training windows (--crop's default): an RNA longer trains on a random one each epoch
WINDOW_CROP = 256  # the "window" recipes: training windows this long (2 of the 229 training RNAs longer; at 128, 22)
LIGHT_SAMPLING = 0.25  # the "light" recipes: depth and homolog sampling on a quarter of the examples each
HEAVY_SAMPLING = 0.75  # the "heavy" recipes: on three quarters of them each
LONG_EPOCHS = 1.5  # the "long" recipes: this many times the epochs, the learning-rate step still at 70 % of them
FAR_WEIGHT = 3.0  # the "far" recipes: a long-range pair (|i − j| ≥ 24) counts this many times in the loss
# the stages after the coupling stage, in order: each trains the previous one's choice again with
# its option (record key "<option>_stage"), on the coupling stage's held-out families
OPTION_STAGES = ("search", "spot", "sim", "bppdrop", "light", "long", "heavy", "far", "swa", "neff", "hquery",
                 "deep", "shallow", "repeat", "window")
EXTRA_EPOCHS = 3  # the "more" recipes: the base run continued at its final learning rate
# the "sim" recipes start from a network pretrained (after the protein chains) on these simulated
# families (tprna.simulate.write_example_dataset), every one with 1–3 planted long-range helices
SIMULATED = {"n_families": 300, "seed": 11, "lengths": (50, 160), "depths": (30, 500), "tertiary_stems": 3}
SIMULATED_EPOCHS = 6  # on the dataset's train split (3/4 of the families)


def slug(recipe: str, seed: int) -> str:
    return f"{recipe_model(recipe)}_{recipe.replace('+', '_').replace('/', '_')}_seed{seed}"


def recipe_model(recipe: str) -> str:
    """The network a recipe trains: its option's in ``MODEL_OPTIONS`` (``deep``, ``shallow``), else ``MODEL``."""
    return next((model for option, model in MODEL_OPTIONS.items() if has_option(recipe, option)), MODEL)


def pretraining_run(runs: Path, model: str) -> Path:
    """Where ``model``'s protein pretraining trains (``protein`` for the release's ``MODEL``)."""
    return runs / ("protein" if model == MODEL else f"protein_{model}")


def recipe_options(recipe: str) -> tuple[str, list, bool]:
    """``"cov+ss/more+depth"`` → (the feature set, the training options the recipe adds,
    whether it continues the feature set's own run).  Options, joined by ``+``: ``depth``
    (depth sampling), ``homolog`` (homolog sampling), ``search`` (every training family also
    trains with its query's searched alignment: :func:`trains_searched`), ``spot`` (the SPOT-RNA-2D
    TR chains with a hit train with their searched alignment too), ``more`` (the base run
    continued for ``EXTRA_EPOCHS`` at its final learning rate, with the other options on those
    epochs only), ``sim`` (the run starts from the simulated-family pretraining:
    :func:`pretrains_simulated`), ``bppdrop`` (thermodynamics dropout: examples on an alignment
    trained without their base-pair-probability channel, ``BPP_DROPOUT`` of them each epoch),
    ``light`` / ``heavy`` (depth and homolog sampling at ``LIGHT_SAMPLING`` / ``HEAVY_SAMPLING``
    instead), ``long`` (``LONG_EPOCHS`` times the epochs: :func:`recipe_epochs`), ``far``
    (long-range pairs weighted ``FAR_WEIGHT`` in the loss, the range the headline metric ranks),
    ``swa`` (the model is the mean of the weights after each low-learning-rate epoch: its flag
    depends on the schedule, :func:`schedule_options`), ``hquery`` (``HOMOLOG_QUERY`` of the
    examples on an alignment trained with a homolog as the query each epoch), ``deep`` / ``shallow``
    (another network, ``MODEL_OPTIONS``: :func:`recipe_model`), ``repeat`` (each example on an
    alignment ``ALIGNMENT_REPEATS`` times an epoch, each with its own draws), ``window`` (training
    windows of ``WINDOW_CROP`` residues: :func:`recipe_crop`)."""
    features, _, option = recipe.partition("/")
    tokens = option.split("+") if option else []
    rates = [rate for name, rate in (("light", LIGHT_SAMPLING), ("heavy", HEAVY_SAMPLING)) if name in tokens]
    flags = {"depth": ["--depth-sampling", rates[0] if rates else DEPTH_SAMPLING],
             "homolog": ["--homolog-sampling", rates[0] if rates else HOMOLOG_SAMPLING],
             "bppdrop": ["--bpp-dropout", BPP_DROPOUT],
             "hquery": ["--homolog-query", HOMOLOG_QUERY],
             "far": ["--long-weight", FAR_WEIGHT],
             "repeat": ["--alignment-repeats", ALIGNMENT_REPEATS]}
    # options without a flag of their own: the run continued, the split, the pretraining, the sampling
    # rates, the schedule, the window, the network
    unflagged = ("more", "search", "spot", "sim", "light", "heavy", "long", "swa", "window", *MODEL_OPTIONS)
    unknown = [t for t in tokens if t not in flags and t not in unflagged]
    if unknown or len(set(tokens)) != len(tokens):
        raise SystemExit(f"unknown recipe option {option!r} in {recipe!r} (known: {', '.join(unflagged)}, "
                         f"{', '.join(flags)}, joined by '+')")
    if len(rates) > 1:
        raise SystemExit(f"recipe {recipe!r}: 'light' and 'heavy' set the same sampling rate")
    if rates and not {"depth", "homolog"} & set(tokens):
        raise SystemExit(f"recipe {recipe!r}: 'light' and 'heavy' set the depth and homolog sampling rate, "
                         "and it has neither")
    for other in ("long", "swa", *MODEL_OPTIONS):
        if {other, "more"} <= set(tokens):
            raise SystemExit(f"recipe {recipe!r}: 'more' continues the feature set's own run, which '{other}' "
                             "would not be")
    networks = [t for t in tokens if t in MODEL_OPTIONS]
    if len(networks) > 1:
        raise SystemExit(f"recipe {recipe!r}: {' and '.join(networks)} each choose the network")
    if networks and "sim" in tokens:
        raise SystemExit(f"recipe {recipe!r}: 'sim' starts from a pretraining of {MODEL}, and '{networks[0]}' "
                         f"trains {MODEL_OPTIONS[networks[0]]}")
    return features, [arg for t in tokens if t in flags for arg in flags[t]], "more" in tokens


TRAIN_SPLIT = "train,spot_tr"
SEARCHED_SPLIT = "train_searched"  # each training family's query with its nhmmer-searched alignment
SPOT_SEARCHED_SPLIT = "spot_searched"  # SPOT-RNA-2D TR chains with their nhmmer-searched alignments


def has_option(recipe: str, option: str) -> bool:
    """Whether ``option`` is one of the recipe's options (``cov+ss/depth+search``: depth, search)."""
    return option in recipe.partition("/")[2].split("+")


def screens_homologs(options: list) -> bool:
    """Whether training options train homologs (alone or as queries): homologs are then
    training RNAs, and the run screens them against the held-out chains (``--homolog-exclude``)."""
    return bool({"--homolog-sampling", "--homolog-query"} & set(options))


def trains_searched(recipe: str) -> bool:
    """The recipe's training families train twice: with their Rfam alignment and with their
    query's alignment searched by :mod:`tprna.search` (split ``SEARCHED_SPLIT``), the input a
    user with a bare sequence and ``tprna infer --database`` gives the model."""
    return has_option(recipe, "search")


def trains_spot_searched(recipe: str) -> bool:
    """The SPOT-RNA-2D TR chains with a hit in the search also train with that alignment
    (split ``SPOT_SEARCHED_SPLIT``, :func:`spot_searched_manifest`)."""
    return has_option(recipe, "spot")


def pretrains_simulated(recipe: str) -> bool:
    """The recipe's runs start from a network pretrained on simulated families
    (``SIMULATED``, after the protein chains), not from the protein pretraining alone."""
    return has_option(recipe, "sim")


def simulated_run(runs: Path, features: str) -> Path:
    """Where the simulated-family pretraining of ``features`` trains (one per feature set)."""
    return runs / f"simulated_{features.replace('+', '_')}"


def recipe_epochs(recipe: str, epochs: int) -> int:
    """The epochs of the recipe's own schedule (``epochs``, or ``LONG_EPOCHS`` times it for a
    ``long`` recipe); its learning rate steps down after 70 % of them."""
    return round(epochs * LONG_EPOCHS) if has_option(recipe, "long") else epochs


def recipe_crop(recipe: str, crop: int) -> int:
    """The length of the recipe's training windows: ``WINDOW_CROP`` for a ``window`` recipe, else
    ``crop`` (an RNA longer than that trains on a random window of it each epoch)."""
    return WINDOW_CROP if has_option(recipe, "window") else crop


def lr_step(epochs: int) -> int:
    """The epoch (from 0) at which a run of ``epochs`` drops its learning rate ×0.1: after 70 %."""
    return int(epochs * 0.7)


def averages_weights(recipe: str) -> bool:
    """The recipe's model is the mean of the weights after each epoch from its learning-rate
    step on (stochastic weight averaging over the low-learning-rate epochs)."""
    return has_option(recipe, "swa")


def schedule_options(recipe: str, epochs: int) -> list:
    """The training flags of the recipe's own schedule (``epochs`` before ``long``)."""
    own = recipe_epochs(recipe, epochs)
    return ["--lr-milestones", lr_step(own)] + (["--average-from", lr_step(own)] if averages_weights(recipe) else [])


def recipe_split(recipe: str) -> str:
    return (TRAIN_SPLIT + (f",{SEARCHED_SPLIT}" if trains_searched(recipe) else "")
            + (f",{SPOT_SEARCHED_SPLIT}" if trains_spot_searched(recipe) else ""))


def with_option(recipe: str, option: str) -> str:
    """The recipe with one more option (``cov+ss/depth`` + ``search`` → ``cov+ss/depth+search``)."""
    features, _, options = recipe.partition("/")
    return f"{features}/{options}+{option}" if options else f"{features}/{option}"


def stage_variant(base: str, stage: str) -> str:
    """The recipe a stage trains against ``base``: ``base`` with the stage's option, or, for a
    stage named after a derived channel (``neff``), with that channel added to its feature set
    (``cov+ss/depth`` → ``cov+ss+neff/depth``: the same stored arrays, one more channel)."""
    from tprna.features import DERIVED_COMPONENTS

    if stage not in DERIVED_COMPONENTS:
        return with_option(base, stage)
    features, _, options = base.partition("/")
    return f"{features}+{stage}/{options}" if options else f"{features}+{stage}"


def is_stage_variant(recipe: str, stage: str) -> bool:
    """Whether ``recipe`` has what ``stage`` adds (:func:`stage_variant`)."""
    from tprna.features import DERIVED_COMPONENTS

    if stage not in DERIVED_COMPONENTS:
        return has_option(recipe, stage)
    return stage in recipe.partition("/")[0].split("+")


def recipe_text(recipe: str, epochs: int) -> str:
    """The schedule of a recipe, in words (for the model card)."""
    features, options, continues = recipe_options(recipe)
    epochs = recipe_epochs(recipe, epochs)
    text = f"{epochs} epochs (lr 0.01, ×0.1 from epoch {lr_step(epochs) + 1})"
    if continues:
        text += f", then {EXTRA_EPOCHS} more at lr 0.001"
    if averages_weights(recipe):
        text += (f", the model the mean of the weights after each epoch from epoch {lr_step(epochs) + 1} on "
                 "(weight averaging over the low-learning-rate epochs; BatchNorm statistics recomputed for it)")
    words = {"--depth-sampling": "depth sampling ({:g} of the alignment examples cut to a random depth)",
             "--homolog-sampling": "homolog sampling ({:g} of the alignment examples trained as one of their "
                                   "homologs alone)",
             "--bpp-dropout": "thermodynamics dropout ({:g} of the examples still on an alignment trained without "
                              "their base-pair probabilities)",
             "--homolog-query": "homolog queries ({:g} of the examples still on an alignment trained with one of "
                                "the family's homologs as the query: its own base-pair probabilities beside the "
                                "alignment's couplings)",
             "--long-weight": "long-range pairs (|i − j| ≥ 24) weighted {:g} times in the loss",
             "--alignment-repeats": "each example on an alignment {:g} times an epoch (each copy its own crop and "
                                    "draws), the single sequences once"}
    used = [words[flag].format(value) for flag, value in zip(options[::2], options[1::2])]
    if used:
        text += (f", the last {EXTRA_EPOCHS}" if continues else ", every epoch") + " with " + " and ".join(used)
    if has_option(recipe, "window"):
        text += f", on training windows of {WINDOW_CROP} residues"
    if trains_searched(recipe):
        text += (", every coconet training family seen twice an epoch: with its Rfam alignment and with its "
                 "query's alignment searched by nhmmer (tprna.search's defaults) in the training families' sequences")
    if trains_spot_searched(recipe):
        text += (", the SPOT-RNA-2D training chains with a hit in that search also trained with their searched "
                 "alignment")
    if (model := recipe_model(recipe)) != MODEL:
        text += (f"; the network {model} ({MFF_BLOCKS[model]} MFF blocks instead of {MODEL}'s {MFF_BLOCKS[MODEL]}, "
                 "the same width), pretrained on the protein chains likewise")
    if pretrains_simulated(recipe):
        text += (f"; started from {SIMULATED_EPOCHS} epochs on the train split of {SIMULATED['n_families']} "
                 "simulated families with "
                 f"1–{SIMULATED['tertiary_stems']} planted long-range helices each (after the protein pretraining)")
    return text


def finished(run: Path, epochs: int) -> bool:
    """The run's epoch log already holds its last epoch (resuming it would do nothing)."""
    log_file = run / "metrics.jsonl"
    if not (run / "last.ckpt").is_file() or not log_file.is_file():
        return False
    done = [json.loads(line)["epoch"] for line in log_file.read_text().splitlines() if line.strip()]
    return bool(done) and max(done) + 1 >= epochs


def parse_candidates(text: str) -> list[tuple[str, int]]:
    """``"cov+ss:0,1 cov+ss/more+depth:0"`` → [(recipe, seed), …]; a recipe is a feature set,
    optionally with an option (:func:`recipe_options`).  A recipe that continues a run needs
    that run among the candidates."""
    out = []
    for token in text.split():
        recipe, _, seeds = token.partition(":")
        out += [(recipe, int(s)) for s in (seeds or "0").split(",")]
    for recipe, seed in out:
        features, _, continues = recipe_options(recipe)
        if continues and (features, seed) not in out:
            raise SystemExit(f"{recipe}:{seed} continues {features}:{seed}; add it to --candidates")
    return out


def parse_seed_checks(text: str) -> dict[str, tuple[int, ...]]:
    """``"shallow:2,3 deep:2"`` → {"shallow": (2, 3), "deep": (2,)}: more seeds of those option
    stages' variants (``--check-seeds``)."""
    checks = {}
    for token in text.split():
        option, _, seeds = token.partition(":")
        numbers = tuple(int(s) for s in seeds.split(",") if s.strip().isdigit())
        if option not in OPTION_STAGES or not numbers or len(numbers) != len(seeds.split(",")):
            raise argparse.ArgumentTypeError(f"{token!r}: give STAGE:SEEDS (e.g. shallow:2,3), STAGE one of "
                                             f"{', '.join(OPTION_STAGES)}")
        if set(numbers) & set(STAGE_SEEDS):
            raise argparse.ArgumentTypeError(f"{token!r}: seeds {', '.join(map(str, STAGE_SEEDS))} are the stage's own")
        checks[option] = numbers
    return checks


def long_range(summary: dict) -> dict[str, float]:
    prec = summary["all"]["precision"]
    return {f"long|{k}": round(float(prec[("long", k)]), 4) for k in ("L", "L/2", "L/5", "L/10")}


def average_maps(maps: list[dict]) -> dict:
    """An ensemble's prediction: each entry's map averaged over the networks' maps ({id: map} each)."""
    import numpy as np

    return {i: np.mean([m[i] for m in maps], axis=0) for i in maps[0]}


def checkpoint_maps(checkpoint: Path, evaluation, cache: Path | None = None, tag: str = "") -> dict:
    """The checkpoint's maps of ``evaluation``'s entries; with ``cache``, kept there by the
    checkpoint's sha256, ``tag`` and what it predicts on (the entries and their feature spec),
    so a re-run predicts only with the checkpoints that changed."""
    import pickle

    from tprna.evaluate import predict_with_checkpoint
    from tprna.store.schema import file_sha256

    inputs = hashlib.sha256(json.dumps([evaluation.spec_key, sorted(evaluation.labels)]).encode()).hexdigest()
    kept = cache / f"{file_sha256(checkpoint)[:16]}_{tag}_{inputs[:12]}.pkl" if cache else None
    if kept and kept.is_file():
        return pickle.loads(kept.read_bytes())
    maps = predict_with_checkpoint(checkpoint, evaluation, device="cpu")
    if kept:
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_bytes(pickle.dumps(maps))
    return maps


def score_candidates(store: Path, runs: Path, jobs: list[tuple[str, int]],
                     cache: Path | None = None) -> dict[str, dict]:
    """Long-range precision of every candidate and of the average of each feature set's seeds,
    on the validation chains (which choose) and on the coconet test families (reported).
    With ``cache``, :func:`checkpoint_maps` keeps each checkpoint's maps there."""
    from tprna.evaluate import load_evaluation_set, score_maps
    from tprna.train import load_checkpoint

    rows: dict[str, dict] = {}
    for split in ("spot_vl", "test"):
        maps: dict[str, dict] = {}
        for recipe, seed in jobs:
            checkpoint = runs / slug(recipe, seed) / "last.ckpt"
            # scored on the store it trained from (the same entries under its feature set)
            trained_on = load_checkpoint(checkpoint).get("train_store") or str(store)
            evaluation = load_evaluation_set(trained_on, split, recipe_options(recipe)[0])
            maps[slug(recipe, seed)] = checkpoint_maps(checkpoint, evaluation, cache, split)
        labels = evaluation.labels
        for recipe in dict.fromkeys(r for r, _ in jobs):
            members = [slug(r, s) for r, s in jobs if r == recipe]
            if len(members) > 1:
                maps[f"{recipe} average of seeds {','.join(str(s) for r, s in jobs if r == recipe)}"] = average_maps(
                    [maps[m] for m in members])
        for name, predicted in maps.items():
            rows.setdefault(name, {})
            rows[name][split] = long_range(score_maps(predicted, labels)["summary"])
    for name, row in rows.items():  # an average's members: that feature set's seeds
        if " average of seeds " not in name:
            row["members"] = [name]
        else:
            recipe = name.split(" average")[0]
            row["members"] = [slug(r, s) for r, s in jobs if r == recipe]
    return rows


# The stage: what the shipped model reads and how it trains are chosen on VL plus held-out TR
# clusters (runs that never saw them), not on VL alone: first the feature set (the plain recipe of
# each, two seeds), then the schedule (each option on the chosen feature set, against the plain
# recipe).  VL is short chains without a tRNA: on VL alone homolog sampling, which multiplies the
# single-sequence examples of the families (tRNAs among them), could not show what it does.
STAGE_FEATURE_SETS = ("cov+ss", "cov+ss+profile")
STAGE_SEEDS = (0, 1)
# the ensemble stage: whether the shipped model averages this many seeds' networks instead of
# STAGE_SEEDS' (two); its evidence is every stage recipe with runs of all these seeds
ENSEMBLE_SEEDS = (0, 1, 2, 3)
STAGE_SCHEDULES = ("depth", "depth+homolog")  # recipe options tried on the chosen feature set
STAGE_SCHEDULE_SEEDS = (0, 1)


def score_stage(store: Path, runs: Path, chains: list[str], recipes: dict[str, tuple[int, ...]],
                recorded: dict | None = None, cache: Path | None = None) -> dict:
    """Long top-L on ``chains`` (VL and the held-out clusters) of every stage run of ``recipes``
    ({recipe: seeds}), and the mean over each recipe's seeds: the highest mean chooses.  A
    recipe in ``recorded`` (:func:`stage_record`) keeps its recorded row.  With ``cache``,
    :func:`checkpoint_maps` keeps each run's maps there (the ensemble stage reads them again)."""
    import numpy as np

    from tprna.evaluate import load_evaluation_set, score_maps

    rows: dict[str, dict] = {}
    for recipe, seeds in recipes.items():
        if recipe in (recorded or {}):
            rows[recipe] = recorded[recipe]
            continue
        evaluation = load_evaluation_set(str(store), None, recipe_options(recipe)[0], ids=chains)
        figures = {}
        for seed in seeds:
            maps = checkpoint_maps(runs / slug(recipe, seed) / "last.ckpt", evaluation, cache, "stage")
            figures[str(seed)] = long_range(score_maps(maps, evaluation.labels)["summary"])[SELECTION_KEY]
        rows[recipe] = {"seeds": figures, "mean": round(float(np.mean(list(figures.values()))), 4)}
    return rows


def ensemble_figures(maps: dict[int, dict], labels: dict) -> dict:
    """Long top-L of the average of each pair of the runs' maps ({seed: {id: map}}), their mean
    (a two-network ensemble, as every earlier release shipped), and of the average of them all."""
    import numpy as np

    from tprna.evaluate import score_maps

    def score(seeds: tuple[int, ...]) -> float:
        return long_range(score_maps(average_maps([maps[s] for s in seeds]), labels)["summary"])[SELECTION_KEY]

    pairs = {f"{a},{b}": score((a, b)) for a, b in itertools.combinations(sorted(maps), 2)}
    return {"pairs": pairs, "pair_mean": round(float(np.mean(list(pairs.values()))), 4),
            "all": score(tuple(sorted(maps)))}


def ensemble_stage(store: Path, runs: Path, chains: dict[str, list[str]], recipes: list[str],
                   recorded: dict | None = None, cache: Path | None = None) -> dict:
    """:func:`ensemble_figures` of every recipe of ``recipes`` with runs of all ``ENSEMBLE_SEEDS``
    under ``runs``, on each part of ``chains`` ({"aligned": the held-out families, "single": the
    single sequences}); a recipe whose runs are gone keeps its row in ``recorded``.  ``cache``:
    :func:`score_stage`'s, whose maps of the same runs and chains it reads instead of predicting."""
    from tprna.evaluate import load_evaluation_set

    rows: dict[str, dict] = {part: {} for part in chains}
    for recipe in recipes:
        paths = [runs / slug(recipe, seed) / "last.ckpt" for seed in ENSEMBLE_SEEDS]
        if not all(path.is_file() for path in paths):
            if all(recipe in (recorded or {}).get(part, {}) for part in chains):
                for part in chains:
                    rows[part][recipe] = recorded[part][recipe]
            continue
        for part, ids in chains.items():
            evaluation = load_evaluation_set(str(store), None, recipe_options(recipe)[0], ids=ids)
            rows[part][recipe] = ensemble_figures(
                {seed: checkpoint_maps(path, evaluation, cache, "stage")
                 for seed, path in zip(ENSEMBLE_SEEDS, paths)}, evaluation.labels)
    return rows


def choose_ensemble(stage: dict) -> tuple[int, ...]:
    """``ENSEMBLE_SEEDS`` when, over the stage's recipes, averaging all their networks beats the
    mean of the two-network averages with alignments and costs the single sequences at most
    ``SINGLE_SEQUENCE_TOLERANCE`` (the stages' rule); else ``STAGE_SEEDS``, and with no evidence."""
    aligned, single = stage.get("aligned", {}), stage.get("single", {})
    if not aligned:
        return STAGE_SEEDS

    def gain(rows: dict) -> float:
        return sum(row["all"] - row["pair_mean"] for row in rows.values()) / len(rows)

    return ENSEMBLE_SEEDS if gain(aligned) > 0 and gain(single) >= -SINGLE_SEQUENCE_TOLERANCE else STAGE_SEEDS


def score_before_averaging(store: Path, runs: Path, chains: dict[str, list[str]], recipe: str,
                           seeds: tuple[int, ...], recorded: dict | None = None) -> dict:
    """:func:`score_stage` of a weight-averaging recipe's runs with each checkpoint's own last
    weights (``live_model``) in place of the mean: the same runs without the averaging, a
    comparison the seeds do not move.  ``chains``: {part: ids}.  ``recorded`` stands for runs
    that are gone."""
    import tempfile

    from tprna.train import load_checkpoint, save_checkpoint

    paths = [runs / slug(recipe, seed) / "last.ckpt" for seed in seeds]
    if not all(path.is_file() for path in paths):
        return recorded or {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            ckpt = load_checkpoint(path)
            (Path(tmp) / path.parent.name).mkdir()
            save_checkpoint(Path(tmp) / path.parent.name / "last.ckpt", ckpt | {"model": ckpt["live_model"]})
        return {"recipe": recipe} | {part: score_stage(store, Path(tmp), ids, {recipe: seeds})[recipe]
                                     for part, ids in chains.items()}


def stage_record(recorded: dict, runs: Path, n_scored: int, parts: tuple[str, ...]) -> dict:
    """The rows of a stage's record (``parts`` of it) whose runs are all gone from ``runs``,
    when the record scored as many chains as this draw does (the same draw; else none)."""
    scored = recorded.get("scored")  # a count (the feature-set stage) or the scored ids (the coupling stage)
    if scored is not None and (scored if isinstance(scored, int) else len(scored)) != n_scored:
        return {}
    rows = {recipe: row for part in parts for recipe, row in recorded.get(part, {}).items()}
    return {recipe: row for recipe, row in rows.items()
            if not any((runs / slug(recipe, int(seed)) / "last.ckpt").is_file() for seed in row["seeds"])}


def record_runs(record: dict, runs: Path, retrained: list[Path] = ()) -> set[str]:
    """The runs (paths under ``runs``) whose epochs the record's ``hours`` already counts, less
    those this invocation ``retrained``: a run gone from disk and trained again under its name
    is a new run, whose epochs count."""
    if not record:
        return set()
    names = {m for row in record.get("candidates", {}).values() for m in row["members"]} | {"protein"}
    models = set()
    stages = [("feature_set_stage", "held_out_clusters", ("feature_sets", "schedules"))] + [
        (f"{name}_stage", "held_out_families", ("aligned",)) for name in ("coupling",) + OPTION_STAGES] + [
        ("seed_noise", "held_out_families", ("aligned",))] + [
        (f"{name}_seed_check", "held_out_families", ("aligned",)) for name in OPTION_STAGES]
    for key, folder, parts in stages:
        for part in parts:
            for recipe, row in record.get(key, {}).get(part, {}).items():
                names |= {f"{folder}/{slug(recipe, int(seed))}" for seed in row["seeds"]}
                models.add(recipe_model(recipe))
    # another network's runs (deep, shallow) start from its own protein pretraining, counted with them
    names |= {pretraining_run(Path(), model).name for model in models - {MODEL}}
    # runs it counted that it no longer names (a superseded stage's): without this, counted again
    names |= set(record.get("counted_runs", []))
    return {str(runs / name) for name in names} - {str(path) for path in retrained}


def counted_runs(counted: set[str], summed: list[Path], runs: Path) -> list[str]:
    """Every run (relative to ``runs``) the record's ``hours`` counts once ``summed`` is added:
    the record's own, on disk or not (a fresh machine has none of them, and they stay counted),
    and those of ``summed`` that trained."""
    return sorted({os.path.relpath(path, runs) for path in counted}
                  | {os.path.relpath(p, runs) for p in summed if (p / "metrics.jsonl").is_file()})


def every_seed(stage: dict, more: dict, recipe: str, part: str = "aligned") -> dict[str, float]:
    """``recipe``'s figures ({seed: figure}; ``part``: with the held-out families' alignments, or on
    the single sequences) over the stage's seeds and those of a record of more seeds of it
    (``--noise-seeds``, ``--check-seeds``)."""
    return stage[part][recipe]["seeds"] | more[part][recipe]["seeds"]


def two_seed_means(stage: dict, noise: dict, part: str = "aligned") -> tuple[dict[str, float], list[float]]:
    """The chosen recipe's figures over the stage's seeds and the noise seeds
    (:func:`every_seed`), and the mean of every two of them: the figure every stage compares, as
    the seeds alone move it."""
    seeds = every_seed(stage, noise, stage["chosen_recipe"], part)
    return seeds, [(seeds[a] + seeds[b]) / 2 for a, b in itertools.combinations(sorted(seeds, key=int), 2)]


def seed_spread(stage: dict, noise: dict, part: str = "aligned") -> str:
    """:func:`two_seed_means` in words: each seed, their mean, the range of the two-seed means."""
    seeds, means = two_seed_means(stage, noise, part)
    return (f"{stage['chosen_recipe']} long top-L {'with alignments' if part == 'aligned' else 'single'}, seed by "
            "seed: " + ", ".join(f"{v:.3f} (seed {k})" for k, v in sorted(seeds.items(), key=lambda kv: int(kv[0])))
            + f"; mean {sum(seeds.values()) / len(seeds):.3f}; the {len(means)} two-seed means range "
            f"{min(means):.3f}–{max(means):.3f}")


def choose_schedule(feature_sets: dict, schedules: dict, features: str) -> str:
    """The recipe with the best stage mean among the chosen feature set's plain recipe (its
    feature-set figure) and its schedule options; ties go to the plain recipe."""
    pool = {features: feature_sets[features]["mean"]}
    pool.update({r: row["mean"] for r, row in schedules.items() if recipe_options(r)[0] == features})
    return max(pool, key=lambda r: (pool[r], r == features))


# the coupling maps the coupling stage tries beside the chosen recipe's channels: the mean-field
# couplings (the best map alone beside cov+ss) and the pseudo-likelihood ones (plmDCA)
COUPLING_CHANNELS = ("dca", "plm")
SINGLE_SEQUENCE_TOLERANCE = 0.01  # a variant may cost single sequences at most this


def coupling_recipe(recipe: str, channel: str) -> str:
    """The recipe with ``channel`` added to its feature set, its options kept."""
    from tprna.features import FEATURE_SETS

    features, _, option = recipe.partition("/")
    variant = f"{features}+{channel}"
    if variant not in FEATURE_SETS:
        raise SystemExit(f"no feature set {variant!r} (the coupling stage adds {channel} to {features})")
    return variant + (f"/{option}" if option else "")


def choose_variant(stage: dict, recipe: str, variants: list[str]) -> str:
    """The variant (a coupling channel added, or searched alignments trained on too) with the
    best mean on the held-out families (with alignments) among those that beat the recipe there
    and lose at most ``SINGLE_SEQUENCE_TOLERANCE`` on the single sequences; ties go to the
    recipe, then to the earlier variant."""
    aligned, single = stage["aligned"], stage["single"]
    passing = [v for v in variants if aligned[v]["mean"] > aligned[recipe]["mean"]
               and single[v]["mean"] >= single[recipe]["mean"] - SINGLE_SEQUENCE_TOLERANCE]
    return max(passing, key=lambda v: (aligned[v]["mean"], -variants.index(v))) if passing else recipe


def choose_winner(rows: dict[str, dict], recipe_of: dict[str, str], recipe: str,
                  seeds: tuple[int, ...] = ()) -> str:
    """The average of ``recipe``'s runs of ``seeds`` (the ensemble stage's choice) when there are
    several and a candidate averages exactly those: VL then only reports it, since picking one
    run by 28 short chains' figure would pick the seeds' noise.  Else the candidate with the best
    VL figure among ``recipe``'s (its seeds and their average); ties go to fewer networks."""
    pool = [n for n in rows if recipe_of[n] == recipe]
    if not pool:
        raise SystemExit(f"no candidate trains the chosen recipe {recipe!r}")
    ensemble = sorted(slug(recipe, seed) for seed in seeds)
    averages = [n for n in pool if len(ensemble) > 1 and sorted(rows[n]["members"]) == ensemble]
    if averages:
        return averages[0]
    return max(pool, key=lambda n: (rows[n]["spot_vl"][SELECTION_KEY], -len(rows[n]["members"])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "results" / "release")
    parser.add_argument("--store", type=Path, default=REPO / "store" / "release.zarr")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "release")
    parser.add_argument("--candidates", default=DEFAULT_CANDIDATES,
                        help="Feature sets and their seeds, e.g. 'cov+ss:0,1 cov+ss+profile:0'")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--crop", type=int, default=CROP)
    parser.add_argument("--parallel", type=int, default=2, help="Candidates trained side by side")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--drop-families", action="store_true",
                        help="Drop coconet train families ≥ 70 %% identical to a TS chain instead of "
                             "scoring those chains apart")
    parser.add_argument("--no-ship", action="store_true", help="Train and validate only")
    parser.add_argument("--stages-only", action="store_true",
                        help="Stop after the stages: write their figures into choice.json (the winner and the "
                             "shipped model unchanged); a later run trains the chosen recipe's candidates")
    parser.add_argument("--from-record", action="store_true",
                        help="Runs no longer on disk (runs are not kept in git) keep the figures the kept "
                             "choice.json records instead of training again; what it does not record trains")
    parser.add_argument("--noise-seeds", type=lambda text: tuple(int(s) for s in text.split(",") if s.strip()),
                        default=(), help="More seeds (e.g. 2,3) of the last stage's choice, trained and scored "
                                         "like its runs: how far a two-seed mean moves with the seeds (chooses "
                                         "nothing)")
    parser.add_argument("--check-seeds", type=parse_seed_checks, default={},
                        help="More seeds of option stages' variants, e.g. 'shallow:2,3': trained and scored like "
                             "the stage's runs and recorded beside it (chooses nothing; --noise-seeds gives the "
                             "chosen recipe's own)")
    args = parser.parse_args()
    if not (args.data / "coconet/manifest.csv").is_file():
        print(f"no coconet data under {args.data}; pass --data DIR", file=sys.stderr)
        return 2
    t0 = time.time()
    work = args.work / "work"
    work.mkdir(parents=True, exist_ok=True)
    logfile = args.work / "release.log"
    jobs = parse_candidates(args.candidates)
    record = json.loads((args.work / "choice.json").read_text()) if args.from_record else {}
    # candidates the record scores whose runs are gone: their rows are carried over, they do not train
    gone = [(r, s) for r, s in jobs if slug(r, s) in record.get("candidates", {})
            and not (args.runs / slug(r, s) / "last.ckpt").is_file()]
    feature_sets = list(dict.fromkeys([recipe_options(r)[0] for r, s in jobs if (r, s) not in gone]
                                      + list(STAGE_FEATURE_SETS)))

    plan = leakage_plan(args.data, args.drop_families)
    (args.work / "leakage.json").write_text(json.dumps(plan, indent=1) + "\n")
    families, spot = write_manifests(args.data, work, plan)
    held_out = write_held_out_chains(args.data, work, plan)

    def build(manifests: tuple[Path, ...], features: str) -> None:
        """The manifests' entries in the release store under ``features`` (a no-op once there)."""
        for manifest in manifests:
            run(TPRNA + ["store", "build", args.store, "--manifest", manifest, "--features", features,
                         "--jobs", args.jobs, "-q"], logfile)

    for features in feature_sets:
        build((families, spot), features)
    # the searched alignments the search stage (and any ``search`` candidate) trains on too
    searched, database, searched_sources = searched_manifest(work, families)
    for features in dict.fromkeys(recipe_options(r)[0] for r, s in jobs if trains_searched(r) and (r, s) not in gone):
        build((searched,), features)
    # the SPOT-RNA-2D chains' searched alignments the spot stage (and any ``spot`` candidate) trains on
    spot_searched, sources = spot_searched_manifest(work, spot, work / "searched" / "train_family_sequences.fa")
    for features in dict.fromkeys(recipe_options(r)[0] for r, s in jobs if trains_spot_searched(r) and (r, s) not in gone):
        build((spot_searched,), features)
    protein = args.store.parent / "protein.zarr"
    run(TPRNA + ["store", "build", protein, "--manifest", args.data / "protein/manifest.csv",
                 "--molecule", "protein", "--jobs", args.jobs, "-q"], logfile)

    common = ["--workers", 0, "--resume"]

    def protein_pretraining(model: str) -> Path:
        """``model`` pretrained on the protein chains (once; a no-op when finished); its run."""
        out = pretraining_run(args.runs, model)
        if not finished(out, args.pretrain_epochs):
            run(TPRNA + ["train", protein, "--out", out, "--model", model, "--epochs", args.pretrain_epochs,
                         "--lr-milestones", lr_step(args.pretrain_epochs), "--crop", args.crop] + common, logfile)
        return out

    pre = protein_pretraining(MODEL)

    # candidates, trained side by side on one thread each (2 cores: no oversubscription)
    env = os.environ | {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // args.parallel))}
    running: list[tuple[subprocess.Popen, Path, Path]] = []

    def simulated_pretraining(features: str) -> Path:
        """The protein-pretrained network trained on ``SIMULATED``'s train split (their store under
        ``features``, depth sampling on), before the run of a ``sim`` recipe; its checkpoint."""
        from tprna.simulate import write_example_dataset

        out = simulated_run(args.runs, features)
        if not finished(out, SIMULATED_EPOCHS):
            manifest = write_example_dataset(work / "simulated", **SIMULATED)  # byte-identical again
            store = args.store.parent / "simulated.zarr"
            run(TPRNA + ["store", "build", store, "--manifest", manifest, "--features", features,
                         "--jobs", args.jobs, "-q"], logfile)
            run(TPRNA + ["train", store, "--out", out, "--split", "train", "--features", features,
                         "--model", MODEL, "--loss", "tploss", "--epochs", SIMULATED_EPOCHS,
                         "--lr-milestones", lr_step(SIMULATED_EPOCHS), "--init-from", pre / "last.ckpt",
                         "--depth-sampling", DEPTH_SAMPLING, "--crop", args.crop] + common, logfile)
        return out / "last.ckpt"

    def train(out: Path, recipe: str, epochs: int, seed: int, extra: tuple = (), screen: Path = held_out) -> None:
        features, options, _ = recipe_options(recipe)
        if screens_homologs(options):
            options = options + ["--homolog-exclude", screen]
        model = recipe_model(recipe)
        init = (simulated_pretraining(features) if pretrains_simulated(recipe)
                else protein_pretraining(model) / "last.ckpt")
        cmd = TPRNA + ["train", args.store, "--out", out, "--split", recipe_split(recipe),
                       "--features", features, "--model", model, "--loss", "tploss", "--epochs", epochs,
                       "--seed", seed, *schedule_options(recipe, args.epochs),
                       "--init-from", init, "--crop", recipe_crop(recipe, args.crop)] + options + list(extra) + common
        logfile = args.work / f"{str(out.relative_to(args.runs)).replace('/', '_')}.log"
        running.append((start(cmd, logfile, env), out, logfile))
        while len([p for p, _, _ in running if p.poll() is None]) >= args.parallel:
            time.sleep(10)

    def wait(runs: list[Path] | None = None) -> None:
        """Until the given runs (every run when None) have finished; a failed one stops the release."""
        for proc, out, logfile in running:
            if (runs is None or out in runs) and proc.wait() != 0:
                raise SystemExit(f"training {out.name} failed: see {logfile}")

    # the stage's runs never see the held-out clusters; their homologs are screened against them too
    stage = held_out_clusters(args.data, plan)
    stage_exclude = work / "held_out_clusters.txt"
    stage_exclude.write_text("\n".join(stage["held_out"]) + "\n")
    sequence = {r["id"]: r["sequence"] for r in spot_rows(args.data)}
    stage_screen = work / "held_out_chains_and_clusters.fasta"
    stage_screen.write_text(held_out.read_text() + "".join(f">{c}\n{sequence[c]}\n" for c in stage["held_out"]))
    stage_runs = args.runs / "held_out_clusters"
    stage_maps = args.work / "stage_maps"  # the stage runs' maps, by checkpoint: scored again for free
    recorded_stage = stage_record(record.get("feature_set_stage", {}), stage_runs, len(stage["scored"]),
                                  ("feature_sets", "schedules"))

    def train_stage(recipe: str, seeds: tuple[int, ...], runs: Path = stage_runs, recorded: dict = recorded_stage,
                    extra: tuple = ("--exclude", stage_exclude), screen: Path = stage_screen) -> list[Path]:
        if recipe in recorded:
            log(f"{runs.name}/{recipe}: runs gone, the record's figures kept")
            return []
        outs = [runs / slug(recipe, seed) for seed in seeds]
        epochs = recipe_epochs(recipe, args.epochs)
        for seed, out in zip(seeds, outs):
            if finished(out, epochs):
                log(f"{runs.name}/{out.name}: trained ({epochs} epochs), kept")
            else:
                train(out, recipe, epochs, seed, extra, screen)
        return outs

    first = [out for features in STAGE_FEATURE_SETS for out in train_stage(features, STAGE_SEEDS)]

    def train_candidate(recipe: str, seed: int) -> None:
        name = slug(recipe, seed)
        features, _, continues = recipe_options(recipe)
        epochs = recipe_epochs(recipe, args.epochs) + (EXTRA_EPOCHS if continues else 0)
        if finished(args.runs / name, epochs):
            log(f"{name}: trained ({epochs} epochs), kept")
            return
        if continues and not (args.runs / name / "last.ckpt").is_file():
            base = args.runs / slug(features, seed)
            wait([base])  # the base run may still be training
            if not finished(base, args.epochs):
                raise SystemExit(f"{name} continues {base.name}, which has not finished {args.epochs} epochs")
            (args.runs / name).mkdir(parents=True, exist_ok=True)
            for file in ("last.ckpt", "metrics.jsonl", "metrics.csv"):
                shutil.copy2(base / file, args.runs / name / file)
        train(args.runs / name, recipe, epochs, seed)

    for recipe, seed in sorted(jobs, key=lambda job: recipe_options(job[0])[2]):  # base runs first
        if (recipe, seed) in gone:
            log(f"{slug(recipe, seed)}: run gone, the record's figures kept")
        else:
            train_candidate(recipe, seed)

    # the stage: the feature set, then its schedule, on VL and the held-out clusters
    chains = plan["spot_vl"] + stage["scored"]
    wait(first)
    stage["feature_sets"] = score_stage(args.store, stage_runs, chains, dict.fromkeys(STAGE_FEATURE_SETS, STAGE_SEEDS),
                                        recorded_stage, stage_maps)
    stage["chosen"] = max(stage["feature_sets"], key=lambda f: stage["feature_sets"][f]["mean"])
    schedules = {f"{stage['chosen']}/{option}": STAGE_SCHEDULE_SEEDS for option in STAGE_SCHEDULES}
    wait([out for recipe, seeds in schedules.items() for out in train_stage(recipe, seeds)])
    stage["schedules"] = score_stage(args.store, stage_runs, chains, schedules, recorded_stage, stage_maps)
    stage["chosen_recipe"] = choose_schedule(stage["feature_sets"], stage["schedules"], stage["chosen"])
    for recipe, row in (stage["feature_sets"] | stage["schedules"]).items():
        log(f"stage: {recipe} long top-L {row['mean']:.3f} (seeds {row['seeds']})")

    # the coupling stage: the chosen recipe without and with each coupling channel, by runs that never saw
    # the held-out families (nor the clusters), scored with the families' alignments and on the
    # single sequences above
    coupling = held_out_families(args.data, plan, stage)
    coupling_exclude = work / "held_out_families.txt"
    # a training family's searched alignment with rows of a held-out family would carry it into training
    reads_held_out = [e for e in stage_exclusions(searched_sources, coupling["held_out"], [])
                      if e.removesuffix("_nhmmer") not in coupling["held_out"]]
    coupling_exclude.write_text("\n".join(coupling["exclude"] + [f"{f}_nhmmer" for f in coupling["held_out"]]
                                         + reads_held_out) + "\n")
    coupling_screen = work / "held_out_chains_clusters_and_families.fasta"
    coupling_screen.write_text(stage_screen.read_text()
                               + "".join(f">{f}\n{q}\n" for f, q in coupling["queries"].items()))
    variants = [coupling_recipe(stage["chosen_recipe"], channel) for channel in COUPLING_CHANNELS]
    for variant in variants:
        build((families, spot), recipe_options(variant)[0])
    coupling_runs = args.runs / "held_out_families"
    recorded = {part: stage_record(record.get("coupling_stage", {}), coupling_runs, len(coupling["scored"]), (part,))
                for part in ("aligned", "single")}
    recipes = dict.fromkeys([stage["chosen_recipe"], *variants], STAGE_SEEDS)
    wait([out for recipe, seeds in recipes.items() for out in
          train_stage(recipe, seeds, coupling_runs, recorded["aligned"], ("--exclude", coupling_exclude),
                      coupling_screen)])
    coupling["aligned"] = score_stage(args.store, coupling_runs, coupling["scored"], recipes, recorded["aligned"],
                                      stage_maps)
    coupling["single"] = score_stage(args.store, coupling_runs, chains, recipes, recorded["single"], stage_maps)
    for recipe in recipes:
        log(f"coupling stage: {recipe} long top-L {coupling['aligned'][recipe]['mean']:.3f} on the held-out "
            f"families (seeds {coupling['aligned'][recipe]['seeds']}), "
            f"{coupling['single'][recipe]['mean']:.3f} on the single sequences")
    coupling["chosen_recipe"] = choose_variant(coupling, stage["chosen_recipe"], variants)
    coupling_record = {k: coupling[k] for k in ("held_out", "spot_left_out", "scored", "aligned", "single",
                                                "chosen_recipe")} | {"file": coupling_exclude.name}
    log(f"coupling stage: {coupling['chosen_recipe']} chosen")

    def held_out_family_runs(key: str, recipe: str, seeds: tuple[int, ...], exclude: Path) -> dict:
        """``recipe`` trained with ``seeds`` like the coupling stage's runs (the same held-out
        families, clusters and screen; ``exclude`` lists what they leave out) and scored with those
        families' alignments and on the single sequences: {"aligned" / "single": {recipe: figures}};
        the rows of record ``key`` stand for runs that are gone."""
        recorded = {part: stage_record(record.get(key, {}), coupling_runs, len(coupling["scored"]), (part,))
                    for part in ("aligned", "single")}
        wait(train_stage(recipe, seeds, coupling_runs, recorded["aligned"], ("--exclude", exclude), coupling_screen))
        return {part: score_stage(args.store, coupling_runs, coupling["scored"] if part == "aligned" else chains,
                                  {recipe: seeds}, recorded[part], stage_maps) for part in ("aligned", "single")}

    def option_stage(key: str, previous: dict, option: str, manifest: Path | None, exclude: Path) -> dict:
        """``previous``'s chosen recipe trained again with ``option`` (its extra entries in
        ``manifest``, if any), by runs like the coupling stage's (the same held-out families, clusters
        and screen; ``exclude`` lists what they leave out), against ``previous``'s runs of that recipe
        by the same rule: {"aligned" / "single": {recipe: figures}, "chosen_recipe": …}."""
        base = previous["chosen_recipe"]
        variant = stage_variant(base, option)
        if manifest is not None:
            build((manifest,), recipe_options(variant)[0])
        scored = held_out_family_runs(key, variant, STAGE_SEEDS, exclude)
        out = {part: {base: previous[part][base]} | scored[part] for part in ("aligned", "single")}
        out["chosen_recipe"] = choose_variant(out, base, [variant])
        log(f"{key.replace('_', ' ')}: {variant} long top-L {out['aligned'][variant]['mean']:.3f} on the "
            f"held-out families, {out['single'][variant]['mean']:.3f} on the single sequences; "
            f"{out['chosen_recipe']} chosen")
        return out

    # the spot stage's runs also leave out the entries whose rows come from a held-out family (their
    # alignments would carry that family into training) and those of the chains the coupling stage
    # holds out (close to its families, and the held-out clusters)
    spot_exclude = work / "held_out_families_spot.txt"
    left_out = stage_exclusions(sources, coupling["held_out"], coupling["exclude"])
    spot_exclude.write_text(coupling_exclude.read_text() + "".join(f"{e}\n" for e in left_out))
    inputs = {  # option: (its extra training entries, what its runs leave out, what its record adds)
        # the training families on their searched alignments too
        "search": (searched, coupling_exclude, {"database": database, "reads_held_out": len(reads_held_out)}),
        # the SPOT-RNA-2D chains with their searched alignments too
        "spot": (spot_searched, spot_exclude, {"searched_chains": len(sources), "left_out": len(left_out),
                                               "file": spot_exclude.name}),
        # the runs started from the simulated-family pretraining
        "sim": (None, coupling_exclude, {"simulated": SIMULATED, "simulated_epochs": SIMULATED_EPOCHS}),
        # thermodynamics dropout, so that the network learns to find contacts in the alignment alone
        "bppdrop": (None, coupling_exclude, {"fraction": BPP_DROPOUT}),
        # depth and homolog sampling on fewer examples, so that most train on their whole alignment
        # (the sampling rate was chosen on single sequences)
        "light": (None, coupling_exclude, {"fraction": LIGHT_SAMPLING}),
        # a longer schedule: the runs' training loss still falls at the last of the usual epochs
        "long": (None, coupling_exclude, {"epochs": args.epochs, "long_epochs": recipe_epochs("/long", args.epochs)}),
        # depth and homolog sampling on more examples: the light stage lost with alignments too
        "heavy": (None, coupling_exclude, {"fraction": HEAVY_SAMPLING}),
        # the loss weighted to the long-range pairs, the only ones top-L long ranks
        "far": (None, coupling_exclude, {"long_weight": FAR_WEIGHT}),
        # the mean of the low-learning-rate epochs' weights: where the last steps leave them varies by seed
        "swa": (None, coupling_exclude, {"average_from": lr_step(args.epochs), "epochs": args.epochs}),
        # the alignment's depth as a channel: the coupling maps alone do not say how deep it is
        "neff": (None, coupling_exclude, {"channel": "log10(1 + Neff)"}),
        # homologs as queries of the alignment: its couplings then come beside many foldings, not one
        "hquery": (None, coupling_exclude, {"fraction": HOMOLOG_QUERY}),
        # a larger network: every lever so far trained the same MFFnet36
        "deep": (None, coupling_exclude, {"model": MODEL_OPTIONS["deep"], "base_model": MODEL}),
        # a smaller network: the deeper one lost, and ~230 alignments may not fill even MFFnet36
        "shallow": (None, coupling_exclude, {"model": MODEL_OPTIONS["shallow"], "base_model": MODEL}),
        # more of each epoch on the alignments: they are the only examples whose couplings say anything
        "repeat": (None, coupling_exclude, {"repeats": ALIGNMENT_REPEATS}),
        # longer training windows: pairs farther apart than the window never train, and the
        # tertiary contacts of the long families are among the farthest
        "window": (None, coupling_exclude, {"crop": WINDOW_CROP, "base_crop": args.crop}),
    }
    records, last_stage = {"coupling_stage": coupling_record}, coupling
    for option in OPTION_STAGES:
        manifest, exclude, extra = inputs[option]
        last_stage = option_stage(f"{option}_stage", last_stage, option, manifest, exclude)
        records[f"{option}_stage"] = last_stage | {"scored": coupling["scored"]} | extra
    swa = records["swa_stage"]
    averaged = next(recipe for recipe in swa["aligned"] if averages_weights(recipe))
    swa["before_averaging"] = score_before_averaging(
        args.store, coupling_runs, {"aligned": coupling["scored"], "single": chains}, averaged, STAGE_SEEDS,
        record.get("swa_stage", {}).get("before_averaging"))
    if args.noise_seeds:
        records["seed_noise"] = held_out_family_runs("seed_noise", last_stage["chosen_recipe"], args.noise_seeds,
                                                     coupling_exclude) | {"scored": coupling["scored"]}
        log(f"seed noise: {seed_spread(last_stage, records['seed_noise'])}")
    elif set(record.get("seed_noise", {}).get("aligned", {})) == {last_stage["chosen_recipe"]}:
        records["seed_noise"] = record["seed_noise"]  # measured before, on this recipe: kept until measured again
    for option in OPTION_STAGES:  # more seeds of a stage's variant: a check on its two-seed figure
        key, stage_of = f"{option}_seed_check", records[f"{option}_stage"]
        variant = next(recipe for recipe in stage_of["aligned"] if is_stage_variant(recipe, option))
        if option in args.check_seeds:
            records[key] = held_out_family_runs(key, variant, args.check_seeds[option], inputs[option][1]) | {
                "scored": coupling["scored"]}
            log(f"{key.replace('_', ' ')}: {variant} long top-L {records[key]['aligned'][variant]['mean']:.3f} "
                f"with alignments, {records[key]['single'][variant]['mean']:.3f} single (chooses nothing)")
        elif set(record.get(key, {}).get("aligned", {})) == {variant}:
            records[key] = record[key]  # measured before, on this variant: kept until measured again
    # the ensemble stage: the recipes with runs of every ENSEMBLE_SEEDS seed (a stage's two and its
    # seed check's, or the chosen recipe's and --noise-seeds')
    checked = [next(iter(records[key]["aligned"])) for key in
               [f"{option}_seed_check" for option in OPTION_STAGES] + ["seed_noise"] if key in records]
    ensemble = ensemble_stage(args.store, coupling_runs, {"aligned": coupling["scored"], "single": chains},
                              checked, record.get("ensemble_stage"), stage_maps)
    records["ensemble_stage"] = ensemble | {"seeds": list(ENSEMBLE_SEEDS), "scored": coupling["scored"],
                                            "chosen_seeds": list(choose_ensemble(ensemble))}
    for recipe, row in ensemble["aligned"].items():
        log(f"ensemble stage: {recipe} long top-L of {len(ENSEMBLE_SEEDS)} networks averaged {row['all']:.3f}, of two "
            f"{row['pair_mean']:.3f} (the mean over pairs) with alignments; {ensemble['single'][recipe]['all']:.3f} "
            f"and {ensemble['single'][recipe]['pair_mean']:.3f} single")
    if args.stages_only:
        kept = json.loads((args.work / "choice.json").read_text()) if (args.work / "choice.json").is_file() else {}
        counted = record_runs(kept, args.runs, [out for _, out, _ in running])
        kept |= records
        if last_stage["chosen_recipe"] == kept.get("feature_set_stage", {}).get("chosen_recipe"):
            # the shipped model's recipe stands: the record says how it was chosen, stage included
            kept["selection"] = selection_text(len(chains), len(stage["scored"]), len(coupling["scored"]))
        else:
            log(f"{last_stage['chosen_recipe']} has no candidates yet: run again without --stages-only to train "
                "them and ship the winner")
        summed = (sorted(args.runs.glob("protein*")) + sorted(args.runs.glob("simulated_*"))
                  + sorted(coupling_runs.glob("mffnet*_*")))
        kept["hours"] = round(kept.get("hours", 0.0) + training_hours(summed, counted=counted), 2)
        kept["counted_runs"] = counted_runs(counted, summed, args.runs)
        (args.work / "choice.json").write_text(json.dumps(kept, indent=1) + "\n")
        log(f"stages written to {args.work / 'choice.json'}; the shipped model is unchanged")
        return 0
    stage["chosen_recipe"] = last_stage["chosen_recipe"]
    for seed in records["ensemble_stage"]["chosen_seeds"]:  # the chosen recipe's candidates: these seeds
        if (stage["chosen_recipe"], seed) not in jobs:
            jobs.append((stage["chosen_recipe"], seed))
            train_candidate(stage["chosen_recipe"], seed)
    wait()

    # the validation chains choose among the chosen recipe's runs (its seeds, their average); the
    # test is reported
    trained = [j for j in jobs if j not in gone]
    rows = score_candidates(args.store, args.runs, trained, args.work / "candidate_maps") if trained else {}
    gone_runs = {slug(r, s) for r, s in gone}  # their rows, and those of averages with one of them, as recorded
    rows = {n: row for n, row in record.get("candidates", {}).items() if set(row["members"]) & gone_runs} | rows
    for name, row in rows.items():
        log(f"{name}: validation long top-L {row['spot_vl'][SELECTION_KEY]:.3f}, "
            f"coconet test long top-L {row['test'][SELECTION_KEY]:.3f}")
    recipe_of = {slug(r, seed): r for r, seed in jobs} | {
        name: name.split(" average")[0] for name in rows if " average" in name}
    winner = choose_winner(rows, recipe_of, stage["chosen_recipe"],
                           tuple(records["ensemble_stage"]["chosen_seeds"]))
    log(f"winner by validation: {winner} ({rows[winner]['spot_vl'][SELECTION_KEY]:.3f})")
    summed = (sorted(args.runs.glob("protein*")) + sorted(args.runs.glob("simulated_*"))
              + [args.runs / slug(r, s) for r, s in jobs]
              + sorted(stage_runs.glob("mffnet*_*")) + sorted(coupling_runs.glob("mffnet*_*")))
    counted = record_runs(record, args.runs, [out for _, out, _ in running])
    choice = {"selection": selection_text(len(chains), len(stage["scored"]), len(coupling["scored"])),
              "feature_set_stage": {k: stage[k] for k in ("clusters", "feature_sets", "chosen", "schedules",
                                                          "chosen_recipe")}
              | {"held_out": len(stage["held_out"]), "scored": len(stage["scored"]),
                 "file": stage_exclude.name},
              **records,
              "candidates": rows, "winner": winner, "members": rows[winner]["members"],
              "epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs,
              "crop": recipe_crop(recipe_of[winner], args.crop),
              "schedule": recipe_text(recipe_of[winner], args.epochs),
              # the chains its homologs were screened against, when it trained homologs alone
              "homolog_screen": held_out.name if "--homolog-sampling" in recipe_options(recipe_of[winner])[1]
              else None,
              "train_split": recipe_split(recipe_of[winner]),
              "hours": round(record.get("hours", 0.0) + training_hours(summed, counted=counted), 2),
              "counted_runs": counted_runs(counted, summed, args.runs)}
    (args.work / "choice.json").write_text(json.dumps(choice, indent=1) + "\n")
    if args.no_ship:
        return 0

    onnx = args.work / "release.onnx"
    checkpoints = [args.runs / m / "last.ckpt" for m in choice["members"]]
    if all(c.is_file() for c in checkpoints):
        run(TPRNA + ["export", "onnx", *checkpoints, "-o", onnx], logfile)
    elif winner == record.get("winner"):  # the record's winner, its runs gone: it is the model shipped now
        log(f"{winner}: runs gone; it is the shipped model, which is benchmarked again")
        onnx = REPO / "tprna" / "serve" / "model" / "tprna-rna.onnx"
    else:
        raise SystemExit(f"the winner {winner} has no checkpoints under {args.runs} to export")
    run([sys.executable, REPO / "scripts" / "release_benchmarks.py", "--ship", "--model", onnx,
         "--data", args.data, "--work", args.work, "--store", args.store], logfile)
    log(f"done in {(time.time() - t0) / 3600:.2f} h: tprna/serve/model/, results/RELEASE.md")
    return 0


def selection_text(n_chains: int, n_held_out: int, n_families: int) -> str:
    return (f"the feature set, then its schedule, by {SELECTION_KEY} precision on {n_chains} single sequences "
            f"(spot_vl and {n_held_out} held-out TR chains; runs trained without them: the mean of "
            f"{len(STAGE_SEEDS)} seeds per feature set, {len(STAGE_SCHEDULE_SEEDS)} per schedule option), then "
            f"which coupling channel to add ({' or '.join(COUPLING_CHANNELS)}, or none), by {SELECTION_KEY} on "
            f"{n_families} held-out coconet "
            f"train families with their alignments (the mean of {len(STAGE_SEEDS)} seeds; at most "
            f"{SINGLE_SEQUENCE_TOLERANCE} lost on those single sequences), then whether to train on searched "
            "alignments too, then whether the SPOT-RNA-2D training chains train with their searched alignments "
            "too, then whether the runs start from a pretraining on simulated families, then whether half the "
            "examples on an alignment train without the thermodynamic channel, then whether depth and homolog "
            "sampling take a quarter of the alignment examples each instead of half, then whether the runs train "
            f"{LONG_EPOCHS:g} times the epochs, then whether depth and homolog sampling take three quarters, then "
            f"whether long-range pairs weigh {FAR_WEIGHT:g} times in the loss, then whether the model is the mean of "
            "the weights of the low-learning-rate epochs, then whether the network also reads the alignment's depth "
            "(a log10(1 + Neff) channel), then whether half the examples on an alignment train with a homolog as "
            f"the query, then whether the network is the deeper {MODEL_OPTIONS['deep']}, then the shallower "
            f"{MODEL_OPTIONS['shallow']}, then whether each example on an alignment trains {ALIGNMENT_REPEATS} times "
            f"an epoch, then whether the runs train on windows of {WINDOW_CROP} residues, each by the same rule on "
            f"the same families, then whether the shipped model averages {len(ENSEMBLE_SEEDS)} seeds' networks "
            f"instead of {len(STAGE_SEEDS)} (on the same families, by the same rule, from the stage recipes trained "
            f"with {len(ENSEMBLE_SEEDS)} seeds): the average of that recipe's runs of those seeds ships "
            f"({SELECTION_KEY} on spot_vl reports it; with one seed, or a record from before, it chooses among the "
            "recipe's runs and their average, ties to fewer networks)")


def training_hours(runs: list[Path], counted: set[str] = frozenset()) -> float:
    """Training time summed from the runs' epoch logs; an epoch logged in several (a resumed
    run, a continued run's copied history) counts once, and a run in ``counted`` (the record
    already counts it) not at all."""
    epochs = set()
    for path in runs:
        if str(path) in counted:
            continue
        log_file = path / "metrics.jsonl"
        if log_file.is_file():
            epochs |= {line for line in log_file.read_text().splitlines() if line.strip()}
    return sum(json.loads(line).get("seconds", 0.0) for line in epochs) / 3600


if __name__ == "__main__":
    sys.exit(main())
