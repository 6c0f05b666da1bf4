#!/usr/bin/env python
"""Benchmark an exported model on data others made and, with ``--ship``, make it the model
tpRNA ships: ``tprna/serve/model/`` (ONNX, ``model.json`` with its sha256 and the figures
the predictor quotes, ``MODEL_CARD.md``) and ``results/RELEASE.md``.

Every figure is scored by tpRNA's own metrics code, the model run through the serving path
(:class:`tprna.serve.Predictor`, onnxruntime), the peers read from their published maps:

1. SPOT-RNA-2D's test chains (TS1, TS2, TS3, all), single sequences, the source's labels,
   the chains with both peers' maps: the model vs SPOT-RNA-2D, RNAcontact (both published
   with alignments) and ViennaRNA base-pair probabilities.  Headline: the chains < 70 %
   identical to every RNA the model trained on (``leakage.json`` of
   ``scripts/train_release.py``); the table on all chains follows with the overlap counted.
2. The 14 coconet test families with their alignments: the model vs CoCoNet, plmDCA,
   mfDCA, EVcouplings, PSICOV, APC and thermodynamics.
3. The same families as single sequences (the query alone): what the alignment adds.

    python scripts/release_benchmarks.py --model M.onnx [--ship] [--work results/release]
"""
from __future__ import annotations

import argparse
import csv
import functools
import gzip
import json
import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tprna.evaluate import (Labels, attainable, attainable_line, baseline_maps, load_evaluation_set,  # noqa: E402
                            peer_maps, score_maps)
from tprna.features import FEATURE_SETS, base_pair_probabilities  # noqa: E402
from tprna.report import markdown_table  # noqa: E402
from tprna.serve import Predictor  # noqa: E402
from tprna.store.schema import file_sha256  # noqa: E402
from tprna.structure import read_label_matrix  # noqa: E402
from train_release import (MFF_BLOCKS, OPTION_STAGES, SINGLE_SEQUENCE_TOLERANCE, coconet_rows,  # noqa: E402
                           every_seed, is_stage_variant, read_fasta_sequence, seed_spread, spot_rows,
                           two_seed_means)  # (scripts/)

PACKAGE_MODEL = REPO / "tprna" / "serve" / "model"
MODEL_FILE = "tprna-rna.onnx"
OURS = "tpRNA (shipped model)"
# The peers' published maps were computed WITH alignments: SPOT-RNA-2D's repository keeps its
# coevolution mode (PSSM + DCA of RNAcmap alignments searched in NCBI nt) in predictions/SPOT-RNA-2D
# and its single-sequence mode apart (predictions/SPOT-RNA-2D-Single, not in the shared data);
# RNAcontact reads alignments too.  tpRNA is given the sequence alone here.
SPOT = "SPOT-RNA-2D (RNAcmap alignments)"
RNACONTACT = "RNAcontact (alignments)"
HEADLINE = ("long|L", "long|L/2", "long|L/5", "long|L/10")
COMPONENT_TEXT = {"cov": "covariance of the alignment (25 channels)",
                  "bpp": "ViennaRNA base-pair probabilities of the query (1)",
                  "profile": "the column profile's outer product (25; one-hot for a single sequence)",
                  "apc": "APC-corrected covariance norms (1)", "dca": "APC-corrected precision norms (1)",
                  "plm": "APC-corrected pseudo-likelihood (plmDCA) coupling norms (1)",
                  "alifold": "RNAalifold consensus base-pair probabilities (1)"}


def read_matrix(path: Path) -> np.ndarray:
    """A published L×L probability matrix (gzip text); symmetrised, since some fill only i<j.
    An empty file gives an empty array."""
    with gzip.open(path, "rt") as fh:
        rows = [line.split() for line in fh if line.strip()]
    m = np.array(rows, dtype=np.float64) if rows else np.zeros((0, 0))
    return np.maximum(m, m.T) if m.ndim == 2 and m.shape[0] == m.shape[1] else m


def spot_benchmark(data: Path, predictor: Predictor, leakage: dict) -> tuple[dict, dict]:
    """{subset: results} for the TS chains that have both peers' maps, and the chains' info."""
    root = data / "spot_rna_2d"
    rows = [r for r in csv.DictReader(open(root / "manifest.csv"))
            if r["split"].startswith("TS") and r["label"] and r["rnacontact_pred"] and r["spot_rna_2d_pred"]]
    peers = {}
    for r in rows:  # a published file can be empty (RNAcontact's 6vu1_A): that chain is left out
        pair = {SPOT: read_matrix(root / r["spot_rna_2d_pred"]), RNACONTACT: read_matrix(root / r["rnacontact_pred"])}
        if all(m.shape == (int(r["length"]), int(r["length"])) for m in pair.values()):
            peers[r["id"]] = pair
    rows = [r for r in rows if r["id"] in peers]
    labels, maps = {}, {OURS: {}, SPOT: {}, RNACONTACT: {}, "Thermodynamics (bpp)": {}}
    predictions = {p.id: p for p in predictor.predict([(r["id"], r["sequence"]) for r in rows])}
    for r in rows:
        contacts, observed = read_label_matrix(root / r["label"])
        labels[r["id"]] = Labels(contacts, observed, float(predictions[r["id"]].neff), r["sequence"])
        maps[OURS][r["id"]] = predictions[r["id"]].probabilities
        maps["Thermodynamics (bpp)"][r["id"]] = base_pair_probabilities(r["sequence"])
        for peer, matrix in peers[r["id"]].items():
            maps[peer][r["id"]] = matrix
    overlap = set(leakage["ts_overlapping_training"])
    split_of = {r["id"]: r["split"] for r in rows}
    subsets = {"clean, all": [i for i in labels if i not in overlap]}
    for split in ("TS1", "TS2", "TS3"):
        subsets[f"clean, {split}"] = [i for i in subsets["clean, all"] if split_of[i] == split]
    subsets["every chain (overlap included)"] = list(labels)
    out = {name: {m: score_maps({i: v[i] for i in ids}, labels) for m, v in maps.items()}
           for name, ids in subsets.items()}
    info = {"n": len(labels), "n_overlap": len(overlap & set(labels)),
            "overlap": sorted(overlap & set(labels)),
            "attainable": {name: attainable({i: labels[i] for i in ids}) for name, ids in subsets.items()}}
    return out, info


def coconet_benchmark(data: Path, predictor: Predictor, store: Path) -> tuple[dict, dict, dict]:
    """The coconet test families with alignments (vs every peer) and as single sequences, and
    what a perfect predictor scores on them."""
    # labels and the learning-free baselines from the store's cov+ss entries (any model's inputs
    # are computed by the predictor from the alignment files themselves)
    evaluation = load_evaluation_set(str(store), "test", "cov+ss")
    labels = evaluation.labels
    manifest = {r["id"]: r for r in csv.DictReader(open(data / "coconet" / "manifest.csv"))}
    msas = [data / "coconet" / manifest[i]["msa"] for i in labels]
    with_msa = {p.id: p.probabilities for p in predictor.predict(msas)}
    alone = {p.id: p.probabilities for p in predictor.predict([(i, lab.sequence) for i, lab in labels.items()])}
    maps = {OURS: with_msa}
    maps.update(peer_maps(data / "coconet" / "peer_predictions", {i: lab.contacts.shape[0] for i, lab in labels.items()}))
    maps.update({k: v for k, v in baseline_maps(evaluation).items() if k != "APC (precision)"})
    alignment = {m: score_maps(v, labels) for m, v in maps.items()}
    single = {OURS + ", query alone": score_maps(alone, labels), OURS + ", alignment": alignment[OURS],
              "Thermodynamics (bpp)": alignment["Thermodynamics (bpp)"]}
    return alignment, single, attainable(labels)


def training_sequences(data: Path, leakage: dict) -> dict[str, str]:
    """Every RNA the shipped model trained on: coconet train queries and SPOT-RNA-2D TR chains."""
    families = {r["id"]: r["query"] for r in coconet_rows(data)}
    spot = {r["id"]: r["sequence"] for r in spot_rows(data)}
    return {i: families[i] for i in leakage["coconet_train_families"]} | {i: spot[i] for i in leakage["spot_tr"]}


def puzzles_benchmark(data: Path, predictor: Predictor, trained: dict[str, str]) -> tuple[dict, dict]:
    """The labelled RNA-Puzzles targets (their own alignments; natives or SPOT-RNA-2D labels),
    clean ones only (< 70 % identical to every training RNA), with and without the alignment."""
    from tprna.redundancy import drop_similar
    from tprna.structure import read_labels

    root = data / "rhofold_puzzles"
    rows = [r for r in csv.DictReader(open(root / "manifest.csv")) if r["structure"] or r["spot_rna_2d_label"]]
    queries = {r["id"]: read_fasta_sequence(root / r["fasta"]) for r in rows}
    clean, dirty = drop_similar(queries, trained, 0.7)
    labels = {}
    for r in rows:
        if r["id"] not in clean:
            continue
        source = root / (r["spot_rna_2d_label"] or r["structure"])
        contacts, observed = read_labels(source, queries[r["id"]], chain=r["chain"] or None)
        labels[r["id"]] = Labels(contacts, observed, 0.0, queries[r["id"]])
    with_msa = {p.id: p for p in predictor.predict([root / r["msa"] for r in rows if r["id"] in labels])}
    alone = {p.id: p.probabilities for p in predictor.predict([(i, lab.sequence) for i, lab in labels.items()])}
    for i, lab in labels.items():
        lab.neff = float(with_msa[i].neff)
    maps = {OURS + ", alignment": {i: p.probabilities for i, p in with_msa.items()},
            OURS + ", query alone": alone,
            "Thermodynamics (bpp)": {i: base_pair_probabilities(lab.sequence) for i, lab in labels.items()}}
    return ({m: score_maps(v, labels) for m, v in maps.items()},
            {"clean": sorted(labels), "left_out": {k: list(v) for k, v in dirty.items()},
             "attainable": attainable(labels)})


def figure(results: dict, method: str, key: str = "long|L") -> float:
    return float(results[method]["summary"]["all"]["precision"][tuple(key.split("|"))])


def ships_ensemble(choice: dict) -> bool:
    """Whether the ensemble stage chose the seeds whose average ships, so that VL only reports
    the candidates (``train_release.choose_winner``)."""
    return len(choice.get("ensemble_stage", {}).get("chosen_seeds", [])) > 1


def candidate_table(choice: dict) -> list[str]:
    """Every candidate the release script trained, and each feature set's seed average:
    validation (chooses, or reports when the ensemble stage chose the seeds whose average
    ships) and coconet test (reported, never chooses)."""
    role = "reports" if ships_ensemble(choice) else "chooses"
    lines = [f"| candidate | SPOT-RNA-2D VL long top-L ({role}) | VL long top-L/5 | coconet test long top-L "
             "| test long top-L/5 |", "|---|---:|---:|---:|---:|"]
    for name, row in choice["candidates"].items():
        mark = " **(shipped)**" if name == choice["winner"] else ""
        cells = [f"{row[split][key]:.3f}" for split in ("spot_vl", "test") for key in ("long|L", "long|L/5")]
        lines.append(f"| {name}{mark} | " + " | ".join(cells) + " |")
    return lines


def feature_set_table(choice: dict) -> list[str]:
    """The stage: long top-L of each stage recipe's runs on VL and the held-out TR clusters (runs
    that never saw them), the feature sets first, then the schedules; empty for a choice made
    before the stage existed."""
    stage = choice.get("feature_set_stage")
    if not stage:
        return []
    seeds = list(next(iter(stage["feature_sets"].values()))["seeds"])
    lines = [f"The input features were chosen first: each stage feature set trained {len(seeds)} times (seeds "
             f"{', '.join(seeds)}) without {stage['held_out']} SPOT-RNA-2D TR chains (whole clusters of "
             f"{stage['clusters']} at 70 % identity, `{stage['file']}`), scored on the {stage['scored']} of them < 70 % "
             "identical, both ways, to every RNA that still trains, and on the VL chains; long top-L:", ""]
    lines += _stage_rows(stage["feature_sets"], stage["chosen"], seeds, "feature set")
    schedules = stage.get("schedules")
    if not schedules:
        return lines + ["", "Then the schedule, among the candidates of that feature set, by VL. Every candidate:", ""]
    seeds = list(next(iter(schedules.values()))["seeds"])
    lines += ["", f"Then the schedule, on the same chains by runs trained the same way ({len(seeds)} seed"
              f"{'s' if len(seeds) > 1 else ''}), against the plain recipe's figure above:", ""]
    lines += _stage_rows(schedules, stage["chosen_recipe"], seeds, "recipe")
    last = ("Then the chosen recipe trained on every training RNA with those seeds: their average ships, and VL "
            "reports it (choosing one run by its VL figure would choose the seeds' noise)." if ships_ensemble(choice)
            else "Then, among the runs of the chosen recipe trained on every training RNA (its seeds and their "
            "average), VL chooses.")
    return lines + [""] + stage_tables(choice) + seed_noise_lines(choice) + ensemble_lines(choice) + [
        f"{last} Every candidate:", ""]


def stage_tables(choice: dict) -> list[str]:
    """The stages after the feature set's, in the order they ran (the coupling stage, then
    ``OPTION_STAGES``), each followed by its seed check when measured; a choice made before a
    stage existed has no table for it."""
    return [line for name in ("coupling",) + OPTION_STAGES
            for line in _STAGE_TABLES[f"{name}_stage"](choice) + seed_check_lines(choice, name)]


def seed_check_lines(choice: dict, option: str) -> list[str]:
    """An option stage's variant with more seeds (``train_release.py --check-seeds``), and over
    all its seeds against the stage's base recipe over the same seeds when ``--noise-seeds``
    trained those for it; empty when not measured."""
    check = choice.get(f"{option}_seed_check")
    if not check:
        return []
    variant = next(iter(check["aligned"]))
    stage = choice[f"{option}_stage"]
    base = next(recipe for recipe in stage["aligned"] if recipe != variant)
    extra = list(check["aligned"][variant]["seeds"])
    figures = {part: ", ".join(f"{v:.3f} (seed {k})" for k, v in check[part][variant]["seeds"].items())
               for part in ("aligned", "single")}
    text = (f"More seeds of `{variant}` (`--check-seeds {option}:{','.join(extra)}`, trained and scored like the "
            f"stage's runs; a check, it chooses nothing): with alignments {figures['aligned']}; on the single "
            f"sequences {figures['single']}.")
    noise = choice.get("seed_noise", {})
    if set(noise.get("aligned", {}).get(base, {}).get("seeds", {})) == set(extra):
        both = {recipe: {part: statistics.fmean(every_seed(stage, more, recipe, part).values())
                         for part in ("aligned", "single")} for recipe, more in ((variant, check), (base, noise))}
        text += (f" Over seeds {', '.join(sorted(stage['aligned'][variant]['seeds']) + extra)}: "
                 f"{both[variant]['aligned']:.3f} with alignments and {both[variant]['single']:.3f} single, against "
                 f"`{base}`'s {both[base]['aligned']:.3f} and {both[base]['single']:.3f} over the same seeds (its "
                 f"seeds {', '.join(extra)} from `--noise-seeds`).")
    return [text, ""]


def seed_noise_lines(choice: dict) -> list[str]:
    """How far the seeds alone move the two-seed mean every stage compares, from the chosen
    recipe's runs with more seeds (``train_release.py --noise-seeds``); empty when not measured."""
    noise = choice.get("seed_noise")
    if not noise:
        return []
    stage = choice[next(key for key in (f"{o}_stage" for o in reversed(OPTION_STAGES)) if key in choice)]
    extra = len(next(iter(noise["aligned"].values()))["seeds"])
    means = two_seed_means(stage, noise)[1]
    low, high = min(means), max(means)
    variants = {option: row["mean"] for option in OPTION_STAGES for recipe, row in
                choice.get(f"{option}_stage", {}).get("aligned", {}).items()
                if is_stage_variant(recipe, option) and recipe != stage["chosen_recipe"]}
    where = {side: ", ".join(f"{option} {mean:.3f}" for option, mean in variants.items() if test(mean)) or "none"
             for side, test in (("inside", lambda m: low <= m <= high), ("below", lambda m: m < low),
                                ("above", lambda m: m > high))}
    return [f"How far the seeds alone move the two-seed mean these stages compare: the chosen recipe trained {extra} "
            "more times, in the same way (`--noise-seeds`; this chooses nothing). " + seed_spread(stage, noise) + ". "
            + seed_spread(stage, noise, "single") + ". The stages' variants with alignments inside that range: "
            f"{where['inside']}; below it: {where['below']}; above it: {where['above']}.", ""]


def ensemble_lines(choice: dict) -> list[str]:
    """The ensemble stage: for each recipe with runs of every seed it asks for, long top-L of two
    networks averaged (the mean over the pairs, and their range) against all of them averaged,
    with alignments and single; empty for a choice made before the stage existed."""
    stage = choice.get("ensemble_stage")
    if not stage:
        return []
    n, chosen = len(stage["seeds"]), len(stage["chosen_seeds"])
    seeds = ",".join(map(str, stage["seeds"]))
    lines = [f"Then how many networks the shipped model averages: the stage recipes trained with seeds {seeds} "
             "(a stage's own two and its seed check's two), each scored with its runs' maps averaged two at a time "
             f"(the two-network ensemble every earlier release shipped; the mean over the pairs) and all {n} at "
             f"once, on the same families and single sequences. {n} win when, over the recipes, they beat two with "
             f"alignments and cost the single sequences at most {SINGLE_SEQUENCE_TOLERANCE}; long top-L:", "",
             f"| recipe | aligned, 2 networks (pairs' mean; range) | aligned, {n} networks | single, 2 networks "
             f"(pairs' mean; range) | single, {n} networks |", "|---|---:|---:|---:|---:|"]
    for recipe, aligned in stage["aligned"].items():
        cells = [f"{row['pair_mean']:.3f} ({min(row['pairs'].values()):.3f}–{max(row['pairs'].values()):.3f}) | "
                 f"{row['all']:.3f}" for row in (aligned, stage["single"][recipe])]
        lines.append(f"| `{recipe}` | " + " | ".join(cells) + " |")
    if not stage["aligned"]:
        lines.append(f"| (no recipe with runs of seeds {seeds}) | | | | |")
    return lines + ["", f"Chosen: the chosen recipe's candidates train {chosen} seeds"
                    + (f", and the average of their {chosen} networks ships." if chosen > 1 else "."), ""]


_STAGE_TABLES: dict[str, Callable[[dict], list[str]]] = {}  # record key → its table, for stage_tables


def _stage_table(key: str) -> Callable[[Callable[[dict], str]], Callable[[dict], list[str]]]:
    """Turns a function giving a stage's sentence (from its record ``choice[key]``) into one giving
    the stage's table from the whole choice: the sentence, then each recipe's rows with alignments
    and on the single sequences; empty for a choice made before the stage existed.  The table is
    registered under ``key`` for :func:`stage_tables`."""
    def table_of(sentence: Callable[[dict], str]) -> Callable[[dict], list[str]]:
        @functools.wraps(sentence)
        def table(choice: dict) -> list[str]:
            stage = choice.get(key)
            return [sentence(stage), ""] + _aligned_single_rows(stage) + [""] if stage else []
        _STAGE_TABLES[key] = table
        return table
    return table_of


@_stage_table("coupling_stage")
def coupling_table(stage: dict) -> str:
    """The coupling stage: the chosen recipe without and with each coupling channel, by runs that
    never saw the held-out coconet train families, scored with those families' alignments and
    on the stage's single sequences."""
    seeds = list(next(iter(stage["aligned"].values()))["seeds"])
    channels = len(stage["aligned"]) - 1
    return (f"Then the coupling channel{'s' if channels > 1 else ''}: the chosen recipe without and with "
            f"{'each' if channels > 1 else 'it'}, each trained {len(seeds)} times "
            f"without {len(stage['held_out'])} coconet train families (drawn with a fixed seed, `{stage['file']}`; "
            f"with the {len(stage['spot_left_out'])} SPOT-RNA-2D TR chains ≥ 70 % identical to their queries and "
            f"the held-out clusters above), scored with the alignments of the {len(stage['scored'])} of them < 70 % "
            "identical to every RNA that still trains, and on the single sequences above. A channel wins only "
            "when it is better with alignments and costs the single sequences at most "
            f"{SINGLE_SEQUENCE_TOLERANCE} (of those, the best with alignments); long top-L:")


@_stage_table("search_stage")
def search_table(stage: dict) -> str:
    """The search stage: the coupling stage's choice trained on searched alignments too, by runs
    like that stage's, against that stage's runs of it."""
    database = stage["database"]
    return ("Then searched alignments: the same recipe trained again, in the same way, with each training "
            f"family also seen with its query's alignment searched by {database['search']} ({database['sequences']} "
            f"sequences of the {database['families']} training families' Rfam alignments; median "
            f"{database['median_hits']} hits per query), the input `tprna infer --database` gives a bare sequence"
            + held_out_reads(stage) + ". By the same rule, long top-L:")


def held_out_reads(stage: dict) -> str:
    """What the search stage's check found: training families' searched alignments with rows of a
    held-out family are left out of its runs (a record made before the check says nothing)."""
    if "reads_held_out" not in stage:
        return ""
    n = stage["reads_held_out"]
    return ("; none of those alignments reads a held-out family" if n == 0 else
            f"; {n} of those alignments read a held-out family and were left out of these runs")


@_stage_table("spot_stage")
def spot_table(stage: dict) -> str:
    """The spot stage: the search stage's choice trained with the SPOT-RNA-2D training chains'
    searched alignments too."""
    return ("Then the SPOT-RNA-2D training chains with their searched alignments: the same recipe trained "
            f"again with the {stage['searched_chains']} TR chains that have a hit in that search also seen with "
            f"their alignment ({stage['left_out']} of them left out of these runs: their rows come from a "
            "held-out family, or the chain is held out). By the same rule, long top-L:")


@_stage_table("sim_stage")
def sim_table(stage: dict) -> str:
    """The sim stage: the spot stage's choice with its runs started from a pretraining on
    simulated families with planted long-range helices."""
    sim = stage["simulated"]
    return ("Then pretraining on simulated families: the same recipe trained again, in the same way, from a "
            f"network trained {stage['simulated_epochs']} epochs (after the protein chains) on the train split of "
            f"{sim['n_families']} simulated families (`tprna.simulate`, seed {sim['seed']}; "
            f"{sim['lengths'][0]}–{sim['lengths'][1]} nt, "
            f"{sim['depths'][0]}–{sim['depths'][1]} sequences) whose alignments carry 1–{sim['tertiary_stems']} "
            "planted long-range helices each: contacts that only covariation reveals. By the same rule, long top-L:")


@_stage_table("bppdrop_stage")
def bppdrop_table(stage: dict) -> str:
    """The bppdrop stage: the sim stage's choice with thermodynamics dropout."""
    return ("Then thermodynamics dropout: the same recipe trained again, in the same way, with "
            f"{stage['fraction']:.0%} of the examples still on an alignment (after depth and homolog sampling) "
            "trained each epoch without their base-pair-probability channel, so that the contacts must come "
            "from covariation. By the same rule, long top-L:")


@_stage_table("light_stage")
def light_table(stage: dict) -> str:
    """The light stage: the bppdrop stage's choice with depth and homolog sampling on fewer
    examples."""
    return _sampling_sentence(stage, "lighter", "so that most train on their whole alignment "
                              "(the sampling rate was chosen on single sequences)")


@_stage_table("long_stage")
def long_table(stage: dict) -> str:
    """The long stage: the light stage's choice trained on a longer schedule."""
    return (f"Then a longer schedule: the same recipe trained again, in the same way, for {stage['long_epochs']} "
            f"epochs instead of {stage['epochs']} (the learning rate still stepping down after 70 % of them). By "
            "the same rule, long top-L:")


@_stage_table("heavy_stage")
def heavy_table(stage: dict) -> str:
    """The heavy stage: the long stage's choice with depth and homolog sampling on more
    examples."""
    return _sampling_sentence(stage, "heavier", "so that more train on part of their "
                              "alignment or on one sequence (lighter sampling lost with alignments too)")


@_stage_table("far_stage")
def far_table(stage: dict) -> str:
    """The far stage: the heavy stage's choice with the long-range pairs weighted in the loss."""
    return ("Then the loss weighted to the long-range pairs: the same recipe trained again, in the same way, with "
            f"each pair |i − j| ≥ 24 counting {stage['long_weight']:g} times in the loss's mean (the others once): "
            "the only pairs long top-L ranks. By the same rule, long top-L:")


@_stage_table("swa_stage")
def swa_table(stage: dict) -> str:
    """The swa stage: the far stage's choice with its model the mean of the low-learning-rate
    epochs' weights."""
    last_row, before = "", stage.get("before_averaging")
    if before:
        base = next(recipe for recipe in stage["aligned"] if recipe != before["recipe"])
        same = all(before[part] == stage[part][base] for part in ("aligned", "single"))
        last_row = (" (the last row: the same runs scored with their own last weights, so the averaging's effect "
                    "without the seeds' noise" + ("; it equals the recipe's own runs, trained the same way without "
                                                  "averaging: the runs reproduce bit for bit" if same else "") + ")")
    return ("Then weight averaging: the same recipe trained again, in the same way, with its model the mean of the "
            f"weights after each of its last {stage['epochs'] - stage['average_from']} epochs (from epoch "
            f"{stage['average_from'] + 1}, at the lower learning rate; BatchNorm statistics recomputed for the mean), "
            "so that where a seed's last steps happen to leave the weights matters less. By the same rule, long "
            f"top-L{last_row}:")


@_stage_table("neff_stage")
def neff_table(stage: dict) -> str:
    """The neff stage: the swa stage's choice with the alignment's depth as one more channel."""
    return (f"Then the alignment's depth as an input: the same recipe trained again, in the same way, with one more "
            f"channel, {stage['channel']} on every pair (the coupling maps are standardised to one scale at every "
            "depth, so without it the network cannot tell a deep alignment's couplings from a few rows' noise). By "
            "the same rule, long top-L:")


@_stage_table("hquery_stage")
def hquery_table(stage: dict) -> str:
    """The hquery stage: the neff stage's choice with homologs standing in for the query."""
    return (f"Then homologs as queries: the same recipe trained again, in the same way, with {stage['fraction']:.0%} "
            "of the examples still on an alignment trained each epoch with one of the family's homologs standing in "
            "for the query (its own base-pair probabilities beside the alignment's couplings on the columns it "
            "covers), so that a family's couplings train beside many foldings instead of the query's one. By the "
            "same rule, long top-L:")


@_stage_table("deep_stage")
def deep_table(stage: dict) -> str:
    """The deep stage: the hquery stage's choice on a deeper network."""
    return _network_sentence(stage, "a larger network", "a wider receptive field",
                             "every lever before trained the same network")


@_stage_table("shallow_stage")
def shallow_table(stage: dict) -> str:
    """The shallow stage: the deep stage's choice on a shallower network."""
    return _network_sentence(stage, "a smaller network", "a narrower receptive field",
                             "the larger one lost, and the training alignments may not fill even the release's")


@_stage_table("repeat_stage")
def repeat_table(stage: dict) -> str:
    """The repeat stage: the shallow stage's choice with its alignment examples repeated."""
    return (f"Then more of each epoch on the alignments: the same recipe trained again, in the same way, with each "
            f"example on an alignment trained {stage['repeats']} times an epoch (each copy its own crop and depth / "
            "homolog draws) and each single sequence once: the single sequences outnumber the alignments, and only "
            "an alignment's couplings can teach the network to read them. By the same rule, long top-L:")


@_stage_table("window_stage")
def window_table(stage: dict) -> str:
    """The window stage: the repeat stage's choice trained on longer windows."""
    return (f"Then longer training windows: the same recipe trained again, in the same way, on windows of "
            f"{stage['crop']} residues instead of {stage['base_crop']} (an RNA longer than the window trains on a "
            "random one each epoch): no pair farther apart than the window ever trains, and the long families' "
            "tertiary contacts are among the farthest. By the same rule, long top-L:")


def _network_sentence(stage: dict, kind: str, field: str, why: str) -> str:
    model, base = stage["model"], stage["base_model"]
    return (f"Then {kind}: the same recipe trained again, in the same way, on {model} ({MFF_BLOCKS[model]} MFF "
            f"blocks, {field}) instead of {base} ({MFF_BLOCKS[base]}), pretrained on the protein chains likewise: "
            f"{why}. By the same rule, long top-L:")


def _sampling_sentence(stage: dict, kind: str, why: str) -> str:
    return (f"Then {kind} sampling: the same recipe trained again, in the same way, with depth and homolog "
            f"sampling on {stage['fraction']:.0%} of the alignment examples each instead of half, {why}. By the "
            "same rule, long top-L:")


def _aligned_single_rows(stage: dict) -> list[str]:
    aligned, single = stage["aligned"], stage["single"]
    seeds = list(next(iter(aligned.values()))["seeds"])
    lines = ["| recipe | " + " | ".join(f"aligned, seed {s}" for s in seeds) + " | aligned, mean | "
             + " | ".join(f"single, seed {s}" for s in seeds) + " | single, mean |",
             "|---|" + "---:|" * (2 * len(seeds) + 2)]

    def row(label: str, both: tuple[dict, dict]) -> str:
        return f"| {label} | " + " | ".join(f"{v:.3f}" for figures in both
                                           for v in [*(figures["seeds"][s] for s in seeds), figures["mean"]]) + " |"

    for recipe in aligned:
        mark = " **(chosen)**" if recipe == stage["chosen_recipe"] else ""
        lines.append(row(f"`{recipe}`{mark}", (aligned[recipe], single[recipe])))
    if before := stage.get("before_averaging"):  # the swa stage: its runs without the averaging
        lines.append(row(f"`{before['recipe']}`, the same runs' own last weights (not averaged)",
                         (before["aligned"], before["single"])))
    return lines


def _stage_rows(rows: dict, chosen: str, seeds: list[str], what: str) -> list[str]:
    lines = [f"| {what} | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "|---|" + "---:|" * (len(seeds) + 1)]
    for recipe, row in rows.items():
        mark = " **(chosen)**" if recipe == chosen else ""
        lines.append(f"| `{recipe}`{mark} | " + " | ".join(f"{row['seeds'][s]:.3f}" for s in seeds)
                     + f" | {row['mean']:.3f} |")
    return lines


def benchmark_arguments(parser: argparse.ArgumentParser, out: Path) -> argparse.ArgumentParser:
    """The data, the release run's work folder (leakage.json, choice.json), its store and the
    report a benchmark script writes."""
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "results" / "release")
    parser.add_argument("--store", type=Path, default=REPO / "store" / "release.zarr")
    parser.add_argument("--out", type=Path, default=out)
    return parser


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=PACKAGE_MODEL / MODEL_FILE)
    parser.add_argument("--ship", action="store_true", help="Copy the model into the package with its card")
    args = benchmark_arguments(parser, REPO / "results" / "RELEASE.md").parse_args()
    leakage = json.loads((args.work / "leakage.json").read_text())
    choice = json.loads((args.work / "choice.json").read_text())
    predictor = Predictor(args.model, device="cpu")

    spot, spot_info = spot_benchmark(args.data, predictor, leakage)
    alignment, single, coconet_attainable = coconet_benchmark(args.data, predictor, args.store)
    puzzles, puzzle_info = puzzles_benchmark(args.data, predictor, training_sequences(args.data, leakage))
    clean = spot["clean, all"]
    expected = {"single_sequence": {k: round(figure(clean, OURS, k), 3) for k in HEADLINE},
                "alignment": {k: round(figure(alignment, OURS, k), 3) for k in HEADLINE}}

    meta = predictor.metadata
    lines = [
        "# The shipped model: benchmarks", "",
        f"Model: `{choice['winner']}` ({meta['model_name']}, features `{predictor.spec.feature_set}`), "
        f"written by `scripts/train_release.py` → `scripts/release_benchmarks.py`; run through the serving "
        "path (onnxruntime) and scored by tpRNA's own metrics (CASP top-k, |i−j| ≥ 6, unobserved pairs masked).",
        "Long range = |i−j| ≥ 24. Rule: no scored chain is ≥ 70 % identical (`tprna.redundancy`) to any RNA "
        "the model trained on.", "",
        "## 1. SPOT-RNA-2D test chains, single sequences", "",
        "tpRNA is given each chain's sequence alone. The peers' published maps are not single-sequence "
        "predictions: SPOT-RNA-2D's are its coevolution mode (PSSM and DCA of RNAcmap alignments searched in "
        "NCBI nt; its repository keeps the single-sequence mode, SPOT-RNA-2D-Single, apart), and RNAcontact "
        "reads alignments too.", "",
        f"Chains of TS1–TS3 with both peers' published maps: {spot_info['n']}. The model keeps every coconet "
        f"train family (their alignments are its only covariance data), so the {spot_info['n_overlap']} chains "
        "≥ 70 % identical to one of their queries are left out of the clean tables and counted in the last "
        f"one ({', '.join(spot_info['overlap'])}). SPOT-RNA-2D TR/VL chains ≥ 70 % identical to any test chain "
        f"were dropped from training ({len(leakage['spot_dropped'])}).", ""]
    for name, results in spot.items():
        lines += [f"### {name}", "", markdown_table(results) + attainable_line(spot_info["attainable"][name], "all")]
    coconet_ceiling = attainable_line(coconet_attainable, "all")
    lines += ["## 2. coconet test families, with alignments", "", markdown_table(alignment) + coconet_ceiling,
              "## 3. coconet test families: the query alone vs its alignment", "", markdown_table(single) + coconet_ceiling,
              "## 4. RNA-Puzzles targets, with their alignments and alone", "",
              f"The labelled targets of `rhofold_puzzles` that are < 70 % identical to every training RNA: "
              f"{', '.join(puzzle_info['clean'])}; left out as too close to a training RNA: "
              + ", ".join(f"{k} ({v[0]}, {v[1]:.2f})" for k, v in puzzle_info["left_out"].items()) + ". Never "
              "trained on, never used to choose.", "",
              markdown_table(puzzles) + attainable_line(puzzle_info["attainable"], "all"),
              "## How the shipped model was chosen", "",
              f"Chosen by {choice['selection']}, never by a test table; candidates trained {choice['epochs']} "
              f"epochs (the `more` ones {choice['epochs']} + 3, continuing their base run) from a "
              f"protein-pretrained trunk ({choice['pretrain_epochs']} epochs), crop {choice['crop']}, "
              f"the shipped one {choice.get('schedule', '')}, "
              f"training split `{choice['train_split']}`; shipped: {' + '.join(choice['members'])}. Training "
              f"took {choice['hours']:.1f} h of CPU time in all (summed epoch times; the runs trained two at a "
              "time on this 2-core machine)." + ("" if choice.get("feature_set_stage") else " Every candidate:"),
              ""]
    lines += feature_set_table(choice) + candidate_table(choice) + [""]
    report = "\n".join(lines)

    if args.ship:
        PACKAGE_MODEL.mkdir(parents=True, exist_ok=True)
        target = PACKAGE_MODEL / MODEL_FILE
        if args.model.resolve() != target.resolve():
            shutil.copyfile(args.model, target)
        target.chmod(0o644)  # world-readable package data, whatever mode the export had
        card = {"file": MODEL_FILE, "sha256": file_sha256(target), "name": f"tpRNA {choice['winner']}",
                "version": meta.get("tprna_version"), "feature_set": predictor.spec.feature_set,
                "expected_precision": expected, "card": "MODEL_CARD.md",
                "benchmark": "results/RELEASE.md"}
        (PACKAGE_MODEL / "model.json").write_text(json.dumps(card, indent=1) + "\n")
        (PACKAGE_MODEL / "MODEL_CARD.md").write_text(model_card(choice, leakage, meta, expected, report))
    args.out.write_text(report)
    print(report)
    return 0


def model_card(choice: dict, leakage: dict, meta: dict, expected: dict, report: str) -> str:
    single, aligned = expected["single_sequence"], expected["alignment"]
    homologs = choice.get("homolog_screen")
    return "\n".join([
        "# tpRNA shipped model — model card", "",
        "**What it predicts.** Which nucleotides of an RNA touch in 3-D (any heavy-atom pair < 8 Å), as an "
        "L×L probability map, from an alignment whose first sequence is the query, or from a bare sequence.",
        "",
        f"**Architecture.** {meta['model_name']} (MFF blocks, 64 channels, tpLoss α=0.2 β=0.1)"
        + (f", the average of {len(choice['members'])} networks trained with different seeds" if len(choice["members"]) > 1 else "")
        + f"; input features `{meta['feature_spec']['feature_set']}`: "
        + ", ".join(COMPONENT_TEXT[c] for c in FEATURE_SETS[meta["feature_spec"]["feature_set"]])
        + ". float32 ONNX, dynamic batch and length, output (P+Pᵀ)/2.", "",
        "**Training data.** Protein pretraining on the six shared protein chains (DEEPCON, DNCON2, deepdist; "
        f"GPL-3.0), then {len(leakage['coconet_train_families'])} coconet train families with their Rfam "
        f"alignments and PDB structures (KIT-MBS/coconet, MIT) and {len(leakage['spot_tr'])} SPOT-RNA-2D TR "
        "chains as single sequences with the source's labels (jaswindersingh2/SPOT-RNA-2D, MIT). "
        + ("Each family also trained with its query's alignment searched by nhmmer (tprna.search) in the "
           "sequences of the training families' own Rfam alignments. " if "train_searched" in choice["train_split"]
           else "")
        + ("The SPOT-RNA-2D TR chains with a hit in that search also trained with their searched alignment. "
           if "spot_searched" in choice["train_split"] else "")
        + ("In its homolog-sampling epochs, homologs from those families' alignments trained alone, with "
           "their own base-pair probabilities and the query's labels. " if homologs else "")
        + f"{len(leakage['spot_vl'])} SPOT-RNA-2D VL chains chose the model and were not trained on"
        + (f"; {choice['feature_set_stage']['scored']} TR chains, held out of the runs that chose its input "
           + ("features and schedule" if choice["feature_set_stage"].get("schedules") else "features")
           + ", chose them with VL (the shipped model trains on them)" if choice.get("feature_set_stage")
           else "")
        + (f"; {len(choice['coupling_stage']['scored'])} coconet train families, held out of the runs that "
           "chose whether to add the coupling channel"
           + (" and whether to train on searched alignments" if choice.get("search_stage") else "")
           + ", chose with their alignments (the shipped model trains on them)"
           if choice.get("coupling_stage") else "") + ".", "",
        f"**Filters.** {leakage['rule']}: {len(leakage['spot_dropped'])} SPOT-RNA-2D TR/VL chains dropped as "
        f"≥ 70 % identical to a SPOT-RNA-2D test chain or a coconet test query; "
        f"{len(leakage['ts_overlapping_training'])} test chains close to a coconet train family are scored "
        "apart (see RELEASE.md)"
        + ("; no homolog ≥ 70 % identical to a validation or benchmark chain (SPOT-RNA-2D VL and TS, coconet "
           f"test queries, RNA-Puzzles targets: `{homologs}`) trained alone." if homologs else "."), "",
        f"**Budget.** {choice.get('schedule', str(choice['epochs']) + ' epochs')}, crops of {choice['crop']}; "
        f"{choice['hours']:.1f} h of training on a 2-core CPU for every candidate together. Shipped: "
        f"{' + '.join(choice['members'])}, chosen by {choice['selection']}: "
        + ", ".join(f"{k} {v['spot_vl']['long|L']:.3f}" for k, v in choice["candidates"].items()) + ".", "",
        "**Expected precision (long range, clean test chains).** Single sequence (SPOT-RNA-2D TS): top-L "
        f"{single['long|L']:.2f}, top-L/5 {single['long|L/5']:.2f}. With an alignment (coconet test): top-L "
        f"{aligned['long|L']:.2f}, top-L/5 {aligned['long|L/5']:.2f}.", "",
        "**Limits.** Trained on RNAs of 20–500 nt; the SPOT-RNA-2D chains and most coconet structures are "
        "crystal structures of structured RNAs (riboswitches, ribozymes, tRNAs): expect less on long "
        "non-coding RNAs and on RNAs without a defined fold. Predictions are contacts, not base pairs.", "",
        "**Reproduce.** `bash scripts/train_release.sh` (needs `../shared/data`); its figures match within "
        "the seed spread.", "",
        "**Licenses of the data.** coconet: MIT; SPOT-RNA-2D labels and peers' predictions: MIT; protein "
        "chains: GPL-3.0 (pretraining only; no protein data ships).", "",
        "---", "", report])


if __name__ == "__main__":
    sys.exit(main())
