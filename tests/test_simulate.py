"""Simulated example families: structure, compensatory evolution, contacts, files."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from tprna.errors import TprnaError
from tprna.msa import read_msa
from tprna.simulate import (
    CANONICAL_PAIRS,
    contact_map,
    dot_bracket,
    format_a3m,
    format_stockholm,
    random_secondary_structure,
    random_tertiary_stems,
    simulate_family,
    write_example_dataset,
)

MANIFEST_COLUMNS = ["id", "split", "msa", "structure", "chain", "label", "molecule"]


# --------------------------------------------------------------------------- helpers


def _helices(pairs):
    """Maximal runs of stacked pairs (i, j), (i+1, j-1), ... as their lengths."""
    ps = set(pairs)
    return [next(k for k in range(1, len(pairs) + 2) if (i + k, j - k) not in ps)
            for i, j in pairs if (i - 1, j + 1) not in ps]


def _codes(rows):
    table = np.full(128, 4, dtype=np.int8)
    for k, c in enumerate("ACGU"):
        table[ord(c)] = k
    return table[np.array([np.frombuffer(r.encode(), dtype=np.uint8) for r in rows])]


def _mutual_information(x, y):
    joint = np.zeros((5, 5))
    np.add.at(joint, (x, y), 1.0)
    joint /= joint.sum()
    px, py = joint.sum(1), joint.sum(0)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / np.outer(px, py)[nz])).sum())


def _neff(rows):
    x = _codes(rows)
    ident = (x[:, None, :] == x[None, :, :]).mean(-1)
    return float((1.0 / (ident >= 0.8).sum(1)).sum() / np.sqrt(x.shape[1]))


def _read_alignment(path: Path) -> list[str]:
    """Minimal readers, independent of tprna.msa: query-anchored rows of length L."""
    text = path.read_text()
    if path.suffix == ".sto":
        rows: dict[str, str] = {}
        for line in text.splitlines():
            if not line.strip() or line.startswith("#") or line.startswith("//"):
                continue
            name, seq = line.split()
            rows[name] = rows.get(name, "") + seq
        aligned = list(rows.values())
    else:
        names, seqs = [], []
        for line in text.splitlines():
            if line.startswith(">"):
                names.append(line)
                seqs.append("")
            else:
                seqs[-1] += line.strip()
        aligned = [re.sub("[a-z]", "", s) for s in seqs] if path.suffix == ".a3m" else seqs
    keep = [k for k, c in enumerate(aligned[0]) if c != "-"]
    return ["".join(s[k] for k in keep) for s in aligned]


@pytest.fixture(scope="module")
def deep_family():
    return simulate_family(90, 300, np.random.default_rng(7), family_id="deep")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "ds"
    return write_example_dataset(out, seed=0)


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("length", [20, 40, 57, 76, 120, 250])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_structure_is_nested_with_min_loop(length, seed):
    pairs = random_secondary_structure(length, np.random.default_rng(seed))
    assert pairs == sorted(pairs)
    flat = [p for ij in pairs for p in ij]
    assert len(flat) == len(set(flat)), "a position in two pairs"
    for i, j in pairs:
        assert 0 <= i < j < length
        assert j - i - 1 >= 3, "hairpin loop shorter than min_loop"
    for a, b in pairs:
        for c, d in pairs:
            if a < c < b:
                assert d < b, f"crossing pairs ({a},{b}) ({c},{d})"
    assert all(4 <= h <= 9 for h in _helices(pairs))
    if length >= 40:
        assert 0.45 <= 2 * len(pairs) / length <= 0.65
    db = dot_bracket(pairs, length)
    assert len(db) == length and db.count("(") == db.count(")") == len(pairs)


def test_structure_options_and_branching():
    rng = np.random.default_rng(3)
    pairs = random_secondary_structure(150, rng, min_loop=5, stem_len=(3, 6))
    assert all(j - i - 1 >= 5 for i, j in pairs)
    assert all(3 <= h <= 6 for h in _helices(pairs))
    # long chains branch: more than one hairpin loop
    inner = [(i, j) for i, j in pairs if not any(i < a and b < j for a, b in pairs)]
    assert len(inner) >= 2
    assert random_secondary_structure(8, rng) == []  # too short for a stem


def test_dot_bracket_rejects_pseudoknots_and_bad_pairs():
    assert dot_bracket([(0, 5), (1, 4)], 7) == "((..))."
    with pytest.raises(TprnaError):
        dot_bracket([(0, 5), (2, 8)], 10)
    with pytest.raises(TprnaError):
        dot_bracket([(0, 5), (5, 8)], 10)
    with pytest.raises(TprnaError):
        dot_bracket([(3, 12)], 10)


# --------------------------------------------------------------------------- evolution


def test_family_shape(deep_family):
    fam = deep_family
    assert fam.depth == 300 and fam.length == 90
    assert fam.sequences[0] == fam.query
    assert set(fam.query) <= set("ACGU"), "the query has no gaps"
    assert all(len(s) == 90 and set(s) <= set("ACGU-") for s in fam.sequences)
    gaps = sum(s.count("-") for s in fam.sequences) / (90 * 300)
    assert 0 < gaps < 0.15, "a few gaps, not many"
    assert len(fam.insertions) == fam.depth and fam.insertions[0] == {}
    assert any(fam.insertions[1:])


def test_paired_positions_stay_canonical(deep_family):
    fam = deep_family
    canonical = set(CANONICAL_PAIRS)
    n_checked = 0
    for seq in fam.sequences:
        for i, j in fam.pairs:
            if "-" in (seq[i], seq[j]):
                continue
            assert seq[i] + seq[j] in canonical, f"non-canonical {seq[i]}{seq[j]} at ({i},{j})"
            n_checked += 1
    assert n_checked > 0.9 * len(fam.pairs) * fam.depth
    # compensatory change is real: pairs where both bases differ from the query's pair
    double = sum(seq[i] != fam.query[i] and seq[j] != fam.query[j]
                 for seq in fam.sequences for i, j in fam.pairs if "-" not in (seq[i], seq[j]))
    assert double > 0.05 * n_checked


def test_paired_columns_covary(deep_family):
    fam = deep_family
    x = _codes(fam.sequences)
    mi_paired = [_mutual_information(x[:, i], x[:, j]) for i, j in fam.pairs]
    paired = {p for ij in fam.pairs for p in ij}
    unpaired = [k for k in range(fam.length) if k not in paired]
    rng = np.random.default_rng(0)
    mi_unpaired = []
    while len(mi_unpaired) < 200:
        i, j = sorted(rng.choice(unpaired, 2, replace=False))
        if j - i > 3:
            mi_unpaired.append(_mutual_information(x[:, i], x[:, j]))
    assert np.mean(mi_paired) > 3 * np.mean(mi_unpaired)
    assert np.median(mi_paired) > np.percentile(mi_unpaired, 95)


def test_family_is_deterministic_and_validates():
    a = simulate_family(50, 20, np.random.default_rng(5))
    b = simulate_family(50, 20, np.random.default_rng(5))
    assert a.sequences == b.sequences and a.pairs == b.pairs and a.insertions == b.insertions
    c = simulate_family(50, 20, np.random.default_rng(6))
    assert c.sequences != a.sequences
    one = simulate_family(30, 1, 0)
    assert one.sequences == [one.query]
    fixed = simulate_family(30, 5, 0, pairs=[(2, 12), (3, 11)])
    assert fixed.pairs == [(2, 12), (3, 11)]
    for bad in (dict(n_seqs=0), dict(pair_mutation=-1.0), dict(indel_rate=float("nan"))):
        kw = dict(length=40, n_seqs=5, rng=0) | bad
        with pytest.raises(TprnaError):
            simulate_family(**kw)
    with pytest.raises(TprnaError):
        simulate_family(30, 5, 0, pairs=[(2, 12), (5, 20)])


def test_tertiary_stems_by_hand():
    # one hairpin (2..9 with 20..27) on 60 nt: the free runs are 0-1, 10-19 and 28-59
    hairpin = [(2 + t, 27 - t) for t in range(8)]
    stems = random_tertiary_stems(hairpin, 60, 1, 0, stem_len=(3, 3), min_separation=24)
    assert len(stems) == 3
    (a, d), (b, c), (e, f) = stems
    assert b == a + 1 and e == b + 1 and c == d - 1 and f == c - 1  # antiparallel, consecutive
    assert f - e >= 24  # the helix's closest pair is long range
    paired = {p for ij in hairpin for p in ij}
    assert not paired & {p for ij in stems for p in ij}
    # a chain with no two free runs 24 apart gets none; n_stems=0 gets none
    assert random_tertiary_stems([(0 + t, 29 - t) for t in range(13)], 30, 3, 0) == []
    assert random_tertiary_stems(hairpin, 60, 0, 0) == []
    # helices never share or touch a position: two stems of 2 on 60 nt
    two = random_tertiary_stems([], 60, 2, 1, stem_len=(2, 2))
    pos = sorted(p for ij in two for p in ij)
    assert len(two) == 4 and len(set(pos)) == 8


def test_tertiary_pairs_covary_and_are_contacts_only():
    fam = simulate_family(100, 300, np.random.default_rng(3), tertiary_stems=2)
    plain = simulate_family(100, 300, np.random.default_rng(3))
    assert fam.pairs == plain.pairs and plain.tertiary == []  # the nested structure is unchanged
    assert len(fam.tertiary) >= 4
    dot_bracket(fam.pairs, fam.length)  # the structure stays nested; the stems cross it or not
    x = _codes(fam.sequences)
    canonical = set(CANONICAL_PAIRS)
    rows = [s for s in fam.sequences]
    for i, j in fam.tertiary:
        assert fam.contacts[i, j] == fam.contacts[j, i] == 1 and j - i >= 24
        ok = [s[i] + s[j] in canonical for s in rows if "-" not in (s[i], s[j])]
        assert all(ok)
        # compensatory: the pair changes in the family, so its columns carry mutual information
        assert _mutual_information(x[:, i], x[:, j]) > 0.3
    # default families draw no stems and consume the same random numbers as before
    assert simulate_family(50, 20, np.random.default_rng(5), tertiary_stems=0).sequences == \
        simulate_family(50, 20, np.random.default_rng(5)).sequences


# --------------------------------------------------------------------------- contacts


def test_contact_map_rule(deep_family):
    fam = deep_family
    c = fam.contacts
    L = fam.length
    assert c.dtype == np.uint8 and c.shape == (L, L)
    assert (c == c.T).all() and not c.diagonal().any()
    expect = np.zeros((L, L), dtype=np.uint8)
    for i in range(L):
        for j in range(L):
            if 1 <= abs(i - j) <= 2:
                expect[i, j] = 1
            for a, b in fam.pairs:
                for p, q in ((a, b), (b, a)):
                    if abs(i - p) <= 1 and abs(j - q) <= 1 and i != j:
                        expect[i, j] = 1
    assert (c == expect).all()
    for i, j in fam.pairs:
        assert c[i, j] == c[j, i] == 1


def test_contact_map_small_example():
    c = contact_map([(1, 8)], 10)
    got = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(c)))}
    local = {(i, j) for i in range(10) for j in range(i + 1, min(i + 3, 10))}
    stack = {(i, j) for i in (0, 1, 2) for j in (7, 8, 9)}
    assert got == local | stack


# --------------------------------------------------------------------------- writers


def test_a3m_rows_match_query_length(deep_family):
    lines = format_a3m(deep_family).splitlines()
    rows = lines[1::2]
    assert rows[0] == deep_family.query
    assert any(re.search("[a-z]", r) for r in rows[1:]), "some insertions"
    for r in rows:
        assert len(re.sub("[a-z]", "", r)) == deep_family.length
        assert re.fullmatch("[ACGU-]*", re.sub("[a-z]", "", r))


def test_stockholm_has_two_blocks(deep_family):
    text = format_stockholm(deep_family)
    lines = text.splitlines()
    assert lines[0] == "# STOCKHOLM 1.0" and lines[-1] == "//"
    assert sum(line.startswith("#=GC SS_cons") for line in lines) == 2
    rows = _read_alignment_text(text)
    assert rows[0] == deep_family.query
    assert rows == deep_family.sequences
    ss = "".join(line.split()[-1] for line in lines if line.startswith("#=GC SS_cons"))
    query_row = "".join(line.split()[1] for line in lines if line.startswith("deep_query"))
    ss_query = "".join(s for s, q in zip(ss, query_row) if q != "-")
    assert ss_query == deep_family.structure


def _read_alignment_text(text: str) -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.sto"
        p.write_text(text)
        return _read_alignment(p)


# --------------------------------------------------------------------------- dataset


def test_dataset_manifest_and_files(dataset):
    root = dataset.parent
    with open(dataset, newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == MANIFEST_COLUMNS
        rows = list(reader)
    assert len(rows) == 12
    assert len({r["id"] for r in rows}) == 12
    splits = [r["split"] for r in rows]
    assert set(splits) == {"train", "test"} and splits.count("test") == 3
    suffixes = {Path(r["msa"]).suffix for r in rows}
    assert suffixes == {".fasta", ".sto", ".a3m"}
    neffs = []
    for r in rows:
        assert r["structure"] == "" and r["chain"] == "" and r["molecule"] == "rna"
        msa, label = root / r["msa"], root / r["label"]
        assert msa.is_file() and label.is_file()
        aligned = _read_alignment(msa)
        L = len(aligned[0])
        assert 40 <= L <= 120 and 5 <= len(aligned) <= 400
        assert "-" not in aligned[0]
        text = label.read_text().splitlines()
        assert text[0].startswith("#") and "SIMULATED" in text[0]
        assert f"L={L}" in "\n".join(t for t in text if t.startswith("#"))
        pairs = [tuple(map(int, t.split())) for t in text if not t.startswith("#")]
        assert pairs and all(1 <= i < j <= L for i, j in pairs)
        assert len(set(pairs)) == len(pairs)
        assert all((i, i + 1) in set(pairs) for i in range(1, L))  # |i-j| <= 2 rule
        neffs.append(_neff(aligned))
    assert min(neffs) < 1 < 10 < max(neffs), neffs
    readme = (root / "README.md").read_text()
    assert "SIMULATED" in readme and "NOT real RNAs" in readme


def test_dataset_formats(dataset):
    root = dataset.parent
    for sto in (root / "msa").glob("*.sto"):
        text = sto.read_text()
        assert text.startswith("# STOCKHOLM 1.0\n") and text.endswith("//\n")
        assert text.count("#=GC SS_cons") == 2
    a3ms = list((root / "msa").glob("*.a3m"))
    assert a3ms
    for a3m in a3ms:
        lines = a3m.read_text().splitlines()
        rows = lines[1::2]
        assert all(lines[k].startswith(">") for k in range(0, len(lines), 2))
        assert {len(re.sub("[a-z]", "", r)) for r in rows} == {len(rows[0])}


def test_dataset_is_byte_identical_per_seed(tmp_path):
    a = write_example_dataset(tmp_path / "a", seed=3)
    b = write_example_dataset(tmp_path / "b", seed=3)
    c = write_example_dataset(tmp_path / "c", seed=4)

    def files(m):
        return {p.relative_to(m.parent): p.read_bytes()
                for p in sorted(m.parent.rglob("*")) if p.is_file()}

    fa, fb, fc = files(a), files(b), files(c)
    assert fa == fb
    assert fa != fc
    assert any(fa.get(k) != v for k, v in fc.items())


def test_dataset_small_and_errors(tmp_path):
    m = write_example_dataset(tmp_path / "s", n_families=2, seed=1, lengths=(30, 35),
                              depths=(3, 8))
    rows = list(csv.DictReader(open(m)))
    assert [r["split"] for r in rows].count("test") == 1
    with pytest.raises(TprnaError):
        write_example_dataset(tmp_path / "e", n_families=0)
    with pytest.raises(TprnaError):
        write_example_dataset(tmp_path / "e", lengths=(50, 40))


def test_dataset_reads_with_project_parser(dataset):
    root = dataset.parent
    for r in csv.DictReader(open(dataset)):
        path = root / r["msa"]
        aligned = _read_alignment(path)
        msa = read_msa(path)
        assert msa.length == len(aligned[0]) and msa.depth == len(aligned)
        assert msa.query == aligned[0]
