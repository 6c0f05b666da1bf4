"""The model's contract: rounding equals the store's storage bit for bit, padding and masks
by hand, length batches, and the names an exported model carries."""
from __future__ import annotations

import numpy as np
import pytest

from tprna.contract import (INPUT_FEATURES, INPUT_MASK, METADATA_PREFIX, OUTPUT_CONTACTS, length_batches,
                            metadata_props, model_input, pad_batch, parse_metadata, rounded, rounded_features)
from tprna.errors import TprnaError
from tprna.features import FeatureSpec, make_features
from tprna.msa import parse_msa
from tprna.store.schema import pack_component, unpack_component

ALIGNMENT = (">query\nGGGAGCUCAGCCGGUAGAGCGCAAGG\n>b\nGGGAGCUCAGCUGGUAGAGCGCAAGG\n"
             ">c\nGCGAGCUCAGCCGGAAGAGCGCUAGG\n>d\nGGGAGCUAAGCCGGUAGAGCGCAACC\n>e\nGG-AGCUCAGCCGGUAGAGCGC-AGG\n")


@pytest.mark.parametrize("feature_set", ["cov+ss+profile+coupling", "precision+ss"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_rounding_is_the_store_round_trip_bit_for_bit(feature_set, dtype):
    spec = FeatureSpec(feature_set=feature_set, dtype=dtype)
    feats = make_features(parse_msa(ALIGNMENT, "fasta"), spec)
    for name in spec.components:
        want = unpack_component(name, pack_component(name, feats[name], spec.dtype))
        got = rounded(name, feats[name], spec.dtype)
        assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
        assert got.tobytes() == want.tobytes(), name
        # storing an already-rounded array loses nothing: storage can be lossless
        assert unpack_component(name, pack_component(name, got, spec.dtype)).tobytes() == got.tobytes()
    assert model_input(rounded_features(feats, spec), spec).dtype == np.float32


def test_rounding_mirrors_the_upper_half():
    cov = np.arange(2 * 2 * 2 * 2, dtype=np.float64).reshape(2, 2, 2, 2) + 0.1
    out = rounded("cov", cov, "float32")
    np.testing.assert_array_equal(out[0, 1], cov[0, 1].astype(np.float32))
    np.testing.assert_array_equal(out[1, 0], cov[0, 1].astype(np.float32).T)  # C[j,i,b,a] = C[i,j,a,b]
    np.testing.assert_array_equal(out[1, 1], cov[1, 1].astype(np.float32))
    bpp = np.array([[0.0, 0.3], [0.9, 1.0]])
    np.testing.assert_array_equal(rounded("bpp", bpp, "float16"), [[0.0, np.float16(0.3)], [np.float16(0.3), 1.0]])
    profile = np.array([[1 / 3, 2 / 3]], dtype=np.float32)  # per residue: no mirroring
    np.testing.assert_array_equal(rounded("profile", profile, "float16"), profile.astype(np.float16))


def test_float16_overflow_is_a_user_error():
    big = np.zeros((2, 2), np.float32)
    big[1, 0] = 1e6  # the lower half is never stored
    np.testing.assert_array_equal(rounded("bpp", big, "float16"), np.zeros((2, 2)))
    big[0, 1] = 1e6
    with pytest.raises(TprnaError, match="float16 range"):
        rounded("bpp", big, "float16")


def test_pad_batch_by_hand():
    a = np.full((2, 3, 3), 1.0, np.float32)
    b = np.full((2, 1, 1), 2.0, np.float32)
    x, mask = pad_batch([a, b])
    assert x.shape == (2, 2, 3, 3) and x.dtype == np.float32
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, [[True, True, True], [True, False, False]])
    np.testing.assert_array_equal(x[0], a)
    np.testing.assert_array_equal(x[1, :, 0, 0], [2.0, 2.0])
    assert x[1].sum() == 4.0  # everything but the one real pixel per channel is zero
    with pytest.raises(TprnaError, match="shape"):
        pad_batch([a, np.zeros((3, 2, 2), np.float32)])


def test_length_batches_under_the_paper_budget():
    # 3 below L=100, 2 up to 122, alone above (3·100² pixels)
    assert length_batches([90, 95, 99, 120, 121, 130]) == [[0, 1, 2], [3, 4], [5]]
    assert length_batches([50, 40], pixel_budget=1) == [[1], [0]]


def test_metadata_round_trip():
    spec = FeatureSpec()
    meta = {"feature_spec": spec.to_dict(), "feature_spec_key": spec.key,
            "model_config": {"name": "mffnet36", "kwargs": {}}, "opset": 17}
    props = metadata_props(meta)
    assert all(k.startswith(METADATA_PREFIX) for k in props)
    assert parse_metadata({**props, "other": "x"}) == meta
    with pytest.raises(TprnaError, match="not a tpRNA ONNX model"):
        parse_metadata({"other": "x"})


def test_an_exported_model_uses_the_contract_names(tmp_path):
    pytest.importorskip("torch")
    from helpers import export_tiny_model

    from tprna.export import onnx_io, read_model_metadata
    from tprna.serve import make_session

    spec = FeatureSpec()
    path = export_tiny_model(tmp_path, spec)
    io = onnx_io(path)
    assert [i["name"] for i in io["inputs"]] == [INPUT_FEATURES, INPUT_MASK]
    assert [o["name"] for o in io["outputs"]] == [OUTPUT_CONTACTS]
    session, _ = make_session(path, "cpu", threads=1)
    assert [i.name for i in session.get_inputs()] == [INPUT_FEATURES, INPUT_MASK]
    assert read_model_metadata(path)["feature_spec"] == spec.to_dict()
