"""Losses against explicit per-pair sums, and the pair mask."""
import math

import pytest
import torch

from tprna.errors import TprnaError
from tprna.losses import LOSSES, build_loss, ce_loss, pair_mask, pair_weights, tp_loss, wce_loss


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def hand_loss(logits, target, valid, alpha=None, long_weight=1.0):
    """−mean over valid pairs of [w1·y·log p + w0·(1−y)·log(1−p)], by loops; a pair with
    |i − j| ≥ 24 counts ``long_weight`` times in the mean."""
    total, count = 0.0, 0.0
    b, n, _ = logits.shape
    for k in range(b):
        for i in range(n):
            for j in range(n):
                if not valid[k][i][j]:
                    continue
                p = sigmoid(float(logits[k, i, j]))
                y = float(target[k, i, j])
                w1, w0 = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
                w = long_weight if abs(i - j) >= 24 else 1.0
                total += -w * (w1 * y * math.log(p) + w0 * (1 - y) * math.log(1 - p))
                count += w
    return total / count


def test_pair_mask_excludes_padding_unobserved_and_near_diagonal():
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 1, 0],
                         [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    observed = torch.ones(2, 10, 10, dtype=torch.bool)
    observed[0, 0, 8] = False
    pm = pair_mask(mask, observed)
    # sample 0 (9 real): pairs with |i−j| ≥ 6 among 0..8: (0,6)(0,7)(0,8)(1,7)(1,8)(2,8)
    # and mirrors = 12, minus the unobserved (0,8) = 11
    expected0 = {(i, j) for i in range(9) for j in range(9) if abs(i - j) >= 6} - {(0, 8)}
    assert {tuple(x) for x in pm[0].nonzero().tolist()} == expected0
    assert len(expected0) == 11
    # sample 1 (7 real): only (0,6) and (6,0)
    assert {tuple(x) for x in pm[1].nonzero().tolist()} == {(0, 6), (6, 0)}
    assert pm.dtype == torch.bool and pm.shape == (2, 10, 10)
    # float masks and no observed mask work the same
    pm2 = pair_mask(mask.float(), None, min_separation=8)
    assert {tuple(x) for x in pm2[0].nonzero().tolist()} == {(0, 8), (8, 0)}
    assert not pm2[1].any()


def small_case():
    torch.manual_seed(0)
    logits = torch.randn(2, 8, 8, dtype=torch.float64) * 2
    target = (torch.rand(2, 8, 8) > 0.6).double()
    mask = torch.tensor([[1] * 8, [1] * 7 + [0]])
    return logits, target, pair_mask(mask)


def test_ce_matches_hand_computation():
    logits, target, valid = small_case()
    got = ce_loss(logits, target, valid)
    assert got.item() == pytest.approx(hand_loss(logits, target, valid.tolist()), rel=1e-12)
    # the padded/near-diagonal entries do not matter
    logits2 = logits.clone()
    logits2[~valid] = 1e4
    assert ce_loss({"logits": logits2, "aux_logits": logits2 * 0}, target, valid).item() == \
        pytest.approx(got.item(), rel=1e-12)


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.9])
def test_wce_matches_hand_computation(alpha):
    logits, target, valid = small_case()
    got = wce_loss(logits, target, valid, alpha=alpha)
    assert got.item() == pytest.approx(hand_loss(logits, target, valid.tolist(), alpha), rel=1e-12)
    # alpha = 0.5 is half the plain cross-entropy
    if alpha == 0.5:
        assert got.item() == pytest.approx(0.5 * ce_loss(logits, target, valid).item(), rel=1e-12)


def test_wce_tiny_example_by_hand():
    # one valid pair (0,6)/(6,0) in a 7-residue chain: logits 0 and ln 3, both contacts
    logits = torch.zeros(1, 7, 7, dtype=torch.float64)
    logits[0, 6, 0] = math.log(3.0)          # p = 0.75
    target = torch.zeros(1, 7, 7, dtype=torch.float64)
    target[0, 0, 6] = target[0, 6, 0] = 1.0
    valid = pair_mask(torch.ones(1, 7))
    # −mean[0.2·log 0.5, 0.2·log 0.75]
    expected = -(0.2 * math.log(0.5) + 0.2 * math.log(0.75)) / 2
    assert wce_loss(logits, target, valid).item() == pytest.approx(expected, rel=1e-12)


def test_wce_is_stable_for_large_logits():
    logits = torch.full((1, 8, 8), 200.0)
    target = torch.zeros(1, 8, 8)
    loss = wce_loss(logits, target, pair_mask(torch.ones(1, 8)))
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(0.8 * 200.0)


def test_tp_loss_combines_heads():
    logits, target, valid = small_case()
    aux = logits.flip(-1)
    out = {"logits": logits, "aux_logits": aux}
    expected = (0.1 * hand_loss(aux, target, valid.tolist(), 0.2)
                + 0.9 * hand_loss(logits, target, valid.tolist(), 0.2))
    assert tp_loss(out, target, valid).item() == pytest.approx(expected, rel=1e-12)
    got = tp_loss(out, target, valid, alpha=0.3, beta=0.5).item()
    assert got == pytest.approx(0.5 * hand_loss(aux, target, valid.tolist(), 0.3)
                                + 0.5 * hand_loss(logits, target, valid.tolist(), 0.3), rel=1e-12)
    with pytest.raises(TprnaError):
        tp_loss({"logits": logits}, target, valid)


def test_registry_and_gradients_flow_only_through_valid_pairs():
    assert set(LOSSES) == {"ce", "wce", "tploss"}
    with pytest.raises(TprnaError, match="ce, wce, tploss"):
        build_loss("focal")
    logits, target, valid = small_case()
    logits.requires_grad_(True)
    build_loss("tploss", beta=0.2)({"logits": logits, "aux_logits": logits * 2}, target, valid).backward()
    assert (logits.grad[~valid] == 0).all()
    assert (logits.grad[valid] != 0).all()


def test_long_range_pairs_weigh_long_weight_times():
    # a 30-residue chain (27 real): pairs 6 ≤ |i − j| < 24 weigh 1, |i − j| ≥ 24 weigh 3
    mask = torch.tensor([[1] * 30, [1] * 27 + [0] * 3])
    valid = pair_mask(mask)
    weights = pair_weights(valid, 3.0)
    assert weights[0, 0, 24] == weights[0, 29, 5] == 3.0 and weights[0, 0, 23] == weights[0, 10, 4] == 1.0
    assert weights[0, 0, 5] == 0.0 and weights[1, 0, 28] == 0.0  # near the diagonal; padding
    # sample 0: 2·(1+…+6) = 42 long ordered pairs of the 2·(1+…+24) = 600 with |i − j| ≥ 6
    assert weights[0].sum().item() == (600 - 42) + 3 * 42
    assert torch.equal(pair_weights(valid), valid.float())
    torch.manual_seed(1)
    logits = torch.randn(2, 30, 30, dtype=torch.float64) * 2
    target = (torch.rand(2, 30, 30) > 0.7).double()
    for long_weight in (1.0, 3.0, 0.5):
        assert wce_loss(logits, target, valid, long_weight=long_weight).item() == pytest.approx(
            hand_loss(logits, target, valid.tolist(), 0.2, long_weight), rel=1e-12)
        assert ce_loss(logits, target, valid, long_weight=long_weight).item() == pytest.approx(
            hand_loss(logits, target, valid.tolist(), None, long_weight), rel=1e-12)
    aux = logits.flip(-1)
    assert build_loss("tploss", long_weight=3.0)({"logits": logits, "aux_logits": aux}, target, valid).item() \
        == pytest.approx(0.1 * hand_loss(aux, target, valid.tolist(), 0.2, 3.0)
                         + 0.9 * hand_loss(logits, target, valid.tolist(), 0.2, 3.0), rel=1e-12)
    # the weight shifts the loss towards the long-range pairs: not the plain mean
    assert wce_loss(logits, target, valid, long_weight=3.0).item() != pytest.approx(
        wce_loss(logits, target, valid).item(), rel=1e-6)
    # the trainer weighs each batch's mean by its share of the pair weights: two batches so
    # combined give the weighted mean over both (one global batch)
    w = [pair_weights(valid[k:k + 1], 3.0).sum() for k in (0, 1)]
    split = sum(wce_loss(logits[k:k + 1], target[k:k + 1], valid[k:k + 1], long_weight=3.0) * w[k]
                for k in (0, 1)) / (w[0] + w[1])
    assert split.item() == pytest.approx(wce_loss(logits, target, valid, long_weight=3.0).item(), rel=1e-12)
    for bad in (0.0, -1.0):
        with pytest.raises(TprnaError, match="long_weight must be > 0"):
            build_loss("wce", long_weight=bad)
