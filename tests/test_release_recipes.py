"""The release script's recipes (feature set / options) and the held-out chains it screens
homologs against."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import train_release  # noqa: E402


def test_recipe_options_by_hand():
    depth = ["--depth-sampling", train_release.DEPTH_SAMPLING]
    homolog = ["--homolog-sampling", train_release.HOMOLOG_SAMPLING]
    assert train_release.recipe_options("cov+ss") == ("cov+ss", [], False)
    assert train_release.recipe_options("cov+ss+profile/depth") == ("cov+ss+profile", depth, False)
    assert train_release.recipe_options("cov+ss/more") == ("cov+ss", [], True)
    assert train_release.recipe_options("cov+ss/more+homolog") == ("cov+ss", homolog, True)
    assert train_release.recipe_options("cov+ss/homolog+depth") == ("cov+ss", homolog + depth, False)
    for bad in ("cov+ss/deep", "cov+ss/more+more", "cov+ss/more+"):
        with pytest.raises(SystemExit, match="unknown recipe option"):
            train_release.recipe_options(bad)
    text = train_release.recipe_text("cov+ss/more+homolog", 14)
    assert text.startswith("14 epochs") and "then 3 more" in text and "the last 3 with homolog sampling" in text


def test_candidates_parse_and_continuations_need_their_base():
    jobs = train_release.parse_candidates(train_release.DEFAULT_CANDIDATES)
    assert ("cov+ss", 1) in jobs and ("cov+ss/more+homolog", 0) in jobs
    assert train_release.parse_candidates("cov+ss:0,2") == [("cov+ss", 0), ("cov+ss", 2)]
    with pytest.raises(SystemExit, match="continues cov\\+ss:1"):
        train_release.parse_candidates("cov+ss:0 cov+ss/more:1")


def test_held_out_chains_are_every_scored_chain_and_no_training_one(shared_data, tmp_path):
    plan = train_release.leakage_plan(shared_data, drop_families=False)
    fasta = train_release.write_held_out_chains(shared_data, tmp_path, plan)
    names = {line[1:].strip() for line in fasta.read_text().splitlines() if line.startswith(">")}
    spot = list(csv.DictReader(open(shared_data / "spot_rna_2d/manifest.csv")))
    ts = {r["id"] for r in spot if r["split"].startswith("TS") and r["label"]}
    assert ts <= names and set(plan["spot_vl"]) <= names and set(plan["coconet_test"]) <= names
    puzzles = {f"puzzles:{r['id']}" for r in csv.DictReader(open(shared_data / "rhofold_puzzles/manifest.csv"))}
    assert puzzles <= names
    assert not names & (set(plan["spot_tr"]) | set(plan["coconet_train_families"]))
    json.dumps(plan)  # the plan the script writes beside it stays JSON


def test_held_out_clusters_leave_no_close_chain_in_training(shared_data):
    plan = train_release.leakage_plan(shared_data, drop_families=False)
    stage = train_release.held_out_clusters(shared_data, plan)
    assert stage == train_release.held_out_clusters(shared_data, plan)  # a fixed draw
    held, scored = stage["held_out"], stage["scored"]
    assert len(held) >= train_release.HELD_OUT_CHAINS and set(held) <= set(plan["spot_tr"])
    assert set(scored) | set(stage["not_scored"]) == set(held) and not set(scored) & set(stage["not_scored"])
    # whole clusters: no chain that still trains is ≥ 70 % identical to a held-out one in the leakage
    # rule's direction; a scored chain is < 70 % in both directions to every training chain and
    # coconet train query, and an unscored one ≥ 70 % to the RNA named
    from tprna.redundancy import sequence_identity

    def identity(a, b):
        return max(sequence_identity(a, b), sequence_identity(b, a))

    sequence = {r["id"]: r["sequence"] for r in csv.DictReader(open(shared_data / "spot_rna_2d/manifest.csv"))}
    training = [c for c in plan["spot_tr"] if c not in set(held)]
    first = {c: k for k, c in enumerate(plan["spot_tr"])}  # the linkage aligns the earlier chain first
    assert all(sequence_identity(*(sequence[c] for c in sorted((h, t), key=first.get))) < 0.7
               for h in held for t in training)
    queries = {r["id"]: r["query"] for r in train_release.coconet_rows(shared_data)
               if r["id"] in plan["coconet_train_families"]}
    others = queries | {t: sequence[t] for t in training}
    assert all(identity(sequence[c], q) < 0.7 for c in scored for q in others.values())
    assert all(identity(sequence[c], others[f]) >= 0.7 for c, f in stage["not_scored"].items())
    assert len(scored) >= 20


def test_the_stage_chooses_the_schedule_against_the_plain_recipe():
    feature_sets = {"cov+ss": {"mean": 0.44}, "cov+ss+profile": {"mean": 0.46}}
    schedules = {"cov+ss+profile/depth": {"mean": 0.45}, "cov+ss+profile/depth+homolog": {"mean": 0.47}}
    assert train_release.choose_schedule(feature_sets, schedules, "cov+ss+profile") == "cov+ss+profile/depth+homolog"
    schedules["cov+ss+profile/depth+homolog"]["mean"] = 0.46  # a tie goes to the plain recipe
    assert train_release.choose_schedule(feature_sets, schedules, "cov+ss+profile") == "cov+ss+profile"
    # another feature set's schedules never compete
    assert train_release.choose_schedule(feature_sets, {"cov+ss+profile/depth": {"mean": 0.9}}, "cov+ss") == "cov+ss"


def test_winner_is_the_best_vl_run_of_the_chosen_recipe():
    def row(vl, members=1):
        return {"spot_vl": {"long|L": vl}, "members": ["m"] * members}
    rows = {"mffnet36_cov_ss_seed0": row(0.48), "mffnet36_cov_ss_profile_seed0": row(0.46),
            "mffnet36_cov_ss_profile_seed1": row(0.45), "mffnet36_cov_ss_profile_depth_seed0": row(0.47),
            "cov+ss+profile average of seeds 0,1": row(0.46, 2)}
    recipe_of = {"mffnet36_cov_ss_seed0": "cov+ss", "mffnet36_cov_ss_profile_seed0": "cov+ss+profile",
                 "mffnet36_cov_ss_profile_seed1": "cov+ss+profile",
                 "mffnet36_cov_ss_profile_depth_seed0": "cov+ss+profile/depth",
                 "cov+ss+profile average of seeds 0,1": "cov+ss+profile"}
    # another recipe's better VL figure never wins; a tie goes to fewer networks
    assert train_release.choose_winner(rows, recipe_of, "cov+ss+profile") == "mffnet36_cov_ss_profile_seed0"
    assert train_release.choose_winner(rows, recipe_of, "cov+ss+profile/depth") == "mffnet36_cov_ss_profile_depth_seed0"
    with pytest.raises(SystemExit, match="no candidate trains"):
        train_release.choose_winner(rows, recipe_of, "precision+ss")


def test_release_report_prints_the_feature_set_stage():
    import release_benchmarks
    stage = {"clusters": 72, "held_out": 37, "scored": 26, "file": "held_out_clusters.txt", "chosen": "cov+ss+profile",
             "feature_sets": {"cov+ss": {"seeds": {"0": 0.441, "1": 0.437}, "mean": 0.439},
                              "cov+ss+profile": {"seeds": {"0": 0.469, "1": 0.454}, "mean": 0.4615}}}
    lines = release_benchmarks.feature_set_table({"feature_set_stage": stage})
    assert "| `cov+ss` | 0.441 | 0.437 | 0.439 |" in lines
    assert "| `cov+ss+profile` **(chosen)** | 0.469 | 0.454 | 0.462 |" in lines
    assert "without 37 SPOT-RNA-2D TR chains" in lines[0] and "the 26 of them" in lines[0]
    assert "Then the schedule, among the candidates of that feature set, by VL" in lines[-2]
    assert release_benchmarks.feature_set_table({}) == []  # a choice made before the stage existed
    stage |= {"chosen_recipe": "cov+ss+profile/depth+homolog",
              "schedules": {"cov+ss+profile/depth": {"seeds": {"0": 0.458}, "mean": 0.458},
                            "cov+ss+profile/depth+homolog": {"seeds": {"0": 0.481}, "mean": 0.481}}}
    lines = release_benchmarks.feature_set_table({"feature_set_stage": stage})
    assert "| `cov+ss+profile` **(chosen)** | 0.469 | 0.454 | 0.462 |" in lines
    assert "| `cov+ss+profile/depth` | 0.458 | 0.458 |" in lines
    assert "| `cov+ss+profile/depth+homolog` **(chosen)** | 0.481 | 0.481 |" in lines
    assert "among the runs of the chosen recipe" in lines[-2]
