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
