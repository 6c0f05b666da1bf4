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


@pytest.mark.parametrize("spec_json, words", [
    ('"cov+ss"', "malformed"),                                   # not a mapping
    ("{}", "malformed"),                                         # no molecule / feature_set
    ('{"molecule": "rna"}', "malformed"),                       # no feature_set: was read as cov+ss
    ('{"molecule": "rna", "feature_set": "cov", "window": 3}', "does not know"),  # unknown field
    ('{"molecule": "rna", "feature_set": "cov+zz"}', "invalid"),  # no such feature set
    ('{"molecule": "rna", "feature_set": "cov", "identity": "high"}', "wrong type"),
])
def test_metadata_with_a_malformed_feature_spec_is_refused(tmp_path, exported, spec_json, words):
    """A model's feature spec decides the features computed for it: one read half (the
    rest filled with defaults) would give silently wrong predictions."""
    from tprna.serve.session import session_metadata

    _, path, _ = exported
    model = onnx.load(path)
    for prop in model.metadata_props:
        if prop.key == "tprna.feature_spec":
            prop.value = spec_json
    bad = tmp_path / "bad_spec.onnx"
    onnx.save(model, bad)
    with pytest.raises(TprnaError, match=words) as err:
        read_model_metadata(bad)
    assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)
    session, _ = make_session(bad, device="cpu", threads=1)
    with pytest.raises(TprnaError, match=words):
        session_metadata(session, bad)


def test_a_mismatched_feature_spec_key_is_refused(tmp_path, exported):
    _, path, _ = exported
    model = onnx.load(path)
    for prop in model.metadata_props:
        if prop.key == "tprna.feature_spec_key":
            prop.value = json.dumps("0123456789ab")
    onnx.save(model, tmp_path / "bad_key.onnx")
    with pytest.raises(TprnaError, match="does not match"):
        read_model_metadata(tmp_path / "bad_key.onnx")


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
    payload = torch.load(ckpt, weights_only=True)  # a checkpoint is tensors and plain data
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
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    # a second export adds version 2 beside version 1 (nothing replaced) and rewrites the config
    export_triton(path, tmp_path / "models", name="tprna_mff", max_batch_size=2)
    assert parse_pbtxt((folder / "config.pbtxt").read_text())["max_batch_size"] == 2
    assert sorted(p.name for p in folder.iterdir()) == ["1", "2", "config.pbtxt", "tprna_metadata.json"]
    for v in ("1", "2"):
        assert (folder / v / "model.onnx").read_bytes() == path.read_bytes()
        assert json.loads((folder / v / "tprna_metadata.json").read_text()) == read_model_metadata(path)
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["tprna_mff"]  # no leftovers


@pytest.mark.parametrize("bad", [".", "..", ".hidden", "a/b", "../escape", "", "-rf", "a.", "bad name",
                                 "x" * 129, "dir\\x", "nul\x00"])
def test_triton_unsafe_model_names_are_refused_and_the_repository_untouched(tmp_path, exported, bad):
    _, path, _ = exported
    repo = tmp_path / "repo"
    export_triton(path, repo, name="kept")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(TprnaError, match="may only use"):
        export_triton(path, repo, name=bad)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_triton_name_dot_on_the_command_line_keeps_the_repository(tmp_path, exported):
    """'--name .' once moved the whole repository aside; run again, it deleted every model."""
    from typer.testing import CliRunner

    from tprna.cli import app

    _, path, _ = exported
    repo = tmp_path / "repo"
    export_triton(path, repo, name="kept")
    for _ in range(2):
        result = CliRunner().invoke(app, ["export", "triton", str(path), "--repo", str(repo), "--name", "."])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "may only use" in result.output
    assert (repo / "kept" / "1" / "model.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_triton_default_name_and_bad_names(tmp_path, exported):
    _, path, _ = exported
    assert export_triton(path, tmp_path / "repo").name == path.stem
    with pytest.raises(TprnaError, match="may only use"):
        export_triton(path, tmp_path / "repo", name="bad name/x")
    hidden = tmp_path / ".hidden.onnx"
    hidden.write_bytes(path.read_bytes())
    with pytest.raises(TprnaError, match="--name"):  # the file's stem is not a safe name
        export_triton(hidden, tmp_path / "repo")


def test_triton_versions_are_kept_and_replaced_only_with_overwrite(tmp_path, exported, spec):
    _, path, _ = exported
    repo = tmp_path / "repo"
    folder = export_triton(path, repo, name="m", version=3)
    assert [p.name for p in folder.iterdir() if p.is_dir()] == ["3"]
    assert export_triton(path, repo, name="m") == folder  # the next free version: 4
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["3", "4"]
    (folder / "3" / "model.onnx").write_bytes(b"a marker the export must not destroy")
    with pytest.raises(TprnaError, match="already has version 3.*--overwrite.*--version 5"):
        export_triton(path, repo, name="m", version=3)
    assert (folder / "3" / "model.onnx").read_bytes() == b"a marker the export must not destroy"
    export_triton(path, repo, name="m", version=3, overwrite=True)
    assert (folder / "3" / "model.onnx").read_bytes() == path.read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == ["3", "4", "config.pbtxt", "tprna_metadata.json"]
    for bad in (0, -1, 2 ** 63, 1.5, True):
        with pytest.raises(TprnaError, match="version"):
            export_triton(path, repo, name="m", version=bad)
    # version policy 'all' serves every version: they must all fit the one config
    export_triton(path, repo, name="m", version_policy="all")
    assert parse_pbtxt((folder / "config.pbtxt").read_text())["version_policy"] == {"all": {}}
    with pytest.raises(TprnaError, match="version policy"):
        export_triton(path, repo, name="m", version_policy="newest")


def test_triton_versions_with_other_inputs(tmp_path, exported):
    """A model of another feature spec (25 channels, not 26) may become the newest version
    under 'latest' (the config follows it), never join an 'all' model or go below the newest."""
    from helpers import export_tiny_model

    _, path, _ = exported
    (tmp_path / "cov").mkdir()
    other = export_tiny_model(tmp_path / "cov", FeatureSpec(feature_set="cov"))
    repo = tmp_path / "repo"
    export_triton(path, repo, name="m")                                   # version 1: 26 channels
    with pytest.raises(TprnaError, match="other inputs"):
        export_triton(other, repo, name="m", version_policy="all")
    folder = export_triton(other, repo, name="m")                        # version 2: 25 channels
    assert parse_pbtxt((folder / "config.pbtxt").read_text())["input"][0]["dims"][0] == 25
    assert json.loads((folder / "tprna_metadata.json").read_text())["feature_spec"]["feature_set"] == "cov"
    with pytest.raises(TprnaError, match="version 2 is the newest"):
        export_triton(path, repo, name="m", version=1, overwrite=True)
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["1", "2"]


def test_exported_files_are_readable_by_others(tmp_path, exported, spec):
    """Files 0644 and folders 0755 under a 022 umask (mkstemp/mkdtemp make them owner-only)."""
    import os
    import stat

    _, path, _ = exported
    old = os.umask(0o022)
    try:
        report = export_onnx(make_checkpoint(tmp_path / "m.ckpt", spec), tmp_path / "out" / "m.onnx",
                             parity_lengths=(9,))
        assert stat.S_IMODE(os.stat(report.path).st_mode) == 0o644
        folder = export_triton(path, tmp_path / "repo", name="m")
        export_triton(path, tmp_path / "repo", name="m")                    # a second version
        export_triton(path, tmp_path / "repo", name="m", version=1, overwrite=True)
    finally:
        os.umask(old)
    for p in [folder, *folder.rglob("*")]:
        assert stat.S_IMODE(p.stat().st_mode) == (0o755 if p.is_dir() else 0o644), p


# ----------------------------------------------------------------------------- graph rewrites

def graph_census(path: Path) -> dict[str, int]:
    """Node counts of an exported graph, read from the graph itself: grouped convs with
    several inputs per group, depthwise convs, all convs, Muls, and activations (Clip /
    Relu) fed straight by a Conv or by a Mul."""
    model = onnx.load(path)
    weights = {i.name: i for i in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    census = dict.fromkeys(["grouped", "depthwise", "conv", "mul", "act_after_conv", "act_after_mul"], 0)
    for n in model.graph.node:
        if n.op_type == "Conv":
            census["conv"] += 1
            if any(a.name == "group" and a.i > 1 for a in n.attribute):
                census["depthwise" if weights[n.input[1]].dims[1] == 1 else "grouped"] += 1
        census["mul"] += n.op_type == "Mul"
        if n.op_type in ("Clip", "Relu") and n.input[0] in producer:
            kind = producer[n.input[0]].op_type
            census["act_after_conv"] += kind == "Conv"
            census["act_after_mul"] += kind == "Mul"
    return census


@pytest.fixture(scope="module")
def exported_plain(exported, tmp_path_factory):
    """The same checkpoint exported without the graph rewrites."""
    report = export_onnx(exported[0], tmp_path_factory.mktemp("plain") / "plain.onnx", optimize=False,
                         parity_lengths=(9, 20))
    return Path(report.path), report


def test_graph_rewrites_are_applied_and_exact(exported, exported_plain):
    _, path, report = exported
    plain_path, plain_report = exported_plain
    assert plain_report.graph_rewrites == {}
    before, after = graph_census(plain_path), graph_census(path)
    rewrites = report.graph_rewrites
    # 1. every grouped conv became a depthwise conv plus a 1×1 conv
    assert before["grouped"] > 0 and after["grouped"] == 0
    assert after["depthwise"] - before["depthwise"] == before["grouped"] == rewrites["grouped_to_depthwise"]
    assert after["conv"] - before["conv"] == before["grouped"]
    # 2. the masks dropped are the Muls missing (moving an activation keeps the Mul count)
    assert before["mul"] - after["mul"] == rewrites["redundant_masks"] > 0
    # 3. every activation that followed a Mul now follows its Conv directly
    assert after["act_after_mul"] == 0
    assert after["act_after_conv"] - before["act_after_conv"] == before["act_after_mul"] \
        == rewrites["activation_before_mask"] > 0
    assert read_model_metadata(path)["graph_rewrites"] == rewrites
    # and the rewritten graph computes what the plain one does
    x = np.random.default_rng(3).standard_normal((2, 26, 23, 23)).astype(np.float32)
    x += x.transpose(0, 1, 3, 2)
    mask = np.ones((2, 23), bool)
    mask[1, 15:] = False
    outs = [make_session(p, device="cpu", threads=1)[0].run(["contacts"], {"features": x, "mask": mask})[0]
            for p in (plain_path, path)]
    np.testing.assert_allclose(outs[1], outs[0], rtol=0, atol=1e-5)


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
        plain = export_onnx(ckpt, tmp_path / f"{name}-plain.onnx", parity_lengths=(7,), optimize=False)
        dropped = graph_census(Path(plain.path))["mul"] - graph_census(Path(report.path))["mul"]
        assert report.graph_rewrites["redundant_masks"] == dropped > 0


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
