"""Machine-readable output: ``store info``, ``store ls`` and ``infer`` with ``--json`` print
JSON (and only JSON) on stdout, with the same figures as the store and the job report."""
from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from tprna.cli import app
from tprna.features import FeatureSpec
from tprna.simulate import write_example_dataset
from tprna.store import build_store, items_from_manifest, open_store


def test_store_info_and_ls_as_json(tmp_path):
    manifest = write_example_dataset(tmp_path / "data", n_families=3, seed=5, lengths=(20, 30), depths=(4, 8))
    store = tmp_path / "s.zarr"
    assert build_store(store, items_from_manifest(manifest), FeatureSpec(feature_set="cov"), progress=False).ok
    runner = CliRunner()
    info = json.loads(runner.invoke(app, ["store", "info", str(store), "--json"]).stdout)
    rows = [json.loads(line) for line in runner.invoke(app, ["store", "ls", str(store), "--json"]).stdout.splitlines()]
    with open_store(store) as st:
        ids = st.ids()
        assert info["entries"] == len(ids) == 3
        assert [r["id"] for r in rows] == ids
        assert [r["length"] for r in rows] == [st.entry_meta(i)["length"] for i in ids]


def test_infer_summary_as_json(tmp_path):
    result = CliRunner().invoke(app, ["infer", "--seq", "hairpin=GGGGAAACCCCAUGGGAAACCCAU",
                                      "-o", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["done"] == ["hairpin"] and summary["failed"] == []
    assert summary == json.loads((tmp_path / "summary.json").read_text())


def test_infer_memory_limit_in_gib(tmp_path):
    """--memory-limit is GiB: a 300-nt RNA's features (~27 MiB by estimate) fit under 1 GiB
    and not under 0.01 (10.2 MiB), a hairpin's (0.2 MiB) do; the refused one is reported
    and the exit status says so."""
    rng = np.random.default_rng(0)
    long_rna = "".join(rng.choice(list("ACGU"), 300))
    args = ["infer", "--seq", "hairpin=GGGGAAACCCCAUGGGAAACCCAU", "--seq", f"long={long_rna}", "--json"]
    fits = CliRunner().invoke(app, args + ["-o", str(tmp_path / "a"), "--memory-limit", "1"])
    assert fits.exit_code == 0, fits.output
    assert sorted(json.loads(fits.stdout)["done"]) == ["hairpin", "long"]
    refused = CliRunner().invoke(app, args + ["-o", str(tmp_path / "b"), "--memory-limit", "0.01"])
    assert refused.exit_code == 1
    summary = json.loads(refused.stdout)
    assert summary["done"] == ["hairpin"] and "need ~27.0 MiB of memory, above the limit of 10.2 MiB" in summary["failed"][0]["reason"]
