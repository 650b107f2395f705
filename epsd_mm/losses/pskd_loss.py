"""PS-KD: progressive self-knowledge distillation."""
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from epsd_mm.registry import MODELS
from .base import BaseSDLoss
from .kd_utils import (check_label_range, check_logits, check_same_shape,
                       check_target, flatten_logits, kl_div_from_probs,
                       label_index, masked_mean)


def _check_unit_interval(value: Union[float, Tensor], name: str) -> float:
    """Return ``value`` as a float after checking it lies in ``[0, 1]``."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f'{name} must be a scalar, but got a tensor of shape '
                f'{tuple(value.shape)}.')
        value = value.item()
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f'{name} must lie in [0, 1], but got {value}.')
    return value


@MODELS.register_module()
class PSKDLoss(BaseSDLoss):
    """Loss of PS-KD (Progressive Self-Knowledge Distillation).

    PS-KD (Kim et al., ICCV 2021) trains against a soft target that mixes the
    hard label with the model's own predictions from the previous epoch,
    trusting them more as training progresses:

    .. math::

        q = (1 - \\alpha_t) \\cdot onehot(y) + \\alpha_t \\cdot
        softmax(z_{prev}), \\qquad \\alpha_t = \\alpha_T \\cdot t / T_{total}.

    The loss is ``loss_weight * KL(q || softmax(logits))``, summed over
    classes and averaged over the samples or pixels whose label is not
    ``ignore_index``. ``KL(q || p) = CE(q, p) - H(q)`` and ``q`` carries no
    gradient, so the gradients are exactly those of PS-KD's soft-target
    cross-entropy; subtracting the constant ``H(q)`` makes the value zero
    if and only if ``p == q``. No temperature is used, as in the paper.

    Because ``q`` contains the hard-label term, **PS-KD replaces the task
    cross-entropy** instead of being added to it: :attr:`replaces_task_loss`
    is True, and model wrappers drop their own cross-entropy for the head
    this loss is applied to (auxiliary heads keep theirs). With
    ``progress == 0`` the loss is the plain cross-entropy against the hard
    labels (up to the zero entropy of a one-hot target).

    For segmentation, keeping per-pixel predictions of a whole dataset is
    impossible; the previous-epoch predictions ``teacher_logits`` come from
    a frozen snapshot of the model taken at the end of the previous epoch
    (or every N iterations) and are detached inside this module.

    Args:
        alpha_T (float): Final weight ``alpha_T`` of the self-predictions,
            in ``[0, 1]``. Defaults to 0.8.
        loss_weight (float): Weight of the loss. Since the loss replaces the
            task cross-entropy, keep it at the task loss weight.
            Defaults to 1.0.
        ignore_index (int): Label value whose positions are excluded.
            Defaults to 255.
        loss_name (str): Name of the loss in the loss dict. MMEngine only
            logs and back-propagates keys starting with ``'loss'``.
            Defaults to ``'loss_pskd'``.
    """

    #: The loss includes the hard-label term: wrappers drop the task CE.
    replaces_task_loss: bool = True

    def __init__(self,
                 alpha_T: float = 0.8,
                 loss_weight: float = 1.0,
                 ignore_index: int = 255,
                 loss_name: str = 'loss_pskd') -> None:
        super().__init__(loss_weight, loss_name)
        self.alpha_T = _check_unit_interval(alpha_T, 'alpha_T')
        self.ignore_index = int(ignore_index)

    def alpha_t(self, progress: Union[float, Tensor]) -> float:
        """Weight of the self-predictions at a point of training.

        Args:
            progress (float | Tensor): Training progress ``t / T_total`` in
                ``[0, 1]``.

        Returns:
            float: ``alpha_T * progress``.
        """
        return self.alpha_T * _check_unit_interval(progress, 'progress')

    def soft_target(self, teacher_logits: Optional[Tensor], target: Tensor,
                    num_classes: int, alpha_t: float) -> Tensor:
        """Build the flat soft target ``q`` of shape ``(M, C)``.

        Ignored positions get a (meaningless) one-hot of class 0; callers
        mask them out.

        Args:
            teacher_logits (Tensor, optional): Previous-epoch logits, shape
                ``(N, C, *)``; may be None only when ``alpha_t == 0``.
            target (Tensor): Labels of shape ``(N, *)``.
            num_classes (int): Number of classes ``C``.
            alpha_t (float): Weight of the self-predictions.

        Returns:
            Tensor: The detached soft target.
        """
        index, _ = label_index(target, self.ignore_index)
        onehot = F.one_hot(index, num_classes)
        if teacher_logits is None:
            return onehot.float()
        teacher_probs = torch.softmax(
            flatten_logits(teacher_logits.detach()), dim=-1)
        return (1.0 - alpha_t) * onehot + alpha_t * teacher_probs

    def forward(self, logits: Tensor, teacher_logits: Optional[Tensor],
                target: Tensor, progress: Union[float, Tensor]) -> Tensor:
        """Compute the PS-KD loss.

        Args:
            logits (Tensor): Student logits, ``(N, C)`` or ``(N, C, H, W)``.
            teacher_logits (Tensor, optional): Previous-epoch logits of the
                same samples, same shape as ``logits``. Detached. May be None
                when ``alpha_T * progress == 0`` (e.g. in the first epoch,
                before any snapshot exists).
            target (Tensor): Labels of shape ``(N,)`` or ``(N, H, W)``.
            progress (float | Tensor): Training progress ``t / T_total`` in
                ``[0, 1]``.

        Returns:
            Tensor: The weighted scalar loss.
        """
        alpha_t = self.alpha_t(progress)
        if teacher_logits is None:
            check_logits(logits)
            if alpha_t > 0:
                raise ValueError(
                    'teacher_logits may only be None when alpha_T * progress '
                    f'== 0, but alpha_T={self.alpha_T} and progress gives '
                    f'alpha_t={alpha_t}.')
        else:
            check_same_shape(logits, teacher_logits)
        if target is None:
            raise ValueError('PSKDLoss needs a target (hard labels).')
        check_target(target, logits)
        num_classes = logits.shape[1]
        check_label_range(target, num_classes, self.ignore_index)

        soft_target = self.soft_target(teacher_logits, target, num_classes,
                                       alpha_t)
        log_probs = torch.log_softmax(flatten_logits(logits), dim=-1)
        kl = kl_div_from_probs(soft_target.to(log_probs.dtype), log_probs)
        _, valid = label_index(target, self.ignore_index)
        return self.loss_weight * masked_mean(kl, valid)

    def _repr_args(self) -> dict:
        return dict(alpha_T=self.alpha_T, ignore_index=self.ignore_index)
