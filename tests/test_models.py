"""Contact networks: shapes, symmetry, padding invariance, transfer, configs,
complexity against the paper, and that training lowers the loss."""
import math

import pytest
import torch
from torch import nn

from tprna.errors import TprnaError
from tprna.losses import pair_mask, tp_loss
from tprna.models import (MODELS, PAPER_TABLE, ContactNet, ContactProbability, MaskedBatchNorm2d,
                          MFFBlock, ModelConfig, build_model, complexity_table, count_parameters,
                          load_trunk, mffnet30, model_config, resnet34, transfer_state)

ALL = sorted(MODELS)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm: random affine parameters, running statistics measured on
    random inputs (as after training, so deep ResNets do not blow up in eval mode)
    and then perturbed at random."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        n = m.num_features
        m.weight.data = 0.5 + 0.5 * torch.rand(n, generator=g)
        m.bias.data = 0.3 * torch.randn(n, generator=g)
        m.reset_running_stats()
        m.momentum = None                      # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, model.in_channels, 12, 12, generator=g))
    for m in bns:
        m.momentum = 0.1
        m.running_mean += 0.1 * torch.randn(m.num_features, generator=g)
        m.running_var *= 0.8 + 0.4 * torch.rand(m.num_features, generator=g)
    return model


def padded_batch(lengths, channels, seed=0):
    g = torch.Generator().manual_seed(seed)
    big = max(lengths)
    x = torch.zeros(len(lengths), channels, big, big)
    mask = torch.zeros(len(lengths), big, dtype=torch.bool)
    samples = []
    for b, n in enumerate(lengths):
        s = torch.randn(channels, n, n, generator=g)
        s = (s + s.transpose(-1, -2)) / 2
        x[b, :, :n, :n] = s
        mask[b, :n] = True
        samples.append(s)
    return x, mask, samples


@pytest.mark.parametrize("name", ALL)
def test_shapes_symmetry_and_padding_invariance(name):
    torch.manual_seed(0)
    model = randomize(build_model(name, in_channels=7)).eval()
    lengths = [13, 9, 6]
    x, mask, samples = padded_batch(lengths, 7)
    # the padded region holds garbage that must not matter
    x = x + 5.0 * (~(mask[:, None, :, None] & mask[:, None, None, :])).float()
    out = model(x, mask)
    assert set(out) == {"logits", "aux_logits"}
    assert out["logits"].shape == out["aux_logits"].shape == (3, 13, 13)
    prob = model.predict_proba(x, mask)
    assert prob.shape == (3, 13, 13)
    assert torch.equal(prob, prob.transpose(-1, -2))        # exactly symmetric
    assert ((prob >= 0) & (prob <= 1)).all()
    for b, (n, s) in enumerate(zip(lengths, samples)):
        alone = model.predict_proba(s[None], None)[0]
        torch.testing.assert_close(prob[b, :n, :n], alone, atol=1e-5, rtol=0)
        assert (prob[b, n:, :] == 0).all() and (prob[b, :, n:] == 0).all()
    # the raw logits of both heads agree too; in float64 the rounding noise of float32
    # convolutions of different sizes (~1e-5 relative on logits of magnitude 10) is gone
    model.double()
    out = model(x.double(), mask)
    for b, (n, s) in enumerate(zip(lengths, samples)):
        alone = model(s[None].double())
        for key in ("logits", "aux_logits"):
            torch.testing.assert_close(out[key][b, :n, :n], alone[key][0], atol=1e-9, rtol=1e-9)


def test_training_mode_batch_norm_ignores_padding():
    torch.manual_seed(1)
    model = randomize(mffnet30(in_channels=5)).train()
    x, mask, (s,) = padded_batch([10], 5)
    x_pad = torch.zeros(1, 5, 16, 16)
    x_pad[0, :, :10, :10] = s
    m_pad = torch.zeros(1, 16, dtype=torch.bool)
    m_pad[0, :10] = True
    alone = model(s[None])["logits"][0]
    before = model.stem.bn.running_mean.clone()
    padded = model(x_pad, m_pad)["logits"][0, :10, :10]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
    # the running statistics moved (same update both times, from valid pixels only)
    assert not torch.equal(before, model.stem.bn.running_mean)


def test_masked_batch_norm_equals_batch_norm_without_padding():
    torch.manual_seed(2)
    x = torch.randn(3, 4, 6, 6) * 2 + 1
    ours, ref = MaskedBatchNorm2d(4), nn.BatchNorm2d(4)
    ref.load_state_dict(ours.state_dict())
    m = torch.ones(3, 1, 6, 6)
    torch.testing.assert_close(ours(x, m), ref(x))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x, m), ref(x))


def test_probability_wrapper_and_aux_position():
    model = randomize(mffnet30(in_channels=4)).eval()
    x, mask, _ = padded_batch([8, 11], 4)
    torch.testing.assert_close(ContactProbability(model)(x, mask), model.predict_proba(x, mask))
    assert model.aux_position == 5 and len(model.trunk) == 10
    # aux head at position 0 reads the stem output
    net = ContactNet(MFFBlock, (2,), in_channels=4, aux_position=0).eval()
    m2 = mask[:, None, :, None] * mask[:, None, None, :]
    expected = net.aux_head(net.stem(x * m2, m2.float()))
    torch.testing.assert_close(net(x, mask)["aux_logits"], expected)
    assert "aux_logits" not in net(x, mask, aux=False)


def test_factories_depths_and_widths():
    assert len(mffnet30().trunk) == 10 and len(build_model("mffnet42").trunk) == 14
    assert len(resnet34().trunk) == 17 and len(build_model("resnet42").trunk) == 21
    mb = build_model("mobilenet33")
    assert mb.head.conv.in_channels == 80 and len(mb.trunk) == 10
    assert build_model("mobilenet33_96").head.conv.in_channels == 96
    assert build_model("mobilenet33", widths=(64, 64, 96)).head.conv.in_channels == 96
    assert resnet34().stem.conv.in_channels == 25
    assert build_model("mffnet36", in_channels=26).stem.conv.in_channels == 26


def test_registry_and_config_round_trip():
    with pytest.raises(TprnaError, match="mffnet30"):
        build_model("alexnet")
    with pytest.raises(TprnaError):
        build_model("mffnet30", nonsense=1)
    model = build_model("mobilenet33", in_channels=26, widths=(64, 64, 96))
    config = model_config(model)
    assert config == ModelConfig("mobilenet33", {"in_channels": 26, "widths": (64, 64, 96)})
    rebuilt = ModelConfig.from_dict(config.to_dict()).build()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    assert model_config(resnet34()).name == "resnet34"
    with pytest.raises(TprnaError):
        model_config(ContactNet(MFFBlock, (1,)))


def test_transfer_from_protein_to_rna():
    protein = randomize(mffnet30(in_channels=441), seed=3)
    rna = mffnet30(in_channels=25)
    copied = transfer_state(protein, rna)
    src, dst = protein.state_dict(), rna.state_dict()
    assert set(copied) == {k for k in dst if not k.startswith("stem.")}
    assert any(k.startswith("head.") for k in copied) and any(k.startswith("aux_head.") for k in copied)
    for k in copied:
        assert torch.equal(src[k], dst[k]), k
    assert src["stem.conv.weight"].shape == (64, 441, 1, 1)
    assert dst["stem.conv.weight"].shape == (64, 25, 1, 1)
    # load_trunk from a plain state dict, and refusal across architectures
    other = mffnet30(in_channels=26)
    assert load_trunk(other, protein.state_dict()) == copied
    with pytest.raises(TprnaError):
        transfer_state(protein, resnet34())
    with pytest.raises(TprnaError):
        transfer_state(build_model("mobilenet33"), build_model("mobilenet33_96"))


def test_complexity_matches_paper():
    rows = {r.name: r for r in complexity_table()}
    assert set(rows) == set(PAPER_TABLE)
    for name, r in rows.items():
        tolerance = 0.05 if name.startswith("resnet") else 0.20
        assert abs(r.params_ratio - 1) < tolerance, (name, r)
        assert abs(r.gmacs_ratio - 1) < tolerance, (name, r)
    assert count_parameters(resnet34()) == pytest.approx(rows["resnet34"].params_m * 1e6)


def test_adam_steps_lower_the_loss():
    torch.manual_seed(0)
    b, n, c = 4, 16, 6
    x = torch.randn(b, c, n, n)
    x = (x + x.transpose(-1, -2)) / 2
    target = (x[:, 0] + x[:, 1] > 0.8).float()          # contacts readable from two channels
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 12:] = False
    valid = pair_mask(mask)
    model = mffnet30(in_channels=c)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = tp_loss(model(x, mask), target, valid)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    # and it learnt the map, not just the base rate: the best constant prediction
    # p* = απ / (απ + (1−α)(1−π)) scores far worse
    alpha, pi = 0.2, target[valid].mean().item()
    p = alpha * pi / (alpha * pi + (1 - alpha) * (1 - pi))
    constant = -(alpha * pi * math.log(p) + (1 - alpha) * (1 - pi) * math.log(1 - p))
    assert losses[-1] < 0.5 * constant, (losses, constant)
