"""The user's path: the shipped model (checked against its sha256 and card),
``tprna.load().predict``, ``tprna infer`` on sequences, standard input and files of
unrelated sequences, the output formats, the low-Neff notice, bad inputs, and serving
without PyTorch.  Everything here runs on whatever model ``tprna/serve/model/`` holds: the
expected figures are read from its ``model.json``, never written into a test."""
from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tprna
from tprna.cli import app
from tprna.errors import TprnaError
from tprna.serve import read_rr, read_sequences, shipped
from tprna.serve.writers import contact_map_figure

REPO = Path(__file__).resolve().parents[1]
TRNA = "GGGAGCUCAGCCGGUAGAGCGCAAGGCUCCCAGGC"  # 35 nt
HAIRPIN = "GGGGCCAAUUCGGCCCCAAAGGCGCAAGCCUUCGGGCUUGCGCC"
runner = CliRunner()


def cli(*args, input: str | None = None):
    return runner.invoke(app, ["infer", *map(str, args), "--device", "cpu", "--threads", "1"], input=input)


def card_doc() -> dict:
    return json.loads((shipped.shipped_model_dir() / shipped.CARD_FILE).read_text())


@pytest.fixture(scope="module")
def predictor():
    return tprna.load(device="cpu", threads=1, workers=1)


def flipped_copy(tmp_path: Path) -> Path:
    """The shipped model's folder copied, one byte of the ONNX file flipped."""
    folder = tmp_path / "model"
    shutil.copytree(shipped.shipped_model_dir(), folder)
    onnx = folder / card_doc()["file"]
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    return folder


# --------------------------------------------------------------------------- the shipped model

def test_the_shipped_model_matches_its_card(predictor):
    doc = card_doc()
    card = shipped.shipped_model()
    assert card.path.name == doc["file"] and card.path.is_file()
    assert hashlib.sha256(card.path.read_bytes()).hexdigest() == doc["sha256"] == card.sha256
    assert card.feature_set == doc["feature_set"] == predictor.spec.feature_set
    for regime, table in doc["expected_precision"].items():
        for key, value in table.items():
            assert card.expected(regime, key) == pytest.approx(value)
    assert card.expected("single_sequence", "no such key") is None
    assert card.card is not None and card.card.name == doc["card"]
    assert predictor.card == card and predictor.model_path == card.path


def test_the_package_ships_the_model_files():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["tprna.serve"]
    doc = card_doc()
    for name in (doc["file"], shipped.CARD_FILE, doc["card"]):
        assert any(fnmatch.fnmatch(f"model/{name}", p) for p in patterns), name


def test_a_damaged_shipped_model_is_refused(tmp_path, monkeypatch):
    folder = flipped_copy(tmp_path)
    monkeypatch.setattr(shipped, "shipped_model_dir", lambda: folder)
    with pytest.raises(TprnaError) as err:
        tprna.load()
    text = str(err.value)
    assert "\n" not in text and card_doc()["file"] in text and "sha256" in text and "reinstall" in text
    result = cli("--seq", TRNA, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "sha256" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "seq1.npz").exists()

    (folder / card_doc()["file"]).unlink()
    with pytest.raises(TprnaError, match="model file is missing.*reinstall"):
        tprna.load()
    (folder / shipped.CARD_FILE).unlink()
    with pytest.raises(TprnaError, match=f"{shipped.CARD_FILE}: the model description is missing"):
        tprna.load()


def test_a_model_elsewhere_has_a_card_only_when_one_names_it(tmp_path):
    name = card_doc()["file"]
    with_card = tmp_path / "with"
    shutil.copytree(shipped.shipped_model_dir(), with_card)
    assert tprna.load(with_card / name, device="cpu").card.sha256 == card_doc()["sha256"]
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(with_card / name, bare / name)
    assert tprna.load(bare / name, device="cpu").card is None
    broken = flipped_copy(tmp_path / "broken")
    with pytest.raises(TprnaError, match="sha256"):
        tprna.load(broken / name)


def test_import_tprna_is_cheap():
    code = "import sys, tprna; print(sorted(m for m in ('numpy', 'onnxruntime', 'tprna.serve') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert callable(tprna.load)


# --------------------------------------------------------------------------- Python API

def test_predict_a_plain_string(predictor):
    [p] = predictor.predict(TRNA)
    length = len(TRNA)
    assert p.id == "seq1" and p.sequence == TRNA and p.length == length
    prob = p.probabilities
    assert prob.shape == (length, length) and prob.dtype == np.float32
    assert np.allclose(prob, prob.T) and ((prob >= 0) & (prob <= 1)).all()
    assert p.neff == pytest.approx(1 / math.sqrt(length))  # one sequence: Σw = 1
    top = p.top(5)
    assert len(top) == 5 and [t[2] for t in top] == sorted((t[2] for t in top), reverse=True)
    for i, j, score in top:
        assert 1 <= i < j <= length and j - i >= 6 and score == pytest.approx(float(prob[i - 1, j - 1]))
    iu, ju = np.triu_indices(length, 6)
    assert top[0][2] == pytest.approx(float(prob[iu, ju].max()))
    assert len(p.top()) == length and all(j - i >= 10 for i, j, _ in p.top(min_separation=10))
    # the same RNA as an (id, sequence) pair, in lower case, wrapped over lines
    [q] = predictor.predict([("x", TRNA.lower()[:20] + "\n" + TRNA.lower()[20:])])
    np.testing.assert_allclose(q.probabilities, prob, atol=1e-6)


def test_strings_are_paths_when_they_exist_or_look_like_one(predictor, tmp_path):
    fasta = tmp_path / "trna.fasta"
    fasta.write_text(f">header\n{TRNA}\n")
    [p] = predictor.predict(str(fasta))
    assert p.id == "trna" and p.sequence == TRNA
    for missing in (str(tmp_path / "missing.fasta"), "data/x.fa", "query.a3m", "family_1"):
        with pytest.raises(TprnaError, match="file not found"):
            predictor.predict(missing)
    with pytest.raises(TprnaError, match="not RNA") as err:
        predictor.predict("hello")  # letters only: a sequence, and says so
    assert "read as a sequence" in str(err.value)
    [named] = predictor.predict(f">my rna\n{TRNA}\n")  # FASTA text
    assert named.id == "my" and named.sequence == TRNA


def test_unknown_letters_are_kept_as_written(predictor):
    sequence = TRNA[:10] + "N" + TRNA[11:20] + "X" + TRNA[21:]
    [p] = predictor.predict([("odd", sequence)])
    assert p.sequence == sequence and p.length == len(TRNA)


def test_prediction_writers_round_trip(predictor, tmp_path):
    [p] = predictor.predict([("rt/1", TRNA)])
    [txt] = p.write(tmp_path / "one.txt")
    np.testing.assert_allclose(np.loadtxt(txt), p.probabilities, atol=5.1e-6)
    written = p.write(tmp_path / "dir", format="rr,npz")
    assert [f.name for f in written] == ["rt_1.rr", "rt_1.npz"]  # the id made safe as a file name
    assert read_rr(written[0]).target == "rt/1"
    saved = np.load(written[1])
    assert np.array_equal(saved["probabilities"], p.probabilities) and str(saved["sequence"]) == TRNA
    assert p.write_png(tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- the command line

def test_cli_sequences(tmp_path):
    out = tmp_path / "out"
    odd = TRNA[:12] + "X" + TRNA[13:]
    result = cli("--seq", TRNA, "--seq", f"my/rna={odd}", "-o", out)
    assert result.exit_code == 0, result.output
    assert {f.name for f in out.iterdir()} == {"seq1.npz", "seq1.rr", "my_rna.npz", "my_rna.rr", "summary.json"}
    rr = read_rr(out / "my_rna.rr")
    assert rr.target == "my_rna" and rr.sequence == odd  # the X stays an X
    assert str(np.load(out / "my_rna.npz")["sequence"]) == odd
    assert read_rr(out / "seq1.rr").sequence == TRNA


@pytest.mark.parametrize("value, words", [("ACGUZZACGU", "not RNA"), ("", "empty sequence"),
                                          ("=ACGU", "name before '=' is empty")])
def test_cli_bad_sequences(tmp_path, value, words):
    result = cli("--seq", value, "-o", tmp_path / "out")
    assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output


def test_a_batch_with_a_bad_sequence_finishes_the_rest(tmp_path):
    out = tmp_path / "out"
    result = cli("--seq", TRNA, "--seq", "bad=MKTLLEFIVQW", "--seq", f"ok={HAIRPIN}", "-o", out)
    assert result.exit_code == 1
    assert re.search(r"skipped --seq bad: .*not RNA", result.output)
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["done"]) == ["ok", "seq1"] and summary["n_failed"] == 1
    assert (out / "ok.rr").is_file() and not (out / "bad.rr").exists()


def test_cli_standard_input(tmp_path):
    result = cli("-", "-o", tmp_path / "a", input=f">tRNA-Phe yeast\n{TRNA}\n")
    assert result.exit_code == 0, result.output
    assert read_rr(tmp_path / "a" / "tRNA-Phe.rr").target == "tRNA-Phe"
    result = cli("-", "-o", tmp_path / "b", input=f"{TRNA}\n")  # a bare sequence line
    assert result.exit_code == 0, result.output
    assert read_rr(tmp_path / "b" / "stdin.rr").sequence == TRNA
    records = f">one\n{TRNA}\n>two\n{HAIRPIN}\n"
    result = cli("-", "--single", "-o", tmp_path / "c", input=records)
    assert result.exit_code == 0, result.output
    assert sorted(json.loads((tmp_path / "c" / "summary.json").read_text())["done"]) == ["one", "two"]


def test_cli_single_predicts_each_record_alone(predictor, tmp_path):
    fasta = tmp_path / "mixed.fasta"
    fasta.write_text(f">RF00005/1-35 tRNA\n{TRNA}\n>b\n{HAIRPIN}\n>c d e\n{TRNA[:20]}\n{TRNA[20:]}A\n")
    assert [r.id for r in read_sequences(fasta)] == ["RF00005_1-35", "b", "c"]
    out = tmp_path / "out"
    result = cli(fasta, "--single", "-o", out)
    assert result.exit_code == 0, result.output
    alone = {p.id: p for p in predictor.predict([("RF00005_1-35", TRNA), ("b", HAIRPIN), ("c", TRNA + "A")])}
    for entry, want in alone.items():
        saved = np.load(out / f"{entry}.npz")
        assert str(saved["sequence"]) == want.sequence
        np.testing.assert_allclose(saved["probabilities"], want.probabilities, atol=1e-6)


def test_unaligned_sequences_are_not_read_as_an_alignment(predictor, tmp_path):
    fasta = tmp_path / "unaligned.fasta"
    fasta.write_text(f">a\n{TRNA}\n>b\n{HAIRPIN}\n")
    result = cli(fasta, "-o", tmp_path / "out")
    assert result.exit_code == 1
    [line] = [ln for ln in result.output.splitlines() if "unaligned.fasta" in ln]
    assert "not an alignment" in line and "--single" in line
    assert not (tmp_path / "out" / "unaligned.npz").exists()
    with pytest.raises(TprnaError, match="not an alignment.*--single"):
        predictor.predict(fasta)
    lower = tmp_path / "lower.fasta"  # lower case is no A3M when the query has it too
    lower.write_text(f">a\n{TRNA.lower()}\n>b\n{HAIRPIN.lower()}\n")
    with pytest.raises(TprnaError, match="--single"):
        predictor.predict(lower)
    aligned = tmp_path / "aligned.fasta"  # gaps: an alignment, predicted as one
    aligned.write_text(f">a\n{TRNA}\n>b\n{TRNA[:5]}--{TRNA[7:]}\n")
    [p] = predictor.predict(aligned)
    assert p.sequence == TRNA


def test_output_formats(tmp_path):
    out = tmp_path / "out"
    odd = TRNA[:3] + "N" + TRNA[4:]
    result = cli("--seq", f"fmt={odd}", "-f", "txt", "--format", "rr,npz", "--png", "-o", out)
    assert result.exit_code == 0, result.output
    assert {f.suffix for f in out.glob("fmt.*")} == {".txt", ".rr", ".npz", ".png"}
    prob = np.load(out / "fmt.npz")["probabilities"]
    lines = (out / "fmt.txt").read_text().splitlines()
    assert len(lines) == len(odd) and all(len(ln.split(" ")) == len(odd) for ln in lines)
    assert all(re.fullmatch(r"\d\.\d{5}", v) for ln in lines for v in ln.split(" "))
    np.testing.assert_allclose(np.loadtxt(out / "fmt.txt"), prob, atol=5.1e-6)
    rr = read_rr(out / "fmt.rr")
    assert rr.target == "fmt" and rr.sequence == odd
    assert (out / "fmt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = __import__("matplotlib.image").image.imread(out / "fmt.png")
    assert image.ndim == 3 and image.std() > 0.05
    fig = contact_map_figure("fmt", prob)  # the picture is the probability map itself
    np.testing.assert_array_equal(np.asarray(fig.axes[0].images[0].get_array()), prob)
    assert len(fig.axes[0].collections[0].get_offsets()) == len(odd)  # top-L pairs circled

    result = cli("--seq", TRNA, "-o", tmp_path / "default")
    assert {f.name for f in (tmp_path / "default").iterdir()} == {"seq1.npz", "seq1.rr", "summary.json"}
    result = cli("--seq", TRNA, "-f", "pdf", "-o", tmp_path / "bad")
    assert result.exit_code == 1 and "unknown output format 'pdf'" in result.output


def test_low_information_inputs_say_so(tmp_path):
    figure = card_doc()["expected_precision"]["single_sequence"]["long|L"]
    neff = 1 / math.sqrt(len(TRNA))
    result = cli("--seq", TRNA, "-o", tmp_path / "a")
    assert result.exit_code == 0, result.output
    assert (f"seq1: single-sequence mode (Neff {neff:.2f} < 1): expected long-range top-L precision "
            f"≈ {figure:.2f} (model card)") in result.output
    bare = tmp_path / "bare"  # the same model file, but not the shipped one and no card
    bare.mkdir()
    shutil.copy(shipped.shipped_model().path, bare / "m.onnx")
    result = cli("--model", bare / "m.onnx", "--seq", TRNA, "-o", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert f"seq1: single-sequence mode (Neff {neff:.2f} < 1)" in result.output and "≈" not in result.output
    many = [f"--seq={TRNA[:30 + k]}" for k in range(6)]
    result = cli(*many, "-o", tmp_path / "c")
    assert result.exit_code == 0, result.output
    assert result.output.count("single-sequence mode") == 1 and "6 RNAs in single-sequence mode" in result.output
    # a diverse alignment (six unrelated rows, L = 16: Neff = 6/4) is not low-information
    rng = np.random.default_rng(0)
    rows = ["".join(rng.choice(list("ACGU"), 16)) for _ in range(6)]
    msa = tmp_path / "deep.fasta"
    msa.write_text("".join(f">s{i}\n{r}\n" for i, r in enumerate(rows)))
    result = cli(msa, "-o", tmp_path / "d")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["neff"]["deep"] == pytest.approx(1.5)
    assert "single-sequence mode" not in result.output


# --------------------------------------------------------------------------- no PyTorch

NO_TORCH = """
import json, sys
sys.modules["torch"] = None  # any import of torch now fails
import tprna
from tprna.cli import app
[p] = tprna.load(device="cpu", threads=1).predict("{seq}")
assert p.probabilities.shape == ({n}, {n})
try:
    app(["infer", "--seq", "{seq}", "-o", sys.argv[1], "--device", "cpu", "--threads", "1"])
except SystemExit as e:
    assert not e.code, e.code
print(json.dumps({{"torch": sys.modules.get("torch") is not None or any(m.startswith("torch.") for m in sys.modules),
                  "loaded": sorted(m for m in ("numba", "zarr", "h5py", "matplotlib") if m in sys.modules)}}))
"""


def test_serving_needs_no_torch(tmp_path):
    code = NO_TORCH.format(seq=TRNA, n=len(TRNA))
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"torch": False, "loaded": []}  # nor numba (one sequence), store or plot code
    assert read_rr(tmp_path / "out" / "seq1.rr").sequence == TRNA
