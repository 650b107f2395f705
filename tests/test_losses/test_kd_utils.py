"""Tests of the shared helpers in ``epsd_mm.losses.kd_utils``."""
import pytest
import torch
import torch.nn.functional as F

from epsd_mm.losses.kd_utils import (check_label_range, check_loss_weight,
                                     check_same_shape, check_target,
                                     check_temperature, flatten_logits,
                                     kl_div_from_probs, label_index,
                                     masked_mean, soft_kl_div)


def test_flatten_logits_matches_target_order():
    logits = torch.randn(2, 3, 4, 5)
    flat = flatten_logits(logits)
    assert flat.shape == (2 * 4 * 5, 3)
    row = 0
    for n in range(2):
        for h in range(4):
            for w in range(5):
                torch.testing.assert_close(flat[row], logits[n, :, h, w])
                row += 1
    two_d = torch.randn(4, 3)
    assert flatten_logits(two_d) is two_d


def test_masked_mean():
    values = torch.tensor([1.0, 2.0, 3.0, float('nan')], requires_grad=True)
    mask = torch.tensor([True, True, True, False])
    out = masked_mean(values, mask)
    torch.testing.assert_close(out, torch.tensor(2.0))
    out.backward()
    torch.testing.assert_close(values.grad,
                               torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0]))
    plain = torch.tensor([1.0, 2.0, 6.0])
    torch.testing.assert_close(masked_mean(plain, None), torch.tensor(3.0))


def test_masked_mean_no_valid_position_keeps_graph():
    values = torch.tensor([1.0, 2.0], requires_grad=True)
    out = masked_mean(values, torch.zeros(2, dtype=torch.bool))
    assert out.item() == 0.0
    assert out.requires_grad and out.grad_fn is not None
    out.backward()
    torch.testing.assert_close(values.grad, torch.zeros(2))


def test_kl_div_from_probs_matches_functional_and_handles_zeros():
    q = torch.softmax(torch.randn(5, 4, dtype=torch.float64), dim=-1)
    log_p = torch.log_softmax(torch.randn(5, 4, dtype=torch.float64), dim=-1)
    expected = F.kl_div(log_p, q, reduction='none').sum(-1)
    torch.testing.assert_close(kl_div_from_probs(q, log_p), expected)
    onehot = F.one_hot(torch.tensor([0, 2, 3, 1, 1]), 4).double()
    out = kl_div_from_probs(onehot, log_p)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, -log_p[torch.arange(5), [0, 2, 3, 1, 1]])


def test_soft_kl_div_hand_computation():
    torch.manual_seed(0)
    T = 2.5
    logits = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    teacher = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    target = torch.tensor([[[0, 255], [1, 2]], [[255, 255], [2, 0]]])
    total, count = 0.0, 0
    for n in range(2):
        for h in range(2):
            for w in range(2):
                if target[n, h, w] == 255:
                    continue
                q = torch.softmax(teacher[n, :, h, w] / T, 0)
                p = torch.softmax(logits[n, :, h, w] / T, 0)
                total += sum(q[c] * (q[c].log() - p[c].log())
                             for c in range(3))
                count += 1
    expected = T**2 * total / count
    out = soft_kl_div(logits, teacher, T, target, ignore_index=255)
    torch.testing.assert_close(out, expected)


def test_label_index():
    index, valid = label_index(torch.tensor([[3, 255], [0, 1]]), 255)
    assert index.tolist() == [3, 0, 0, 1]
    assert valid.tolist() == [True, False, True, True]


def test_checks():
    assert check_temperature(2) == 2.0
    for bad in (0, -1.0, float('nan')):
        with pytest.raises(ValueError, match='temperature'):
            check_temperature(bad)
    assert check_loss_weight(0) == 0.0
    with pytest.raises(ValueError, match='loss_weight'):
        check_loss_weight(-0.1)
    with pytest.raises(ValueError, match=r'\(2, 3\).*\(2, 4\)'):
        check_same_shape(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match='shape'):
        check_same_shape(torch.zeros(3), torch.zeros(3))
    with pytest.raises(TypeError, match='floating'):
        check_same_shape(
            torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3))
    with pytest.raises(ValueError, match='target'):
        check_target(
            torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, 4, 5))
    with pytest.raises(TypeError, match='integer'):
        check_target(torch.zeros(2), torch.zeros(2, 3))
    check_target(
        torch.zeros(2, 4, 5, dtype=torch.uint8), torch.zeros(2, 3, 4, 5))
    check_label_range(torch.tensor([0, 2, 255]), 3, 255)
    with pytest.raises(ValueError, match=r'\[0, 3\)'):
        check_label_range(torch.tensor([0, 3, 255]), 3, 255)
    with pytest.raises(ValueError, match=r'\[0, 3\)'):
        check_label_range(torch.tensor([-1, 0]), 3, 255)
