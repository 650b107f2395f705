"""DLB: self-distillation from the last mini-batch."""
from typing import Optional

from torch import Tensor

from epsd_mm.registry import MODELS
from .base import BaseSDLoss
from .kd_utils import check_temperature, soft_kl_div


@MODELS.register_module()
class DLBLoss(BaseSDLoss):
    """Consistency loss of DLB (Self-Distillation from Last Mini-Batch).

    DLB (Shen et al., CVPR 2022) trains every iteration on the new batch
    together with the batch of the previous iteration seen again. The
    predictions the model made on that previous batch one iteration earlier,
    detached, are soft targets for its current predictions on the same
    samples. The full objective is ``CE + alpha * T^2 * KL(p_prev/T || p/T)``;
    this module computes only the second term. The cross-entropy is the task
    loss (e.g. the decode head's own loss) and is computed elsewhere, so
    :attr:`replaces_task_loss` is False.

    For dense prediction the two passes over a sample must be pixel-aligned
    (same geometric augmentation), and pixels labelled ``ignore_index`` are
    excluded from the average.

    The loss is ``loss_weight * T^2 * KL(softmax(teacher_logits / T) ||
    softmax(logits / T))``, summed over classes and averaged over the valid
    samples (``(N, C)`` input) or pixels (``(N, C, H, W)`` input). The
    teacher logits are detached inside, so they never receive a gradient.

    Args:
        temperature (float): Softmax temperature ``T``. Defaults to 3.0.
        loss_weight (float): Weight of the loss, the ``alpha`` of DLB.
            Defaults to 1.0.
        ignore_index (int): Label value whose positions are excluded when a
            ``target`` is given. Defaults to 255.
        loss_name (str): Name of the loss in the loss dict. MMEngine only
            logs and back-propagates keys starting with ``'loss'``.
            Defaults to ``'loss_dlb'``.
    """

    def __init__(self,
                 temperature: float = 3.0,
                 loss_weight: float = 1.0,
                 ignore_index: int = 255,
                 loss_name: str = 'loss_dlb') -> None:
        super().__init__(loss_weight, loss_name)
        self.temperature = check_temperature(temperature)
        self.ignore_index = int(ignore_index)

    def forward(self,
                logits: Tensor,
                teacher_logits: Tensor,
                target: Optional[Tensor] = None) -> Tensor:
        """Compute the DLB consistency loss.

        Args:
            logits (Tensor): Current predictions on the previous batch,
                shape ``(N, C)`` or ``(N, C, H, W)``.
            teacher_logits (Tensor): Predictions made on the same samples in
                the previous iteration, same shape as ``logits``. Detached.
            target (Tensor, optional): Labels of shape ``(N,)`` or
                ``(N, H, W)``, used only to exclude ``ignore_index``
                positions. Defaults to None (all positions count).

        Returns:
            Tensor: The weighted scalar loss.
        """
        loss = soft_kl_div(
            logits,
            teacher_logits,
            temperature=self.temperature,
            target=target,
            ignore_index=self.ignore_index)
        return self.loss_weight * loss

    def _repr_args(self) -> dict:
        return dict(
            temperature=self.temperature, ignore_index=self.ignore_index)
