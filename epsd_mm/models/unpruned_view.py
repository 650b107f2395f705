"""A pruned model with its masks lifted: the teacher of self-distilled
pruning."""
from typing import Any, Dict

import torch
from torch import Tensor, nn

from epsd_mm.pruning.functional import call_with_tensors


class UnprunedView:
    """A model with its masks lifted, as a no-gradient teacher.

    Its parameters are the model's live weights plus, at pruned positions,
    the values those weights had when they were cut, so the view is "the
    same network, unpruned". BatchNorm buffers are copies: the teacher's
    forward never changes the student's running statistics.

    Args:
        model (nn.Module): The pruned self-distilling model.
        pruned_values (dict[str, Tensor]): Parameter name to a tensor holding
            the cut values at pruned positions and zeros elsewhere.
    """

    def __init__(self, model: nn.Module, pruned_values: Dict[str,
                                                             Tensor]) -> None:
        self.model = model
        self.pruned_values = pruned_values

    def sd_forward(self, inputs: Tensor) -> Any:
        tensors = {
            name: param.detach() + self.pruned_values[name]
            if name in self.pruned_values else param.detach()
            for name, param in self.model.named_parameters()
        }
        tensors.update(
            {name: buf.clone()
             for name, buf in self.model.named_buffers()})
        with torch.no_grad():
            return call_with_tensors(self.model, tensors,
                                     lambda m, x: m.sd_forward(x), inputs)
