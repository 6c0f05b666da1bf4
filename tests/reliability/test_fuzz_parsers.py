"""Property-based fuzzing of every parser: whatever the bytes, only the project's own
error (:class:`TprnaError`, one line naming the file) or a well-formed result comes back.

Each parser gets random bytes and structure-aware near-valid inputs: valid files
(alignments in every format, a small PDB and its mmCIF, contact lists, label matrices,
manifests) mutated by truncation, deleted / duplicated / junk lines, junk fields and
stray bytes.  Runs are derandomized (a fixed seed per test), so CI sees the same inputs
every time.  Any other exception is a fault: fix it in the parser, add the input below
as an ``@example`` and a line to ``FIXED_FAULTS`` in conftest.py.
"""
from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import gemmi
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tprna.errors import TprnaError
from tprna.features import FeatureSpec
from tprna.msa import read_msa
from tprna.store import build_store, items_from_manifest
from tprna.structure import contacts_from_structure, read_contact_list, read_label_matrix, read_labels


# CI runs the fixed, derandomized examples.  To hunt for new faults locally:
#   TPRNA_FUZZ_SCALE=20 TPRNA_FUZZ_RANDOM=1 pytest tests/reliability -k fuzz
_SCALE = float(os.environ.get("TPRNA_FUZZ_SCALE", "1"))
_RANDOM = os.environ.get("TPRNA_FUZZ_RANDOM", "") not in ("", "0")


def fuzz_settings(n: int):
    return settings(max_examples=max(1, int(n * _SCALE)), deadline=None, derandomize=not _RANDOM,
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                          HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Where fuzzed inputs are written: a RAM-backed folder when /dev/shm is there (each
    input is a file; on a disk, writing it costs ~20× parsing it), else pytest's tmp."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="tprna-fuzz-", dir=shm))
        yield folder
        shutil.rmtree(folder, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("fuzz")


def attempt(ledger, parser: str, path: Path, call):
    """Run one parse: a result, or None after a TprnaError that names ``path`` in one line.
    Anything else is recorded as a new fault and re-raised (hypothesis then shrinks it)."""
    ledger.fuzzed[parser] += 1
    try:
        result = call()
    except TprnaError as e:
        text = str(e)
        assert "\n" not in text and text.strip(), repr(text)
        assert str(path) in text, f"error does not name the file: {text}"
        ledger.fuzz_outcomes[f"{parser}:TprnaError"] += 1
        return None
    except Exception as e:
        fault = (parser, f"{type(e).__name__}: {' '.join(str(e).split())[:160]}")
        if fault not in ledger.faults:
            ledger.faults.append(fault)
        raise
    ledger.fuzz_outcomes[f"{parser}:ok"] += 1
    return result


# --------------------------------------------------------------------------- mutations

JUNK_LINES = ["", ">", ">>", "//", "# STOCKHOLM 1.0", "#=GC SS_cons <<..>>", "#=GS x DE y",
              "name", "name ACGU extra", "\t", "\x00", "\ufeff", "ÄÖÜ", "\r", ";comment",
              "ATOM", "END", "TER", "MODEL     2", "ENDMDL", "loop_", "_atom_site.id", "data_",
              "1 2", "0 0 0", "-1", "nan", "1e999", "12345678901234567890", "\x1f\x8b"]


@st.composite
def mutated(draw, text: str, max_ops: int = 4) -> bytes:
    """``text`` after a few random edits, then encoded (mostly UTF-8, sometimes gzip)."""
    lines = text.split("\n")
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.sampled_from(["delete", "duplicate", "junk", "char", "swap", "truncate", "case"]))
        if not lines:
            lines = [""]
        i = draw(st.integers(0, len(lines) - 1))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "junk":
            lines.insert(i, draw(st.sampled_from(JUNK_LINES) | st.text(max_size=20)))
        elif op == "char" and lines[i]:
            k = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:k] + draw(st.characters(codec="utf-8")) + lines[i][k + 1:]
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, max(len(lines[i]), 0)))]
            lines = lines[: i + 1]
        elif op == "case":
            lines[i] = lines[i].swapcase()
    out = "\n".join(lines)
    if draw(st.booleans()):
        out = out.replace("\n", "\r\n")
    data = out.encode("utf-8") if draw(st.integers(0, 9)) else out.encode("latin-1", "replace")
    wrap = draw(st.integers(0, 9))
    if wrap == 0:
        data = gzip.compress(data, mtime=0)
    elif wrap == 1:
        packed = gzip.compress(data, mtime=0)
        data = packed[: draw(st.integers(0, len(packed)))]
    elif wrap == 2:  # gzip header, corrupt body
        packed = bytearray(gzip.compress(data, mtime=0))
        if len(packed) > 12:
            k = draw(st.integers(10, len(packed) - 1))
            packed[k] ^= draw(st.integers(1, 255))
        data = bytes(packed)
    return data


def write(work: Path, name: str, data: bytes) -> Path:
    path = work / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- alignments

MSA_SUFFIXES = [".fasta", ".a3m", ".sto", ".aln", ".txt", ".faclean"]
RNA_LETTERS = "ACGUTNRYacgut-."
PROTEIN_LETTERS = "ARNDCQEGHILKMFPSTWYVXBZarnd-."


@st.composite
def alignment_files(draw) -> tuple[bytes, str, str]:
    molecule = draw(st.sampled_from(["rna", "protein"]))
    letters = RNA_LETTERS if molecule == "rna" else PROTEIN_LETTERS
    n = draw(st.integers(1, 6))
    length = draw(st.integers(0, 14))
    extra = st.sampled_from(letters) | st.sampled_from("*?@1 \tOJ\x00é")
    rows = [draw(st.text(alphabet=extra if draw(st.integers(0, 4)) == 0 else st.sampled_from(letters),
                         min_size=length, max_size=length)) for _ in range(n)]
    names = [draw(st.sampled_from([f"s{k}", "", "dup", "a b", "x" * 30])) for k in range(n)]
    fmt = draw(st.sampled_from(["fasta", "a3m", "stockholm", "aln"]))
    if fmt in ("fasta", "a3m"):
        wrap = draw(st.integers(1, 20))
        text = "".join(f">{name}\n" + "\n".join(r[i:i + wrap] for i in range(0, len(r), wrap) or [0]) + "\n"
                       if r else f">{name}\n" for name, r in zip(names, rows))
    elif fmt == "stockholm":
        blocks = draw(st.integers(1, 3))
        cut = max(1, math.ceil(length / blocks))
        body = ""
        for b in range(0, max(length, 1), cut):
            body += "".join(f"{name or 'x'} {r[b:b + cut]}\n" for name, r in zip(names, rows)) + "\n"
        text = "# STOCKHOLM 1.0\n#=GF ID fam\n" + body + "#=GC SS_cons " + "." * length + "\n//\n"
    else:
        text = "".join(f"{r}\n" for r in rows)
    suffix = draw(st.sampled_from(MSA_SUFFIXES))
    return draw(mutated(text)), suffix, molecule


def _check_msa(msa) -> None:
    assert msa.depth >= 1 and msa.length >= 1
    assert msa.codes.dtype == np.uint8 and msa.codes.shape == (msa.depth, msa.length)
    assert int(msa.codes.max()) < msa.alphabet.q
    # query-anchored: the query's gap columns are gone; a gap state left in the query is
    # one of its unknown letters (N, X…), which keeps its column
    assert (msa.codes[0] == msa.alphabet.gap).sum() <= msa.n_unknown
    assert (msa.codes[0] != msa.alphabet.gap).any()
    assert len(msa.query) == msa.length == len(msa.query_text)  # one letter as written per residue


@fuzz_settings(700)
@given(case=alignment_files())
@example(case=(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff", ".fasta", "rna"))  # zlib.error
def test_fuzz_alignment_near_valid(work, ledger, case):
    data, suffix, molecule = case
    path = write(work, f"aln{suffix}", data)
    fmt = {".a3m": "a3m", ".sto": "stockholm", ".aln": "aln"}.get(suffix, "fasta")
    msa = attempt(ledger, f"alignment ({fmt})", path, lambda: read_msa(path, molecule))
    if msa is not None:
        _check_msa(msa)


@fuzz_settings(400)
@given(data=st.binary(max_size=400), suffix=st.sampled_from(MSA_SUFFIXES),
       molecule=st.sampled_from(["rna", "protein"]),
       fmt=st.sampled_from([None, "fasta", "a3m", "stockholm", "aln"]))
def test_fuzz_alignment_random_bytes(work, ledger, data, suffix, molecule, fmt):
    path = write(work, f"raw{suffix}", data)
    msa = attempt(ledger, "alignment (random bytes)", path, lambda: read_msa(path, molecule, fmt))
    if msa is not None:
        _check_msa(msa)


# --------------------------------------------------------------------------- structures

RNA_SEQUENCE = "GGCAUCC"
PROTEIN_SEQUENCE = "MAGKL"
_NUCLEOTIDE_ATOMS = ["P", "OP1", "OP2", "O5'", "C5'", "C4'", "O4'", "C3'", "O3'", "C2'", "O2'", "C1'", "N1", "C2"]
_AMINO_ATOMS = ["N", "CA", "C", "O", "CB"]


def small_structure() -> gemmi.Structure:
    """An RNA chain A (7 nt, linked O3'–P) and a protein chain B (5 aa): made-up but
    well-formed coordinates, enough for every code path of the label parser."""
    st_ = gemmi.Structure()
    st_.name = "fuzz"
    model = gemmi.Model("1")
    serial = 0
    for chain_name, seq, names, kind in (("A", RNA_SEQUENCE, _NUCLEOTIDE_ATOMS, "rna"),
                                         ("B", PROTEIN_SEQUENCE, _AMINO_ATOMS, "protein")):
        chain = gemmi.Chain(chain_name)
        three = {"M": "MET", "A": "ALA", "G": "GLY", "K": "LYS", "L": "LEU"}
        for k, letter in enumerate(seq):
            res = gemmi.Residue()
            res.name = letter if kind == "rna" else three[letter]
            res.seqid = gemmi.SeqId(k + 1, " ")
            res.entity_type = gemmi.EntityType.Polymer
            base = np.array([6.0 * math.cos(k * 0.6), 6.0 * math.sin(k * 0.6), 3.2 * k])
            if kind == "protein":
                base += np.array([30.0, 0.0, 0.0])
            for a, atom_name in enumerate(names):
                if kind == "protein" and res.name == "GLY" and atom_name == "CB":
                    continue
                atom = gemmi.Atom()
                atom.name = atom_name
                atom.element = gemmi.Element(atom_name[0])
                offset = np.array([0.4 * a, 0.3 * (a % 3), 0.1 * a])
                if atom_name == "P":
                    offset = np.array([-0.6, 0.0, -1.0])  # close to the previous O3'
                pos = base + offset
                atom.pos = gemmi.Position(*pos)
                atom.occ, atom.b_iso = 1.0, 20.0
                serial += 1
                atom.serial = serial
                res.add_atom(atom)
            chain.add_residue(res)
        model.add_chain(chain)
    st_.add_model(model)
    st_.setup_entities()
    return st_


STRUCTURE = small_structure()
PDB_TEXT = STRUCTURE.make_pdb_string()
CIF_TEXT = STRUCTURE.make_mmcif_document().as_string()
FIELD_JUNK = ["nan", "inf", "-1e38", "*****", "    ", "XXXX", "\x00", "-", "?", ".", "'", "1e999", "ÿ"]


@st.composite
def pdb_files(draw) -> bytes:
    lines = PDB_TEXT.split("\n")
    for _ in range(draw(st.integers(0, 3))):  # junk in fixed-column fields of ATOM lines
        atoms = [i for i, line in enumerate(lines) if line.startswith(("ATOM", "HETATM"))]
        if not atoms:
            break
        i = draw(st.sampled_from(atoms))
        start, stop = draw(st.sampled_from([(6, 11), (12, 16), (16, 17), (17, 20), (21, 22), (22, 26),
                                            (30, 38), (38, 46), (46, 54), (54, 60), (76, 78), (0, 6)]))
        junk = draw(st.sampled_from(FIELD_JUNK) | st.text(max_size=stop - start))
        line = lines[i].ljust(80)
        lines[i] = line[:start] + junk.ljust(stop - start)[: stop - start] + line[stop:]
    return draw(mutated("\n".join(lines)))


@st.composite
def cif_files(draw) -> bytes:
    lines = CIF_TEXT.split("\n")
    for _ in range(draw(st.integers(0, 3))):  # junk tokens in atom_site rows
        rows = [i for i, line in enumerate(lines) if line.startswith(("ATOM", "HETATM"))]
        if not rows:
            break
        i = draw(st.sampled_from(rows))
        tokens = lines[i].split()
        k = draw(st.integers(0, len(tokens) - 1))
        tokens[k] = draw(st.sampled_from(FIELD_JUNK + ["''", '"', "A B"]) | st.text(max_size=6))
        lines[i] = " ".join(tokens)
    return draw(mutated("\n".join(lines)))


@st.composite
def label_requests(draw) -> tuple[str | None, str, str]:
    """(chain, sequence, molecule): mostly the right ones, so mutated files get far."""
    molecule = draw(st.sampled_from(["rna", "protein"]))
    right = RNA_SEQUENCE if molecule == "rna" else PROTEIN_SEQUENCE
    if draw(st.integers(0, 2)):
        return draw(st.sampled_from([None, "A" if molecule == "rna" else "B"])), right, molecule
    chain = draw(st.sampled_from([None, "", "A", "B", "Z", "AB"]))
    sequence = draw(st.sampled_from([RNA_SEQUENCE, PROTEIN_SEQUENCE, right[2:], right + "AAAA", "ACGU",
                                     "", "  ", "NNNNNNN", "GGCTUCC", right.lower()]) | st.text(max_size=10))
    return chain, sequence, molecule


def _check_labels(labels, length: int | None = None) -> None:
    contacts, observed = labels
    assert contacts.shape == observed.shape and contacts.ndim == 2
    assert contacts.shape[0] == contacts.shape[1]
    if length is not None:
        assert contacts.shape[0] == length
    assert (contacts == contacts.T).all() and (observed == observed.T).all()
    assert set(np.unique(contacts)) <= {0, 1}


def attempt_labels(ledger, parser: str, path: Path, call, length: int | None = None):
    """``attempt`` a label parser: whatever it returns must be well-formed labels of ``length``."""
    labels = attempt(ledger, parser, path, call)
    if labels is not None:
        _check_labels(labels, length)
    return labels


def test_the_structure_fixture_is_valid(work):
    """The unmutated files parse, in both formats, to the same labels."""
    for name, text in (("ok.pdb", PDB_TEXT), ("ok.cif", CIF_TEXT)):
        path = write(work, name, text.encode())
        contacts, observed = contacts_from_structure(path, "A", RNA_SEQUENCE, "rna")
        assert observed.all() and contacts.sum() > 0
        _check_labels(contacts_from_structure(path, "B", PROTEIN_SEQUENCE, "protein"), len(PROTEIN_SEQUENCE))


@fuzz_settings(350)
@given(data=pdb_files(), request=label_requests())
@example(data=PDB_TEXT.replace(" G A   1", "\xbd\xbd A   1", 1).encode("latin-1"),
         request=("A", RNA_SEQUENCE, "rna"))  # undecodable residue name
def test_fuzz_pdb(work, ledger, data, request):
    chain, sequence, molecule = request
    path, length = write(work, "s.pdb", data), len("".join(sequence.split()))
    attempt_labels(ledger, "structure (PDB)", path,
                   lambda: contacts_from_structure(path, chain, sequence, molecule), length)
    attempt_labels(ledger, "labels (read_labels)", path, lambda: read_labels(path, sequence, chain, molecule),
                   length)


@fuzz_settings(300)
@given(data=cif_files(), request=label_requests())
@example(data=CIF_TEXT.replace("? 5.4 0 -1", "? nan 0 -1", 1).encode(),
         request=("A", RNA_SEQUENCE, "rna"))  # a NaN coordinate reached cKDTree
def test_fuzz_mmcif(work, ledger, data, request):
    chain, sequence, molecule = request
    path = write(work, "s.cif", data)
    attempt_labels(ledger, "structure (mmCIF)", path,
                   lambda: contacts_from_structure(path, chain, sequence, molecule), len("".join(sequence.split())))


@fuzz_settings(200)
@given(data=st.binary(max_size=600), request=label_requests())
def test_fuzz_structure_random_bytes(work, ledger, data, request):
    chain, sequence, molecule = request
    path = write(work, "raw.pdb", data)
    attempt(ledger, "structure (random bytes)", path,
            lambda: contacts_from_structure(path, chain, sequence, molecule))
    attempt_labels(ledger, "labels (read_labels)", path, lambda: read_labels(path, sequence, chain, molecule),
                   len("".join(sequence.split())))


# --------------------------------------------------------------------------- label files

NUMBER_TOKENS = ["0", "1", "2", "3", "-1", "0.5", "7", "40", "1e3", "nan", "x", "", "+2", "٣", "1_0", "99999999999999999999"]


@st.composite
def contact_lists(draw) -> tuple[bytes, int]:
    length = draw(st.integers(0, 30))
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        i = draw(st.integers(-1, length + 2))
        j = draw(st.integers(-1, length + 2))
        tail = draw(st.sampled_from(["", " 0.9", " # note", " 1 2", "\t0.1"]))
        row = f"{i} {j}{tail}" if draw(st.integers(0, 5)) else " ".join(
            draw(st.lists(st.sampled_from(NUMBER_TOKENS), max_size=4)))
        rows.append(row)
    if draw(st.booleans()):
        rows.insert(0, "# i j score")
    return draw(mutated("\n".join(rows) + "\n")), length


@fuzz_settings(400)
@given(case=contact_lists())
def test_fuzz_contact_list(work, ledger, case):
    data, length = case
    path = write(work, "c.pairs", data)
    labels = attempt_labels(ledger, "contact list", path, lambda: read_contact_list(path, length), length)
    if labels is not None:
        assert labels[1].all()
    attempt_labels(ledger, "labels (read_labels)", path, lambda: read_labels(path, "A" * length), length)


@st.composite
def label_matrices(draw) -> bytes:
    size = draw(st.integers(1, 8))
    values = st.sampled_from(["0", "1", "-1"]) if draw(st.integers(0, 3)) else st.sampled_from(NUMBER_TOKENS)
    rows = [" ".join(draw(st.lists(values, min_size=size, max_size=size))) for _ in range(size)]
    sep = draw(st.sampled_from([" ", "\t", "  "]))
    return draw(mutated("\n".join(r.replace(" ", sep) for r in rows) + "\n"))


@fuzz_settings(400)
@given(data=label_matrices() | st.binary(max_size=200))
def test_fuzz_label_matrix(work, ledger, data):
    path = write(work, "m.true", data)
    labels = attempt_labels(ledger, "label matrix", path, lambda: read_label_matrix(path))
    if labels is not None:
        size = labels[0].shape[0]
        attempt_labels(ledger, "labels (read_labels)", path, lambda: read_labels(path, "G" * size), size)


# --------------------------------------------------------------------------- manifests

COLUMNS = ["id", "msa", "structure", "chain", "label", "split", "molecule", "extra", "", "id ", "MSA"]


@pytest.fixture(scope="module")
def manifest_world(work) -> dict:
    """Files a fuzzed manifest may point at: a good alignment, a bad one, labels, a PDB."""
    d = work / "world"
    d.mkdir()
    (d / "good.fa").write_text(">q\nGGCAUCC\n>s\nGGCAUCA\n>t\nGGCGUCC\n")
    (d / "bad.fa").write_text(">q\nMKLVQ\n")
    (d / "good.pairs").write_text("1 7\n2 6\n")
    (d / "good.pdb").write_text(PDB_TEXT)
    store = work / "manifest-store.zarr"
    return {"dir": d, "store": store}


CELLS = ["good.fa", "bad.fa", "missing.fa", "good.pairs", "good.pdb", "A", "B", "train", "test",
         "rna", "protein", "RNA", "dna", "", "  ", "~nosuchuser/x.fa", "~/x.fa", "../world/good.fa",
         "/abs/none.fa", "a,b", '"q"', "x\x00y", "é", "fam1", "fam 2", "__x", ".hidden", "a/b", "-1"]


@st.composite
def manifests(draw) -> bytes:
    header = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=7))
    if draw(st.integers(0, 3)):
        header = ["id", "msa"] + header
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        width = len(header) + draw(st.integers(-1, 1))
        cells = draw(st.lists(st.sampled_from(CELLS), min_size=max(width, 0), max_size=max(width, 0)))
        rows.append(",".join(f'"{c}"' if "," in c else c for c in cells))
    return draw(mutated(",".join(header) + "\n" + "\n".join(rows) + "\n", max_ops=2))


@fuzz_settings(250)
@given(data=manifests() | st.binary(max_size=200), molecule=st.sampled_from([None, "rna", "protein"]))
@example(data=b"id,msa\na,~nosuchuser/x.fa\n", molecule=None)  # RuntimeError from expanduser
@example(data=b"id,msa,structure\ngood.fa,good.fa,x\x00y\n", molecule=None)  # NUL: ValueError in the build
def test_fuzz_manifest_and_build_plan(manifest_world, ledger, data, molecule):
    """A manifest parses or fails with TprnaError; its items then build with every bad row
    reported as (file, reason), never an unexpected error."""
    path = write(manifest_world["dir"], "manifest.csv", data)
    items = attempt(ledger, "manifest", path, lambda: items_from_manifest(path, molecule))
    if items is None:
        return
    assert items and all(i.id and i.msa for i in items)
    ledger.fuzzed["manifest → build"] += 1
    report = build_store(manifest_world["store"], items, FeatureSpec(feature_set="cov"), progress=False)
    unexpected = [(src, why) for src, why in report.failed if "unexpected error" in why]
    assert not unexpected, unexpected
    assert len(report.built) + len(report.skipped_unchanged) + len(report.failed) == len(items)


# --------------------------------------------------------------------------- bulk rounds
#
# The hypothesis tests above shrink what they find, at a cost of milliseconds per input.
# These rounds add volume cheaply: seeded plain-Python mutations (line edits as above plus
# byte flips, inserted / deleted / repeated spans, gzip wrapping) of valid files, several
# thousand per run, the same every run (fixed seeds).  A fault is reported with the input's
# bytes, to be replayed as an @example above once fixed.

import random  # noqa: E402

BULK_SCALE = _SCALE  # TPRNA_FUZZ_SCALE multiplies these rounds too
BULK_SEED = 20240611 if not _RANDOM else random.SystemRandom().randrange(1 << 30)

ALIGNMENT_SEEDS = [
    (">query desc\nGGCAUCCA-UGCAUGG\n>s1\nGGCAUCCAGUGCAUGC\n>s2/3-18\nGGCGUCC--UGCAUGG\n>s3\nNNCAUCCAUUGCTUGG\n",
     ".fasta", "rna"),
    (">q\nGGCAUCC\nAUGCAUG\n>s\nGGCAUCU\nAUGCA-G\n>t\nggcaucc\naugcaug\n", ".fa", "rna"),
    (">q\nGGCAUCCAUG\n>s\nGGaaCAUCC-UG\n>t\nGGCAUC.ccCAUG\n>u\n----------\n", ".a3m", "rna"),
    ("# STOCKHOLM 1.0\n#=GF ID fam\n#=GS s1 DE seq one\nq   GGCAUC\ns1  GGCAUU\ns2  GG-AUC\n"
     "#=GR s1 SS ..<<..\n#=GC SS_cons ..<<..\n\nq   CAUGG\ns1  CAUGC\ns2  CA-GG\n#=GC SS_cons >>...\n//\n",
     ".sto", "rna"),
    ("GGCAUCCAUG\nGGCAUCCAUC\nGGCGUCC-UG\n", ".aln", "rna"),
    (">p\nMKTAYIAKQR-QISFVKSH\n>q\nMKTAYLAKQRQQISFVKSH\n>r\nMRTAYIA-QRQQISFVKAH\n", ".fasta", "protein"),
]
CONTACT_SEEDS = [("# i j score\n1 7\n2 6 0.9\n3 5\t0.1\n1 12 # note\n", 12),
                 ("1 7 0 8 0.91\n2 9 0 8 0.5\n", 10),
                 ("1 2\n", 2)]
MATRIX_SEEDS = ["0 0 0 0 0 0 1\n0 0 0 0 0 1 0\n0 0 0 0 1 0 0\n0 0 0 0 0 0 0\n0 0 1 0 0 0 0\n"
                "0 1 0 0 0 0 0\n1 0 0 0 0 0 0\n",
                "0\t1\t-1\n1\t0\t0\n-1\t0\t0\n"]
BYTE_JUNK = [b"\x00", b"\xff", b"\xfe\xff", b"\xef\xbb\xbf", b"\r", b"\n\n", b">", b"#", b" ", b"\t", b"-",
             b"\x1f\x8b\x08", "é".encode(), "\u2028".encode(), b"9" * 25, b"nan", b"-1", b"1e999"]


def bulk_mutate(rng: random.Random, text: str, line_ops: int = 4, byte_ops: int = 4) -> bytes:
    """``text`` after up to ``line_ops`` line edits and ``byte_ops`` byte edits, encoded,
    sometimes gzipped (whole, truncated or corrupt)."""
    lines = text.split("\n")
    for _ in range(rng.randint(0, line_ops)):
        if not lines:
            lines = [""]
        i = rng.randrange(len(lines))
        op = rng.randrange(7)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2:
            lines.insert(i, rng.choice(JUNK_LINES + FIELD_JUNK))
        elif op == 3 and len(lines) > 1:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 4:
            lines[i] = lines[i][:rng.randint(0, len(lines[i]))]
            lines = lines[:i + 1]
        elif op == 5:
            lines[i] = lines[i].swapcase()
        elif op == 6 and lines[i]:
            k = rng.randrange(len(lines[i]))
            lines[i] = lines[i][:k] + rng.choice(JUNK_LINES) + lines[i][k + 1:]
    out = "\n".join(lines)
    if rng.randrange(4) == 0:
        out = out.replace("\n", "\r\n")
    data = bytearray(out.encode("utf-8") if rng.randrange(8) else out.encode("latin-1", "replace"))
    for _ in range(rng.choice([0, 0, 1, 1, 2, byte_ops])):
        if not data:
            data = bytearray(rng.choice(BYTE_JUNK))
            continue
        k = rng.randrange(len(data))
        op = rng.randrange(4)
        if op == 0:
            data[k] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[k:k] = rng.choice(BYTE_JUNK)
        elif op == 2:
            del data[k:k + rng.randint(1, 8)]
        else:
            data[k:k] = data[k:k + rng.randint(1, 16)]
    wrap = rng.randrange(20)
    if wrap == 0:
        return gzip.compress(bytes(data), mtime=0)
    if wrap == 1:
        packed = gzip.compress(bytes(data), mtime=0)
        return packed[:rng.randint(0, len(packed))]
    if wrap == 2:
        packed = bytearray(gzip.compress(bytes(data), mtime=0))
        if len(packed) > 12:
            packed[rng.randrange(10, len(packed))] ^= rng.randint(1, 255)
        return bytes(packed)
    return bytes(data)


SUBSTITUTES = "ACGUTNRYXacgut-.*?~ 0é\x00\tMKWZBJO"


def substitute(rng: random.Random, text: str, most: int = 4) -> bytes:
    """``text`` with up to ``most`` characters replaced one for one: rows keep their
    lengths, so the parse gets past the shape checks to the letters and names."""
    chars = list(text)
    for _ in range(rng.randint(1, most)):
        k = rng.randrange(len(chars))
        if chars[k] != "\n":
            chars[k] = rng.choice(SUBSTITUTES)
    return "".join(chars).encode("utf-8")


def bulk_round(ledger, name: str, n: int, seed: int, one) -> None:
    """``one(rng, i)`` for ``n`` inputs from a seeded generator; every input whose parse
    raised anything but TprnaError (or returned a malformed result) is reported at the end."""
    rng = random.Random(f"{BULK_SEED}:{seed}")
    failures = []
    for i in range(max(1, int(n * BULK_SCALE))):
        try:
            one(rng, i)
        except Exception as e:  # a fault: recorded by attempt(); collected here with its input
            failures.append((i, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}", getattr(e, "_input", None)))
    shown = "; ".join(f"#{i} {what} input={data!r:.300}" for i, what, data in failures[:5])
    assert not failures, f"{name}: {len(failures)} inputs raised something else than TprnaError: {shown}"


def tried(ledger, parser: str, path: Path, data: bytes, call, check=None):
    """``attempt`` one parse of ``data`` (already written to ``path``); the input rides on
    any unexpected exception, for the report."""
    try:
        result = attempt(ledger, parser, path, call)
        if result is not None and check is not None:
            check(result)
        return result
    except Exception as e:
        e._input = data
        raise


def test_bulk_alignments(work, ledger):
    formats = {".a3m": "a3m", ".sto": "stockholm", ".aln": "aln"}

    def one(rng, i):
        text, suffix, molecule = rng.choice(ALIGNMENT_SEEDS)
        data = substitute(rng, text) if i % 2 else bulk_mutate(rng, text)
        suffix = rng.choice([suffix, suffix, suffix, rng.choice(MSA_SUFFIXES)])
        fmt = rng.choice([None, None, None, formats.get(suffix, "fasta")])
        path = write(work, f"bulk{suffix}", data)
        molecule = molecule if rng.randrange(4) else rng.choice(["rna", "protein"])
        tried(ledger, f"alignment (bulk, {fmt or 'detected'})", path, data,
              lambda: read_msa(path, molecule, fmt), _check_msa)

    bulk_round(ledger, "alignments", 4000, 1, one)


def test_bulk_label_files(work, ledger):
    def one(rng, i):
        if i % 2:
            text, length = rng.choice(CONTACT_SEEDS)
            data = substitute(rng, text, 2) if i % 3 == 0 else bulk_mutate(rng, text)
            path = write(work, "bulk.pairs", data)
            length = rng.choice([length, length, 0, 1, length + 3])
            labels = tried(ledger, "contact list (bulk)", path, data, lambda: read_contact_list(path, length),
                           lambda r: _check_labels(r, length))
        else:
            text = rng.choice(MATRIX_SEEDS)
            data = substitute(rng, text, 2) if i % 3 == 0 else bulk_mutate(rng, text)
            path = write(work, "bulk.true", data)
            labels = tried(ledger, "label matrix (bulk)", path, data, lambda: read_label_matrix(path),
                           _check_labels)
            length = labels[0].shape[0] if labels is not None else rng.randint(1, 8)
        sequence = "G" * length if rng.randrange(4) else rng.choice(["", "ACGU", "ACGUT" * 3])
        tried(ledger, "labels (bulk read_labels)", path, data, lambda: read_labels(path, sequence),
              lambda r: _check_labels(r, len(sequence)))

    bulk_round(ledger, "label files", 3000, 2, one)


def _field_junk(rng: random.Random, text: str, starts: tuple[str, ...], pdb: bool) -> str:
    """Junk in one or two fields of the atom records (fixed columns in PDB, tokens in mmCIF)."""
    lines = text.split("\n")
    rows = [i for i, line in enumerate(lines) if line.startswith(starts)]
    for _ in range(rng.randint(0, 2)):
        i = rng.choice(rows)
        junk = rng.choice(FIELD_JUNK + ["A B", "''", '"', "0", "99999"])
        if pdb:
            start, stop = rng.choice([(6, 11), (12, 16), (17, 20), (21, 22), (22, 26), (30, 38), (38, 46),
                                      (46, 54), (54, 60), (76, 78)])
            line = lines[i].ljust(80)
            lines[i] = line[:start] + junk.ljust(stop - start)[:stop - start] + line[stop:]
        else:
            tokens = lines[i].split()
            tokens[rng.randrange(len(tokens))] = junk
            lines[i] = " ".join(tokens)
    return "\n".join(lines)


def test_bulk_structures(work, ledger):
    requests = [("A", RNA_SEQUENCE, "rna"), (None, RNA_SEQUENCE, "rna"), ("B", PROTEIN_SEQUENCE, "protein"),
                ("A", RNA_SEQUENCE[1:], "rna"), ("A", RNA_SEQUENCE + "A", "rna"), ("B", RNA_SEQUENCE, "rna"),
                ("Z", RNA_SEQUENCE, "rna"), ("A", "NNNNNNN", "rna"), (None, PROTEIN_SEQUENCE, "protein")]

    def one(rng, i):
        pdb = i % 2 == 0
        text = _field_junk(rng, PDB_TEXT if pdb else CIF_TEXT, ("ATOM", "HETATM"), pdb)
        data = bulk_mutate(rng, text, line_ops=2, byte_ops=2) if rng.randrange(3) else text.encode()
        path = write(work, "bulk.pdb" if pdb else "bulk.cif", data)
        chain, sequence, molecule = rng.choice(requests)
        tried(ledger, f"structure (bulk {'PDB' if pdb else 'mmCIF'})", path, data,
              lambda: contacts_from_structure(path, chain, sequence, molecule),
              lambda r: _check_labels(r, len(sequence)))

    bulk_round(ledger, "structures", 800, 3, one)


def test_bulk_manifests(manifest_world, ledger):
    def one(rng, i):
        header = ["id", "msa"] + rng.sample(COLUMNS, rng.randint(0, 4))
        rows = []
        for _ in range(rng.randint(0, 4)):
            cells = [rng.choice(CELLS) for _ in range(len(header) + rng.choice([-1, 0, 0, 0, 1]))]
            rows.append(",".join(f'"{c}"' if "," in c else c for c in cells))
        data = bulk_mutate(rng, ",".join(header) + "\n" + "\n".join(rows) + "\n", line_ops=2, byte_ops=2)
        path = write(manifest_world["dir"], "bulk_manifest.csv", data)

        def check(items):
            assert items and all(item.id and item.msa for item in items)

        tried(ledger, "manifest (bulk)", path, data,
              lambda: items_from_manifest(path, rng.choice([None, "rna", "protein"])), check)

    bulk_round(ledger, "manifests", 1200, 4, one)


def test_fuzz_volume(request, ledger):
    """Every run fuzzes at least 10,000 inputs when the whole module runs (counted by the
    ledger: one per parse attempted)."""
    here = [item for item in request.session.items if item.path == request.path]
    if len(here) < len([name for name in globals() if name.startswith("test_")]) or _SCALE < 1:
        pytest.skip("only part of the fuzzing ran")
    assert sum(ledger.fuzzed.values()) >= 10_000, dict(ledger.fuzzed)
