"""Machine-readable output: ``store info``, ``store ls`` and ``infer`` with ``--json`` print
JSON (and only JSON) on stdout, with the same figures as the store and the job report."""
from __future__ import annotations

import json

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
