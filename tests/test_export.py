"""ONNX export: parity with PyTorch at dynamic lengths and on padded batches, the metadata
round trip, failing (and leaving nothing) above the tolerance, fp16, and the Triton
model repository."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tprna import __version__
from tprna.errors import TprnaError
from tprna.export import (default_export_path, export_onnx, export_triton, onnx_io,
                          read_model_metadata)
from tprna.features import FeatureSpec
from tprna.models import ContactProbability, build_model, model_config
from tprna.serve import make_session

from helpers import make_checkpoint


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return FeatureSpec()  # cov+ss: 26 channels


@pytest.fixture(scope="module")
def exported(tmp_path_factory, spec):
    root = tmp_path_factory.mktemp("export")
    ckpt = make_checkpoint(root / "mff.ckpt", spec)
    report = export_onnx(ckpt, root / "mff.onnx")
    return ckpt, Path(report.path), report


def torch_reference(ckpt: Path):
    from tprna.train import load_checkpoint, model_from_checkpoint

    return ContactProbability(model_from_checkpoint(load_checkpoint(ckpt))).eval()


def test_export_report_and_checked_parity(exported):
    _, path, report = exported
    assert path.is_file() and report.size_bytes == path.stat().st_size
    assert set(report.parity) == {"L=17", "L=48", "L=97", "padded batch L=17,48,97"}
    assert 0 <= report.max_abs_diff <= 1e-4 == report.tolerance
    assert report.max_abs_diff == max(report.parity.values())
    assert report.providers == ["CPUExecutionProvider"]  # float32 is always checked on the CPU
    onnx.checker.check_model(onnx.load(path))
    assert "1.00e-04" in report.summary() or "tolerance 0.0001" in report.summary()


def test_onnx_io_has_dynamic_batch_and_length(exported, spec):
    _, path, _ = exported
    io = onnx_io(path)
    assert [(e["name"], e["dtype"]) for e in io["inputs"]] == [("features", "float32"), ("mask", "bool")]
    assert [(e["name"], e["dtype"]) for e in io["outputs"]] == [("contacts", "float32")]
    feats, mask = io["inputs"]
    assert isinstance(feats["shape"][0], str) and feats["shape"][1] == spec.channels
    assert isinstance(feats["shape"][2], str) and feats["shape"][2] == feats["shape"][3]
    assert mask["shape"] == [feats["shape"][0], feats["shape"][2]]
    assert len(io["outputs"][0]["shape"]) == 3


@pytest.mark.parametrize("lengths", [(33,), (5, 26, 61), (40, 40)])
def test_onnx_matches_torch_on_new_lengths_and_padded_batches(exported, spec, lengths):
    ckpt, path, _ = exported
    reference = torch_reference(ckpt)
    session, _ = make_session(path, device="cpu")
    rng = np.random.default_rng(sum(lengths))
    longest = max(lengths)
    x = np.zeros((len(lengths), spec.channels, longest, longest), np.float32)
    mask = np.zeros((len(lengths), longest), bool)
    for b, n in enumerate(lengths):
        f = rng.standard_normal((spec.channels, n, n)).astype(np.float32)
        x[b, :, :n, :n] = f + f.transpose(0, 2, 1)
        mask[b, :n] = True
    got = session.run(["contacts"], {"features": x, "mask": mask})[0]
    with torch.inference_mode():
        want = reference(torch.from_numpy(x), torch.from_numpy(mask)).numpy()
    assert got.shape == (len(lengths), longest, longest)
    assert np.abs(got - want).max() <= 1e-4
    for b, n in enumerate(lengths):  # zero on padding, symmetric
        assert not got[b, n:, :].any() and not got[b, :, n:].any()
        np.testing.assert_allclose(got[b], got[b].T, atol=1e-7)


def test_metadata_round_trip(exported, spec):
    ckpt, path, report = exported
    meta = read_model_metadata(path)
    assert meta["feature_spec"] == spec.to_dict()
    assert FeatureSpec.from_dict(meta["feature_spec"]).key == meta["feature_spec_key"] == spec.key
    assert meta["model_name"] == "mffnet30"
    assert meta["model_config"] == {"name": "mffnet30", "kwargs": {"in_channels": spec.channels, "channels": 16}}
    assert meta["train_store"] == "test-store"
    assert meta["tprna_version"] == __version__
    assert meta["precision"] == "float32" and meta["opset"] == 17
    assert meta["parity"]["max_abs_diff"] == pytest.approx(report.parity)
    assert meta["parity"]["tolerance"] == 1e-4
    assert meta["checkpoint"]["sha256"] and meta["checkpoint"]["epoch"] == 0
    assert meta["io"] == onnx_io(path)
    # every property is a JSON string under the tprna. prefix
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert all(k.startswith("tprna.") for k in props)
    assert json.loads(props["tprna.feature_spec"]) == spec.to_dict()


def test_metadata_of_foreign_or_corrupt_models_is_an_error(tmp_path, exported):
    _, path, _ = exported
    plain = onnx.load(path)
    del plain.metadata_props[:]
    onnx.save(plain, tmp_path / "plain.onnx")
    with pytest.raises(TprnaError, match="not a tpRNA ONNX model"):
        read_model_metadata(tmp_path / "plain.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 not protobuf at all" * 10)
    with pytest.raises(TprnaError, match="junk.onnx"):
        read_model_metadata(tmp_path / "junk.onnx")
    with pytest.raises(TprnaError, match="not found"):
        read_model_metadata(tmp_path / "missing.onnx")


def test_export_fails_above_tolerance_and_leaves_no_file(tmp_path, spec, monkeypatch):
    import tprna.export.onnx_export as ox

    ckpt = make_checkpoint(tmp_path / "mff.ckpt", spec)
    out = tmp_path / "out" / "mff.onnx"
    monkeypatch.setattr(ox, "_max_diff", lambda got, ref: 3e-3)  # a graph that drifts
    with pytest.raises(TprnaError, match=r"export check failed.*3\.00e-03.*tolerance 0\.0001"):
        export_onnx(ckpt, out, parity_lengths=(9, 20), optimize=False)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temporary left behind either


def test_tolerance_zero_fails_on_float_noise(tmp_path, spec, exported):
    if exported[2].max_abs_diff == 0:
        pytest.skip("onnxruntime reproduced PyTorch bit for bit here")
    ckpt = make_checkpoint(tmp_path / "mff.ckpt", spec)
    with pytest.raises(TprnaError, match="export check failed"):
        export_onnx(ckpt, tmp_path / "mff.onnx", tolerance=0.0, parity_lengths=(9, 20), optimize=False)
    assert not (tmp_path / "mff.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["mff.ckpt"]


def test_fp16_export_keeps_float32_io(tmp_path, spec, exported):
    ckpt = exported[0]
    report = export_onnx(ckpt, tmp_path / "mff16.onnx", fp16=True, parity_lengths=(11, 30))
    assert report.precision == "float16" and report.tolerance == 1e-2
    assert report.max_abs_diff <= 1e-2
    io = onnx_io(report.path)
    assert [e["dtype"] for e in io["inputs"]] == ["float32", "bool"]
    assert [e["dtype"] for e in io["outputs"]] == ["float32"]
    model = onnx.load(report.path)
    halves = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) > 10  # the conv weights are float16
    assert read_model_metadata(report.path)["precision"] == "float16"


def test_spec_that_does_not_fit_the_model_is_refused(tmp_path):
    spec26 = FeatureSpec()
    ckpt = make_checkpoint(tmp_path / "mff.ckpt", spec26)
    payload = torch.load(ckpt, weights_only=False)
    payload["feature_spec"] = FeatureSpec(feature_set="cov").to_dict()  # 25 channels
    torch.save(payload, ckpt)
    with pytest.raises(TprnaError, match="26 input channels.*25"):
        export_onnx(ckpt, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(TprnaError, match="checkpoint not found"):
        export_onnx(tmp_path / "nope.ckpt")


def test_default_export_path():
    assert default_export_path(Path("runs/a/mffnet36-cov.ckpt"), "mffnet36") == Path("export/mffnet36-cov.onnx")
    assert default_export_path(Path("runs/cov_ss/last.ckpt"), "mffnet36") == Path("export/cov_ss-mffnet36.onnx")
    assert default_export_path(None, "resnet34") == Path("export/resnet34.onnx")


# ----------------------------------------------------------------------------- Triton

def parse_pbtxt(text: str) -> dict:
    """A small parser for the protobuf text format Triton configs use: fields ``key: value``,
    messages ``key { ... }`` / ``key: { ... }``, lists ``key [ ... ]`` of messages or scalars;
    repeated keys collect into lists."""
    text = re.sub(r"#[^\n]*", "", text)  # comments (no '#' inside our strings)
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', text)
    pos = 0

    def scalar(tok: str):
        if tok.startswith('"'):
            return json.loads(tok)
        try:
            return int(tok)
        except ValueError:
            try:
                return float(tok)
            except ValueError:
                return tok  # an enum such as TYPE_FP32

    def value():
        nonlocal pos
        tok = tokens[pos]
        if tok == "{":
            pos += 1
            return message("}")
        if tok == "[":
            pos += 1
            items = []
            while tokens[pos] != "]":
                if tokens[pos] == ",":
                    pos += 1
                    continue
                items.append(value())
            pos += 1
            return items
        pos += 1
        return scalar(tok)

    def message(end):
        nonlocal pos
        out: dict = {}
        while pos < len(tokens) and tokens[pos] != end:
            if tokens[pos] == ",":
                pos += 1
                continue
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            v = value()
            if key in out:
                out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + [v]
            else:
                out[key] = v
        pos += 1
        return out

    return message(None)


TRITON_TYPES = {"float32": "TYPE_FP32", "bool": "TYPE_BOOL", "float16": "TYPE_FP16"}


def test_triton_repository_matches_the_onnx_model(tmp_path, exported):
    _, path, _ = exported
    folder = export_triton(path, tmp_path / "models", name="tprna_mff", max_batch_size=4)
    assert folder == tmp_path / "models" / "tprna_mff"
    assert (folder / "1" / "model.onnx").read_bytes() == path.read_bytes()
    assert json.loads((folder / "tprna_metadata.json").read_text()) == read_model_metadata(path)
    config = parse_pbtxt((folder / "config.pbtxt").read_text())
    assert config["name"] == "tprna_mff"
    assert config["platform"] == "onnxruntime_onnx" and config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == 4
    assert "dynamic_batching" in config
    assert config["parameters"] == {"key": "cudnn_conv_algo_search", "value": {"string_value": "1"}}
    io = onnx_io(path)
    for section, tensors in (("input", io["inputs"]), ("output", io["outputs"])):
        declared = config[section]
        assert [t["name"] for t in declared] == [t["name"] for t in tensors]
        for d, t in zip(declared, tensors):
            assert d["data_type"] == TRITON_TYPES[t["dtype"]]
            # the batch dim is implied by max_batch_size; the rest listed, dynamic → -1
            assert len(d["dims"]) == len(t["shape"]) - 1
            assert d["dims"] == [s if isinstance(s, int) else -1 for s in t["shape"][1:]]
    assert config["input"][0]["dims"][0] == 26 and config["input"][0]["dims"][1:] == [-1, -1]
    # re-export replaces the model cleanly; nothing else lands in the repository
    export_triton(path, tmp_path / "models", name="tprna_mff", max_batch_size=2)
    assert parse_pbtxt((folder / "config.pbtxt").read_text())["max_batch_size"] == 2
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["tprna_mff"]


def test_triton_default_name_and_bad_names(tmp_path, exported):
    _, path, _ = exported
    assert export_triton(path, tmp_path / "repo").name == path.stem
    with pytest.raises(TprnaError, match="may only use"):
        export_triton(path, tmp_path / "repo", name="bad name/x")


# ----------------------------------------------------------------------------- graph rewrites

def test_graph_rewrites_are_applied_and_exact(exported):
    _, path, report = exported
    # mffnet30: 10 blocks, two grouped convs each; the SE-pooling and block-output masks
    # are redundant; every ReLU6 that followed a mask now precedes it
    assert report.graph_rewrites["grouped_to_depthwise"] == 20
    assert report.graph_rewrites["redundant_masks"] == 20
    assert report.graph_rewrites["activation_before_mask"] >= 21
    assert read_model_metadata(path)["graph_rewrites"] == report.graph_rewrites
    model = onnx.load(path)
    weights = {i.name: i for i in model.graph.initializer}
    grouped = [n for n in model.graph.node if n.op_type == "Conv"
               and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(grouped) == 20 and all(weights[n.input[1]].dims[1] == 1 for n in grouped)  # all depthwise


@pytest.mark.parametrize("name,kwargs", [("resnet34", {"channels": 16}),
                                         ("mobilenet33", {"widths": (16, 16, 24)})])
def test_other_architectures_export_within_tolerance(tmp_path, spec, name, kwargs):
    torch.manual_seed(1)
    model = build_model(name, in_channels=spec.channels, **kwargs)
    for m in model.modules():  # untrained BatchNorm lets 17 residual blocks blow up; tame it
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.fill_(0.3)
    ckpt = {"model_config": model_config(model).to_dict(), "model": model.state_dict(),
            "feature_spec": spec.to_dict(), "train_store": None}
    report = export_onnx(ckpt, tmp_path / f"{name}.onnx", parity_lengths=(7, 16))
    assert report.max_abs_diff <= 1e-4 and report.path.endswith(f"{name}.onnx")
    assert not report.warnings  # the rewrites held
    if name.startswith("resnet"):  # block outputs are masked twice; MobileNet's are not
        assert report.graph_rewrites["redundant_masks"] == 17


def test_a_rewrite_that_breaks_the_numbers_falls_back(tmp_path, exported, monkeypatch):
    import tprna.export.onnx_export as ox
    from onnx import numpy_helper

    real = ox.optimize_graph

    def broken(model, mask_input="mask"):
        out, counts = real(model, mask_input)
        conv = next(n for n in out.graph.node if n.op_type == "Conv")
        weight = next(i for i in out.graph.initializer if i.name == conv.input[1])
        weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
        return out, counts

    monkeypatch.setattr(ox, "optimize_graph", broken)
    report = export_onnx(exported[0], tmp_path / "safe.onnx", parity_lengths=(7, 16))
    assert report.graph_rewrites == {} and report.max_abs_diff <= 1e-4
    assert any("exported without them" in w for w in report.warnings)
    assert read_model_metadata(report.path)["graph_rewrites"] == {}
