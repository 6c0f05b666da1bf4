"""Homology search (tprna.search, ``tprna search``, ``tprna infer --database``): the hit →
row rule worked out by hand, simulated families whose true alignment is known (every member
found, no decoy, rows on the right columns), more rounds finding more distant members, the
database's errors, the predictor on a searched alignment, and a real Rfam family whose
rows must land where Rfam's own alignment puts them."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tprna
from tprna.cli import app
from tprna.errors import TprnaError
from tprna.features import neff
from tprna.msa import fasta_records, read_msa
from tprna.search import HomologSearch, hit_row
from tprna.simulate import simulate_family

runner = CliRunner()
CLOSE = dict(pair_mutation=0.1, unpaired_mutation=0.15)  # members ~85 % identical to the query


# --------------------------------------------------------------------------- hit → row

def test_hit_row_by_hand():
    # query positions 2..7 of 9; the hit inserts 'gg' after position 3 and skips position 6
    assert hit_row(9, 2, 7, "cga..uca", "CGAggU-A") == "-CGAU-A--"
    # a hit over the whole query, lower case letters read as upper case
    assert hit_row(4, 1, 4, "acgu", "acgu") == "ACGU"
    # an insertion right at the start does not shift the columns
    assert hit_row(5, 3, 5, ".guc", "aGUC") == "--GUC"


def test_hit_row_rejects_spans_that_do_not_add_up():
    with pytest.raises(ValueError, match="differ in length"):
        hit_row(5, 1, 3, "acg", "AC")
    with pytest.raises(ValueError, match="not 1..4"):
        hit_row(5, 1, 4, "acg", "ACG")
    with pytest.raises(ValueError, match="runs past"):
        hit_row(3, 2, 4, "cgu", "CGU")


# --------------------------------------------------------------------------- simulated families

def ungapped(family, n: int) -> str:
    """Member n as the database holds it: its aligned letters with its insertions put back."""
    row, insertions = family.sequences[n], family.insertions[n]
    return "".join(insertions.get(k, "") + ("" if ch == "-" else ch) for k, ch in enumerate(row))


def family_database(path: Path, family, decoys: int, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    records = [f">fam{n}\n{ungapped(family, n)}\n" for n in range(1, family.depth)]
    records += [f">decoy{n}\n{''.join(rng.choice(list('ACGU'), family.length))}\n" for n in range(decoys)]
    path.write_text("".join(records))
    return path


def rows_by_name(text: str) -> dict[str, str]:
    return {name.split("/")[0]: row for name, row in fasta_records(text)[1:]}


def test_search_finds_every_member_on_its_true_columns(tmp_path):
    family = simulate_family(80, 30, 0, **CLOSE)
    found = HomologSearch(family_database(tmp_path / "db.fa", family, decoys=30), iterations=1).search("q", family.query)
    rows = rows_by_name(found.text)
    assert sorted(rows) == sorted(f"fam{n}" for n in range(1, family.depth))  # all members, no decoy
    assert found.hits == len(rows) and found.msa.depth == found.hits + 1 and found.msa.length == family.length
    assert found.msa.query == family.query
    agreement = []
    for name, row in rows.items():
        truth = family.sequences[int(name[3:])]
        covered = [k for k, ch in enumerate(row) if ch != "-"]
        agreement.append(np.mean([row[k] == truth[k] for k in covered]))
    # an insertion beside a deletion scores as well aligned as substitutions, and a gap may
    # slide along a repeated letter: a few rows differ from the truth there, the rest match
    assert min(agreement) >= 0.8 and np.mean(agreement) >= 0.97


def test_more_rounds_find_more_distant_members(tmp_path):
    family = simulate_family(80, 40, 0)  # members ~50 % identical to the query
    db = family_database(tmp_path / "db.fa", family, decoys=40)
    one = HomologSearch(db, iterations=1).search("q", family.query)
    three = HomologSearch(db, iterations=3).search("q", family.query)
    assert three.hits > one.hits + 10
    assert not [n for n in rows_by_name(three.text) if n.startswith("decoy")]


def test_many_queries_at_once_equal_one_at_a_time(tmp_path):
    families = [simulate_family(50, 12, seed, **CLOSE) for seed in (5, 6)]
    db = tmp_path / "db.fa"
    db.write_text("".join(family_database(tmp_path / f"f{n}.fa", f, decoys=5, seed=n).read_text()
                          for n, f in enumerate(families)))
    queries = {"first one": families[0].query, "x/y": families[1].query, "none": "GAUUACA" * 6}
    search = HomologSearch(db, iterations=2, cpus=2)
    together = search.search_many(queries)
    assert list(together) == list(queries)
    for query_id, query in queries.items():
        assert together[query_id].text == search.search(query_id, query).text
    assert together["none"].hits == 0 and together["first one"].hits >= 10
    # a query that cannot be searched fails alone; the others are searched as before
    results = dict(search.iter_search({"bad": "GGG-9-AAA", **queries}, chunk=2))
    assert isinstance(results["bad"], TprnaError)
    assert [results[i].text for i in queries] == [together[i].text for i in queries]


def test_caps_and_a_gzipped_database(tmp_path):
    family = simulate_family(60, 20, 2, **CLOSE)
    db = family_database(tmp_path / "db.fa", family, decoys=5)
    plain = HomologSearch(db, iterations=1).search("q", family.query)
    zipped = tmp_path / "db.fa.gz"
    zipped.write_bytes(gzip.compress(db.read_bytes()))
    assert HomologSearch(zipped, iterations=1).search("q", family.query).text == plain.text
    capped = HomologSearch(db, iterations=1, max_sequences=5).search("q", family.query)
    assert capped.hits == 5 and capped.text.splitlines()[:12] == plain.text.splitlines()[:12]  # the best five
    # no hit at all: the query alone, still a valid alignment
    alone = HomologSearch(db, iterations=1).search("other", "GAUUACA" * 8)
    assert alone.hits == 0 and alone.msa.depth == 1


def test_database_errors_are_one_line_and_name_the_file(tmp_path):
    with pytest.raises(TprnaError, match="sequence database not found") as e:
        HomologSearch(tmp_path / "missing.fa")
    assert str(tmp_path / "missing.fa") in str(e.value)
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    with pytest.raises(TprnaError) as e:
        HomologSearch(empty).search("q", "GGGAAACCC")
    assert str(empty) in str(e.value) and "\n" not in str(e.value)
    binary = tmp_path / "image.fa"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(TprnaError, match="not a FASTA file") as e:
        HomologSearch(binary).search("q", "GGGAAACCC")
    assert str(binary) in str(e.value)
    with pytest.raises(TprnaError, match="E-value must be positive"):
        HomologSearch(empty, e_value=0)


def test_without_pyhmmer_the_error_says_how_to_install(tmp_path, no_pyhmmer):
    db = tmp_path / "db.fa"
    db.write_text(">a\nGGGAAACCC\n")
    with pytest.raises(TprnaError, match=r"pip install 'tprna\[search\]'"):
        HomologSearch(db)
    # the command says so once and stops, before any query
    for command in (["infer", "--seq", "GGGAAACCC", "-d", str(db), "-o", str(tmp_path / "p")],
                    ["search", "--seq", "GGGAAACCC", "-d", str(db), "-o", str(tmp_path / "a")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1 and result.output.count("pip install 'tprna[search]'") == 1
        assert not (tmp_path / "p" / "summary.json").exists() and not (tmp_path / "a").exists()


# --------------------------------------------------------------------------- serving

def test_predictor_predicts_a_bare_sequence_from_its_searched_alignment(tmp_path):
    family = simulate_family(60, 25, 3, **CLOSE)
    search = HomologSearch(family_database(tmp_path / "db.fa", family, decoys=10), iterations=1)
    searched = search.search("fam", family.query).msa
    [with_search] = tprna.load(device="cpu", threads=1, search=search).predict(("fam", family.query))
    [direct] = tprna.load(device="cpu", threads=1).predict(("fam", searched))
    [alone] = tprna.load(device="cpu", threads=1).predict(("fam", family.query))
    np.testing.assert_array_equal(with_search.probabilities, direct.probabilities)
    assert with_search.neff == pytest.approx(direct.neff) and with_search.neff > alone.neff
    assert f"{family.depth - 1} homologs from db.fa" in with_search.source
    assert not np.allclose(with_search.probabilities, alone.probabilities)
    # several inputs at once: the bare ones searched together, an alignment left as it is
    lonely = "GAUUACA" * 8
    mixed = tprna.load(device="cpu", threads=1, search=search).predict(
        [("aln", searched), ("lonely", lonely), ("fam", family.query)])
    assert [p.id for p in mixed] == ["aln", "lonely", "fam"]
    np.testing.assert_array_equal(mixed[0].probabilities, direct.probabilities)
    np.testing.assert_array_equal(mixed[2].probabilities, direct.probabilities)
    [lonely_alone] = tprna.load(device="cpu", threads=1).predict(("lonely", lonely))
    # batched with longer RNAs, so padded: equal to float rounding
    np.testing.assert_allclose(mixed[1].probabilities, lonely_alone.probabilities, atol=1e-6)
    assert "0 homologs" in mixed[1].source and "homologs" not in mixed[0].source


def test_infer_and_search_commands(tmp_path):
    family = simulate_family(60, 25, 4, **CLOSE)
    db = family_database(tmp_path / "db.fa", family, decoys=10)
    result = runner.invoke(app, ["infer", "--seq", f"fam={family.query}", "--seq", "GAUUACA" * 8, "--database", str(db),
                                 "--iterations", "1", "-o", str(tmp_path / "pred"), "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["homolog_search"].startswith("nhmmer against db.fa")
    searched = HomologSearch(db, iterations=1).search("fam", family.query).msa
    assert summary["neff"]["fam"] == pytest.approx(neff(searched), abs=1e-3)
    assert summary["neff"]["fam"] > 2 * summary["neff"]["seq2"]  # seq2 has no homolog: the query alone
    assert "seq2: single-sequence mode" in result.output and "--database FILE" not in result.output
    result = runner.invoke(app, ["infer", "--seq", family.query, "-o", str(tmp_path / "alone"),
                                 "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0 and "or --database FILE to search for homologs" in result.output

    queries = tmp_path / "q.fa"
    queries.write_text(f">fam\n{family.query}\n>lonely\n{'GAUUACA' * 8}\n")
    result = runner.invoke(app, ["search", str(queries), str(tmp_path / "missing.fa"), "-d", str(db),
                                 "--iterations", "1", "-o", str(tmp_path / "aln")])
    assert result.exit_code == 1  # the missing file is reported; the others are written
    assert "missing.fa" in result.output
    msa = read_msa(tmp_path / "aln" / "fam.afa")
    assert msa.query == family.query and msa.depth == searched.depth >= 0.9 * family.depth
    assert read_msa(tmp_path / "aln" / "lonely.afa").depth == 1
    result = runner.invoke(app, ["search", "--seq", "GGGAAACCC"])
    assert result.exit_code == 1 and "--database" in result.output


# --------------------------------------------------------------------------- real data

@pytest.mark.shared
def test_rows_land_where_rfam_puts_them(shared_data, tmp_path):
    """RF00050's query searched among its own Rfam sequences: nearly every member is found,
    and its letters sit on the query columns Rfam's covariance-model alignment gives them."""
    path = shared_data / "coconet" / "RNA_DATASET" / "MSA" / "RF00050.faclean"
    rfam = read_msa(path)
    records = fasta_records(path.read_text())
    db = tmp_path / "rf00050.fa"
    db.write_text("".join(f">r{n}\n{s.replace('-', '').replace('.', '')}\n" for n, (_, s) in enumerate(records) if n))
    found = HomologSearch(db, iterations=1).search("RF00050", rfam.query)
    assert found.hits >= 0.95 * (rfam.depth - 1)
    rfam_rows = [rfam.alphabet.decode(c) for c in rfam.codes]
    agreement = []
    for name, row in rows_by_name(found.text).items():
        truth = rfam_rows[int(name[1:])]
        both = [k for k in range(len(row)) if row[k] != "-" and truth[k] != "-"]
        if both:
            agreement.append(np.mean([row[k] == truth[k] for k in both]))
    assert np.mean(agreement) >= 0.98 and np.percentile(agreement, 5) >= 0.9
