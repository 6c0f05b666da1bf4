"""`tprna store ...` end to end: build, info, ls, verify, dump, split, and the error path."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tprna import __version__
from tprna.cli import app
from tprna.features import FeatureSpec, make_features
from tprna.msa import read_msa
from tprna.store import open_store

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
runner = CliRunner()


def run(*args: str, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == code, (result.output, result.exception)
    return result


def write_family(path: Path, n: int, length: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACGU-"))
    query = rng.integers(0, 4, length)
    rows = [query] + [np.where(rng.random(length) < 0.3, rng.integers(0, 5, length), query)
                      for _ in range(n - 1)]
    path.write_text("".join(f">s{k}\n{''.join(letters[r])}\n" for k, r in enumerate(rows)))
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "msas"
    d.mkdir()
    for k in range(4):
        write_family(d / f"fam{k}.fasta", n=10 + 3 * k, length=20 + 3 * k, seed=k)
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "fam1.pairs").write_text("1 10\n2 9\n3 15\n")
    return d


def test_version():
    assert run("--version").stdout.strip() == f"tprna {__version__}"
    out = subprocess.run([sys.executable, "-m", "tprna", "--version"], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.strip() == f"tprna {__version__}"


@pytest.mark.parametrize("name", ["s.zarr", "s.h5"])
def test_build_info_ls_verify_dump_split(tmp_path, folder, name):
    store = tmp_path / name
    out = run("store", "build", store, folder, "--labels", tmp_path / "labels", "-q").stdout
    assert "4 built" in out and "0 failed" in out
    again = run("store", "build", store, folder, "--labels", tmp_path / "labels", "-q").stdout
    assert "0 built" in again and "4 unchanged" in again
    spec = FeatureSpec()

    info = run("store", "info", store).stdout
    assert "4 entries" in info and "1 with labels" in info and spec.key in info and "Neff" in info

    ls = run("store", "ls", store).stdout
    for k in range(4):
        assert f"fam{k}" in ls
    assert "yes" in ls and "no" in ls

    assert "ok: 4 entries verified" in run("store", "verify", store).stdout

    npz = tmp_path / "fam1.npz"
    run("store", "dump", store, "fam1", "--out", npz)
    arrays = np.load(npz)
    assert set(arrays.files) == {"msa", "weights", "neff", "cov", "bpp", "contacts", "observed"}
    msa = read_msa(folder / "fam1.fasta")
    ref = make_features(msa, spec)
    np.testing.assert_array_equal(arrays["msa"], msa.codes)
    assert arrays["msa"].dtype == np.uint8 and arrays["cov"].dtype == np.float32
    assert arrays["cov"].shape == (msa.length, msa.length, 5, 5)
    np.testing.assert_allclose(arrays["cov"], ref["cov"], rtol=2 ** -10, atol=2 ** -20)
    np.testing.assert_allclose(arrays["bpp"], ref["bpp"], rtol=2 ** -10, atol=2 ** -20)
    assert arrays["contacts"][0, 9] == 1 and arrays["contacts"].dtype == np.uint8
    assert arrays["observed"].dtype == bool and arrays["observed"].all()

    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("fam0\nfam2  # comment\n")
    run("store", "split", store, "--name", "a", "--ids-file", ids_file)
    run("store", "split", store, "--name", "b", "--ids", "fam3,fam1")
    run("store", "split", store, "--by-neff")
    with open_store(store) as st:
        assert st.ids("a") == ["fam0", "fam2"] and st.ids("b") == ["fam3", "fam1"]
        assert sum(len(st.ids(s)) for s in ("neff<1", "1<=neff<10", "neff>=10")) == 4
    assert "fam3" in run("store", "ls", store, "--split", "b").stdout
    err = run("store", "split", store, "--name", "c", "--ids", "fam0,ghost", code=1).stderr
    assert "ghost" in err and len(err.strip().splitlines()) == 1


def test_second_spec_and_dump_by_feature_set(tmp_path, folder):
    store = tmp_path / "s.zarr"
    run("store", "build", store, folder, "-q")
    run("store", "build", store, folder, "-q", "--features", "precision", "--identity", "0.9",
        "--dtype", "float32")
    npz = tmp_path / "p.npz"
    run("store", "dump", store, "fam0", "--out", npz, "--features", "precision")
    assert set(np.load(npz).files) == {"msa", "weights", "neff", "precision"}
    key = FeatureSpec(feature_set="precision", identity=0.9, dtype="float32").key
    run("store", "dump", store, "fam0", "--out", npz, "--features", key)
    assert "precision" in np.load(npz).files
    run("store", "dump", store, "fam0", "--out", npz, "--features", "nothing", code=1)


def test_failed_inputs_exit_1_and_are_listed(tmp_path, folder):
    (folder / "broken.fasta").write_text(">q\nACGU\n>s\nAC\n")
    result = run("store", "build", tmp_path / "s.zarr", folder, "-q", code=1)
    assert "4 built" in result.stdout and "1 failed" in result.stdout
    assert "broken.fasta" in result.stderr and "unequal lengths" in result.stderr


def test_verify_names_the_corrupt_entry(tmp_path, folder):
    store = tmp_path / "s.zarr"
    run("store", "build", store, folder, "-q")
    chunk = store / "entries" / "fam2" / "msa" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x55
    chunk.write_bytes(bytes(data))
    result = run("store", "verify", store, code=1)
    assert "fam2" in result.stderr and "fam1" not in result.stderr


def test_user_errors_are_one_red_line(tmp_path):
    result = run("store", "info", tmp_path / "missing.zarr", code=1)
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    result = run("store", "build", tmp_path / "s.zarr", code=1)
    assert "--manifest" in result.stderr
    result = run("store", "build", tmp_path / "s.zarr", tmp_path, "--features", "nope", code=1)
    assert "unknown feature set" in result.stderr


def test_build_from_real_manifest(tmp_path):
    manifest = SHARED / "protein" / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"real data not found at {SHARED} (a fresh clone has no ../shared/data)")
    small = tmp_path / "manifest.csv"
    rows = manifest.read_text().splitlines()
    keep = [r for r in rows[1:] if r.split(",")[0] in ("1a0tP", "T1019s1")]
    base = manifest.parent
    small.write_text(rows[0] + "\n" + "\n".join(
        ",".join(str(base / v) if i in (2, 3) and v else v for i, v in enumerate(r.split(",")))
        for r in keep) + "\n")
    store = tmp_path / "p.h5"
    out = run("store", "build", store, "--manifest", small, "--molecule", "protein", "-q").stdout
    assert "2 built" in out
    with open_store(store) as st:
        assert st.ids() == ["1a0tP", "T1019s1"] and st.splits == {"train": ["1a0tP", "T1019s1"]}
        feats = st.read_features("1a0tP")
        assert set(feats) == {"weights", "neff", "cov"} and feats["cov"].shape[2:] == (21, 21)
        assert st.read_labels("T1019s1")[1].any()


def test_split_refuses_an_empty_or_unknown_id_list(tmp_path, folder):
    store = tmp_path / "s.zarr"
    run("store", "build", store, folder, "-q")
    run("store", "split", store, "--name", "test", "--ids", "fam0,fam1")
    for ids, why in ((",", "no ids given"), (" , ,", "no ids given"), ("fam0,nope", "nope")):
        out = run("store", "split", store, "--name", "test", "--ids", ids, code=1).output
        assert why in out and len(out.strip().splitlines()) == 1, out
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert "no ids given" in run("store", "split", store, "--name", "test", "--ids-file", empty, code=1).output
    with open_store(store) as st:
        assert st.splits["test"] == ["fam0", "fam1"]  # untouched


def test_dump_into_a_bad_folder_is_one_line(tmp_path, folder):
    store = tmp_path / "s.zarr"
    run("store", "build", store, folder, "-q")
    (tmp_path / "afile").write_text("not a folder")
    for out in (tmp_path / "afile" / "x.npz", tmp_path / "afile" / "deeper" / "x.npz"):
        text = run("store", "dump", store, "fam0", "--out", out, code=1).output
        assert "cannot write the output" in text and str(out) in text and "Traceback" not in text, text
        assert len(text.strip().splitlines()) == 1, text
    run("store", "dump", store, "fam0", "--out", tmp_path / "new" / "folder" / "x.npz")  # made for you
    assert np.load(tmp_path / "new" / "folder" / "x.npz")["msa"].shape[1] == 20


def test_build_refuses_a_too_long_input_with_its_estimate(tmp_path, folder):
    out = run("store", "build", tmp_path / "s.zarr", folder, "--max-length", "25", "-q", code=1).output
    assert "query length 26 is above the limit of 25" in out and "MiB of memory" in out and "--max-length" in out
    with open_store(tmp_path / "s.zarr") as st:
        assert st.ids() == ["fam0", "fam1"]  # L 20 and 23 built
