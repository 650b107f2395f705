"""CS-KD: class-wise self-knowledge distillation."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from epsd_mm.registry import MODELS
from .base import BaseSDLoss
from .kd_utils import (check_label_range, check_logits, check_same_shape,
                       check_target, check_temperature, kl_div_from_probs,
                       label_index, masked_mean, soft_kl_div)


@MODELS.register_module()
class CSKDLoss(BaseSDLoss):
    """Loss of CS-KD (Class-wise Self-Knowledge Distillation).

    CS-KD (Yun et al., CVPR 2020) builds every batch with a *partner* for each
    sample: a different sample of the same class. The model's predictions on
    the partner, detached, are soft targets for its predictions on the
    sample. The full objective is ``CE + lambda * T^2 * KL(p(x')/T ||
    p(x)/T)``; this module computes only the second term (``lambda`` is
    ``loss_weight``; the CUB configs use 3). The cross-entropy is the task
    loss, computed elsewhere, so :attr:`replaces_task_loss` is False.

    **Classification input** ``(N, C)``: the loss is ``loss_weight * T^2 *
    KL(softmax(partner_logits / T) || softmax(logits / T))`` averaged over
    the samples whose ``target`` is not ``ignore_index`` (all samples when
    ``target`` is None). Sample ``i`` and partner ``i`` are assumed to share
    their class (the sampler guarantees it); ``partner_target`` is accepted
    for symmetry and only checked for shape.

    **Dense input** ``(N, C, H, W)``: an image and its partner are not
    pixel-aligned, so the distillation is defined class-wise. For each
    sample ``i`` and each class ``c`` present (not ignored) in both
    ``target[i]`` and ``partner_target[i]``, the teacher distribution is the
    mean of ``softmax(partner_logits[i] / T)`` over the partner's pixels of
    class ``c`` (detached); every pixel of class ``c`` in sample ``i`` is
    pulled toward it with ``T^2 * KL(teacher_c || softmax(logits / T))``.
    The loss averages over all such pixels; pixels whose class is absent
    from the partner (and ignored pixels) contribute nothing. Both targets
    are required. Because only class means of the partner are used, the
    partner's spatial size may differ from the sample's (``N`` and ``C``
    must match). The computation is vectorised: class sums of the partner
    are a one-hot matrix product, and per-pixel teachers are gathered by
    label.

    Args:
        temperature (float): Softmax temperature ``T``. Defaults to 4.0.
        loss_weight (float): Weight of the loss, the ``lambda`` of CS-KD.
            Defaults to 1.0.
        ignore_index (int): Label value whose positions are excluded.
            Defaults to 255.
        loss_name (str): Name of the loss in the loss dict. MMEngine only
            logs and back-propagates keys starting with ``'loss'``.
            Defaults to ``'loss_cskd'``.
    """

    def __init__(self,
                 temperature: float = 4.0,
                 loss_weight: float = 1.0,
                 ignore_index: int = 255,
                 loss_name: str = 'loss_cskd') -> None:
        super().__init__(loss_weight, loss_name)
        self.temperature = check_temperature(temperature)
        self.ignore_index = int(ignore_index)

    def forward(self,
                logits: Tensor,
                partner_logits: Tensor,
                target: Optional[Tensor] = None,
                partner_target: Optional[Tensor] = None) -> Tensor:
        """Compute the CS-KD loss.

        Args:
            logits (Tensor): Predictions on the samples, ``(N, C)`` or
                ``(N, C, H, W)``.
            partner_logits (Tensor): Predictions on the partners. Same shape
                as ``logits`` for ``(N, C)``; ``(N, C, H', W')`` for dense
                input. Detached.
            target (Tensor, optional): Labels of the samples, ``(N,)`` or
                ``(N, H, W)``. Required for dense input. Defaults to None.
            partner_target (Tensor, optional): Labels of the partners,
                ``(N,)`` or ``(N, H', W')``. Required for dense input.
                Defaults to None.

        Returns:
            Tensor: The weighted scalar loss.
        """
        check_logits(logits)
        check_logits(partner_logits, 'partner_logits')
        if logits.dim() == 2:
            check_same_shape(logits, partner_logits, 'logits',
                             'partner_logits')
            if partner_target is not None:
                check_target(partner_target, partner_logits, 'partner_target',
                             'partner_logits')
            loss = soft_kl_div(
                logits,
                partner_logits,
                temperature=self.temperature,
                target=target,
                ignore_index=self.ignore_index)
        else:
            loss = self._dense_loss(logits, partner_logits, target,
                                    partner_target)
        return self.loss_weight * loss

    def _dense_loss(self, logits: Tensor, partner_logits: Tensor,
                    target: Optional[Tensor],
                    partner_target: Optional[Tensor]) -> Tensor:
        """Class-wise CS-KD loss of dense predictions (unweighted)."""
        if (logits.dim() != partner_logits.dim()
                or logits.shape[:2] != partner_logits.shape[:2]):
            raise ValueError(
                'logits and partner_logits must have the same number of '
                'dimensions, samples N and classes C, but got logits of '
                f'shape {tuple(logits.shape)} and partner_logits of shape '
                f'{tuple(partner_logits.shape)}.')
        if target is None or partner_target is None:
            raise ValueError(
                'CSKDLoss needs both target and partner_target for dense '
                f'logits of shape {tuple(logits.shape)}: the dense loss is '
                'defined class-wise.')
        check_target(target, logits)
        check_target(partner_target, partner_logits, 'partner_target',
                     'partner_logits')
        num_samples, num_classes = logits.shape[:2]
        check_label_range(target, num_classes, self.ignore_index)
        check_label_range(partner_target, num_classes, self.ignore_index,
                          'partner_target')
        temperature = self.temperature

        # Partner side: class-mean distributions, (N, K, C) with K == C.
        partner_probs = torch.softmax(
            partner_logits.detach().flatten(2) / temperature, dim=1)
        p_index, p_valid = label_index(partner_target, self.ignore_index)
        p_onehot = F.one_hot(p_index, num_classes).to(partner_probs.dtype)
        p_onehot = (p_onehot * p_valid.unsqueeze(-1)).view(
            num_samples, -1, num_classes)  # (N, P, K)
        # (N, K, P) @ (N, P, C) -> (N, K, C)
        class_sums = torch.bmm(
            p_onehot.transpose(1, 2), partner_probs.transpose(1, 2))
        class_counts = p_onehot.sum(dim=1)  # (N, K)
        class_means = class_sums / class_counts.clamp(min=1).unsqueeze(-1)

        # Sample side: gather the teacher of every pixel by its label.
        s_index, s_valid = label_index(target, self.ignore_index)
        s_index = s_index.view(num_samples, -1)  # (N, Q)
        gather_index = s_index.unsqueeze(-1).expand(-1, -1, num_classes)
        teacher = torch.gather(class_means, 1, gather_index)  # (N, Q, C)
        present = torch.gather(class_counts > 0, 1, s_index)  # (N, Q)
        mask = s_valid & present.reshape(-1)

        log_probs = torch.log_softmax(
            logits.flatten(2) / temperature, dim=1).transpose(1, 2)
        kl = kl_div_from_probs(
            teacher.reshape(-1, num_classes).to(log_probs.dtype),
            log_probs.reshape(-1, num_classes))
        return masked_mean(kl, mask) * temperature**2

    def _repr_args(self) -> dict:
        return dict(
            temperature=self.temperature, ignore_index=self.ignore_index)
