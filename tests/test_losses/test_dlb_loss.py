"""Tests of :class:`epsd_mm.losses.DLBLoss`."""
import pytest
import torch
import torch.nn.functional as F

from epsd_mm.losses import DLBLoss
from epsd_mm.registry import MODELS


def reference_dlb(logits,
                  teacher,
                  T,
                  loss_weight,
                  target=None,
                  ignore_index=255):
    """Per-position loop with ``F.kl_div``, independent of the module."""
    if logits.dim() == 2:
        logits = logits[:, :, None, None]
        teacher = teacher[:, :, None, None]
        if target is not None:
            target = target[:, None, None]
    N, _, H, W = logits.shape
    total, count = 0.0, 0
    for n in range(N):
        for h in range(H):
            for w in range(W):
                if target is not None and target[n, h, w] == ignore_index:
                    continue
                log_p = F.log_softmax(logits[n, :, h, w] / T, dim=0)
                q = F.softmax(teacher[n, :, h, w] / T, dim=0)
                total = total + F.kl_div(log_p, q, reduction='sum')
                count += 1
    return loss_weight * T**2 * total / count


def test_defaults_and_registry():
    loss = MODELS.build(dict(type='DLBLoss'))
    assert isinstance(loss, DLBLoss)
    assert loss.temperature == 3.0
    assert loss.loss_weight == 1.0
    assert loss.ignore_index == 255
    assert loss.loss_name == 'loss_dlb'
    assert loss.replaces_task_loss is False
    custom = MODELS.build(
        dict(type='DLBLoss', temperature=2, loss_name='loss_dlb_aux'))
    assert custom.temperature == 2.0 and custom.loss_name == 'loss_dlb_aux'


@pytest.mark.parametrize('shape', [(4, 5), (2, 5, 3, 4)])
def test_zero_iff_agree(shape):
    torch.manual_seed(0)
    logits = torch.randn(shape)
    loss = DLBLoss()
    torch.testing.assert_close(
        loss(logits, logits.clone()), torch.tensor(0.0), atol=1e-6, rtol=0)
    # A shift by a constant over classes gives the same distribution.
    torch.testing.assert_close(
        loss(logits, logits + 3.0), torch.tensor(0.0), atol=1e-6, rtol=0)
    assert loss(logits, torch.randn(shape)) > 1e-4


@pytest.mark.parametrize('with_target', [False, True])
def test_matches_hand_computation_2d(with_target):
    torch.manual_seed(1)
    logits = torch.randn(6, 4, dtype=torch.float64)
    teacher = torch.randn(6, 4, dtype=torch.float64)
    target = torch.tensor([0, 255, 3, 1, 255, 2]) if with_target else None
    loss = DLBLoss(temperature=2.0, loss_weight=0.7)
    expected = reference_dlb(logits, teacher, 2.0, 0.7, target)
    torch.testing.assert_close(loss(logits, teacher, target), expected)


def test_matches_hand_computation_dense():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    teacher = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 1:3, 2:] = 255
    target[1, 0] = 255
    loss = DLBLoss()
    expected = reference_dlb(logits, teacher, 3.0, 1.0, target)
    torch.testing.assert_close(loss(logits, teacher, target), expected)
    # Without target every pixel counts, which here is a different value.
    unmasked = reference_dlb(logits, teacher, 3.0, 1.0)
    torch.testing.assert_close(loss(logits, teacher), unmasked)
    assert not torch.isclose(unmasked, expected)


def test_ignore_index_respected():
    torch.manual_seed(3)
    logits = torch.randn(2, 4, 3, 3)
    teacher = torch.randn(2, 4, 3, 3)
    target = torch.randint(0, 4, (2, 3, 3))
    target[:, 0] = 7
    loss = DLBLoss(ignore_index=7)
    base = loss(logits, teacher, target)
    changed = logits.clone()
    changed[:, :, 0] = 100 * torch.randn(2, 4, 3)
    changed_teacher = teacher.clone()
    changed_teacher[:, :, 0] = 100 * torch.randn(2, 4, 3)
    torch.testing.assert_close(loss(changed, changed_teacher, target), base)
    # Changing a valid pixel does change the loss.
    changed[:, :, 1] += torch.randn(2, 4, 3)
    assert not torch.isclose(loss(changed, teacher, target), base)


def test_all_ignored_gives_connected_zero():
    logits = torch.randn(2, 3, 2, 2, requires_grad=True)
    teacher = torch.randn(2, 3, 2, 2)
    target = torch.full((2, 2, 2), 255, dtype=torch.long)
    out = DLBLoss()(logits, teacher, target)
    assert out.item() == 0.0
    assert out.grad_fn is not None
    out.backward()
    assert logits.grad is not None
    assert torch.count_nonzero(logits.grad) == 0


def test_teacher_gets_no_gradient():
    logits = torch.randn(3, 5, requires_grad=True)
    teacher = torch.randn(3, 5, requires_grad=True)
    DLBLoss()(logits, teacher).backward()
    assert teacher.grad is None
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_loss_weight_scales():
    logits, teacher = torch.randn(3, 5), torch.randn(3, 5)
    one = DLBLoss(loss_weight=1.0)(logits, teacher)
    torch.testing.assert_close(
        DLBLoss(loss_weight=2.5)(logits, teacher), 2.5 * one)
    assert DLBLoss(loss_weight=0.0)(logits, teacher).item() == 0.0


def test_validation_errors():
    with pytest.raises(ValueError, match='temperature'):
        DLBLoss(temperature=0)
    with pytest.raises(ValueError, match='loss_weight'):
        DLBLoss(loss_weight=-1)
    loss = DLBLoss()
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(2, 3, 4, 5\)'):
        loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match='target'):
        loss(
            torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4),
            torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match='target'):
        loss(
            torch.randn(2, 3), torch.randn(2, 3),
            torch.zeros(3, dtype=torch.long))
