"""The release script's recipes (feature set / options) and the held-out chains it screens
homologs against."""
from __future__ import annotations

import argparse
import csv
import json
import shutil
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
    for bad in ("cov+ss/wide", "cov+ss/more+more", "cov+ss/more+"):
        with pytest.raises(SystemExit, match="unknown recipe option"):
            train_release.recipe_options(bad)
    text = train_release.recipe_text("cov+ss/more+homolog", 14)
    assert text.startswith("14 epochs") and "then 3 more" in text and "the last 3 with homolog sampling" in text
    # search adds no training flag: it adds the searched alignments' split
    assert train_release.recipe_options("cov+ss/depth+search") == ("cov+ss", depth, False)
    assert train_release.recipe_split("cov+ss/depth+search") == "train,spot_tr,train_searched"
    assert train_release.recipe_split("cov+ss/depth") == "train,spot_tr"
    assert not train_release.trains_searched("cov+ss")
    assert "searched by nhmmer" in train_release.recipe_text("cov+ss/search", 14)
    assert train_release.with_option("cov+ss+dca/depth+homolog", "search") == "cov+ss+dca/depth+homolog+search"
    assert train_release.with_option("cov+ss", "search") == "cov+ss/search"


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
    # the ensemble stage's seeds: their average ships whatever VL says of it; one seed, or seeds
    # no candidate averages exactly, leave the choice to VL
    rows["cov+ss+profile average of seeds 0,1"]["members"] = [
        train_release.slug("cov+ss+profile", seed) for seed in (1, 0)]
    assert (train_release.choose_winner(rows, recipe_of, "cov+ss+profile", (0, 1))
            == "cov+ss+profile average of seeds 0,1")
    for seeds in ((0,), (0, 1, 2)):
        assert train_release.choose_winner(rows, recipe_of, "cov+ss+profile", seeds) == "mffnet36_cov_ss_profile_seed0"


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
    ensemble = {"aligned": {}, "single": {}, "seeds": [0, 1, 2, 3], "chosen_seeds": [0, 1, 2, 3]}
    lines = release_benchmarks.feature_set_table({"feature_set_stage": stage, "ensemble_stage": ensemble})
    assert lines[-2].startswith("Then the chosen recipe trained on every training RNA with those seeds: their "
                                "average ships, and VL reports it")


def test_held_out_families_leave_no_close_rna_in_training(shared_data):
    plan = train_release.leakage_plan(shared_data, drop_families=False)
    stage = train_release.held_out_clusters(shared_data, plan)
    coupling = train_release.held_out_families(shared_data, plan, stage)
    assert coupling == train_release.held_out_families(shared_data, plan, stage)  # a fixed draw
    held = coupling["held_out"]
    assert len(held) == train_release.HELD_OUT_FAMILIES and set(held) <= set(plan["coconet_train_families"])
    assert set(coupling["scored"]) | set(coupling["not_scored"]) == set(held)
    # the runs also leave out the stage's clusters, so they can be scored on those single sequences
    assert set(coupling["exclude"]) == set(held) | set(coupling["spot_left_out"]) | set(stage["held_out"])
    from tprna.redundancy import sequence_identity

    def identity(a, b):
        return max(sequence_identity(a, b), sequence_identity(b, a))

    queries = {r["id"]: r["query"] for r in train_release.coconet_rows(shared_data)}
    sequence = {r["id"]: r["sequence"] for r in csv.DictReader(open(shared_data / "spot_rna_2d/manifest.csv"))}
    excluded = set(coupling["exclude"])
    training = {f: queries[f] for f in plan["coconet_train_families"] if f not in excluded} | {
        c: sequence[c] for c in plan["spot_tr"] if c not in excluded}
    assert all(identity(queries[f], other) < 0.7 for f in coupling["scored"] for other in training.values())
    # a TR chain left out is close to a held-out query; every TR chain that trains is not
    assert all(any(identity(sequence[c], queries[f]) >= 0.7 for f in held) for c in coupling["spot_left_out"])


def test_a_coupling_channel_wins_only_with_alignments_and_at_little_single_sequence_cost():
    recipe, dca, plm = "cov+ss+profile/depth+homolog", "cov+ss+profile+dca/depth+homolog", \
        "cov+ss+profile+plm/depth+homolog"
    assert train_release.coupling_recipe(recipe, "dca") == dca
    assert train_release.coupling_recipe(recipe, "plm") == plm
    assert train_release.coupling_recipe("cov+ss", "dca") == "cov+ss+dca"
    with pytest.raises(SystemExit, match="no feature set 'precision\\+ss\\+dca'"):
        train_release.coupling_recipe("precision+ss", "dca")

    def stage(aligned, single):
        return {"aligned": {r: {"mean": a} for r, a in zip((recipe, dca, plm), aligned)},
                "single": {r: {"mean": s} for r, s in zip((recipe, dca, plm), single)}}
    both = [dca, plm]
    assert train_release.choose_variant(stage((0.60, 0.65, 0.0), (0.48, 0.475, 0.0)), recipe, [dca]) == dca
    assert train_release.choose_variant(stage((0.60, 0.65, 0.0), (0.48, 0.465, 0.0)), recipe, [dca]) == recipe
    assert train_release.choose_variant(stage((0.60, 0.60, 0.0), (0.48, 0.50, 0.0)), recipe, [dca]) == recipe  # tie
    assert train_release.choose_variant(stage((0.60, 0.65, 0.67), (0.48, 0.48, 0.475)), recipe, both) == plm
    # the better one with alignments costs the single sequences too much: the other wins
    assert train_release.choose_variant(stage((0.60, 0.65, 0.67), (0.48, 0.48, 0.46)), recipe, both) == dca
    assert train_release.choose_variant(stage((0.60, 0.65, 0.65), (0.48, 0.48, 0.48)), recipe, both) == dca  # tie
    assert train_release.choose_variant(stage((0.60, 0.59, 0.58), (0.48, 0.48, 0.48)), recipe, both) == recipe


def test_a_stage_record_stands_in_only_for_gone_runs_of_the_same_draw(tmp_path):
    row = {"seeds": {"0": 0.5, "1": 0.6}, "mean": 0.55}
    record = {"scored": ["RF1", "RF2"], "aligned": {"cov+ss": row, "cov+ss+dca": row}}
    assert train_release.stage_record(record, tmp_path, 2, ("aligned",)) == {"cov+ss": row, "cov+ss+dca": row}
    assert train_release.stage_record(record, tmp_path, 3, ("aligned",)) == {}  # another draw
    assert train_release.stage_record({"scored": 26, "feature_sets": {"cov+ss": row}}, tmp_path, 26,
                                      ("feature_sets",)) == {"cov+ss": row}
    assert train_release.stage_record({"scored": 26, "feature_sets": {"cov+ss": row}}, tmp_path, 25,
                                      ("feature_sets",)) == {}
    run = tmp_path / train_release.slug("cov+ss+dca", 1)  # one seed's run on disk: that recipe is scored again
    run.mkdir()
    (run / "last.ckpt").write_bytes(b"")
    assert train_release.stage_record(record, tmp_path, 2, ("aligned",)) == {"cov+ss": row}


def test_training_hours_count_each_epoch_once_and_skip_what_the_record_counts(tmp_path):
    def epochs(name, seconds):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text(
            "".join(json.dumps({"epoch": k, "seconds": s}) + "\n" for k, s in enumerate(seconds)))
        return tmp_path / name
    a, b = epochs("a", [1800, 1800]), epochs("b", [3600])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "metrics.jsonl").write_text((a / "metrics.jsonl").read_text())  # a continued copy
    assert train_release.training_hours([a, b, tmp_path / "c"]) == 2.0
    assert train_release.training_hours([a, b], counted={str(b)}) == 1.0
    record = {"candidates": {"x": {"members": ["a"]}},
              "coupling_stage": {"aligned": {"cov+ss": {"seeds": {"0": 0.5}}}},
              "search_stage": {"aligned": {"cov+ss/search": {"seeds": {"1": 0.5}}}}}
    counted = train_release.record_runs(record, tmp_path)
    assert counted == {str(tmp_path / "a"), str(tmp_path / "protein"),
                       str(tmp_path / "held_out_families" / train_release.slug("cov+ss", 0)),
                       str(tmp_path / "held_out_families" / train_release.slug("cov+ss/search", 1))}
    # "a" gone and trained again under its name: a new run, whose epochs count
    (a / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "seconds": 1800.0}) + "\n")
    counted = train_release.record_runs(record, tmp_path, [a])
    assert str(a) not in counted and str(tmp_path / "protein") in counted
    assert train_release.training_hours([a], counted=counted) == 0.5



def test_a_run_the_record_no_longer_names_is_not_counted_again(tmp_path):
    """A superseded stage's runs stay on disk but leave the record's stage rows: the record
    keeps them in ``counted_runs``, so the next --stages-only does not add their hours again."""
    for name in ("protein", "held_out_families/old", "held_out_families/new"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "seconds": 3600}) + "\n")
    summed = [tmp_path / "protein", tmp_path / "held_out_families" / "old"]
    first = train_release.counted_runs(train_release.record_runs({"hours": 1.0}, tmp_path), summed, tmp_path)
    assert first == ["held_out_families/old", "protein"]
    record = {"hours": 2.0, "counted_runs": first}  # its stage rows no longer name "old"
    counted = train_release.record_runs(record, tmp_path)
    again = summed + [tmp_path / "held_out_families" / "new"]
    assert train_release.training_hours(again, counted=counted) == 1.0  # only the new run
    assert train_release.counted_runs(counted, again, tmp_path) == [
        "held_out_families/new", "held_out_families/old", "protein"]
    # on a fresh machine (no run on disk) the record keeps every run it counted
    third = {"hours": 3.0, "counted_runs": train_release.counted_runs(counted, again, tmp_path)}
    shutil.rmtree(tmp_path / "held_out_families")
    assert train_release.counted_runs(train_release.record_runs(third, tmp_path), [], tmp_path) == [
        "held_out_families/new", "held_out_families/old", "protein"]
    assert train_release.counted_runs(set(), [tmp_path / "held_out_families" / "gone"], tmp_path) == []

def stage_figures(rows: dict[str, tuple[tuple, tuple]]) -> dict:
    """A stage record's figures: each recipe's (seed 0, seed 1, mean) with alignments and on
    the single sequences, as ``{"aligned": …, "single": …}``."""
    return {part: {recipe: {"seeds": {"0": f[k][0], "1": f[k][1]}, "mean": f[k][2]} for recipe, f in rows.items()}
            for k, part in enumerate(("aligned", "single"))}


def test_release_report_prints_the_coupling_stage():
    import release_benchmarks
    recipe, variant = "cov+ss+profile/depth+homolog", "cov+ss+profile+dca/depth+homolog"
    coupling = {"held_out": ["RF1", "RF2", "RF3"], "spot_left_out": ["1abc_A"], "scored": ["RF1", "RF2"],
                "file": "held_out_families.txt", "chosen_recipe": variant} | stage_figures({
        recipe: ((0.61, 0.63, 0.62), (0.48, 0.47, 0.475)), variant: ((0.66, 0.68, 0.67), (0.47, 0.47, 0.47))})
    lines = release_benchmarks.coupling_table({"coupling_stage": coupling})
    assert "without 3 coconet train families" in lines[0] and "the 2 of them" in lines[0]
    assert lines[0].startswith("Then the coupling channel: the chosen recipe without and with it,")
    plm = "cov+ss+profile+plm/depth+homolog"
    both = coupling | {part: coupling[part] | {plm: {"seeds": {"0": 0.65, "1": 0.64}, "mean": 0.645}}
                       for part in ("aligned", "single")}
    lines_both = release_benchmarks.coupling_table({"coupling_stage": both})
    assert lines_both[0].startswith("Then the coupling channels: the chosen recipe without and with each,")
    assert f"| `{plm}` | 0.650 | 0.640 | 0.645 | 0.650 | 0.640 | 0.645 |" in lines_both
    assert f"| `{recipe}` | 0.610 | 0.630 | 0.620 | 0.480 | 0.470 | 0.475 |" in lines
    assert f"| `{variant}` **(chosen)** | 0.660 | 0.680 | 0.670 | 0.470 | 0.470 | 0.470 |" in lines
    assert release_benchmarks.coupling_table({}) == []
    stage = {"clusters": 72, "held_out": 37, "scored": 26, "file": "held_out_clusters.txt", "chosen": "cov+ss",
             "feature_sets": {"cov+ss": {"seeds": {"0": 0.44}, "mean": 0.44}}, "chosen_recipe": "cov+ss",
             "schedules": {"cov+ss/depth": {"seeds": {"0": 0.43}, "mean": 0.43}}}
    lines = release_benchmarks.feature_set_table({"feature_set_stage": stage, "coupling_stage": coupling})
    assert lines.index(f"| `{variant}` **(chosen)** | 0.660 | 0.680 | 0.670 | 0.470 | 0.470 | 0.470 |") \
        < len(lines) - 2 and "among the runs of the chosen recipe" in lines[-2]


def test_release_report_prints_the_search_stage():
    import release_benchmarks
    recipe, variant = "cov+ss+dca/depth", "cov+ss+dca/depth+search"
    rows = stage_figures({recipe: ((0.72, 0.70, 0.71), (0.46, 0.47, 0.465)),
                          variant: ((0.74, 0.74, 0.74), (0.47, 0.48, 0.475))})
    search = rows | {"chosen_recipe": variant, "scored": ["RF1"],
                     "database": {"families": 56, "sequences": 1234, "search": "nhmmer against db.fa",
                                  "median_hits": 300, "without_hits": 0}}
    coupling = rows | {"held_out": ["RF1"], "spot_left_out": [], "scored": ["RF1"], "file": "f.txt",
                       "chosen_recipe": recipe}
    lines = release_benchmarks.stage_tables({"coupling_stage": coupling, "search_stage": search})
    at = next(k for k, line in enumerate(lines) if line.startswith("Then searched alignments"))
    assert "1234 sequences of the 56 training families" in lines[at]
    assert "read a held-out family" not in lines[at]  # a record made before the check
    checked = release_benchmarks.search_table({"search_stage": search | {"reads_held_out": 0}})
    assert "; none of those alignments reads a held-out family. By" in checked[0]
    checked = release_benchmarks.search_table({"search_stage": search | {"reads_held_out": 2}})
    assert "; 2 of those alignments read a held-out family and were left out of these runs. By" in checked[0]
    assert f"| `{recipe}` **(chosen)** | 0.720 | 0.700 | 0.710 | 0.460 | 0.470 | 0.465 |" in lines[:at]
    assert f"| `{variant}` **(chosen)** | 0.740 | 0.740 | 0.740 | 0.470 | 0.480 | 0.475 |" in lines[at:]
    assert release_benchmarks.search_table({"coupling_stage": coupling}) == []  # chosen before the stage


def write_alignment(path: Path, family) -> Path:
    path.write_text("".join(f">{family.id}_{n}\n{row}\n" for n, row in enumerate(family.sequences)))
    return path


def test_sequence_database_by_hand(tmp_path):
    a = tmp_path / "RFa.faclean"
    a.write_text(">q\nAC-GU.ACGUAC\n>short\n--ACG-------\n>b\nGGGG-CCCCAAU\n")
    b = tmp_path / "RFb.faclean"
    b.write_text(">x\nUUUUUAAAAAG\n")
    database = tmp_path / "db.fa"
    assert train_release.sequence_database([a, b], database) == 3  # the 3-nt row is dropped
    assert database.read_text() == ">RFa_0\nACGUACGUAC\n>RFa_1\nGGGGCCCCAAU\n>RFb_2\nUUUUUAAAAAG\n"


def test_searched_alignments_come_from_training_families_only(tmp_path):
    """Each training family's query gets its searched alignment (the family's members, found in
    the training families' sequences), as a train_searched entry with the family's structure; a
    test family never enters the database, so its members never reach a training alignment."""
    pytest.importorskip("pyhmmer")
    from tprna.simulate import simulate_family

    close = dict(pair_mutation=0.1, unpaired_mutation=0.15)
    train = simulate_family(70, 20, 3, **close)
    test = simulate_family(70, 20, 3, **close)  # the test family is the training family's twin
    train.id, test.id = "RFtrain", "RFtest"
    manifest = tmp_path / "coconet_manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "msa", "structure", "chain", "split"])
        writer.writerow(["RFtrain", write_alignment(tmp_path / "RFtrain.faclean", train), "train.pdb", "A", "train"])
        writer.writerow(["RFtest", write_alignment(tmp_path / "RFtest.faclean", test), "test.pdb", "B", "test"])
    searched, database, sources = train_release.searched_manifest(tmp_path, manifest)
    assert sources == {"RFtrain_nhmmer": ["RFtrain"]}  # its rows all come from its own family
    rows = list(csv.DictReader(open(searched)))
    assert [(r["id"], r["structure"], r["chain"], r["split"]) for r in rows] == [
        ("RFtrain_nhmmer", "train.pdb", "A", "train_searched")]
    db = (tmp_path / "searched" / "train_family_sequences.fa").read_text()
    assert database["sequences"] == db.count(">") == train.depth and "RFtest" not in db
    from tprna.msa import read_msa
    msa = read_msa(rows[0]["msa"])
    assert msa.query == train.query
    # every member found (the query's own copy too); nhmmer also reads the reverse strand, where a
    # simulated family's perfect stems make a member's reverse complement a weaker second hit
    assert {name.split("/")[0] for name in msa.ids[1:]} == {f"RFtrain_{n}" for n in range(train.depth)}
    assert database["families"] == 1 and database["without_hits"] == 0


def test_searched_alignments_without_pyhmmer_stop_the_release_in_one_line(tmp_path, no_pyhmmer):
    (tmp_path / "RFa.faclean").write_text(">q\nACGUACGUACGU\n")
    manifest = tmp_path / "coconet_manifest.csv"
    manifest.write_text(f"id,msa,structure,chain,split\nRFa,{tmp_path / 'RFa.faclean'},a.pdb,A,train\n")
    with pytest.raises(SystemExit, match="search stage: .*pip install 'tprna\\[search\\]'"):
        train_release.searched_manifest(tmp_path, manifest)


def test_alignment_record_keeps_every_recipe_and_replaces_the_rescored(tmp_path):
    import alignment_report
    record = tmp_path / "record.json"
    old = {"cov+ss": [{"alignment": 0.68}, {"alignment": 0.70}], "cov+ss+dca": [{"alignment": 0.72}]}
    curve = {1: (0.1, 0.6, 14), 0: (40.0, 0.7, 14)}
    summary, curves = alignment_report.merge_record(record, old, {r: curve for r in old})
    assert summary == old and curves["cov+ss"] == curve  # depth 0 ("all rows") survives the JSON keys
    new = {"cov+ss+dca": [{"alignment": 0.74}, {"alignment": 0.76}], "cov+ss+profile+dca": [{"alignment": 0.75}]}
    summary, curves = alignment_report.merge_record(record, new, {r: {1: (0.1, 0.5, 14)} for r in new})
    assert list(summary) == ["cov+ss", "cov+ss+dca", "cov+ss+profile+dca"]  # the recorded order, new ones after
    assert summary["cov+ss"] == old["cov+ss"] and summary["cov+ss+dca"] == new["cov+ss+dca"]
    assert curves["cov+ss+dca"] == {1: (0.1, 0.5, 14)} and curves["cov+ss"] == curve
    assert json.loads(record.read_text())["cov+ss+profile+dca"]["seeds"] == [{"alignment": 0.75}]
    # a recipe whose earlier runs are gone gains seeds: the curve is the seed-weighted mean
    more = {"cov+ss+dca": [{"alignment": 0.70}], "precision+ss": [{"alignment": 0.64}]}
    summary, curves = alignment_report.merge_record(record, more, {r: {1: (0.1, 0.8, 14)} for r in more},
                                                    add_seeds=True)
    assert summary["cov+ss+dca"] == new["cov+ss+dca"] + more["cov+ss+dca"]
    assert curves["cov+ss+dca"] == {1: (0.1, pytest.approx((0.5 * 2 + 0.8) / 3), 14)}
    assert summary["precision+ss"] == more["precision+ss"] and summary["cov+ss"] == old["cov+ss"]


def test_the_benchmarks_feature_cache_gives_the_features_once(tmp_path):
    """scripts/feature_cache.py: inside the block the serving path's make_features answers
    from the cache (the same arrays as computed), across processes through the folder;
    another spec or another alignment is computed; outside the block nothing is cached."""
    import numpy as np

    from feature_cache import shared_features
    from tprna import features
    from tprna.features import FeatureSpec
    from tprna.serve.items import serving_input
    from helpers import coupled_alignment, rna

    msa, other = coupled_alignment(40), rna("ACGUACGUAC", "ACGUUCGUAC", "AGGUACGAAC")
    spec = FeatureSpec(feature_set="cov+ss+profile+plm")
    plain = serving_input(msa, spec)
    with shared_features(tmp_path) as counts:
        first, again = serving_input(msa, spec), serving_input(msa, spec)
        serving_input(other, spec)
        serving_input(msa, FeatureSpec())
    assert counts == {"hits": 1, "misses": 3} and len(list(tmp_path.glob("*.npz"))) == 3
    for got in (first, again):
        np.testing.assert_array_equal(got[0], plain[0])
        assert got[1] == plain[1]
    with shared_features(tmp_path) as counts:  # a later run: read from the folder
        np.testing.assert_array_equal(serving_input(msa, spec)[0], plain[0])
    assert counts == {"hits": 1, "misses": 0}
    assert features.make_features.__name__ == "make_features"  # put back


def test_spot_recipes_train_the_searched_spot_chains_too():
    assert train_release.recipe_split("cov+ss/depth+search+spot") == "train,spot_tr,train_searched,spot_searched"
    assert train_release.recipe_split("cov+ss/spot") == "train,spot_tr,spot_searched"
    assert train_release.recipe_options("cov+ss/homolog+spot")[1] == ["--homolog-sampling",
                                                                        train_release.HOMOLOG_SAMPLING]
    assert "SPOT-RNA-2D training chains" in train_release.recipe_text("cov+ss/search+spot", 14)
    assert train_release.with_option("cov+ss/depth+search", "spot") == "cov+ss/depth+search+spot"


def test_source_families_and_the_stage_exclusions_by_hand():
    ids = ("3abc_A", "RF00005_1_12/2-75", "RF00005_1_8/1-70", "RF01051_3/5-60")
    assert train_release.source_families(ids) == ["RF00005_1", "RF01051"]
    sources = {"3abc_A_nhmmer": ["RF00005_1", "RF01051"], "4xyz_B_nhmmer": ["RF00005_1"],
               "5def_C_nhmmer": ["RF02001_2"]}
    # a held-out family among its rows' families, or the chain itself held out
    assert train_release.stage_exclusions(sources, ["RF01051"], ["5def_C"]) == ["3abc_A_nhmmer", "5def_C_nhmmer"]
    assert train_release.stage_exclusions(sources, [], []) == []


def test_searched_spot_chains_keep_their_labels_and_every_residue(tmp_path):
    """A TR chain with hits becomes a spot_searched entry with its own label file; one whose
    sequence ends in X (a modified base) keeps it as a residue, so its label matrix still fits;
    a chain without hits is left out."""
    pytest.importorskip("pyhmmer")
    from tprna.msa import read_msa
    from tprna.simulate import simulate_family

    family = simulate_family(60, 20, 3, pair_mutation=0.1, unpaired_mutation=0.15)
    family.id = "RFtrain"
    database = tmp_path / "db.fa"
    train_release.sequence_database([write_alignment(tmp_path / "RFtrain.faclean", family)], database)
    spot = tmp_path / "spot_manifest.csv"
    (tmp_path / "hit.fasta").write_text(f">hit\n{family.query}X\n")
    (tmp_path / "none.fasta").write_text(">none\n" + "A" * 30 + "\n")
    with open(spot, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "msa", "structure", "chain", "label", "split"])
        writer.writerow(["hit", tmp_path / "hit.fasta", "", "", "hit.true.gz", "spot_tr"])
        writer.writerow(["none", tmp_path / "none.fasta", "", "", "none.true.gz", "spot_tr"])
        writer.writerow(["vl", tmp_path / "hit.fasta", "", "", "vl.true.gz", "spot_vl"])
    manifest, sources = train_release.spot_searched_manifest(tmp_path, spot, database)
    rows = list(csv.DictReader(open(manifest)))
    assert [(r["id"], r["label"], r["split"]) for r in rows] == [("hit_nhmmer", "hit.true.gz", "spot_searched")]
    msa = read_msa(rows[0]["msa"])
    assert msa.length == len(family.query) + 1 and msa.query_text.endswith("X") and msa.depth > 1
    assert sources == {"hit_nhmmer": ["RFtrain"]}


def test_release_report_prints_the_spot_stage():
    import release_benchmarks
    recipe, variant = "cov+ss+plm/depth+search", "cov+ss+plm/depth+search+spot"
    rows = stage_figures({recipe: ((0.75, 0.75, 0.75), (0.47, 0.48, 0.475)),
                          variant: ((0.78, 0.76, 0.77), (0.47, 0.47, 0.47))})
    spot = rows | {"chosen_recipe": variant, "scored": ["RF1"], "searched_chains": 102, "left_out": 44,
                   "file": "held_out_families_spot.txt"}
    lines = release_benchmarks.spot_table({"spot_stage": spot})
    assert "the 102 TR chains that have a hit" in lines[0] and "44 of them left out" in lines[0]
    assert f"| `{variant}` **(chosen)** | 0.780 | 0.760 | 0.770 | 0.470 | 0.470 | 0.470 |" in lines
    assert release_benchmarks.spot_table({}) == []


def test_sim_recipes_start_from_the_simulated_pretraining():
    recipe = "cov+ss+plm/depth+homolog+search+sim"
    assert train_release.pretrains_simulated(recipe) and not train_release.pretrains_simulated("cov+ss/search")
    assert train_release.recipe_split(recipe) == "train,spot_tr,train_searched"  # no store entries of its own
    assert train_release.recipe_options(recipe)[0] == "cov+ss+plm"
    n = train_release.SIMULATED["n_families"]
    assert f"train split of {n} simulated families" in train_release.recipe_text(recipe, 14)
    assert "simulated" not in train_release.recipe_text("cov+ss/search", 14)
    assert train_release.simulated_run(Path("runs"), "cov+ss+plm") == Path("runs/simulated_cov_ss_plm")
    # its stage's runs count once in the record's hours
    record = {"sim_stage": {"aligned": {recipe: {"seeds": {"0": 0.7}, "mean": 0.7}}}}
    assert train_release.record_runs(record, Path("r")) == {
        "r/protein", f"r/held_out_families/{train_release.slug(recipe, 0)}"}


def test_release_report_prints_the_sim_stage():
    import release_benchmarks
    recipe, variant = "cov+ss+plm/depth+search", "cov+ss+plm/depth+search+sim"
    stage = stage_figures({recipe: ((0.75, 0.75, 0.75), (0.47, 0.48, 0.475)),
                           variant: ((0.74, 0.72, 0.73), (0.47, 0.46, 0.465))}) | {
        "chosen_recipe": recipe, "scored": ["RF1"], "simulated_epochs": 5,
        "simulated": {"n_families": 300, "seed": 11, "lengths": [50, 160], "depths": [30, 500], "tertiary_stems": 3}}
    lines = release_benchmarks.sim_table({"sim_stage": stage})
    assert "trained 5 epochs" in lines[0] and "1–3" in lines[0]
    assert "train split of 300 simulated families" in lines[0]
    assert f"| `{recipe}` **(chosen)** | 0.750 | 0.750 | 0.750 | 0.470 | 0.480 | 0.475 |" in lines
    assert f"| `{variant}` | 0.740 | 0.720 | 0.730 | 0.470 | 0.460 | 0.465 |" in lines
    assert release_benchmarks.sim_table({}) == []
    # the spot stage's table is followed by it
    spot = stage | {"searched_chains": 102, "left_out": 44}
    assert release_benchmarks.stage_tables({"spot_stage": spot, "sim_stage": stage})[-len(lines):] == lines


def test_bppdrop_recipes_train_with_thermodynamics_dropout():
    recipe = "cov+ss+plm/depth+homolog+search+bppdrop"
    features, options, continues = train_release.recipe_options(recipe)
    assert features == "cov+ss+plm" and not continues
    assert options[-2:] == ["--bpp-dropout", train_release.BPP_DROPOUT]
    assert train_release.recipe_split(recipe) == "train,spot_tr,train_searched"
    assert "thermodynamics dropout (0.5 of the examples" in train_release.recipe_text(recipe, 14)
    assert "dropout" not in train_release.recipe_text("cov+ss/depth+homolog", 14)
    record = {"bppdrop_stage": {"aligned": {recipe: {"seeds": {"1": 0.7}, "mean": 0.7}}}}
    assert train_release.record_runs(record, Path("r")) == {
        "r/protein", f"r/held_out_families/{train_release.slug(recipe, 1)}"}


def test_release_report_prints_the_bppdrop_stage():
    import release_benchmarks
    recipe, variant = "cov+ss+plm/depth+search", "cov+ss+plm/depth+search+bppdrop"
    stage = stage_figures({recipe: ((0.75, 0.75, 0.75), (0.47, 0.48, 0.475)),
                           variant: ((0.78, 0.76, 0.77), (0.47, 0.46, 0.465))}) | {
        "chosen_recipe": variant, "scored": ["RF1"], "fraction": 0.5}
    lines = release_benchmarks.bppdrop_table({"bppdrop_stage": stage})
    assert "with 50% of the examples still on an alignment" in lines[0]
    assert f"| `{variant}` **(chosen)** | 0.780 | 0.760 | 0.770 | 0.470 | 0.460 | 0.465 |" in lines
    assert f"| `{recipe}` | 0.750 | 0.750 | 0.750 | 0.470 | 0.480 | 0.475 |" in lines
    assert release_benchmarks.bppdrop_table({}) == []
    sim = {"aligned": stage["aligned"], "single": stage["single"], "chosen_recipe": recipe, "simulated_epochs": 5,
           "simulated": {"n_families": 3, "seed": 1, "lengths": [5, 6], "depths": [3, 5], "tertiary_stems": 3}}
    assert release_benchmarks.stage_tables({"sim_stage": sim, "bppdrop_stage": stage})[-len(lines):] == lines


def test_light_recipes_sample_fewer_examples():
    recipe = "cov+ss+plm/depth+homolog+search+light"
    light = train_release.LIGHT_SAMPLING
    assert train_release.recipe_options(recipe) == (
        "cov+ss+plm", ["--depth-sampling", light, "--homolog-sampling", light], False)
    assert train_release.recipe_options("cov+ss+plm/depth+light")[1] == ["--depth-sampling", light]
    text = train_release.recipe_text(recipe, 14)
    assert f"depth sampling ({light:g} of the alignment examples" in text
    assert f"homolog sampling ({light:g} of the alignment examples" in text
    assert "(0.5 of the alignment examples" in train_release.recipe_text("cov+ss/depth+homolog", 14)
    with pytest.raises(SystemExit, match="has neither"):
        train_release.recipe_options("cov+ss/search+light")
    heavy = train_release.HEAVY_SAMPLING
    assert train_release.recipe_options("cov+ss+plm/depth+homolog+heavy")[1] == [
        "--depth-sampling", heavy, "--homolog-sampling", heavy]
    assert f"homolog sampling ({heavy:g} of the alignment examples" in train_release.recipe_text(
        "cov+ss+plm/homolog+heavy", 14)
    with pytest.raises(SystemExit, match="set the same sampling rate"):
        train_release.recipe_options("cov+ss/depth+light+heavy")
    with pytest.raises(SystemExit, match="has neither"):
        train_release.recipe_options("cov+ss/heavy")
    record = {"light_stage": {"aligned": {recipe: {"seeds": {"0": 0.7}, "mean": 0.7}}}}
    assert train_release.record_runs(record, Path("r")) == {
        "r/protein", f"r/held_out_families/{train_release.slug(recipe, 0)}"}


@pytest.mark.parametrize("option, fields, chosen, variant_figures, starts, words, previous, previous_fields, rows", [
    ("light", {"fraction": 0.25}, "recipe", ((0.77, 0.75, 0.76), (0.46, 0.46, 0.46)),
     "", ["sampling on 25% of the alignment examples each"], "bppdrop", {"fraction": 0.5},
     ["| `{recipe}` **(chosen)** | 0.750 | 0.750 | 0.750 | 0.470 | 0.480 | 0.475 |",
      "| `{variant}` | 0.770 | 0.750 | 0.760 | 0.460 | 0.460 | 0.460 |"]),
    ("long", {"epochs": 14, "long_epochs": 21}, "variant", ((0.77, 0.75, 0.76), (0.48, 0.48, 0.48)),
     "", ["for 21 epochs instead of 14"], "light", {"fraction": 0.25},
     ["| `{variant}` **(chosen)** | 0.770 | 0.750 | 0.760 | 0.480 | 0.480 | 0.480 |",
      "| `{recipe}` | 0.750 | 0.750 | 0.750 | 0.470 | 0.480 | 0.475 |"]),
    ("heavy", {"fraction": 0.75}, "recipe", ((0.74, 0.74, 0.74), (0.49, 0.49, 0.49)),
     "Then heavier sampling", ["on 75% of the alignment examples each"], "long", {"epochs": 14, "long_epochs": 21},
     ["| `{recipe}` **(chosen)** | 0.750 | 0.750 | 0.750 | 0.470 | 0.480 | 0.475 |",
      "| `{variant}` | 0.740 | 0.740 | 0.740 | 0.490 | 0.490 | 0.490 |"]),
    ("far", {"long_weight": 3.0}, "variant", ((0.78, 0.76, 0.77), (0.47, 0.47, 0.47)),
     "Then the loss weighted to the long-range pairs", ["counting 3 times"], "heavy", {"fraction": 0.75},
     ["| `{variant}` **(chosen)** | 0.780 | 0.760 | 0.770 | 0.470 | 0.470 | 0.470 |",
      "| `{recipe}` | 0.750 | 0.750 | 0.750 | 0.470 | 0.480 | 0.475 |"]),
    ("swa", {"average_from": 9, "epochs": 14, "before_averaging": {
        "recipe": "cov+ss+plm/depth+search+swa", "aligned": {"seeds": {"0": 0.73, "1": 0.74}, "mean": 0.735},
        "single": {"seeds": {"0": 0.47, "1": 0.49}, "mean": 0.48}}}, "recipe", ((0.75, 0.74, 0.745), (0.48, 0.48, 0.48)),
     "Then weight averaging", ["each of its last 5 epochs (from epoch 10", "the last row: the same runs scored",
                               "seeds' noise):"],
     "far", {"long_weight": 3.0},
     ["| `{recipe}` **(chosen)** | 0.750 | 0.750 | 0.750 | 0.470 | 0.480 | 0.475 |",
      "| `{variant}` | 0.750 | 0.740 | 0.745 | 0.480 | 0.480 | 0.480 |",
      "| `{variant}`, the same runs' own last weights (not averaged) | 0.730 | 0.740 | 0.735 | 0.470 | 0.490 | 0.480 |"]),
    ("neff", {"channel": "log10(1 + Neff)"}, "variant", ((0.77, 0.76, 0.765), (0.47, 0.48, 0.475)),
     "Then the alignment's depth as an input", ["one more channel, log10(1 + Neff) on every pair"],
     "swa", {"average_from": 9, "epochs": 14},
     ["| `{variant}` **(chosen)** | 0.770 | 0.760 | 0.765 | 0.470 | 0.480 | 0.475 |",
      "| `{recipe}` | 0.750 | 0.750 | 0.750 | 0.470 | 0.480 | 0.475 |"]),
    ("hquery", {"fraction": 0.5}, "recipe", ((0.74, 0.75, 0.745), (0.46, 0.47, 0.465)),
     "Then homologs as queries", ["with 50% of the examples still on an alignment", "standing in for the query"],
     "neff", {"channel": "log10(1 + Neff)"},
     ["| `{recipe}` **(chosen)** | 0.750 | 0.750 | 0.750 | 0.470 | 0.480 | 0.475 |",
      "| `{variant}` | 0.740 | 0.750 | 0.745 | 0.460 | 0.470 | 0.465 |"]),
    ("deep", {"model": "mffnet42", "base_model": "mffnet36"}, "recipe", ((0.75, 0.74, 0.745), (0.47, 0.47, 0.47)),
     "Then a larger network", ["on mffnet42 (14 MFF blocks", "instead of mffnet36 (12)"], "hquery", {"fraction": 0.5},
     ["| `{recipe}` **(chosen)** | 0.750 | 0.750 | 0.750 | 0.470 | 0.480 | 0.475 |",
      "| `{variant}` | 0.750 | 0.740 | 0.745 | 0.470 | 0.470 | 0.470 |"]),
    ("shallow", {"model": "mffnet30", "base_model": "mffnet36"}, "variant", ((0.77, 0.76, 0.765), (0.48, 0.48, 0.48)),
     "Then a smaller network", ["on mffnet30 (10 MFF blocks", "instead of mffnet36 (12)"], "deep",
     {"model": "mffnet42", "base_model": "mffnet36"},
     ["| `{variant}` **(chosen)** | 0.770 | 0.760 | 0.765 | 0.480 | 0.480 | 0.480 |",
      "| `{recipe}` | 0.750 | 0.750 | 0.750 | 0.470 | 0.480 | 0.475 |"]),
    ("repeat", {"repeats": 2}, "recipe", ((0.76, 0.75, 0.755), (0.45, 0.46, 0.455)),
     "Then more of each epoch on the alignments", ["trained 2 times an epoch", "each single sequence once"],
     "shallow", {"model": "mffnet30", "base_model": "mffnet36"},
     ["| `{recipe}` **(chosen)** | 0.750 | 0.750 | 0.750 | 0.470 | 0.480 | 0.475 |",
      "| `{variant}` | 0.760 | 0.750 | 0.755 | 0.450 | 0.460 | 0.455 |"]),
    ("window", {"crop": 256, "base_crop": 128}, "variant", ((0.77, 0.75, 0.76), (0.47, 0.48, 0.475)),
     "Then longer training windows", ["on windows of 256 residues instead of 128"], "repeat", {"repeats": 2},
     ["| `{variant}` **(chosen)** | 0.770 | 0.750 | 0.760 | 0.470 | 0.480 | 0.475 |",
      "| `{recipe}` | 0.750 | 0.750 | 0.750 | 0.470 | 0.480 | 0.475 |"]),
], ids=["light", "long", "heavy", "far", "swa", "neff", "hquery", "deep", "shallow", "repeat", "window"])
def test_release_report_prints_each_option_stage_after_the_one_before(option, fields, chosen, variant_figures, starts,
                                                                       words, previous, previous_fields, rows):
    import release_benchmarks
    recipe = "cov+ss+plm/depth+search"
    variant = train_release.stage_variant(recipe, option)
    stage = stage_figures({recipe: ((0.75, 0.75, 0.75), (0.47, 0.48, 0.475)), variant: variant_figures}) | {
        "chosen_recipe": {"recipe": recipe, "variant": variant}[chosen], "scored": ["RF1"]} | fields
    table, previous_table = (getattr(release_benchmarks, f"{name}_table") for name in (option, previous))
    lines = table({f"{option}_stage": stage})
    assert lines[0].startswith(starts) and all(w in lines[0] for w in words)
    for row in rows:
        assert row.format(recipe=recipe, variant=variant) in lines
    assert table({}) == []
    before = stage | {"chosen_recipe": recipe} | previous_fields
    both = release_benchmarks.stage_tables({f"{previous}_stage": before, f"{option}_stage": stage})
    assert both == previous_table({f"{previous}_stage": before}) + lines


def test_long_recipes_train_longer_with_the_step_at_70_percent():
    recipe = "cov+ss+plm/depth+search+long"
    assert train_release.recipe_options(recipe) == ("cov+ss+plm", ["--depth-sampling", 0.5], False)
    assert train_release.recipe_epochs(recipe, 14) == 21
    assert train_release.recipe_epochs("cov+ss+plm/depth+search", 14) == 14
    assert train_release.recipe_epochs("cov+ss+plm", 14) == 14
    assert train_release.recipe_text(recipe, 14).startswith("21 epochs (lr 0.01, ×0.1 from epoch 15)")
    assert train_release.recipe_text("cov+ss+plm/depth", 14).startswith("14 epochs (lr 0.01, ×0.1 from epoch 10)")
    with pytest.raises(SystemExit, match="'more' continues"):
        train_release.recipe_options("cov+ss/more+long")
    record = {"long_stage": {"aligned": {recipe: {"seeds": {"1": 0.7}, "mean": 0.7}}}}
    assert train_release.record_runs(record, Path("r")) == {
        "r/protein", f"r/held_out_families/{train_release.slug(recipe, 1)}"}


def test_far_recipes_weight_the_long_range_pairs_in_the_loss():
    recipe = "cov+ss+plm/depth+search+far"
    weight = train_release.FAR_WEIGHT
    assert train_release.recipe_options(recipe) == (
        "cov+ss+plm", ["--depth-sampling", 0.5, "--long-weight", weight], False)
    assert train_release.recipe_text(recipe, 14).startswith(
        "14 epochs (lr 0.01, ×0.1 from epoch 10), every epoch with depth sampling (0.5 of the alignment examples "
        f"cut to a random depth) and long-range pairs (|i − j| ≥ 24) weighted {weight:g} times in the loss")
    assert train_release.recipe_split(recipe) == "train,spot_tr,train_searched"
    assert train_release.OPTION_STAGES.index("far") == train_release.OPTION_STAGES.index("heavy") + 1
    assert "whether long-range pairs weigh 3 times in the loss" in train_release.selection_text(54, 20, 14)
    record = {"far_stage": {"aligned": {recipe: {"seeds": {"0": 0.7}, "mean": 0.7}}}}
    assert train_release.record_runs(record, Path("r")) == {
        "r/protein", f"r/held_out_families/{train_release.slug(recipe, 0)}"}


def test_swa_recipes_average_the_weights_from_the_learning_rate_step():
    recipe = "cov+ss+plm/depth+search+swa"
    assert train_release.recipe_options(recipe) == ("cov+ss+plm", ["--depth-sampling", 0.5], False)
    assert train_release.schedule_options(recipe, 14) == ["--lr-milestones", 9, "--average-from", 9]
    assert train_release.schedule_options(recipe + "+long", 14) == ["--lr-milestones", 14, "--average-from", 14]
    assert train_release.schedule_options("cov+ss+plm/depth+search", 14) == ["--lr-milestones", 9]
    assert train_release.recipe_text(recipe, 14).startswith(
        "14 epochs (lr 0.01, ×0.1 from epoch 10), the model the mean of the weights after each epoch from epoch 10 "
        "on (weight averaging over the low-learning-rate epochs; BatchNorm statistics recomputed for it), every "
        "epoch with depth sampling")
    with pytest.raises(SystemExit, match="'more' continues the feature set's own run, which 'swa' would not be"):
        train_release.recipe_options("cov+ss/more+swa")
    assert train_release.OPTION_STAGES.index("swa") == train_release.OPTION_STAGES.index("far") + 1
    assert "then whether the model is the mean of the weights of the low-learning-rate epochs, then " \
           in train_release.selection_text(54, 20, 14)
    record = {"swa_stage": {"aligned": {recipe: {"seeds": {"1": 0.7}, "mean": 0.7}}}}
    assert train_release.record_runs(record, Path("r")) == {
        "r/protein", f"r/held_out_families/{train_release.slug(recipe, 1)}"}


def test_the_neff_stage_adds_the_depth_channel_to_the_feature_set():
    recipe = "cov+ss+profile+plm/depth+homolog+search"
    variant = train_release.stage_variant(recipe, "neff")
    assert variant == "cov+ss+profile+plm+neff/depth+homolog+search"
    assert train_release.stage_variant("cov+ss+profile+plm", "neff") == "cov+ss+profile+plm+neff"
    assert train_release.stage_variant(recipe, "swa") == recipe + "+swa"
    # the variant trains like its base, on the feature set with the channel
    assert train_release.recipe_options(variant) == ("cov+ss+profile+plm+neff",) + train_release.recipe_options(
        recipe)[1:]
    assert train_release.recipe_split(variant) == train_release.recipe_split(recipe)
    assert train_release.is_stage_variant(variant, "neff") and not train_release.is_stage_variant(recipe, "neff")
    assert train_release.is_stage_variant(recipe + "+swa", "swa") and not train_release.is_stage_variant(variant, "swa")
    assert train_release.slug(variant, 0) == "mffnet36_cov_ss_profile_plm_neff_depth_homolog_search_seed0"
    assert train_release.OPTION_STAGES.index("neff") == train_release.OPTION_STAGES.index("swa") + 1
    assert "then whether the network also reads the alignment's depth (a log10(1 + Neff) channel), then " \
           in train_release.selection_text(54, 20, 14)
    record = {"neff_stage": {"aligned": {variant: {"seeds": {"1": 0.7}, "mean": 0.7}}}}
    assert train_release.record_runs(record, Path("r")) == {
        "r/protein", f"r/held_out_families/{train_release.slug(variant, 1)}"}


def test_hquery_recipes_train_homologs_as_queries_screened_like_homologs_alone():
    recipe = "cov+ss+profile+plm/depth+homolog+search+hquery"
    assert train_release.recipe_options(recipe) == ("cov+ss+profile+plm", [
        "--depth-sampling", 0.5, "--homolog-sampling", 0.5, "--homolog-query", train_release.HOMOLOG_QUERY], False)
    assert train_release.stage_variant("cov+ss+profile+plm/depth+homolog+search", "hquery") == recipe
    assert train_release.recipe_text(recipe, 14).startswith(
        "14 epochs (lr 0.01, ×0.1 from epoch 10), every epoch with depth sampling (0.5 of the alignment examples "
        "cut to a random depth) and homolog sampling (0.5 of the alignment examples trained as one of their homologs "
        "alone) and homolog queries (0.5 of the examples still on an alignment trained with one of the family's "
        "homologs as the query")
    assert train_release.OPTION_STAGES.index("hquery") == train_release.OPTION_STAGES.index("neff") + 1
    assert "then whether half the examples on an alignment train with a homolog as the query, then " \
           in train_release.selection_text(54, 20, 14)
    # its homologs train, so its runs screen them like a homolog recipe's
    assert train_release.screens_homologs(train_release.recipe_options("cov+ss/depth+hquery")[1])
    assert train_release.screens_homologs(train_release.recipe_options("cov+ss/homolog")[1])
    assert not train_release.screens_homologs(train_release.recipe_options("cov+ss/depth+bppdrop")[1])
    record = {"hquery_stage": {"aligned": {recipe: {"seeds": {"0": 0.7}, "mean": 0.7}}}}
    assert train_release.record_runs(record, Path("r")) == {
        "r/protein", f"r/held_out_families/{train_release.slug(recipe, 0)}"}


def test_deep_and_shallow_recipes_train_another_network_from_its_own_protein_pretraining():
    from tprna.models import build_model
    from tprna.models.blocks import MFFBlock

    base = "cov+ss+profile+plm/depth+homolog+search"
    recipe = base + "+deep"
    assert train_release.stage_variant(base, "deep") == recipe
    # it trains as its base does; only the network differs, and so the run's name
    assert train_release.recipe_options(recipe) == train_release.recipe_options(base)
    assert train_release.recipe_split(recipe) == train_release.recipe_split(base)
    assert (train_release.recipe_model(recipe), train_release.recipe_model(base)) == ("mffnet42", "mffnet36")
    assert train_release.slug(recipe, 0) == "mffnet42_cov_ss_profile_plm_depth_homolog_search_deep_seed0"
    assert train_release.slug(base, 0) == "mffnet36_cov_ss_profile_plm_depth_homolog_search_seed0"
    assert train_release.pretraining_run(Path("r"), "mffnet42") == Path("r/protein_mffnet42")
    assert train_release.pretraining_run(Path("r"), "mffnet36") == Path("r/protein")
    assert train_release.recipe_text(recipe, 14).endswith(
        "; the network mffnet42 (14 MFF blocks instead of mffnet36's 12, the same width), pretrained on the protein "
        "chains likewise")
    shallow = base + "+shallow"
    assert train_release.recipe_options(shallow) == train_release.recipe_options(base)
    assert train_release.slug(shallow, 1) == "mffnet30_cov_ss_profile_plm_depth_homolog_search_shallow_seed1"
    assert "; the network mffnet30 (10 MFF blocks instead of mffnet36's 12" in train_release.recipe_text(shallow, 14)
    # what the card says of each network
    blocks = {name: sum(isinstance(m, MFFBlock) for m in build_model(name, in_channels=4).modules())
              for name in train_release.MFF_BLOCKS}
    assert blocks == train_release.MFF_BLOCKS == {"mffnet30": 10, "mffnet36": 12, "mffnet42": 14}
    with pytest.raises(SystemExit, match="'more' continues the feature set's own run, which 'deep' would not be"):
        train_release.recipe_options("cov+ss/more+deep")
    with pytest.raises(SystemExit, match="'sim' starts from a pretraining of mffnet36, and 'shallow' trains mffnet30"):
        train_release.recipe_options("cov+ss/sim+shallow")
    with pytest.raises(SystemExit, match="deep and shallow each choose the network"):
        train_release.recipe_options("cov+ss/deep+shallow")
    stages = train_release.OPTION_STAGES
    assert stages[stages.index("deep") + 1] == "shallow"
    assert "then whether the network is the deeper mffnet42, then the shallower mffnet30, then whether" \
           in train_release.selection_text(54, 20, 14)
    # the record counts its runs and the deeper network's own pretraining
    record = {"deep_stage": {"aligned": {base: {"seeds": {"0": 0.7}, "mean": 0.7},
                                         recipe: {"seeds": {"0": 0.7, "1": 0.7}, "mean": 0.7}}}}
    assert train_release.record_runs(record, Path("r")) == {
        "r/protein", "r/protein_mffnet42", f"r/held_out_families/{train_release.slug(base, 0)}",
        *(f"r/held_out_families/{train_release.slug(recipe, s)}" for s in (0, 1))}


def test_the_swa_table_says_when_the_runs_before_averaging_reproduce_the_recipes_own():
    import release_benchmarks
    recipe = "cov+ss+plm/depth+search"
    stage = stage_figures({recipe: ((0.75, 0.74, 0.745), (0.48, 0.46, 0.47)),
                           recipe + "+swa": ((0.74, 0.74, 0.74), (0.47, 0.47, 0.47))}) | {
        "chosen_recipe": recipe, "scored": ["RF1"], "average_from": 9, "epochs": 14}
    before = {"recipe": recipe + "+swa", "aligned": stage["aligned"][recipe], "single": stage["single"][recipe]}
    same = release_benchmarks.swa_table({"swa_stage": stage | {"before_averaging": before}})[0]
    assert same.endswith("; it equals the recipe's own runs, trained the same way without averaging: the runs "
                         "reproduce bit for bit):")
    other = before | {"single": stage["single"][recipe + "+swa"]}
    assert release_benchmarks.swa_table({"swa_stage": stage | {"before_averaging": other}})[0].endswith(
        "without the seeds' noise):")
    assert release_benchmarks.swa_table({"swa_stage": stage})[0].endswith("By the same rule, long top-L:")


def test_before_averaging_scores_the_same_runs_as_if_they_never_averaged(tmp_path):
    """The swa stage's last row: the averaging runs scored with their own last weights, which
    are those of the same run trained without averaging; a recorded row stands for runs gone."""
    from helpers import simulated_store
    from tprna.store import open_store
    from tprna.train import TrainConfig, train

    store = simulated_store(tmp_path, n_families=6, seed=5, lengths=(44, 56), depths=(20, 40))
    with open_store(store) as opened:
        chains = {"aligned": opened.splits["test"], "single": opened.splits["test"][:1]}
    recipe = "cov/depth+swa"
    common = dict(store=str(store), split="train", model="mffnet30", epochs=2, workers=0, lr=0.005, seed=1)
    averaged, plain = tmp_path / "averaged", tmp_path / "plain"
    train(TrainConfig(out=str(averaged / train_release.slug(recipe, 0)), average_from=1, **common))
    train(TrainConfig(out=str(plain / train_release.slug(recipe, 0)), **common))
    before = train_release.score_before_averaging(store, averaged, chains, recipe, (0,))
    assert before["recipe"] == recipe
    for part, ids in chains.items():
        assert before[part] == train_release.score_stage(store, plain, ids, {recipe: (0,)})[recipe]
    assert 0 < before["aligned"]["mean"] != train_release.score_stage(store, averaged, chains["aligned"], {recipe: (0,)})[recipe]
    assert train_release.score_before_averaging(store, tmp_path / "gone", chains, recipe, (0,), before) == before


def test_seed_spread_by_hand():
    import release_benchmarks
    recipe = "cov+ss+plm/depth+search"
    far = stage_figures({recipe: ((0.76, 0.74, 0.75), (0.48, 0.46, 0.47))}) | {"chosen_recipe": recipe}
    noise = {part: {recipe: {"seeds": seeds, "mean": 0.0}} for part, seeds in (
        ("aligned", {"2": 0.70, "3": 0.72}), ("single", {"2": 0.47, "3": 0.47}))} | {"scored": ["RF1"]}
    # four seeds 0.76, 0.74, 0.70, 0.72: mean 0.73; the six pairs' means from (0.70+0.72)/2 to (0.76+0.74)/2
    text = train_release.seed_spread(far, noise)
    assert text == (f"{recipe} long top-L with alignments, seed by seed: 0.760 (seed 0), 0.740 (seed 1), "
                    "0.700 (seed 2), 0.720 (seed 3); mean 0.730; the 6 two-seed means range 0.710–0.750")
    assert train_release.seed_spread(far, noise, "single").endswith("mean 0.470; the 6 two-seed means range "
                                                                    "0.465–0.475")
    # the stages' variants against the two-seed range 0.710–0.750: heavy 0.705 below, far 0.745 inside,
    # light 0.755 above
    heavy = {"aligned": {recipe: {"mean": 0.75}, recipe + "+heavy": {"mean": 0.705}}}
    light = {"aligned": {recipe: {"mean": 0.75}, recipe + "+light": {"mean": 0.755}}}
    far["aligned"][recipe + "+far"] = {"mean": 0.745}
    # the chosen recipe is the search stage's variant: it is not listed against its own seeds
    search = {"aligned": {"cov+ss+plm/depth": {"mean": 0.70}, recipe: {"mean": 0.75}}}
    # a stage that changes the feature set, not the options: its variant is found all the same
    neff = stage_figures({recipe: ((0.76, 0.74, 0.75), (0.48, 0.46, 0.47)),
                          "cov+ss+plm+neff/depth+search": ((0.72, 0.72, 0.72), (0.47, 0.47, 0.47))}) | {
        "chosen_recipe": recipe}
    lines = release_benchmarks.seed_noise_lines({"search_stage": search, "light_stage": light, "heavy_stage": heavy,
                                                 "far_stage": far, "neff_stage": neff, "seed_noise": noise})
    assert lines[0].startswith("How far the seeds alone move the two-seed mean these stages compare: the chosen "
                               "recipe trained 2 more times")
    assert text in lines[0] and lines[1] == ""
    assert lines[0].endswith("variants with alignments inside that range: far 0.745, neff 0.720; below it: "
                             "heavy 0.705; above it: light 0.755.")
    assert release_benchmarks.seed_noise_lines({"far_stage": far}) == []
    record = {"seed_noise": noise}
    assert train_release.record_runs(record, Path("r")) == {
        "r/protein", f"r/held_out_families/{train_release.slug(recipe, 2)}",
        f"r/held_out_families/{train_release.slug(recipe, 3)}"}


def test_stage_agreement_ranks_validation_against_test_by_hand():
    import alignment_report
    # validation means 0.70 < 0.72 < 0.75 and test means 0.69 < 0.73 > 0.71: ranks (1,2,3) vs (1,3,2)
    choice = {"coupling_stage": {"aligned": {"a": {"mean": 0.70}, "b": {"mean": 0.72}}},
              "search_stage": {"aligned": {"c": {"mean": 0.75}}}, "feature_set_stage": {"feature_sets": {}},
              # the ensemble stage's rows average networks of a recipe: not a recipe's mean
              "ensemble_stage": {"aligned": {"c": {"pairs": {"0,1": 0.9}, "pair_mean": 0.9, "all": 0.95}}}}
    summary = {"stage: a": [{"alignment": 0.68}, {"alignment": 0.70}], "stage: b": [{"alignment": 0.73}],
               "stage: c": [{"alignment": 0.71}], "cov+ss": [{"alignment": 0.9}]}
    text = alignment_report.stage_agreement(summary, choice)
    # Spearman of (1,2,3) and (1,3,2): 1 − 6·(0+1+1)/(3·8) = 0.5
    assert "Over the 3 stage recipes, Spearman ρ = 0.50 between" in text
    assert "`c` (0.750), is number 2 of 3 on the test (0.710)" in text
    del summary["stage: c"]
    assert alignment_report.stage_agreement(summary, choice) == ""  # two recipes: nothing to say


def test_repeat_recipes_train_each_alignment_example_more_often():
    base = "cov+ss+profile+plm/depth+homolog+search"
    recipe = train_release.stage_variant(base, "repeat")
    repeats = train_release.ALIGNMENT_REPEATS
    assert recipe == base + "+repeat" and train_release.is_stage_variant(recipe, "repeat")
    assert train_release.recipe_options(recipe) == ("cov+ss+profile+plm", [
        "--depth-sampling", 0.5, "--homolog-sampling", 0.5, "--alignment-repeats", repeats], False)
    assert train_release.recipe_model(recipe) == "mffnet36" and train_release.recipe_split(recipe) == \
        train_release.recipe_split(base)
    assert f"each example on an alignment {repeats} times an epoch" in train_release.recipe_text(recipe, 14)
    assert f"then whether each example on an alignment trains {repeats} times an epoch, then" \
           in train_release.selection_text(54, 20, 14)


def test_window_recipes_train_on_longer_windows_and_say_so():
    base = "cov+ss+profile+plm/depth+homolog+search"
    recipe = train_release.stage_variant(base, "window")
    assert recipe == base + "+window" and train_release.is_stage_variant(recipe, "window")
    # the window is the training crop, not a flag of the recipe's sampling: the same options as base
    assert train_release.recipe_options(recipe) == train_release.recipe_options(base)
    assert train_release.recipe_crop(recipe, 128) == train_release.WINDOW_CROP == 256
    assert train_release.recipe_crop(base, 128) == 128 and train_release.recipe_crop(base, 96) == 96
    assert train_release.recipe_model(recipe) == "mffnet36" and train_release.slug(recipe, 0).endswith("_window_seed0")
    assert ", on training windows of 256 residues" in train_release.recipe_text(recipe, 14)
    assert "windows" not in train_release.recipe_text(base, 14)
    stages = train_release.OPTION_STAGES
    assert stages[stages.index("repeat") + 1] == "window"
    assert "then whether the runs train on windows of 256 residues, each by the same rule" \
           in train_release.selection_text(54, 20, 14)


def test_seed_checks_parse_record_and_print_over_every_seed():
    import release_benchmarks
    assert train_release.parse_seed_checks("shallow:2,3 deep:4") == {"shallow": (2, 3), "deep": (4,)}
    for bad in ("wide:2,3", "shallow", "shallow:2,x", "shallow:1,2"):
        with pytest.raises(argparse.ArgumentTypeError, match="shallow:2,3|the stage's own"):
            train_release.parse_seed_checks(bad)
    base = "cov+ss+plm/depth+search"
    variant = train_release.stage_variant(base, "shallow")
    stage = stage_figures({base: ((0.75, 0.75, 0.75), (0.47, 0.48, 0.475)),
                           variant: ((0.77, 0.71, 0.74), (0.48, 0.48, 0.48))}) | {"chosen_recipe": base}
    check = {"aligned": {variant: {"seeds": {"2": 0.70, "3": 0.74}, "mean": 0.72}},
             "single": {variant: {"seeds": {"2": 0.46, "3": 0.50}, "mean": 0.48}}}
    noise = {"aligned": {base: {"seeds": {"2": 0.73, "3": 0.73}, "mean": 0.73}},
             "single": {base: {"seeds": {"2": 0.45, "3": 0.48}, "mean": 0.465}}}
    lines = release_benchmarks.seed_check_lines({"shallow_stage": stage, "shallow_seed_check": check}, "shallow")
    assert lines[0].startswith(f"More seeds of `{variant}` (`--check-seeds shallow:2,3`")
    assert "with alignments 0.700 (seed 2), 0.740 (seed 3); on the single sequences 0.460 (seed 2), 0.500 (seed 3)." \
        in lines[0] and "Over seeds" not in lines[0] and lines[1] == ""
    both = release_benchmarks.seed_check_lines(
        {"shallow_stage": stage, "shallow_seed_check": check, "seed_noise": noise}, "shallow")[0]
    # (0.77 + 0.71 + 0.70 + 0.74) / 4, (0.48 + 0.48 + 0.46 + 0.50) / 4; the base's (0.75 + 0.75 + 0.73 + 0.73) / 4
    # and (0.47 + 0.48 + 0.45 + 0.48) / 4
    assert (f"Over seeds 0, 1, 2, 3: 0.730 with alignments and 0.480 single, against `{base}`'s 0.740 and 0.470 over "
            "the same seeds (its seeds 2, 3 from `--noise-seeds`).") in both
    assert release_benchmarks.seed_check_lines({"shallow_stage": stage}, "shallow") == []
    tables = release_benchmarks.stage_tables({"shallow_stage": stage | {"model": "mffnet30", "base_model": "mffnet36"},
                                              "shallow_seed_check": check})
    assert tables[-2:] == lines
    assert train_release.record_runs({"shallow_seed_check": check}, Path("r")) == {
        "r/protein", "r/protein_mffnet30", f"r/held_out_families/{train_release.slug(variant, 2)}",
        f"r/held_out_families/{train_release.slug(variant, 3)}"}


def test_kept_searches_read_back_until_what_they_depend_on_changes(tmp_path, monkeypatch):
    pytest.importorskip("pyhmmer")
    import numpy as np

    from tprna.search import HomologSearch
    from tprna.simulate import simulate_family

    family = simulate_family(60, 12, 3, pair_mutation=0.1, unpaired_mutation=0.15)
    database = tmp_path / "db.fa"
    database.write_text("".join(f">fam{n}\n{family.sequences[n].replace('-', '')}\n" for n in range(1, 12)))
    queries = {"q1": family.query, "q2": "ACGUACGUACGUACGU"}
    kept = tmp_path / "searches.json"
    calls = []

    def counted(search):
        real = search.search_many
        monkeypatch.setattr(search, "search_many", lambda q: calls.append(sorted(q)) or real(q))
        return search

    first = train_release.kept_searches(counted(HomologSearch(database)), queries, kept)
    assert calls == [["q1", "q2"]] and first["q1"].hits == 11 and first["q2"].hits == 0
    again = train_release.kept_searches(counted(HomologSearch(database)), queries, kept)
    assert calls == [["q1", "q2"]]  # read back: no search
    for i in queries:
        assert (again[i].text, again[i].hits, again[i].msa.ids) == (first[i].text, first[i].hits, first[i].msa.ids)
        assert np.array_equal(again[i].msa.codes, first[i].msa.codes)
    # each of what the results depend on, changed, searches again
    train_release.kept_searches(counted(HomologSearch(database)), {"q1": queries["q1"]}, kept)
    train_release.kept_searches(counted(HomologSearch(database, e_value=1e-5)), {"q1": queries["q1"]}, kept)
    database.write_text(database.read_text() + ">decoy\nGGGGAAAACCCCUUUU\n")
    train_release.kept_searches(counted(HomologSearch(database, e_value=1e-5)), {"q1": queries["q1"]}, kept)
    assert len(calls) == 4 and not kept.with_name(kept.name + ".partial").exists()
    kept.write_text(kept.read_text()[:100])  # not a whole record: searched again, and replaced
    assert train_release.kept_searches(counted(HomologSearch(database, e_value=1e-5)), {"q1": queries["q1"]},
                                       kept)["q1"].hits == 11
    assert len(calls) == 5 and json.loads(kept.read_text())["found"]["q1"][1] == 11


def test_checkpoint_maps_predict_once_per_checkpoint_and_inputs(tmp_path, monkeypatch):
    """The stages' and candidates' map cache: a checkpoint's maps of the same entries under the
    same spec are read back, not predicted again; another checkpoint (retrained under the same
    name), other entries or another tag predict; without a cache every call predicts."""
    import types

    import numpy as np

    import tprna.evaluate

    calls = []

    def predict(checkpoint, evaluation, device):
        calls.append((Path(checkpoint).read_bytes(), tuple(sorted(evaluation.labels))))
        return {i: np.full((2, 2), len(calls), np.float32) for i in evaluation.labels}
    monkeypatch.setattr(tprna.evaluate, "predict_with_checkpoint", predict)
    checkpoint, cache = tmp_path / "last.ckpt", tmp_path / "maps"
    checkpoint.write_bytes(b"weights 1")
    families = types.SimpleNamespace(spec_key="cov+ss@1", labels={"RF1": None, "RF2": None})
    first = train_release.checkpoint_maps(checkpoint, families, cache, "stage")
    again = train_release.checkpoint_maps(checkpoint, families, cache, "stage")
    assert len(calls) == 1 and again["RF2"].tolist() == first["RF2"].tolist() == [[1, 1], [1, 1]]
    train_release.checkpoint_maps(checkpoint, families, cache, "test")  # another tag
    other = types.SimpleNamespace(spec_key="cov+ss@1", labels={"RF1": None})
    train_release.checkpoint_maps(checkpoint, other, cache, "stage")  # other entries
    checkpoint.write_bytes(b"weights 2")  # the run trained again
    assert train_release.checkpoint_maps(checkpoint, families, cache, "stage")["RF1"][0, 0] == 4
    train_release.checkpoint_maps(checkpoint, families)
    train_release.checkpoint_maps(checkpoint, families)
    assert len(calls) == 6 and len(list(cache.glob("*.pkl"))) == 4


def test_ensemble_figures_by_hand():
    """One RNA of 60 nt with 60 long-range contacts; each of four runs ranks a different 30 of
    them first (1.0) and the other pairs below 0.2.  An average of networks then puts every
    contact any member found above every non-contact, so its top-L long precision is the share
    of the 60 contacts its members found together: 45/60 for four of the six pairs (0,1; 0,3;
    1,2; 2,3), 60/60 for the other two and for all four."""
    import numpy as np

    from tprna.evaluate import Labels

    n = 60
    long_pairs = [(i, j) for i in range(n) for j in range(i + 24, n)]
    rng = np.random.default_rng(0)
    contacts = [long_pairs[k] for k in rng.choice(len(long_pairs), 60, replace=False)]
    truth = np.zeros((n, n), bool)
    for i, j in contacts:
        truth[i, j] = truth[j, i] = True
    found = {0: range(0, 30), 1: range(15, 45), 2: range(30, 60), 3: [*range(0, 15), *range(45, 60)]}
    maps = {}
    for seed, members in found.items():
        scores = rng.uniform(0, 0.2, (n, n))
        scores[truth] = 0.0
        for k in members:
            i, j = contacts[k]
            scores[i, j] = 1.0
        maps[seed] = {"rna": np.maximum(scores, scores.T)}
    labels = {"rna": Labels(truth, np.ones((n, n), bool), 5.0, "A" * n)}
    figures = train_release.ensemble_figures(maps, labels)
    assert figures["pairs"] == {"0,1": 0.75, "0,2": 1.0, "0,3": 0.75, "1,2": 0.75, "1,3": 1.0, "2,3": 0.75}
    assert figures["pair_mean"] == round(5 / 6, 4)
    assert figures["all"] == 1.0


def test_the_ensemble_stage_chooses_four_networks_by_the_stages_rule(tmp_path):
    def row(pair_mean: float, four: float) -> dict:
        return {"pairs": {"0,1": pair_mean}, "pair_mean": pair_mean, "all": four}

    four, two = train_release.ENSEMBLE_SEEDS, train_release.STAGE_SEEDS
    assert len(four) == 4 and two == (0, 1)
    stage = {"aligned": {"a": row(0.76, 0.776), "b": row(0.757, 0.766)},
             "single": {"a": row(0.491, 0.498), "b": row(0.479, 0.483)}}
    assert train_release.choose_ensemble(stage) == four
    # better with alignments over the recipes (+0.010, -0.004), single within the tolerance (-0.009)
    stage = {"aligned": {"a": row(0.76, 0.77), "b": row(0.76, 0.756)},
             "single": {"a": row(0.49, 0.481), "b": row(0.48, 0.471)}}
    assert train_release.choose_ensemble(stage) == four
    assert train_release.choose_ensemble(stage | {"single": {"a": row(0.49, 0.47), "b": row(0.48, 0.47)}}) == two
    assert train_release.choose_ensemble(stage | {"aligned": {"a": row(0.76, 0.76)}}) == two  # a tie: two
    assert train_release.choose_ensemble({"aligned": {}, "single": {}}) == two  # no evidence
    # runs gone: the record's rows stand in for them, and nothing without either
    chains = {"aligned": ["RF1"], "single": ["c1"]}
    recorded = {part: {"a": row(0.5, 0.6)} for part in chains}
    assert train_release.ensemble_stage(tmp_path, tmp_path, chains, ["a"], recorded) == recorded
    assert train_release.ensemble_stage(tmp_path, tmp_path, chains, ["a", "b"], {}) == {"aligned": {}, "single": {}}
    assert ("then whether the shipped model averages 4 seeds' networks instead of 2"
            in train_release.selection_text(54, 20, 14))


def test_release_report_prints_the_ensemble_stage():
    import release_benchmarks

    recipe = "cov+ss+plm/depth+search+repeat"
    stage = {"aligned": {recipe: {"pairs": {"0,1": 0.773, "0,2": 0.758, "2,3": 0.749}, "pair_mean": 0.7606,
                                  "all": 0.7757}},
             "single": {recipe: {"pairs": {"0,1": 0.498, "0,2": 0.491, "2,3": 0.484}, "pair_mean": 0.4912,
                                 "all": 0.4979}},
             "seeds": [0, 1, 2, 3], "chosen_seeds": [0, 1, 2, 3], "scored": ["RF1"]}
    lines = release_benchmarks.ensemble_lines({"ensemble_stage": stage})
    assert lines[0].startswith("Then how many networks the shipped model averages: the stage recipes trained "
                               "with seeds 0,1,2,3")
    assert f"| `{recipe}` | 0.761 (0.749–0.773) | 0.776 | 0.491 (0.484–0.498) | 0.498 |" in lines
    assert lines[-2] == "Chosen: the chosen recipe's candidates train 4 seeds, and the average of their 4 networks ships."
    # VL no longer chooses among the candidates when the stage chose the seeds whose average ships
    rows = {"c": {"spot_vl": {"long|L": 0.5, "long|L/5": 0.6}, "test": {"long|L": 0.7, "long|L/5": 0.8}}}
    header = release_benchmarks.candidate_table({"ensemble_stage": stage, "candidates": rows, "winner": "c"})[0]
    assert "| SPOT-RNA-2D VL long top-L (reports) |" in header
    assert "(chooses)" in release_benchmarks.candidate_table({"candidates": rows, "winner": "c"})[0]
    assert release_benchmarks.ensemble_lines({}) == []
