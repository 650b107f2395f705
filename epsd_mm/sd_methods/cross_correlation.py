"""Self-distilled pruning: agreement with the unpruned self."""
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch import Tensor, nn

from epsd_mm.registry import SD_METHODS
from .base import BaseSDMethod


@SD_METHODS.register_module()
class CrossCorrelation(BaseSDMethod):
    """Self-distilled pruning (O'Neill et al.): the teacher is the network
    itself with its pruning masks lifted.

    :class:`~epsd_mm.engine.GradualPruningHook` prunes gradually and hands
    the method that unpruned view (:meth:`set_unpruned`); the backbone
    features (``model.sd_features``) of the pruned network and of the view,
    on the same batch, are pulled together by ``CrossCorrelationLoss``.
    Until the hook has pruned anything the term is zero. Training without
    such a hook is refused: the term would stay zero all along.

    At pruning-time scoring (EPSD before gradual pruning) the unpruned self
    is the network as it is when scoring starts, frozen: the masked network
    after the inner steps is pulled towards it.

    Args:
        loss (dict, optional): Merged over
            ``dict(type='CrossCorrelationLoss')``. Defaults to None.
    """

    default_loss = dict(type='CrossCorrelationLoss')
    _NO_PROVIDER = object()

    def __init__(self, loss: Optional[dict] = None) -> None:
        super().__init__(loss)
        self._view: Any = self._NO_PROVIDER

    def set_unpruned(self, view: Any) -> None:
        self._view = view

    @contextmanager
    def scoring_state(self, model: nn.Module) -> Iterator[None]:
        view = self._view
        self._view = model.sd_snapshot()
        try:
            yield
        finally:
            self._view = view

    def compute(self, model: nn.Module, inputs: Tensor,
                data_samples: List) -> Dict[str, Tensor]:
        if self._view is self._NO_PROVIDER:
            raise RuntimeError(
                'CrossCorrelation distils the pruned network from its '
                'unpruned self, which GradualPruningHook provides; add '
                "default_hooks.pruning=dict(type='epsd_mm."
                "GradualPruningHook', ...) or choose another SD method.")
        logits, extra = model.sd_forward(inputs)
        losses = model.sd_task_losses(logits, extra, data_samples,
                                      self.keeps_task_loss)
        if self._view is None:  # nothing pruned yet: the net is its teacher
            losses[self.loss_name] = logits.sum() * 0
            return losses
        with torch.no_grad():
            _, teacher_extra = self._view.sd_forward(inputs)
        losses[self.loss_name] = self.loss(
            model.sd_features(extra), model.sd_features(teacher_extra))
        return losses
