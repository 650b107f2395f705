"""Tests of :class:`epsd_mm.losses.PSKDLoss`."""
import pytest
import torch
import torch.nn.functional as F

from epsd_mm.losses import PSKDLoss
from epsd_mm.registry import MODELS


def reference_pskd(logits,
                   teacher,
                   target,
                   progress,
                   alpha_T=0.8,
                   loss_weight=1.0,
                   ignore_index=255):
    """Per-position loop: KL(q || p) with explicit sums over classes."""
    if logits.dim() == 2:
        logits = logits[:, :, None, None]
        teacher = teacher[:, :, None, None]
        target = target[:, None, None]
    N, C, H, W = logits.shape
    alpha = alpha_T * progress
    total, count = 0.0, 0
    for n in range(N):
        for h in range(H):
            for w in range(W):
                y = int(target[n, h, w])
                if y == ignore_index:
                    continue
                p_prev = torch.softmax(teacher[n, :, h, w], dim=0)
                log_p = torch.log_softmax(logits[n, :, h, w], dim=0)
                for c in range(C):
                    q = (1 - alpha) * (1.0 if c == y else 0.0) + \
                        alpha * p_prev[c]
                    if q > 0:
                        total = total + q * (
                            torch.log(torch.as_tensor(q, dtype=log_p.dtype)) -
                            log_p[c])
                count += 1
    return loss_weight * total / count


def soft_target(teacher, target, progress, alpha_T=0.8):
    alpha = alpha_T * progress
    onehot = F.one_hot(target, teacher.shape[1]).movedim(-1, 1).to(teacher)
    return (1 - alpha) * onehot + alpha * torch.softmax(teacher, dim=1)


def test_defaults_and_registry():
    loss = MODELS.build(dict(type='PSKDLoss'))
    assert isinstance(loss, PSKDLoss)
    assert loss.alpha_T == 0.8
    assert loss.loss_weight == 1.0
    assert loss.ignore_index == 255
    assert loss.loss_name == 'loss_pskd'
    assert loss.replaces_task_loss is True
    assert PSKDLoss.replaces_task_loss is True
    assert loss.alpha_t(0.5) == pytest.approx(0.4)
    assert loss.alpha_t(torch.tensor(1.0)) == pytest.approx(0.8)


@pytest.mark.parametrize('shape', [(5, 4), (2, 4, 3, 3)])
@pytest.mark.parametrize('progress', [0.0, 0.6, 1.0])
def test_zero_iff_prediction_equals_soft_target(shape, progress):
    torch.manual_seed(0)
    teacher = torch.randn(shape, dtype=torch.float64)
    target = torch.randint(0, 4, (shape[0], ) + shape[2:])
    q = soft_target(teacher, target, progress)
    logits = torch.log(q + 1e-10)
    loss = PSKDLoss()
    out = loss(logits, teacher, target, progress)
    torch.testing.assert_close(
        out, torch.tensor(0.0, dtype=torch.float64), atol=1e-6, rtol=0)
    # Perfect hard-label prediction is not zero once alpha_t > 0 ...
    assert loss(
        torch.randn(shape, dtype=torch.float64), teacher, target,
        progress) > 1e-3
    if progress > 0:
        perfect = torch.log(soft_target(teacher, target, 0.0) + 1e-10)
        assert loss(perfect, teacher, target, progress) > 1e-3


@pytest.mark.parametrize('progress', [0.0, 0.25, 1.0])
def test_matches_hand_computation_2d(progress):
    torch.manual_seed(1)
    logits = torch.randn(6, 5, dtype=torch.float64)
    teacher = torch.randn(6, 5, dtype=torch.float64)
    target = torch.tensor([0, 4, 255, 2, 2, 1])
    loss = PSKDLoss(alpha_T=0.7, loss_weight=1.5)
    expected = reference_pskd(logits, teacher, target, progress, 0.7, 1.5)
    torch.testing.assert_close(
        loss(logits, teacher, target, progress), expected)


def test_matches_hand_computation_dense():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    teacher = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 3, 4))
    target[1, :, :2] = 255
    loss = PSKDLoss()
    expected = reference_pskd(logits, teacher, target, 0.5)
    torch.testing.assert_close(loss(logits, teacher, target, 0.5), expected)


def test_progress_zero_is_cross_entropy():
    torch.manual_seed(3)
    logits = torch.randn(2, 4, 3, 3)
    target = torch.randint(0, 4, (2, 3, 3))
    target[0, 0] = 255
    ce = F.cross_entropy(logits, target, ignore_index=255)
    loss = PSKDLoss()
    torch.testing.assert_close(
        loss(logits, torch.randn(2, 4, 3, 3), target, 0.0), ce)
    # The first epoch has no previous predictions at all.
    torch.testing.assert_close(loss(logits, None, target, 0.0), ce)
    with pytest.raises(ValueError, match='None'):
        loss(logits, None, target, 0.1)


def test_gradient_equals_soft_target_cross_entropy():
    torch.manual_seed(4)
    logits = torch.randn(8, 5, requires_grad=True)
    teacher = torch.randn(8, 5)
    target = torch.randint(0, 5, (8, ))
    PSKDLoss()(logits, teacher, target, 0.5).backward()
    grad = logits.grad.clone()
    logits.grad = None
    q = soft_target(teacher, target, 0.5)
    (-(q * F.log_softmax(logits, dim=1)).sum(1).mean()).backward()
    torch.testing.assert_close(grad, logits.grad)


def test_ignore_index_respected():
    torch.manual_seed(5)
    logits = torch.randn(2, 3, 4, 4)
    teacher = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    target[:, :, 0] = 255
    loss = PSKDLoss()
    base = loss(logits, teacher, target, 0.5)
    changed, changed_teacher = logits.clone(), teacher.clone()
    changed[..., 0] = 50 * torch.randn(2, 3, 4)
    changed_teacher[..., 0] = 50 * torch.randn(2, 3, 4)
    torch.testing.assert_close(
        loss(changed, changed_teacher, target, 0.5), base)
    changed[..., 1] += 1 + torch.randn(2, 3, 4)
    assert not torch.isclose(loss(changed, teacher, target, 0.5), base)


def test_all_ignored_gives_connected_zero():
    logits = torch.randn(2, 3, 2, 2, requires_grad=True)
    target = torch.full((2, 2, 2), 255, dtype=torch.long)
    out = PSKDLoss()(logits, torch.randn(2, 3, 2, 2), target, 0.5)
    assert out.item() == 0.0 and out.grad_fn is not None
    out.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_teacher_gets_no_gradient():
    logits = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3, requires_grad=True)
    PSKDLoss()(logits, teacher, torch.tensor([0, 1, 2, 0]), 1.0).backward()
    assert teacher.grad is None
    assert logits.grad.abs().sum() > 0


def test_validation_errors():
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match='alpha_T'):
            PSKDLoss(alpha_T=bad)
    with pytest.raises(ValueError, match='loss_weight'):
        PSKDLoss(loss_weight=-1)
    loss = PSKDLoss()
    logits, teacher = torch.randn(2, 3), torch.randn(2, 3)
    target = torch.tensor([0, 2])
    for bad in (-0.01, 1.01):
        with pytest.raises(ValueError, match='progress'):
            loss(logits, teacher, target, bad)
    with pytest.raises(ValueError, match='progress'):
        loss(logits, teacher, target, torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match=r'\(2, 3\).*\(2, 4\)'):
        loss(logits, torch.randn(2, 4), target, 0.5)
    with pytest.raises(ValueError, match='target'):
        loss(logits, teacher, None, 0.5)
    with pytest.raises(ValueError, match='target'):
        loss(logits, teacher, torch.tensor([0, 1, 2]), 0.5)
    with pytest.raises(ValueError, match=r'\[0, 3\)'):
        loss(logits, teacher, torch.tensor([0, 3]), 0.5)
