"""Alignment parsing: every format, by content, with its edge cases and its errors."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from tprna.errors import TprnaError
from tprna.msa import MSA, detect_format, read_msa, write_msa

FASTA = ">q\nAC-GU\n>s1\nACAGU\n>s2\nA--GT\n"


def test_fasta_query_anchored_and_t_to_u(tmp_path):
    p = tmp_path / "x.fasta"
    p.write_text(FASTA)
    msa = read_msa(p)
    assert msa.query == "ACGU"
    assert msa.n_dropped_columns == 1  # the query's gap column
    assert [msa.alphabet.decode(r) for r in msa.codes] == ["ACGU", "ACGU", "A-GU"]
    assert msa.ids == ("q", "s1", "s2")


def test_a3m_insertions_dropped(tmp_path):
    p = tmp_path / "x.a3m"
    p.write_text(">q\nACGU\n>s1\nAccCG.U\n>s2\n-CgGU\n")
    msa = read_msa(p)
    assert detect_format(p.read_text()) == "a3m"  # unequal rows + lowercase: A3M by content
    assert [msa.alphabet.decode(r) for r in msa.codes] == ["ACGU", "ACGU", "-CGU"]


def test_stockholm_multiblock_markup_ignored(tmp_path):
    text = ("# STOCKHOLM 1.0\n#=GF ID test\n#=GS q DE query\n"
            "q    AC-\ns1   AGU\n#=GR q SS ..(\n#=GC SS_cons ..(\n\n"
            "q    GU\ns1   gU\n#=GC SS_cons ).\n//\n")
    p = tmp_path / "aln.txt"  # no telling suffix: chosen by content
    p.write_text(text)
    msa = read_msa(p)
    assert msa.ids == ("q", "s1")
    assert [msa.alphabet.decode(r) for r in msa.codes] == ["ACGU", "AGGU"]


def test_psicov_aln_protein(tmp_path):
    p = tmp_path / "x.aln"
    p.write_text("MKV-L\nMRVAL\n")
    msa = read_msa(p, "protein")
    assert msa.query == "MKVL" and msa.alphabet.q == 21
    assert msa.alphabet.decode(msa.codes[1]) == "MRVL"


def test_gzip_input(tmp_path):
    p = tmp_path / "x.fa.gz"
    p.write_bytes(gzip.compress(FASTA.encode()))
    assert read_msa(p).query == "ACGU"


def test_unknown_query_letter_keeps_its_column(tmp_path):
    p = tmp_path / "x.fa"
    p.write_text(">q\nACNGU-A\n>s\nACGGUUA\n")
    msa = read_msa(p)
    assert msa.length == 6 and msa.n_dropped_columns == 1  # only the '-' column goes
    assert msa.alphabet.decode(msa.codes[0]) == "AC-GUA" and msa.n_unknown == 1


def test_iupac_letters_become_counted_gaps(tmp_path):
    p = tmp_path / "x.fa"
    p.write_text(">q\nACGU\n>s\nANRu\n")
    msa = read_msa(p)
    assert msa.n_unknown == 2
    assert msa.alphabet.decode(msa.codes[1]) == "A--U"


@pytest.mark.parametrize("fmt", ["fasta", "a3m", "stockholm", "aln"])
def test_round_trip_every_format(tmp_path, fmt):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 5, size=(7, 30)).astype(np.uint8)
    codes[0] = rng.integers(0, 4, size=30)  # the query has no gaps
    from tprna.alphabet import RNA
    msa = MSA(ids=tuple(f"s{i}" for i in range(7)), codes=codes, alphabet=RNA)
    back = read_msa(write_msa(msa, tmp_path / f"x.{fmt}", fmt))
    np.testing.assert_array_equal(back.codes, codes)
    if fmt != "aln":
        assert back.ids == msa.ids


@pytest.mark.parametrize("fmt", ["fasta", "a3m", "stockholm"])
@pytest.mark.parametrize("gz", [False, True])
def test_a_byte_order_mark_is_read_as_absent(tmp_path, fmt, gz):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 5, size=(5, 12)).astype(np.uint8)
    codes[0] = rng.integers(0, 4, size=12)
    from tprna.alphabet import RNA
    plain = write_msa(MSA(ids=tuple(f"s{i}" for i in range(5)), codes=codes, alphabet=RNA),
                      tmp_path / f"x.{fmt}", fmt)
    data = b"\xef\xbb\xbf" + plain.read_bytes()
    marked = tmp_path / (f"bom.{fmt}" + (".gz" if gz else ""))
    marked.write_bytes(gzip.compress(data) if gz else data)
    back = read_msa(marked)
    np.testing.assert_array_equal(back.codes, codes)
    assert back.ids == tuple(f"s{i}" for i in range(5)) and back.n_unknown == 0


@pytest.mark.parametrize("text, problem", [
    ("", "no sequences"),
    ("\n\n", "no sequences"),
    (">q\nACGU\n>s\nACG\n", "unequal lengths"),
    (">q\nACGU\n>s\nMKLE\n", "not RNA"),
    ("ACGU\nAC GU\n", "one sequence"),
    (">q\n----\n>s\nACGU\n", "query"),
    (">q\nNNNN\n>s\nACGU\n", "no ACGU residues"),
    ("ACGU\n>s\nACGU\n", "sequence before"),
])
def test_bad_input_names_file(tmp_path, text, problem):
    p = tmp_path / "bad_input.fa"
    p.write_text(text)
    with pytest.raises(TprnaError) as err:
        read_msa(p)
    assert "bad_input.fa" in str(err.value) and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(TprnaError, match="nothere.fa: file not found"):
        read_msa(tmp_path / "nothere.fa")


# ------------------------------------------------------------------ real files

def test_coconet_fasta(shared_data):
    msa = read_msa(shared_data / "coconet/RNA_DATASET/MSA/RF00005_1.faclean")
    assert msa.depth == 955 and msa.length == 76
    assert msa.query == "GCGGAUUUAGCUCAGUUGGGAGAGCGCCAGACUGAAGAUCUGGAGGUCCUGUGUUCGAUCCACAGAAUUCGCACCA"


def test_coconet_manifest_lengths_match(shared_data):
    import csv
    rows = list(csv.DictReader(open(shared_data / "coconet/manifest.csv")))
    for row in rows[:12]:
        msa = read_msa(shared_data / "coconet" / row["msa"])
        assert msa.depth == int(row["nseq"]), row["id"]
        assert msa.length == int(row["query_len"]), row["id"]


def test_coconet_as_stockholm_matches_fasta(shared_data, tmp_path):
    """The shared data has no Stockholm file: write one (two blocks, markup) from a real
    alignment's raw rows and check it parses to the same MSA as the FASTA."""
    src = shared_data / "coconet/RNA_DATASET/MSA/RF00005_1.faclean"
    lines = src.read_text().split()
    names = [l[1:] for l in lines[0::2]][:50]
    rows = lines[1::2][:50]
    half = len(rows[0]) // 2
    blocks = ["\n".join(f"{n} {r[:half]}" for n, r in zip(names, rows)),
              "\n".join(f"{n} {r[half:]}" for n, r in zip(names, rows))]
    sto = tmp_path / "RF00005.sto"
    sto.write_text("# STOCKHOLM 1.0\n#=GF AC RF00005\n" + blocks[0] + "\n#=GC SS_cons x\n\n" + blocks[1] + "\n//\n")
    fasta = read_msa(src)
    np.testing.assert_array_equal(read_msa(sto).codes, fasta.codes[:50])


def test_psicov_protein(shared_data):
    msa = read_msa(shared_data / "protein/aln/16pkA.aln", "protein")
    assert msa.depth == 706 and msa.length == 256
    with pytest.raises(TprnaError, match="not RNA"):
        read_msa(shared_data / "protein/aln/16pkA.aln", "rna")


def test_rhofold_fasta_with_t(shared_data):
    msa = read_msa(shared_data / "rhofold_puzzles/msa/5tpyA.a3m")
    fasta = (shared_data / "rhofold_puzzles/fasta/5tpyA.fasta").read_text().split("\n", 1)[1]
    assert msa.query == "".join(fasta.split()).upper().replace("T", "U")
    assert "T" not in msa.query
