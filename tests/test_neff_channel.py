"""The ``neff`` channel: the alignment's depth, log10(1 + Neff), as one constant input
channel computed from what the store already holds — the same arrays and store key as the
feature set without it, the same value in training (whole, cut and homolog examples), from
the store and from an MSA, and through ONNX serving."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import simulated_store, train_one_epoch

from tprna.contract import model_input
from tprna.data import StoreDataset
from tprna.errors import TprnaError
from tprna.evaluate import load_evaluation_set, predict_with_checkpoint
from tprna.export import export_onnx
from tprna.features import FEATURE_SETS, FeatureSpec, stored_feature_set
from tprna.msa import read_msa
from tprna.serve import Predictor, serving_input
from tprna.store import build_store, items_from_paths, open_store

BASE, WITH_NEFF = "cov+ss+profile+plm", "cov+ss+profile+plm+neff"


def slow_neff(codes: np.ndarray, identity: float = 0.8) -> float:
    """Neff per √L by the definition, with loops: Σ 1 / (rows ≥ ``identity`` identical to n)."""
    n, length = codes.shape
    need = math.ceil(identity * length - 1e-9)
    return sum(1.0 / sum(int((codes[a] == codes[b]).sum()) >= need for b in range(n))
               for a in range(n)) / math.sqrt(length)


@pytest.fixture(scope="module")
def plm_store(tmp_path_factory) -> Path:
    return simulated_store(tmp_path_factory.mktemp("neff"), feature_set=BASE, n_families=4,
                           lengths=(30, 44), depths=(20, 60))


def test_the_neff_set_reads_the_stored_arrays_of_the_set_without_it():
    spec, base = FeatureSpec(feature_set=WITH_NEFF), FeatureSpec(feature_set=BASE)
    assert spec.key == base.key and spec.stored_components == base.components
    assert spec.channels == base.channels + 1
    assert stored_feature_set(WITH_NEFF) == BASE
    # every other set keeps its own key: no two stored sets share one
    keys = [FeatureSpec(feature_set=name).key for name in FEATURE_SETS if name == stored_feature_set(name)]
    assert len(set(keys)) == len(keys)


def test_the_channel_is_log10_of_one_plus_the_entrys_neff_on_every_pair(plm_store):
    with_neff, base = StoreDataset(plm_store, WITH_NEFF), StoreDataset(plm_store, BASE)
    assert with_neff.spec.feature_set == WITH_NEFF and with_neff.spec.key == base.spec.key
    with open_store(plm_store) as store:
        for index, entry_id in enumerate(with_neff.ids):
            x, x_base = with_neff[index]["features"].numpy(), base[index]["features"].numpy()
            np.testing.assert_array_equal(x[:-1], x_base)
            expected = np.log10(1.0 + slow_neff(store.read_msa(entry_id)))
            np.testing.assert_allclose(x[-1], np.full(x.shape[1:], expected), rtol=1e-6)


def test_cut_and_homolog_examples_carry_their_own_depth(plm_store):
    dataset = StoreDataset(plm_store, WITH_NEFF)
    index = max(range(len(dataset)), key=lambda i: dataset.depths[i])
    with open_store(plm_store) as store:
        codes = store.read_msa(dataset.ids[index])
    whole, cut, alone = (dataset[(index, 0, 20, depth, 3)]["features"][-1].numpy() for depth in (0, 8, 1))
    assert whole.shape == (20, 20) and np.ptp(whole) == np.ptp(cut) == np.ptp(alone) == 0
    # the query alone: one row of weight 1 over √L, whatever its letters
    np.testing.assert_allclose(alone[0, 0], np.log10(1 + 1 / math.sqrt(codes.shape[1])), rtol=1e-6)
    assert alone[0, 0] < cut[0, 0] < whole[0, 0]
    homolog = dataset[(index, 0, 20, 0, 3, 1)]["features"][-1].numpy()
    assert 0 < homolog.max() < cut[0, 0] and np.ptp(homolog) == 0  # a homolog alone is one sequence too


def test_a_store_built_with_the_neff_set_holds_only_the_stored_arrays(tmp_path):
    fasta = tmp_path / "fam.fasta"
    fasta.write_text(">q\nGGGAAACCCUAG\n>b\nGGGAAUCCCAAG\n>c\nGCGAAACGCUAA\n")
    spec = FeatureSpec(feature_set=WITH_NEFF)
    assert build_store(tmp_path / "s.zarr", items_from_paths([fasta]), spec, progress=False).ok
    with open_store(tmp_path / "s.zarr") as store:
        stored = store.read_features("fam", spec)
        assert store.resolve_spec(BASE) == store.resolve_spec(WITH_NEFF) == spec.key
        assert set(stored) == {"weights", "neff", *FEATURE_SETS[BASE]}
    msa = read_msa(fasta)
    served, neff = serving_input(msa, spec)
    assert served.shape == (spec.channels, 12, 12)
    np.testing.assert_array_equal(model_input(stored, spec), served)
    np.testing.assert_allclose(served[-1], np.log10(1 + slow_neff(msa.codes)), rtol=1e-6)
    assert neff == pytest.approx(slow_neff(msa.codes), rel=1e-6)


def test_a_model_with_the_neff_channel_trains_exports_and_serves(plm_store, tmp_path):
    checkpoint, record = train_one_epoch(plm_store, tmp_path / "run", features=WITH_NEFF, depth_sampling=0.5,
                                         homolog_sampling=0.5)
    assert checkpoint["feature_spec"]["feature_set"] == WITH_NEFF and record["epoch"] == 0
    report = export_onnx(checkpoint, tmp_path / "m.onnx", parity_lengths=(9, 30))  # parity-checked with torch
    predictor = Predictor(report.path, device="cpu")
    assert predictor.spec.feature_set == WITH_NEFF
    with open_store(plm_store) as store:
        entry_id = store.splits["train"][0]
        query = store.entry_meta(entry_id)["sequence"]
    aligned = predictor.predict_store(plm_store, ids=[entry_id])[0]
    alone = predictor.predict([(entry_id, query)])[0]
    assert aligned.probabilities.shape == alone.probabilities.shape == (len(query), len(query))
    # the query alone reads a shallower channel than its whole alignment
    assert alone.neff == pytest.approx(1 / math.sqrt(len(query)), rel=1e-6)
    assert alone.neff < aligned.neff
    # evaluation reads the same store entry with the checkpoint's own spec: torch gives ONNX's map
    evaluation = load_evaluation_set(str(plm_store), None, BASE, ids=[entry_id])
    by_torch = predict_with_checkpoint(tmp_path / "run" / "last.ckpt", evaluation, device="cpu",
                                       allow_train_overlap=True)[entry_id]
    np.testing.assert_allclose(by_torch, aligned.probabilities, atol=1e-5)
    # a store without the arrays it reads is refused in one line
    other = simulated_store(tmp_path, "other.zarr", feature_set="cov+ss+profile", n_families=1, lengths=(20, 24),
                            depths=(5, 8))
    with pytest.raises(TprnaError, match=r"trained on feature spec cov\+ss\+profile\+plm\+neff .* rebuild the store"):
        predict_with_checkpoint(tmp_path / "run" / "last.ckpt", load_evaluation_set(str(other), None), device="cpu",
                                allow_train_overlap=True)
