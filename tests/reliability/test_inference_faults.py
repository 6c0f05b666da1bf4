"""Inference on a batch that mixes good simulated MSAs with malformed, empty, huge (L over
a configurable ``max_length``), wrong-alphabet, binary and truncated-gzip inputs: every
bad one is reported in ``summary.json`` (file + reason) and skipped, every good one is
predicted and written (``.npz`` + ``.rr``, readable) exactly as in a clean run, and the
CLI exits 1 when something failed — after writing the good ones."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tprna.export import export_onnx
from tprna.features import FeatureSpec
from tprna.msa import read_msa
from tprna.serve import infer, read_rr
from tprna.simulate import write_example_dataset

from helpers import make_checkpoint

REPO = Path(__file__).resolve().parents[2]

SPEC = FeatureSpec()
MAX_LENGTH = 60  # the configurable limit under test; every good MSA is at most this long
CLI_TIMEOUT = 300  # seconds for one `python -m tprna infer` run


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model")
    return Path(export_onnx(make_checkpoint(root / "tiny.ckpt", SPEC), root / "tiny.onnx",
                            parity_lengths=(9, 30)).path)


def _random_rna(rng: np.random.Generator, length: int, rows: int = 4) -> str:
    seqs = ["".join(rng.choice(list("ACGU"), length)) for _ in range(rows)]
    return "".join(f">s{i}\n{s}\n" for i, s in enumerate(seqs))


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> tuple[Path, dict[str, int], dict[str, str]]:
    """A folder of good MSAs (id → L) and bad ones (file name → kind)."""
    root = tmp_path_factory.mktemp("faults")
    write_example_dataset(root / "sim", n_families=6, seed=11, lengths=(20, 50), depths=(5, 40))
    folder = root / "in"
    folder.mkdir()
    good: dict[str, int] = {}
    for src in sorted((root / "sim" / "msa").iterdir()):
        (folder / src.name).write_bytes(src.read_bytes())
        good[src.name.split(".")[0]] = read_msa(src).length
    rng = np.random.default_rng(7)
    # a good RNA exactly at the limit: the limit is inclusive
    (folder / "atlimit.fasta").write_text(_random_rna(rng, MAX_LENGTH))
    good["atlimit"] = MAX_LENGTH
    assert max(good.values()) <= MAX_LENGTH

    some_good = sorted((root / "sim" / "msa").glob("*.fasta"))[0].read_bytes()
    packed = gzip.compress(some_good)
    bad = {
        "empty.fasta": b"",
        "blank.fasta": b"\n  \n\t\n",
        "headeronly.fasta": b">lonely\n",
        "ragged.fasta": b">a\nACGUACGUACGU\n>b\nACGUAC\n",
        "binary.fasta": bytes(rng.integers(0, 256, 2048, dtype=np.uint8)),
        "binaryheader.fasta": b">x\n" + bytes(rng.integers(128, 256, 300, dtype=np.uint8)) + b"\n",
        "protein.fasta": b">p1\nMKTLLEFIVQWLRSTDE\n>p2\nMKTLLEFIVHWLRSTDE\n",
        "toolong.fasta": _random_rna(rng, MAX_LENGTH + 1).encode(),
        "huge.fasta": _random_rna(rng, 5 * MAX_LENGTH, rows=2).encode(),
        "truncated.fasta.gz": packed[: len(packed) // 2],
        "gzipheader.fasta.gz": packed[:12],
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    kinds = {"empty.fasta": "empty", "blank.fasta": "empty", "headeronly.fasta": "empty",
             "ragged.fasta": "malformed", "binary.fasta": "binary", "binaryheader.fasta": "binary",
             "protein.fasta": "wrong alphabet", "toolong.fasta": "over max_length",
             "huge.fasta": "over max_length", "truncated.fasta.gz": "truncated gzip",
             "gzipheader.fasta.gz": "truncated gzip"}
    assert set(kinds) == set(bad)
    return folder, good, kinds


# Words each kind's reason must contain (the reason is for a person: it says what is wrong).
REASON_WORDS = {"over max_length": "maximum length", "wrong alphabet": "not RNA",
                "malformed": "unequal lengths", "truncated gzip": "gzip"}


def _check_outputs(out: Path, good: dict[str, int], kinds: dict[str, str]) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    failed = {Path(f["file"]).name: f["reason"] for f in summary["failed"]}
    assert set(failed) == set(kinds), f"reported {sorted(failed)}, expected {sorted(kinds)}"
    for name, reason in failed.items():
        assert isinstance(reason, str) and reason.strip() and "\n" not in reason, (name, reason)
        words = REASON_WORDS.get(kinds[name])
        if words:
            assert words in reason, (name, reason)
        assert "Traceback" not in reason
    assert sorted(summary["done"]) == sorted(good)
    assert summary["n_done"] == len(good) and summary["n_failed"] == len(kinds)
    for entry, length in good.items():
        npz = np.load(out / f"{entry}.npz")
        p = npz["probabilities"]
        assert p.dtype == np.float32 and p.shape == (length, length) and np.isfinite(p).all()
        assert ((p >= 0) & (p <= 1)).all() and str(npz["id"]) == entry
        rr = read_rr(out / f"{entry}.rr")
        assert rr.target == entry and len(rr.sequence) == length and rr.contacts
    written = {f.name.split(".")[0] for f in out.iterdir() if f.suffix in (".npz", ".rr")}
    assert written == set(good), f"outputs for {sorted(written - set(good))} should not exist"
    return summary


def _ledger_counter(ledger) -> Counter:
    """The ledger's inference-fault counter (kind → inputs tried)."""
    return ledger.inference_faults


def test_bad_inputs_are_reported_and_the_rest_written(model, batch, tmp_path, ledger):
    folder, good, kinds = batch
    out = tmp_path / "out"
    report = infer(model, [folder], out, max_length=MAX_LENGTH, device="cpu", threads=1, workers=2,
                   progress=False)
    assert not report.ok
    _check_outputs(out, good, kinds)

    # the bad inputs did not disturb the good ones: a clean run gives the same maps
    clean = tmp_path / "clean"
    goods = [p for p in folder.iterdir() if p.name.split(".")[0] in good]
    assert infer(model, goods, clean, max_length=MAX_LENGTH, device="cpu", threads=1,
                 progress=False).ok
    for entry in good:
        np.testing.assert_allclose(np.load(out / f"{entry}.npz")["probabilities"],
                                   np.load(clean / f"{entry}.npz")["probabilities"], rtol=0, atol=2e-6)

    counter = _ledger_counter(ledger)
    for kind in kinds.values():
        counter[f"{kind}:reported"] += 1
    counter["good:written"] += len(good)


def test_the_limit_is_configurable(model, batch, tmp_path, ledger):
    """Lowering max_length turns the longer good MSAs into reported failures, nothing else."""
    folder, good, kinds = batch
    limit = sorted(good.values())[len(good) // 2]
    out = tmp_path / "out"
    infer(model, [folder], out, max_length=limit, device="cpu", threads=1, progress=False)
    short = {k: n for k, n in good.items() if n <= limit}
    long = [k for k, n in good.items() if n > limit]
    assert short and long
    summary = json.loads((out / "summary.json").read_text())
    failed = {Path(f["file"]).name.split(".")[0]: f["reason"] for f in summary["failed"]}
    for entry in long:
        assert f"over the maximum length {limit}" in failed[entry]
    assert sorted(summary["done"]) == sorted(short)
    assert len(failed) == len(kinds) + len(long)
    _ledger_counter(ledger)["over max_length:reported"] += len(long)


def _cli(model: Path, inputs: list[Path], out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="250", PYTHONPATH=os.pathsep.join(
        [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    cmd = [sys.executable, "-m", "tprna", "infer", "--model", str(model), *map(str, inputs), "--out", str(out),
           "--max-length", str(MAX_LENGTH), "--device", "cpu", "--threads", "1"]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=CLI_TIMEOUT)


def test_cli_exit_status(model, batch, tmp_path, ledger):
    folder, good, kinds = batch
    out = tmp_path / "out"
    run = _cli(model, [folder], out)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    for name in kinds:
        assert name in run.stderr, f"{name} not reported on stderr: {run.stderr[-2000:]}"
    _check_outputs(out, good, kinds)

    goods = sorted(p for p in folder.iterdir() if p.name.split(".")[0] in good)
    run = _cli(model, goods, tmp_path / "clean")
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(json.loads((tmp_path / "clean" / "summary.json").read_text())["done"]) == len(good)
    _ledger_counter(ledger)["cli runs"] += 2
