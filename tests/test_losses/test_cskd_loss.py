"""Tests of :class:`epsd_mm.losses.CSKDLoss`."""
import pytest
import torch
import torch.nn.functional as F

from epsd_mm.losses import CSKDLoss
from epsd_mm.registry import MODELS


def reference_cskd_2d(logits,
                      partner,
                      T,
                      loss_weight,
                      target=None,
                      ignore_index=255):
    total, count = 0.0, 0
    for n in range(logits.shape[0]):
        if target is not None and target[n] == ignore_index:
            continue
        log_p = F.log_softmax(logits[n] / T, dim=0)
        q = F.softmax(partner[n] / T, dim=0)
        total = total + F.kl_div(log_p, q, reduction='sum')
        count += 1
    return loss_weight * T**2 * total / count


def reference_cskd_dense(logits,
                         partner,
                         target,
                         partner_target,
                         T,
                         loss_weight,
                         ignore_index=255):
    """Explicit loops over samples, classes and pixels."""
    N, C, H, W = logits.shape
    total, count = 0.0, 0
    for n in range(N):
        for c in range(C):
            if c == ignore_index:
                continue
            partner_pixels = [(h, w) for h in range(partner.shape[2])
                              for w in range(partner.shape[3])
                              if partner_target[n, h, w] == c]
            if not partner_pixels:
                continue
            teacher = sum(
                F.softmax(partner[n, :, h, w] / T, dim=0)
                for h, w in partner_pixels) / len(partner_pixels)
            for h in range(H):
                for w in range(W):
                    if target[n, h, w] != c:
                        continue
                    log_p = F.log_softmax(logits[n, :, h, w] / T, dim=0)
                    total = total + F.kl_div(log_p, teacher, reduction='sum')
                    count += 1
    return loss_weight * T**2 * total / count


def dense_case(seed=0, partner_hw=(4, 5), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 4, 4, 5, generator=g, dtype=dtype)
    partner = torch.randn(3, 4, *partner_hw, generator=g, dtype=dtype)
    target = torch.randint(0, 3, (3, 4, 5), generator=g)
    partner_target = torch.randint(0, 4, (3, ) + partner_hw, generator=g)
    target[0, 0] = 255
    partner_target[0, :, 0] = 255
    # Sample 1: class 3 only in the sample, class 0 only in the partner.
    target[1, 1] = 3
    partner_target[1][partner_target[1] == 3] = 0
    # Sample 2 shares no class with its partner at all.
    target[2] = 1
    partner_target[2] = 2
    return logits, partner, target, partner_target


def test_defaults_and_registry():
    loss = MODELS.build(dict(type='CSKDLoss', loss_weight=3.0))
    assert isinstance(loss, CSKDLoss)
    assert loss.temperature == 4.0
    assert loss.loss_weight == 3.0
    assert loss.ignore_index == 255
    assert loss.loss_name == 'loss_cskd'
    assert loss.replaces_task_loss is False
    assert CSKDLoss().loss_weight == 1.0


def test_2d_zero_iff_agree():
    torch.manual_seed(0)
    logits = torch.randn(4, 6)
    loss = CSKDLoss()
    torch.testing.assert_close(
        loss(logits, logits.clone()), torch.tensor(0.0), atol=1e-6, rtol=0)
    assert loss(logits, torch.randn(4, 6)) > 1e-4


@pytest.mark.parametrize('with_target', [False, True])
def test_2d_matches_hand_computation(with_target):
    torch.manual_seed(1)
    logits = torch.randn(5, 4, dtype=torch.float64)
    partner = torch.randn(5, 4, dtype=torch.float64)
    target = torch.tensor([1, 255, 0, 3, 3]) if with_target else None
    loss = CSKDLoss(temperature=4.0, loss_weight=3.0)
    expected = reference_cskd_2d(logits, partner, 4.0, 3.0, target)
    torch.testing.assert_close(loss(logits, partner, target, target), expected)


def test_dense_matches_loop_reference():
    logits, partner, target, partner_target = dense_case()
    loss = CSKDLoss(temperature=2.0, loss_weight=1.5)
    expected = reference_cskd_dense(logits, partner, target, partner_target,
                                    2.0, 1.5)
    out = loss(logits, partner, target, partner_target)
    torch.testing.assert_close(out, expected)
    # The class-wise loss is not the pixel-aligned KL.
    aligned = reference_cskd_2d(
        logits.movedim(1, -1).reshape(-1, 4),
        partner.movedim(1, -1).reshape(-1, 4), 2.0, 1.5, target.reshape(-1))
    assert not torch.isclose(out, aligned)


def test_dense_partner_of_other_size():
    logits, partner, target, partner_target = dense_case(1, (3, 2))
    loss = CSKDLoss()
    expected = reference_cskd_dense(logits, partner, target, partner_target,
                                    4.0, 1.0)
    torch.testing.assert_close(
        loss(logits, partner, target, partner_target), expected)


def test_dense_zero_iff_agree():
    torch.manual_seed(2)
    T = 4.0
    table = torch.randn(4, 4)  # one logit vector per class
    target = torch.randint(0, 4, (2, 3, 3))
    partner_target = torch.randint(0, 4, (2, 3, 3))
    logits = table[target].movedim(-1, 1)
    partner = table[partner_target].movedim(-1, 1)
    loss = CSKDLoss(temperature=T)
    torch.testing.assert_close(
        loss(logits, partner, target, partner_target),
        torch.tensor(0.0),
        atol=1e-6,
        rtol=0)
    # Pixel-wise variation of the partner: the class mean is what counts.
    logits = logits + 0.5 * torch.randn_like(logits)
    assert loss(logits, partner, target, partner_target) > 1e-4


def test_dense_masked_pixels_do_not_count():
    logits, partner, target, partner_target = dense_case(
        3, dtype=torch.float32)
    loss = CSKDLoss()
    base = loss(logits, partner, target, partner_target)
    changed, changed_partner = logits.clone(), partner.clone()
    # Ignored pixels of the sample and of the partner.
    changed[0, :, 0] = 100 * torch.randn(4, 5)
    changed_partner[0, :, :, 0] = 100 * torch.randn(4, 4)
    # Pixels of class 3 in sample 1 (absent from its partner), sample 2.
    changed[1, :, 1] = 100 * torch.randn(4, 5)
    changed[2] = 100 * torch.randn(4, 4, 5)
    changed_partner[2] = 100 * torch.randn(4, 4, 5)
    torch.testing.assert_close(
        loss(changed, changed_partner, target, partner_target), base)
    # A counted pixel does change the loss.
    changed[0, :, 2] += 1 + torch.randn(4, 5)
    assert not torch.isclose(
        loss(changed, partner, target, partner_target), base)


def test_dense_no_shared_class_gives_connected_zero():
    logits = torch.randn(2, 3, 2, 2, requires_grad=True)
    target = torch.tensor([[[0, 0], [255, 0]], [[255] * 2] * 2])
    partner_target = torch.tensor([[[1, 2], [2, 255]], [[0, 1], [2, 0]]])
    out = CSKDLoss()(logits, torch.randn(2, 3, 2, 2), target, partner_target)
    assert out.item() == 0.0 and out.grad_fn is not None
    out.backward()
    assert torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize('dense', [False, True])
def test_partner_gets_no_gradient(dense):
    if dense:
        logits, partner, target, partner_target = dense_case(
            4, dtype=torch.float32)
    else:
        logits, partner = torch.randn(4, 3), torch.randn(4, 3)
        target = partner_target = None
    logits.requires_grad_(True)
    partner.requires_grad_(True)
    CSKDLoss()(logits, partner, target, partner_target).backward()
    assert partner.grad is None
    assert logits.grad.abs().sum() > 0


def test_validation_errors():
    with pytest.raises(ValueError, match='temperature'):
        CSKDLoss(temperature=-1)
    with pytest.raises(ValueError, match='loss_weight'):
        CSKDLoss(loss_weight=-3)
    loss = CSKDLoss()
    with pytest.raises(ValueError, match=r'\(4, 3\).*\(4, 5\)'):
        loss(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match='target'):
        loss(
            torch.randn(4, 3), torch.randn(4, 3),
            torch.zeros(3, dtype=torch.long))
    logits = torch.randn(2, 3, 4, 4)
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match='partner_target'):
        loss(logits, torch.randn(2, 3, 4, 4), target)
    with pytest.raises(ValueError, match='target'):
        loss(logits, torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(3, 3, 4, 4\)'):
        loss(logits, torch.randn(3, 3, 4, 4), target, target)
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(2, 5, 4, 4\)'):
        loss(logits, torch.randn(2, 5, 4, 4), target, target)
    with pytest.raises(ValueError, match='partner_target'):
        loss(logits, torch.randn(2, 3, 4, 4), target,
             torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r'\[0, 3\)'):
        loss(logits, torch.randn(2, 3, 4, 4), target, target + 3)
