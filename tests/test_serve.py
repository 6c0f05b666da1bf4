"""Serving: batched == one-at-a-time, the same features as the store, feature-spec
mismatch refused, a corrupt MSA skipped while the rest finish, the RR / npz / png outputs,
and sessions."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tprna.errors import TprnaError
from tprna.contract import model_input
from tprna.features import FeatureSpec, make_features
from tprna.models import ContactProbability
from tprna.msa import read_msa
from tprna.serve import Predictor, infer, make_session, read_rr, top_contacts
from tprna.serve.predictor import RunStats
from tprna.serve.inputs import NamedInput
from tprna.serve.results import Failure
from tprna.serve.session import SessionRunner
from tprna.simulate import write_example_dataset

from helpers import export_tiny_model

SPEC = FeatureSpec()  # cov+ss, stored as float16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("model"), SPEC)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_example_dataset(root, n_families=6, seed=3, lengths=(24, 64), depths=(5, 60))
    return root


@pytest.fixture(scope="module")
def msas(dataset) -> list[Path]:
    return sorted((dataset / "msa").iterdir())


@pytest.fixture(scope="module")
def store(dataset, tmp_path_factory) -> Path:
    from tprna.store import build_store, items_from_manifest

    path = tmp_path_factory.mktemp("store") / "sim.zarr"
    report = build_store(path, items_from_manifest(dataset / "manifest.csv"), SPEC, jobs=1, progress=False)
    assert report.ok, report.summary()
    return path


def test_batched_equals_one_at_a_time(model, msas):
    batched = Predictor(model, device="cpu", max_batch=8, max_padding=10.0)
    single = Predictor(model, device="cpu", max_batch=1)
    stats = RunStats()
    together = sorted(batched.iter_predict(msas, stats=stats), key=lambda p: p.index)
    assert stats.batches < len(msas) and stats.padding_overhead > 0  # real padding happened
    alone = single.predict(msas)
    assert [p.id for p in together] == [p.id for p in alone] == [m.name.split(".")[0] for m in msas]
    for a, b in zip(together, alone):
        assert a.probabilities.shape == (a.length, a.length) == (len(a.sequence),) * 2
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=2e-6)


def test_prediction_is_the_network_on_the_shared_features(model, msas):
    """The ONNX path reproduces ContactProbability on make_features/model_input (rounded
    through the spec's storage dtype, as training saw them)."""
    from tprna.train import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(model.with_suffix(".ckpt"))
    net = ContactProbability(model_from_checkpoint(ckpt)).eval()
    msa = read_msa(msas[0])
    feats = dict(make_features(msa, SPEC))
    feats = {k: (v.astype(np.float16).astype(np.float32) if k in SPEC.components else v) for k, v in feats.items()}
    x = torch.from_numpy(model_input(feats, SPEC))[None]
    with torch.inference_mode():
        want = net(x, torch.ones(1, msa.length, dtype=torch.bool))[0].numpy()
    got = Predictor(model, device="cpu").predict([msa])[0]
    assert got.sequence == msa.query
    assert np.abs(got.probabilities - want).max() < 1e-3  # float16 rounding of asymmetric fp noise
    np.testing.assert_allclose(got.probabilities, got.probabilities.T, atol=1e-7)


def test_store_and_msa_give_the_same_prediction(model, msas, store):
    predictor = Predictor(model, device="cpu")
    from_msa = {p.id: p for p in predictor.predict(msas)}
    from_store = predictor.predict_store(store)
    assert sorted(p.id for p in from_store) == sorted(from_msa)
    for p in from_store:
        assert p.sequence == from_msa[p.id].sequence
        np.testing.assert_allclose(p.probabilities, from_msa[p.id].probabilities, atol=1e-6)
    test_ids = predictor.predict_store(store, split="test")
    assert 0 < len(test_ids) < len(from_store)


def test_infer_on_a_store_split(model, store, tmp_path):
    from tprna.store import open_store

    with open_store(store) as s:
        wanted = s.ids("test")
    report = infer(model, [], tmp_path, store=store, split="test", progress=False)
    assert sorted(report.done) == sorted(wanted) and not report.failed
    assert all((tmp_path / f"{e}.rr").is_file() for e in wanted)
    with pytest.raises(TprnaError, match="split"):
        infer(model, [], tmp_path, store=store, split="nope", progress=False)


def test_store_with_another_feature_spec_is_refused(model, dataset, tmp_path):
    from tprna.store import build_store, items_from_manifest

    other = FeatureSpec(feature_set="cov+ss", identity=0.9)
    path = tmp_path / "other.zarr"
    build_store(path, items_from_manifest(dataset / "manifest.csv")[:1], other, progress=False)
    predictor = Predictor(model, device="cpu")
    with pytest.raises(TprnaError, match="feature spec mismatch") as err:
        predictor.predict_store(path)
    assert SPEC.key in str(err.value) and other.key in str(err.value) and "other.zarr" in str(err.value)
    with pytest.raises(TprnaError, match="feature spec mismatch"):
        infer(model, [], tmp_path / "out", store=path, progress=False)


def test_store_entries_are_reused_for_matching_msas(model, msas, store, tmp_path, monkeypatch):
    import tprna.features

    def refuse(*args, **kwargs):
        raise AssertionError("features recomputed although the store has them")

    monkeypatch.setattr(tprna.features, "make_features", refuse)
    report = infer(model, msas, tmp_path / "out", store=store, progress=False)
    assert report.failed == [] and len(report.done) == len(msas)
    # an MSA whose bytes differ from the stored entry's source is recomputed (→ refused here)
    changed = tmp_path / msas[0].name
    changed.write_text(msas[0].read_text() + "\n")
    report = infer(model, [changed], tmp_path / "out2", store=store, progress=False)
    assert len(report.failed) == 1 and "recomputed" in report.failed[0]["reason"]


def write_bad_inputs(folder: Path) -> dict[str, str]:
    """Broken alignments beside good ones: name → expected words of the failure reason."""
    (folder / "empty.fasta").write_text("")
    (folder / "protein.fasta").write_text(">p\nMKTLLEFIVQW\n>q\nMKTLLEFIVQW\n")
    (folder / "ragged.fasta").write_text(">a\nACGUACGU\n>b\nACG\n")
    (folder / "binary.fasta").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage")
    # binary: the PNG's bytes split at its "\n"s into rows of 1, 4 and 9 characters
    return {"empty": "no sequences", "protein": "not RNA", "ragged": "unequal lengths [3, 8]",
            "binary": "unequal lengths [1, 4, 9]"}


def test_infer_skips_bad_inputs_and_writes_the_rest(model, msas, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for m in msas:
        shutil.copy(m, inputs / m.name)
    bad = write_bad_inputs(inputs)
    lengths = {m.name.split(".")[0]: read_msa(m).length for m in msas}
    too_long = max(lengths, key=lengths.get)
    limit = lengths[too_long] - 1
    out = tmp_path / "out"
    report = infer(model, [inputs, tmp_path / "missing.fasta"], out, max_length=limit, progress=False)
    good = sorted(k for k in lengths if k != too_long)
    assert sorted(report.done) == good
    failed = {Path(f["file"]).name.split(".")[0]: f["reason"] for f in report.failed}
    assert set(failed) == set(bad) | {too_long, "missing"}
    for name, words in bad.items():
        assert words and words in failed[name], (name, failed[name])  # "" would match any reason
    assert "maximum length" in failed[too_long] and "not found" in failed["missing"]
    for entry in good:
        assert (out / f"{entry}.npz").is_file() and (out / f"{entry}.rr").is_file()
        assert not (out / f"{entry}.png").exists()
    for name in list(bad) + [too_long]:
        assert not (out / f"{name}.npz").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_done"] == len(good) and summary["n_failed"] == len(failed)
    assert summary["providers"] == ["CPUExecutionProvider"]
    assert summary["rnas_per_second"] > 0 and summary["padding_overhead"] >= 0
    assert {"file", "reason"} <= set(summary["failed"][0])


def test_infer_skips_an_input_whose_features_would_not_fit(model, msas, store, tmp_path):
    """The store's memory rule, applied before any feature is computed: the input whose
    estimate is above ``memory_limit`` is reported with the limit and the fix, the rest
    are predicted; a store entry (nothing to compute) is never refused for it."""
    from tprna.features import feature_memory_bytes

    need = {m.name.split(".")[0]: feature_memory_bytes(SPEC, read_msa(m).length, read_msa(m).depth) for m in msas}
    biggest = max(need, key=need.get)
    limit = max(v for k, v in need.items() if k != biggest)  # every other input fits exactly
    assert need[biggest] > limit
    report = infer(model, msas, tmp_path / "out", memory_limit=limit, progress=False)
    assert sorted(report.done) == sorted(k for k in need if k != biggest)
    (failed,) = report.failed
    assert Path(failed["file"]).name.split(".")[0] == biggest
    assert "of memory, above the limit" in failed["reason"] and "--memory-limit" in failed["reason"]
    stored = infer(model, None, tmp_path / "stored", store=store, memory_limit=1, progress=False)
    assert stored.ok and len(stored.done) == len(msas)


def test_feature_threads_share_the_memory_limit(model, msas, monkeypatch):
    """Inputs that each fit the limit but no two of which fit together are computed one at
    a time, however many feature threads there are; with room for all, they overlap."""
    import threading
    import time

    from tprna import features
    from tprna.features import feature_memory_bytes

    need = sorted(feature_memory_bytes(SPEC, read_msa(m).length, read_msa(m).depth) for m in msas)
    assert need[0] + need[1] > need[-1]  # so a limit of the largest admits every input, no pair
    running, most, lock = [0], [0], threading.Lock()
    compute = features.make_features

    def tracked(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)
        try:
            return compute(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(features, "make_features", tracked)
    for limit, together in ((need[-1], 1), (10 * sum(need), 3)):
        most[0] = 0
        predictor = Predictor(model, device="cpu", workers=3, max_batch=8, max_padding=10.0, memory_limit=limit)
        results = list(predictor.predict(msas))
        assert len(results) == len(msas) and not [r for r in results if isinstance(r, Failure)]
        assert most[0] == together, (limit, most[0])


def test_rr_and_npz_outputs(model, msas, tmp_path):
    report = infer(model, msas[:2], tmp_path, png=True, progress=False)
    entry = report.done[0]
    npz = np.load(tmp_path / f"{entry}.npz")
    prob, seq = npz["probabilities"], str(npz["sequence"])
    assert prob.dtype == np.float32 and prob.shape == (len(seq), len(seq))
    lines = (tmp_path / f"{entry}.rr").read_text().splitlines()
    assert lines[:2] == ["PFRMAT RR", f"TARGET {entry}"] and lines[-1] == "END"
    model_line = lines.index("MODEL 1")
    seq_lines = [ln for ln in lines[model_line + 1:] if ln[0].isalpha() and ln != "END"]
    assert "".join(seq_lines) == seq and all(len(ln) <= 50 for ln in seq_lines)
    rr = read_rr(tmp_path / f"{entry}.rr")
    assert rr.target == entry and rr.sequence == seq and rr.methods and "mffnet30" in rr.methods[0]
    length = len(seq)
    eligible = sum(1 for i in range(length) for j in range(i + 6, length))
    assert len(rr.contacts) == min(2 * length, eligible)
    probs = [c[4] for c in rr.contacts]
    assert probs == sorted(probs, reverse=True)
    for i, j, lo, hi, p in rr.contacts:
        assert 1 <= i < j <= length and j - i >= 6 and (lo, hi) == (0, 8)
        assert abs(prob[i - 1, j - 1] - p) <= 5e-6
    # the top pairs are the most probable eligible pairs of the map
    iu, ju = np.triu_indices(length, 6)
    assert probs[0] == pytest.approx(prob[iu, ju].max(), abs=5e-6)
    assert (tmp_path / f"{entry}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    few = infer(model, msas[:1], tmp_path / "top5", top=5, progress=False)
    assert len(read_rr(tmp_path / "top5" / f"{few.done[0]}.rr").contacts) == 5


def test_top_contacts_order_and_separation():
    p = np.zeros((10, 10), np.float32)
    p[0, 9] = p[9, 0] = 0.9
    p[1, 7] = p[7, 1] = 0.5
    p[2, 3] = p[3, 2] = 0.99  # too close in sequence
    top = top_contacts(p, top=3)
    assert top[:2] == [(1, 10, pytest.approx(0.9)), (2, 8, pytest.approx(0.5))]
    assert top[2][2] == 0 and top[2][:2] == (1, 7)  # ties by i, then j
    assert len(top_contacts(p)) == 10  # all 10 pairs with j − i ≥ 6 (fewer than 2·L)
    assert len(top_contacts(p, min_separation=9)) == 1


def test_sequence_and_msa_object_inputs(model, msas):
    predictor = Predictor(model, device="cpu")
    msa = read_msa(msas[1])
    preds = predictor.predict([("q1", "GGGGAAACCCCUUUGGGGAAACCCC"), msa])
    assert [p.id for p in preds] == ["q1", msas[1].name.split(".")[0]]
    assert preds[0].length == 25 and preds[1].sequence == msa.query
    with pytest.raises(TprnaError, match="not RNA"):
        predictor.predict([("bad", "MKTLLEFIVQW")])
    assert predictor.predict([("bad", "MKTLLEFIVQW"), ("ok", "ACGUACGUAC")], skip_errors=True)[0].id == "ok"


def test_duplicate_ids_are_reported(model, msas, tmp_path):
    """The same file twice is one RNA: the second is reported, not written over the first."""
    report = infer(model, [msas[0], msas[0]], tmp_path / "out", progress=False)
    assert len(report.done) == 1 and report.failed[0]["reason"] == "given twice"
    named = infer(model, [msas[0], ("sim000", read_msa(msas[1]))], tmp_path / "named", progress=False)
    assert len(named.done) == 1 and "duplicate id 'sim000'" in named.failed[0]["reason"]
    two = infer(model, [NamedInput("a", "GGGAAACCC", "--seq a"), NamedInput("a", "GCGCAAGCGC", "--seq a")],
                tmp_path / "two", progress=False)
    assert len(two.done) == 1 and "duplicate id 'a'" in two.failed[0]["reason"]  # not the same RNA twice


def test_files_of_one_name_in_folders_per_target_are_named_by_their_folders(model, msas, tmp_path):
    """One folder per target, each with its ``seq.<ext>`` (as rMSA / trRosettaRNA write them):
    every target is predicted, named ``<folder>_seq``; a file whose name no other shares
    keeps its own; the outputs are each target's own prediction."""
    from tprna.serve.inputs import distinct_ids

    targets = []
    for n, msa in enumerate(msas[:3]):
        folder = tmp_path / "targets" / f"R11{n:02d}"
        folder.mkdir(parents=True)
        targets.append(folder / ("seq" + msa.suffix))
        shutil.copy(msa, targets[-1])
    report = infer(model, targets + [msas[3]], tmp_path / "out", progress=False)
    stem = msas[3].name.split(".")[0]
    assert sorted(report.done) == ["R1100_seq", "R1101_seq", "R1102_seq", stem] and not report.failed
    alone = Predictor(model, device="cpu").predict(msas[:3])
    for n, pred in enumerate(alone):
        written = np.load(tmp_path / "out" / f"R11{n:02d}_seq.npz")["probabilities"]
        np.testing.assert_allclose(written, pred.probabilities, atol=1e-6)
    # as many folders as tell them apart; the same file twice stays one id
    deep = [tmp_path / side / "R1100" / "seq.fasta" for side in ("x", "y")]
    for path in deep:
        path.parent.mkdir(parents=True)
        shutil.copy(msas[0], path)
    named = distinct_ids([str(deep[0]), deep[1], deep[0], "GGGAAACCC"])
    assert [v[0] for v in named[:3]] == ["x_R1100_seq", "y_R1100_seq", "x_R1100_seq"]
    assert named[3] == "GGGAAACCC"


def test_batches_follow_length_budget_and_padding_limit(model):
    predictor = Predictor(model, device="cpu", batch_pixels=4 * 100 ** 2, max_batch=3, max_padding=0.3)
    lengths = [30, 100, 31, 99, 33, 35, 98, 200, 34, 32]
    batches = predictor.batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        ls = [lengths[i] for i in b]
        assert ls == sorted(ls) and len(b) <= 3
        if len(b) > 1:
            assert len(b) * max(ls) ** 2 <= 4 * 100 ** 2
            assert len(b) * max(ls) ** 2 <= 1.3 * sum(n * n for n in ls)


def test_io_binding_gives_the_same_result(model):
    session, providers = make_session(model, device="cpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, SPEC.channels, 21, 21)).astype(np.float32)
    mask = np.ones((2, 21), bool)
    mask[1, 15:] = False
    plain = SessionRunner(session, providers, io_binding=False).run(x, mask)
    bound = SessionRunner(session, providers, io_binding=True).run(x, mask)
    np.testing.assert_array_equal(plain, bound)


def test_sessions_report_providers_and_refuse_missing_cuda(model):
    import onnxruntime as ort

    _, providers = make_session(model, device="cpu", threads=1)
    assert providers == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        _, providers = make_session(model, device="cuda")
        assert providers[0] == "CUDAExecutionProvider"
    else:
        with pytest.raises(TprnaError, match="no CUDA provider"):
            make_session(model, device="cuda")
    with pytest.raises(TprnaError, match="not 'auto'"):
        make_session(model, device="tpu")


def test_a_model_without_tprna_metadata_is_refused(model, tmp_path):
    import onnx

    plain = onnx.load(model)
    del plain.metadata_props[:]
    onnx.save(plain, tmp_path / "plain.onnx")
    with pytest.raises(TprnaError, match="not a tpRNA ONNX model"):
        Predictor(tmp_path / "plain.onnx")
