"""DLB: self-distillation from the last mini-batch."""
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from epsd_mm.registry import SD_METHODS
from .base import BaseSDMethod

#: The previous batch: its inputs, data samples and detached logits.
PreviousBatch = Tuple[Tensor, List, Tensor]


@SD_METHODS.register_module()
class DLB(BaseSDMethod):
    """DLB (Shen et al., CVPR 2022): the last mini-batch seen again.

    Every iteration trains on the new batch together with the previous
    batch (its exact preprocessed tensors, so both passes over a sample are
    pixel-aligned); the predictions made on that previous batch one
    iteration earlier, detached, are soft targets of ``DLBLoss``. Task
    losses cover both halves, as in the DLB paper. At scoring time the
    previous batch is that of the previous inner step.

    Args:
        loss (dict, optional): Merged over ``dict(type='DLBLoss')``
            (T=3, alpha=1). Defaults to None.
    """

    default_loss = dict(type='DLBLoss')

    def __init__(self, loss: Optional[dict] = None) -> None:
        super().__init__(loss)
        self._previous: Optional[PreviousBatch] = None

    def compute(self, model: nn.Module, inputs: Tensor,
                data_samples: List) -> Dict[str, Tensor]:
        num_new = len(data_samples)
        prev = self._previous
        if prev is not None and prev[0].shape[1:] != inputs.shape[1:]:
            prev = None  # input size changed (multi-scale): start afresh
        if prev is not None:
            inputs = torch.cat([inputs, prev[0]])
            data_samples = list(data_samples) + prev[1]
        logits, extra = model.sd_forward(inputs)
        losses = model.sd_task_losses(logits, extra, data_samples,
                                      self.keeps_task_loss)
        if prev is not None:
            old = data_samples[num_new:]
            losses[self.loss_name] = self.loss(
                model.sd_align_logits(logits[num_new:], old),
                model.sd_align_logits(prev[2], prev[1]),
                model.sd_labels(old))
        else:
            losses[self.loss_name] = logits.sum() * 0
        self._previous = (inputs[:num_new].detach(),
                          list(data_samples[:num_new]),
                          logits[:num_new].detach())
        return losses

    def reset(self) -> None:
        self._previous = None

    def get_state(self) -> Any:
        return self._previous

    def set_state(self, state: Any) -> None:
        self._previous = state
