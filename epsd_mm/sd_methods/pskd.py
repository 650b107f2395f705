"""PS-KD: progressive self-knowledge distillation."""
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch import Tensor, nn

from epsd_mm.registry import SD_METHODS
from .base import BaseSDMethod


@SD_METHODS.register_module()
class PSKD(BaseSDMethod):
    """PS-KD (Kim et al., ICCV 2021) with a snapshot teacher.

    The soft target mixes the hard label with the predictions of the model
    from the end of the previous epoch, ``alpha_t = alpha_T * t / T``.
    Storing every pixel's prediction of a segmentation dataset is
    impossible, so a frozen snapshot of the model, refreshed every
    ``snapshot_interval`` iterations (default: every epoch), predicts them
    on the fly. ``PSKDLoss`` contains the hard-label term and replaces the
    main head's cross-entropy. The snapshot is saved in checkpoints. At
    scoring time the teacher is the network at the start of scoring, with
    the final strength ``alpha_T``.

    Args:
        loss (dict, optional): Merged over ``dict(type='PSKDLoss')``
            (alpha_T=0.8). Defaults to None.
        snapshot_interval (int, optional): Iterations between teacher
            refreshes. Defaults to None (one epoch of the train loader).
    """

    default_loss = dict(type='PSKDLoss')

    def __init__(self,
                 loss: Optional[dict] = None,
                 snapshot_interval: Optional[int] = None) -> None:
        super().__init__(loss)
        if snapshot_interval is not None and snapshot_interval < 1:
            raise ValueError(
                'PSKD: snapshot_interval must be a positive number of '
                f'iterations, got {snapshot_interval}.')
        self.snapshot_interval = snapshot_interval
        self.progress = 0.0
        self.teacher: Optional[nn.Module] = None
        self._saved_teacher: Optional[dict] = None

    def compute(self, model: nn.Module, inputs: Tensor,
                data_samples: List) -> Dict[str, Tensor]:
        if self.teacher is None:
            raise RuntimeError(
                'PS-KD needs a teacher snapshot, but none is set. Add '
                "dict(type='epsd_mm.SelfDistillHook') to the hooks (or call "
                'model.sd.before_train(model) when training without a '
                'runner).')
        logits, extra = model.sd_forward(inputs)
        losses = model.sd_task_losses(logits, extra, data_samples,
                                      self.keeps_task_loss)
        with torch.no_grad():
            teacher_logits, _ = self.teacher.sd_forward(inputs)
        losses[self.loss_name] = self.loss(
            model.sd_align_logits(logits, data_samples),
            model.sd_align_logits(teacher_logits, data_samples),
            model.sd_labels(data_samples),
            progress=self.progress)
        return losses

    def before_train(self, model: nn.Module) -> None:
        self.teacher = model.sd_snapshot()
        if self._saved_teacher is not None:  # resumed: the same teacher
            self.teacher.load_state_dict(self._saved_teacher)
            self._saved_teacher = None

    def before_train_iter(self, model: nn.Module, iteration: int,
                          max_iters: int, epoch_length: int) -> None:
        self.progress = min(iteration / max(max_iters, 1), 1.0)
        interval = self.snapshot_interval or epoch_length
        if iteration > 0 and iteration % interval == 0:
            self.teacher = model.sd_snapshot()

    @contextmanager
    def scoring_state(self, model: nn.Module) -> Iterator[None]:
        progress, teacher = self.progress, self.teacher
        self.progress, self.teacher = 1.0, model.sd_snapshot()
        try:
            yield
        finally:
            self.progress, self.teacher = progress, teacher

    def state_dict(self) -> dict:
        if self.teacher is None:
            return {}
        return dict(teacher=self.teacher.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self._saved_teacher = state.get('teacher')

    def get_state(self) -> Any:
        return None  # the teacher is fixed while scoring
