"""The main job through the command line, on tiny simulated data: store build → train →
export → batched inference → evaluation, each step reading the previous one's output."""
from __future__ import annotations

import json

import numpy as np
import onnx
from typer.testing import CliRunner

from tprna.cli import app
from tprna.export import read_model_metadata
from tprna.serve import make_session, read_rr

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_main_job_end_to_end(tmp_path):
    data, store, run, model = tmp_path / "sim", tmp_path / "s.zarr", tmp_path / "run", tmp_path / "m.onnx"
    invoke("simulate", data, "--families", 6, "--seed", 1)
    invoke("store", "build", store, "--manifest", data / "manifest.csv", "--features", "cov+ss", "-q")
    assert "6 entries" in invoke("store", "info", store)
    invoke("train", store, "--out", run, "--model", "mffnet30", "--epochs", 2, "--workers", 0, "--crop", 48)
    assert (run / "last.ckpt").exists() and len((run / "metrics.csv").read_text().splitlines()) == 3
    summary = invoke("export", "onnx", run / "last.ckpt", "-o", model)
    # the file is there, is a valid ONNX graph carrying the run's metadata, and its parity
    # figures (max |onnxruntime − torch| per check) are within the float32 tolerance
    assert model.is_file() and str(model) in summary.replace("\n", "")
    onnx.checker.check_model(onnx.load(model))
    meta = read_model_metadata(model)
    assert meta["model_name"] == "mffnet30" and meta["feature_spec"]["feature_set"] == "cov+ss"
    assert meta["checkpoint"]["epoch"] == 1 and meta["parity"]["tolerance"] == 1e-4
    figures = meta["parity"]["max_abs_diff"]
    assert len(figures) == 4 and all(0 <= v <= 1e-4 for v in figures.values()), figures
    session, _ = make_session(model, device="cpu", threads=1)
    assert [i.name for i in session.get_inputs()] == ["features", "mask"]
    out = tmp_path / "pred"
    invoke("infer", "--model", model, data / "msa", "--max-batch", 4, "--out", out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_done"] == 6 and summary["n_failed"] == 0
    for npz in sorted(out.glob("*.npz")):
        saved = np.load(npz)
        prob = saved["probabilities"]
        assert prob.shape == (len(str(saved["sequence"])),) * 2 and np.array_equal(prob, prob.T)
    rr = read_rr(next(out.glob("*.rr")))
    assert len(rr.contacts) > 0
    table = invoke("evaluate", run / "last.ckpt", store, "--split", "test", "--out", tmp_path / "eval")
    assert "mffnet30" in table and "Thermodynamics (bpp)" in table and "Attainable long-range precision" in table
    assert (tmp_path / "eval" / "results.csv").exists() and (tmp_path / "eval" / "precision_vs_neff.png").exists()


def test_user_error_is_one_line_and_exit_1(tmp_path):
    bad = tmp_path / "bad.fa"
    bad.write_text(">q\nACGU\n>s\nAC\n")
    result = runner.invoke(app, ["store", "build", str(tmp_path / "s.zarr"), str(bad), "-q"])
    assert result.exit_code == 1
    assert "bad.fa" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["export", "onnx", str(tmp_path / "missing.ckpt")])
    assert result.exit_code == 1 and "missing.ckpt" in result.output and "Traceback" not in result.output
