"""The per-residue ``profile`` component through the store: kept as it is, read back equal,
and the network input from a store entry equals the one serving computes from the MSA."""
from __future__ import annotations

import numpy as np

from tprna.contract import model_input
from tprna.features import FeatureSpec, make_features
from tprna.msa import read_msa
from tprna.serve import serving_input
from tprna.store import build_store, items_from_paths, open_store

SPEC = FeatureSpec(feature_set="cov+ss+profile")


def test_profile_round_trip_and_serving_parity(tmp_path):
    fasta = tmp_path / "fam.fasta"
    fasta.write_text(">q\nGGGAAACCCUAG\n>b\nGGGAAUCCCAAG\n>c\nGCGAAACGCUAA\n")
    report = build_store(tmp_path / "s.zarr", items_from_paths([fasta]), SPEC, progress=False)
    assert report.ok, report.summary()
    msa = read_msa(fasta)
    direct = make_features(msa, SPEC)
    with open_store(tmp_path / "s.zarr") as store:
        stored = store.read_features("fam", SPEC)
    assert stored["profile"].shape == (12, 5) and stored["profile"].dtype == np.float32
    # float16 storage: the profile's values (multiples of 1/3 here) round to 3 decimals
    np.testing.assert_allclose(stored["profile"], direct["profile"], atol=1e-3)
    served, _ = serving_input(msa, SPEC)
    np.testing.assert_array_equal(model_input(stored, SPEC), served)
