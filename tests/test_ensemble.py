"""A seed ensemble as one graph: its probabilities are the mean of its members', in PyTorch
and through the exported ONNX model; members that do not match are refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import make_checkpoint
from tprna.errors import TprnaError
from tprna.export import export_ensemble
from tprna.features import FeatureSpec
from tprna.models import ContactEnsemble, ContactProbability, build_model
from tprna.serve.session import make_session
from tprna.train import load_checkpoint, model_from_checkpoint

SPEC = FeatureSpec()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ensemble_is_the_mean_of_its_members(tmp_path):
    paths = [make_checkpoint(tmp_path / f"m{seed}.ckpt", SPEC, seed=seed) for seed in (0, 1)]
    members = [model_from_checkpoint(load_checkpoint(p)).eval() for p in paths]
    x = torch.randn(2, SPEC.channels, 20, 20)
    x = x + x.transpose(-1, -2)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 15:] = False
    with torch.no_grad():
        expected = torch.stack([ContactProbability(m)(x, mask) for m in members]).mean(0)
        got = ContactProbability(ContactEnsemble(members).eval())(x, mask)
    assert not torch.allclose(ContactProbability(members[0])(x, mask), expected, atol=1e-3)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)

    report = export_ensemble(paths, tmp_path / "ens.onnx", parity_lengths=(9, 20))
    session, _ = make_session(report.path, "cpu")
    onnx_out = session.run(None, {"features": x.numpy(), "mask": mask.numpy()})[0]
    np.testing.assert_allclose(onnx_out, expected.numpy(), atol=1e-5)


def test_ensemble_refuses_mismatched_members(tmp_path):
    with pytest.raises(TprnaError, match="one architecture"):
        ContactEnsemble([build_model("mffnet30", in_channels=26, channels=16),
                         build_model("mffnet30", in_channels=25, channels=16)])
    a = make_checkpoint(tmp_path / "a.ckpt", SPEC)
    b = make_checkpoint(tmp_path / "b.ckpt", FeatureSpec(feature_set="cov"))
    with pytest.raises(TprnaError, match="different feature specs"):
        export_ensemble([a, b], tmp_path / "x.onnx")
