"""Tests of :class:`epsd_mm.losses.CrossCorrelationLoss`."""
import math

import pytest
import torch

from epsd_mm.losses import CrossCorrelationLoss
from epsd_mm.registry import MODELS


def reference_xcorr(student, teacher, lambda_offdiag, eps, loss_weight=1.0):
    """Loops over features and samples with plain Python floats."""
    s, t = student.tolist(), teacher.tolist()
    N, D = len(s), len(s[0])

    def standardize(x):
        cols = []
        for d in range(D):
            col = [x[n][d] for n in range(N)]
            mean = sum(col) / N
            var = sum((v - mean)**2 for v in col) / N
            cols.append([(v - mean) / math.sqrt(var + eps) for v in col])
        return cols  # cols[d][n]

    zs, zt = standardize(s), standardize(t)
    on, off = 0.0, 0.0
    for i in range(D):
        for j in range(D):
            c = sum(zs[i][n] * zt[j][n] for n in range(N)) / N
            if i == j:
                on += (1 - c)**2
            else:
                off += c**2
    return loss_weight * (on + lambda_offdiag * off)


def test_defaults_and_registry():
    loss = MODELS.build(dict(type='CrossCorrelationLoss'))
    assert isinstance(loss, CrossCorrelationLoss)
    assert loss.lambda_offdiag == 5e-3
    assert loss.loss_weight == 1.0
    assert loss.eps == 1e-5
    assert loss.loss_name == 'loss_xcorr'
    assert loss.replaces_task_loss is False


def test_identical_features_zero_diagonal_term():
    torch.manual_seed(0)
    feats = torch.randn(16, 6, dtype=torch.float64)
    corr = CrossCorrelationLoss().cross_correlation(feats, feats.clone())
    torch.testing.assert_close(
        torch.diagonal(corr),
        torch.ones(6, dtype=torch.float64),
        atol=1e-4,
        rtol=0)
    # With lambda = 0 only the diagonal term remains: it vanishes.
    loss = CrossCorrelationLoss(lambda_offdiag=0.0)
    assert loss(feats, feats.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # The features are correlated with each other, so lambda > 0 is not 0.
    assert CrossCorrelationLoss(lambda_offdiag=1.0)(feats, feats) > 1e-3
    # Different features give a positive diagonal term.
    assert loss(feats, torch.randn(16, 6, dtype=torch.float64)) > 1e-2


def test_identity_correlation_gives_zero():
    # Orthogonal, standardised columns (Hadamard): C == identity.
    feats = torch.tensor([[1., 1., 1.], [1., -1., -1.], [-1., 1., -1.],
                          [-1., -1., 1.]])
    loss = CrossCorrelationLoss(lambda_offdiag=1.0)
    corr = loss.cross_correlation(feats, feats)
    torch.testing.assert_close(corr, torch.eye(3), atol=1e-4, rtol=0)
    assert loss(feats, feats).item() == pytest.approx(0.0, abs=1e-6)
    # Scaling and shifting a feature does not change its standardised value.
    assert loss(feats * 3 + 2, feats).item() == pytest.approx(0.0, abs=1e-6)


def test_known_small_example():
    student = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 0.5]])
    teacher = torch.tensor([[2.0, 0.0], [1.0, 1.0], [-1.0, 3.0]])
    # Hand computation (eps = 0), standardised columns:
    #   zs0 = (-1, 5, -4) / sqrt(14),  zs1 = (1, -1, 0) * sqrt(3/2)
    #   zt0 = (4, 1, -5) / sqrt(14),   zt1 = -zt0
    # C_ij = zs_i . zt_j / 3:
    #   C00 = (-4 + 5 + 20) / 42 = 0.5,    C01 = -C00
    #   C10 = sqrt(3/2) * 3 / sqrt(14) / 3 = sqrt(3/28),  C11 = -C10
    loss = CrossCorrelationLoss(lambda_offdiag=0.5, loss_weight=2.0, eps=0.0)
    corr = loss.cross_correlation(student, teacher)
    c10 = math.sqrt(3 / 28)
    expected_corr = torch.tensor([[0.5, -0.5], [c10, -c10]])
    torch.testing.assert_close(corr, expected_corr)
    c = expected_corr
    expected = 2.0 * ((1 - c[0, 0])**2 + (1 - c[1, 1])**2 + 0.5 *
                      (c[0, 1]**2 + c[1, 0]**2))
    torch.testing.assert_close(loss(student, teacher), expected)
    torch.testing.assert_close(
        loss(student, teacher),
        torch.tensor(reference_xcorr(student, teacher, 0.5, 0.0, 2.0)))


@pytest.mark.parametrize('shape', [(8, 5), (6, 4, 3, 3)])
def test_matches_loop_reference(shape):
    torch.manual_seed(1)
    student = torch.randn(shape, dtype=torch.float64)
    teacher = torch.randn(shape, dtype=torch.float64)
    loss = CrossCorrelationLoss(lambda_offdiag=0.1, eps=1e-3)
    pooled_s = student.flatten(2).mean(2) if len(shape) > 2 else student
    pooled_t = teacher.flatten(2).mean(2) if len(shape) > 2 else teacher
    expected = reference_xcorr(pooled_s, pooled_t, 0.1, 1e-3)
    assert loss(student, teacher).item() == pytest.approx(expected, rel=1e-9)


def test_lambda_weighting():
    torch.manual_seed(2)
    student, teacher = torch.randn(10, 4), torch.randn(10, 4)
    base = CrossCorrelationLoss(lambda_offdiag=0.0)(student, teacher)
    one = CrossCorrelationLoss(lambda_offdiag=1.0)(student, teacher)
    corr = CrossCorrelationLoss().cross_correlation(student, teacher)
    off = (corr**2).sum() - (torch.diagonal(corr)**2).sum()
    torch.testing.assert_close(one - base, off)
    three = CrossCorrelationLoss(lambda_offdiag=3.0)(student, teacher)
    torch.testing.assert_close(three - base, 3 * (one - base))
    weighted = CrossCorrelationLoss(lambda_offdiag=1.0, loss_weight=0.5)
    torch.testing.assert_close(weighted(student, teacher), 0.5 * one)


def test_teacher_gets_no_gradient():
    student = torch.randn(6, 3, 2, 2, requires_grad=True)
    teacher = torch.randn(6, 3, 2, 2, requires_grad=True)
    CrossCorrelationLoss()(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad.abs().sum() > 0


def test_validation_errors():
    loss = CrossCorrelationLoss()
    with pytest.raises(ValueError, match='at least 2 samples'):
        loss(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match=r'\(4, 3\).*\(4, 5\)'):
        loss(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match='shape'):
        loss(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match='loss_weight'):
        CrossCorrelationLoss(loss_weight=-1)
    with pytest.raises(ValueError, match='lambda_offdiag'):
        CrossCorrelationLoss(lambda_offdiag=-0.1)
