"""Cross-correlation loss of self-distilled pruning."""
import torch
from torch import Tensor

from epsd_mm.registry import MODELS
from .base import BaseSDLoss


def _pool_features(feats: Tensor, name: str) -> Tensor:
    """Global-average-pool ``(N, C, *)`` features to ``(N, C)``."""
    if not isinstance(feats, Tensor):
        raise TypeError(f'{name} must be a Tensor, but got {type(feats)}.')
    if feats.dim() < 2:
        raise ValueError(f'{name} must have shape (N, D) or (N, C, H, W), '
                         f'but got shape {tuple(feats.shape)}.')
    if not feats.is_floating_point():
        raise TypeError(
            f'{name} must be a floating point tensor, but got {feats.dtype}.')
    if feats.dim() > 2:
        feats = feats.flatten(2).mean(dim=2)
    return feats


@MODELS.register_module()
class CrossCorrelationLoss(BaseSDLoss):
    """Cross-correlation loss of self-distilled pruning (Barlow-Twins style).

    Self-distilled pruning (O'Neill et al., "Self-Distilled Pruning of Deep
    Neural Networks") regularises a network that is pruned gradually during
    training with the cross-correlation between the representations of the
    pruned network (student) and of its unpruned self (teacher: the same
    network with the masks lifted, no gradient).

    Features of shape ``(N, C, H, W)`` are global-average-pooled to
    ``(N, C)``; ``(N, D)`` features are used as they are. Each feature is
    standardised over the batch, ``z = (x - mean) / sqrt(var + eps)`` with
    the biased variance, and the cross-correlation matrix is
    ``C = z_s^T z_t / N`` of shape ``(D, D)``, so identical features give
    ``C_ii = 1`` (up to ``eps``). The loss is

    .. math::

        loss\\_weight \\cdot \\Big(\\sum_i (1 - C_{ii})^2 + \\lambda
        \\sum_{i \\neq j} C_{ij}^2\\Big).

    The teacher features are detached inside. The computation runs in at
    least float32 with autocast disabled, as batch statistics and squared
    sums are fragile in half precision.

    Args:
        lambda_offdiag (float): Weight ``lambda`` of the off-diagonal
            (redundancy-reduction) term. Defaults to 5e-3.
        loss_weight (float): Weight of the loss. Defaults to 1.0.
        eps (float): Added to the variance when standardising.
            Defaults to 1e-5.
        loss_name (str): Name of the loss in the loss dict. MMEngine only
            logs and back-propagates keys starting with ``'loss'``.
            Defaults to ``'loss_xcorr'``.
    """

    def __init__(self,
                 lambda_offdiag: float = 5e-3,
                 loss_weight: float = 1.0,
                 eps: float = 1e-5,
                 loss_name: str = 'loss_xcorr') -> None:
        super().__init__(loss_weight, loss_name)
        lambda_offdiag = float(lambda_offdiag)
        if not lambda_offdiag >= 0:
            raise ValueError(
                f'lambda_offdiag must be >= 0, but got {lambda_offdiag}.')
        eps = float(eps)
        if not eps >= 0:
            raise ValueError(f'eps must be >= 0, but got {eps}.')
        self.lambda_offdiag = lambda_offdiag
        self.eps = eps

    def standardize(self, feats: Tensor) -> Tensor:
        """Standardise ``(N, D)`` features over the batch dimension.

        Args:
            feats (Tensor): Features of shape ``(N, D)``.

        Returns:
            Tensor: ``(feats - mean) / sqrt(var + eps)`` with the biased
            variance, per feature.
        """
        mean = feats.mean(dim=0, keepdim=True)
        var = feats.var(dim=0, unbiased=False, keepdim=True)
        return (feats - mean) / torch.sqrt(var + self.eps)

    def cross_correlation(self, student_feats: Tensor,
                          teacher_feats: Tensor) -> Tensor:
        """Cross-correlation matrix of student and (detached) teacher.

        Args:
            student_feats (Tensor): ``(N, D)`` or ``(N, C, H, W)``.
            teacher_feats (Tensor): Same shape as ``student_feats``.

        Returns:
            Tensor: The ``(D, D)`` matrix (at least float32) ``z_s^T z_t / N``.
        """
        if not isinstance(student_feats, Tensor) or not isinstance(
                teacher_feats, Tensor):
            raise TypeError('student_feats and teacher_feats must be Tensors,'
                            f' but got {type(student_feats)} and '
                            f'{type(teacher_feats)}.')
        if student_feats.shape != teacher_feats.shape:
            raise ValueError(
                'student_feats and teacher_feats must have the same shape, '
                f'but got student_feats of shape {tuple(student_feats.shape)}'
                f' and teacher_feats of shape {tuple(teacher_feats.shape)}.')
        z_s = _pool_features(student_feats, 'student_feats')
        z_t = _pool_features(teacher_feats.detach(), 'teacher_feats')
        num_samples = z_s.shape[0]
        if num_samples < 2:
            raise ValueError(
                'CrossCorrelationLoss standardises features over the batch '
                f'and needs at least 2 samples, but got N={num_samples}.')
        dtype = torch.promote_types(z_s.dtype, torch.float32)
        with torch.autocast(device_type=z_s.device.type, enabled=False):
            z_s = self.standardize(z_s.to(dtype))
            z_t = self.standardize(z_t.to(dtype))
            return z_s.t() @ z_t / num_samples

    def forward(self, student_feats: Tensor, teacher_feats: Tensor) -> Tensor:
        """Compute the cross-correlation loss.

        Args:
            student_feats (Tensor): Features of the pruned network,
                ``(N, D)`` or ``(N, C, H, W)``.
            teacher_feats (Tensor): Features of the unpruned network, same
                shape. Detached.

        Returns:
            Tensor: The weighted scalar loss (at least float32).
        """
        corr = self.cross_correlation(student_feats, teacher_feats)
        diag = torch.diagonal(corr)
        on_diag = (1 - diag).pow(2).sum()
        off_diag = (corr - torch.diag_embed(diag)).pow(2).sum()
        return self.loss_weight * (on_diag + self.lambda_offdiag * off_diag)

    def _repr_args(self) -> dict:
        return dict(lambda_offdiag=self.lambda_offdiag, eps=self.eps)
