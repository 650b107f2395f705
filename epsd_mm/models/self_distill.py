"""Self-distillation logic shared by every self-distilling model.

A model mixes in :class:`SelfDistillMixin` and implements four small task hooks
(how to run the network, how to compute the task losses, how to bring logits to
label resolution, where the labels are). The mixin then turns a batch into the
loss dict of the configured SD method:

* **DLB** -- the previous mini-batch (the exact preprocessed tensors, so the two
  passes over a sample share their augmentation pixel for pixel) is appended to
  the new one; the predictions it received one step earlier, detached, are the
  soft targets. Task losses cover both halves, as in the DLB paper.
* **PS-KD** -- a frozen snapshot of the model (set by
  :class:`~epsd_mm.engine.hooks.SelfDistillHook`) predicts on the same batch;
  the soft target strength grows with ``sd_progress``. PS-KD's loss contains the
  hard-label term, so it replaces the main head's cross-entropy.
* **CS-KD** -- batches come in (anchor, partner) pairs sharing a class
  (:class:`~epsd_mm.datasets.ClassPairSampler`); task losses use the anchors,
  the partners are predicted without gradient and act as teachers.
* **Cross-correlation** (self-distilled pruning) -- the teacher is the
  network itself with its masks lifted (set by
  :class:`~epsd_mm.engine.hooks.GradualPruningHook`); the backbone features
  of the pruned network and of that unpruned self, on the same batch, are
  pulled together by :class:`~epsd_mm.losses.CrossCorrelationLoss`. Until
  pruning starts there is no teacher and the term is zero.

The state lives outside the module tree (DLB's previous batch, the PS-KD
teacher), so it never enters ``state_dict`` or DDP's parameter list.
"""
import copy
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from epsd_mm.losses import CrossCorrelationLoss, CSKDLoss, DLBLoss, PSKDLoss
from epsd_mm.registry import MODELS

SD_METHODS = {
    DLBLoss: 'dlb',
    PSKDLoss: 'pskd',
    CSKDLoss: 'cskd',
    CrossCorrelationLoss: 'xcorr'
}


class SelfDistillMixin:
    """Adds DLB / PS-KD / CS-KD training to a model.

    Subclasses call :meth:`init_self_distill` in ``__init__`` and implement
    :meth:`sd_forward`, :meth:`sd_task_losses`, :meth:`sd_align_logits` and
    :meth:`sd_labels`; their ``loss`` returns :meth:`self_distill_loss`.

    Attributes:
        sd_loss (nn.Module | None): The SD loss, ``None`` for plain training.
        sd_enabled (bool): When False, ``loss`` returns only the task losses
            (used to score with the plain task loss).
        sd_progress (float): Training progress ``t / T`` in ``[0, 1]``, kept
            up to date by ``SelfDistillHook``; drives PS-KD's alpha.
    """

    def init_self_distill(self, sd_loss: Optional[dict]) -> None:
        """Build the SD loss and reset the state.

        Args:
            sd_loss (dict, optional): Config of ``DLBLoss``, ``PSKDLoss``,
                ``CSKDLoss`` or ``CrossCorrelationLoss``. ``None`` trains with
                the task loss only.
        """
        if sd_loss is not None:
            # Built in our scope even when the model dict was inherited from
            # an mmseg::/mmdet:: config (and so carries their `_scope_`).
            sd_loss = dict(sd_loss)
            sd_loss.setdefault('_scope_', 'epsd_mm')
        self.sd_loss: Optional[nn.Module] = (
            MODELS.build(sd_loss) if sd_loss is not None else None)
        if self.sd_loss is not None and type(self.sd_loss) not in SD_METHODS:
            raise TypeError(
                f'sd_loss must be one of {[c.__name__ for c in SD_METHODS]}, '
                f'got {type(self.sd_loss).__name__}.')
        self.sd_enabled = self.sd_loss is not None
        self.sd_progress = 0.0
        # Plain attributes in __dict__: not submodules, not in state_dict.
        self.__dict__['_dlb_prev'] = None
        self.__dict__['_sd_teacher'] = None

    @property
    def sd_method(self) -> Optional[str]:
        """``'dlb'``, ``'pskd'``, ``'cskd'``, ``'xcorr'`` or ``None``."""
        if self.sd_loss is None:
            return None
        return SD_METHODS[type(self.sd_loss)]

    def reset_sd_state(self) -> None:
        """Forget DLB's previous batch (e.g. after pruning-time scoring)."""
        self.__dict__['_dlb_prev'] = None

    def set_sd_teacher(self, teacher: Optional[nn.Module]) -> None:
        """Set the frozen snapshot that provides PS-KD's soft targets."""
        self.__dict__['_sd_teacher'] = teacher

    @property
    def sd_teacher(self) -> Optional[nn.Module]:
        return self.__dict__['_sd_teacher']

    def sd_snapshot(self) -> nn.Module:
        """A frozen copy of the model (eval mode, no grad, no SD state)."""
        state = self.__dict__['_dlb_prev'], self.__dict__['_sd_teacher']
        self.__dict__['_dlb_prev'] = self.__dict__['_sd_teacher'] = None
        try:
            snapshot = copy.deepcopy(self)
        finally:
            self.__dict__['_dlb_prev'], self.__dict__['_sd_teacher'] = state
        return snapshot.eval().requires_grad_(False)

    @contextmanager
    def sd_disabled(self) -> Iterator[None]:
        """Temporarily train with the task loss only."""
        enabled = self.sd_enabled
        self.sd_enabled = False
        try:
            yield
        finally:
            self.sd_enabled = enabled

    @property
    def _keeps_task_ce(self) -> bool:
        """PS-KD's loss contains the hard-label term and replaces the main
        head's cross-entropy; the other SD losses are added to it."""
        return not self.sd_loss.replaces_task_loss

    # Task hooks -----------------------------------------------------------
    def sd_forward(self, inputs: Tensor) -> Tuple[Tensor, object]:
        """Run the network; return logits and whatever the task losses need."""
        raise NotImplementedError

    def sd_task_losses(self, logits: Tensor, extra: object, data_samples: List,
                       with_main_ce: bool) -> Dict[str, Tensor]:
        """Task losses of the batch; ``with_main_ce=False`` drops the main
        head's cross-entropy (PS-KD replaces it)."""
        raise NotImplementedError

    def sd_align_logits(self, logits: Tensor, data_samples: List) -> Tensor:
        """Bring logits to the resolution of :meth:`sd_labels`."""
        return logits

    def sd_labels(self, data_samples: List) -> Tensor:
        """Labels ``(N,)`` or ``(N, H, W)`` of the batch."""
        raise NotImplementedError

    def sd_features(self, extra: object) -> Tensor:
        """Representation compared by the cross-correlation loss: the last
        backbone feature map, given ``extra`` from :meth:`sd_forward`."""
        return extra[-1]

    # The SD methods -------------------------------------------------------
    def self_distill_loss(self, inputs: Tensor,
                          data_samples: List) -> Dict[str, Tensor]:
        """Loss dict of the configured method for one training batch."""
        method = self.sd_method if self.sd_enabled else None
        if method is None:
            logits, extra = self.sd_forward(inputs)
            return self.sd_task_losses(logits, extra, data_samples, True)
        return getattr(self, f'_{method}_loss')(inputs, data_samples)

    def _dlb_loss(self, inputs: Tensor,
                  data_samples: List) -> Dict[str, Tensor]:
        num_new = len(data_samples)
        prev = self.__dict__['_dlb_prev']
        if prev is not None and prev[0].shape[1:] != inputs.shape[1:]:
            prev = None  # input size changed (multi-scale): start afresh
        if prev is not None:
            inputs = torch.cat([inputs, prev[0]])
            data_samples = list(data_samples) + prev[1]
        logits, extra = self.sd_forward(inputs)
        losses = self.sd_task_losses(logits, extra, data_samples,
                                     self._keeps_task_ce)
        if prev is not None:
            labels = self.sd_labels(data_samples[num_new:])
            losses[self.sd_loss.loss_name] = self.sd_loss(
                self.sd_align_logits(logits[num_new:], data_samples[num_new:]),
                self.sd_align_logits(prev[2], prev[1]), labels)
        else:
            # Same keys every iteration keep the logs and DDP consistent.
            losses[self.sd_loss.loss_name] = logits.sum() * 0
        self.__dict__['_dlb_prev'] = (inputs[:num_new].detach(),
                                      list(data_samples[:num_new]),
                                      logits[:num_new].detach())
        return losses

    def _pskd_loss(self, inputs: Tensor,
                   data_samples: List) -> Dict[str, Tensor]:
        teacher = self.sd_teacher
        if teacher is None:
            raise RuntimeError(
                'PS-KD needs a teacher snapshot, but none is set. Add '
                "dict(type='SelfDistillHook') to custom_hooks (or call "
                'set_sd_teacher() when using the model without a runner).')
        logits, extra = self.sd_forward(inputs)
        losses = self.sd_task_losses(logits, extra, data_samples,
                                     self._keeps_task_ce)
        with torch.no_grad():
            teacher_logits, _ = teacher.sd_forward(inputs)
        losses[self.sd_loss.loss_name] = self.sd_loss(
            self.sd_align_logits(logits, data_samples),
            self.sd_align_logits(teacher_logits, data_samples),
            self.sd_labels(data_samples),
            progress=self.sd_progress)
        return losses

    def _xcorr_loss(self, inputs: Tensor,
                    data_samples: List) -> Dict[str, Tensor]:
        logits, extra = self.sd_forward(inputs)
        losses = self.sd_task_losses(logits, extra, data_samples,
                                     self._keeps_task_ce)
        teacher = self.sd_teacher
        if teacher is None:  # nothing pruned yet: the network is its teacher
            losses[self.sd_loss.loss_name] = logits.sum() * 0
            return losses
        with torch.no_grad():
            _, teacher_extra = teacher.sd_forward(inputs)
        losses[self.sd_loss.loss_name] = self.sd_loss(
            self.sd_features(extra), self.sd_features(teacher_extra))
        return losses

    def _cskd_loss(self, inputs: Tensor,
                   data_samples: List) -> Dict[str, Tensor]:
        if len(data_samples) % 2:
            raise ValueError(
                f'CS-KD needs (anchor, partner) pairs, but the batch has '
                f'{len(data_samples)} samples. Use an even batch size and '
                "sampler=dict(type='ClassPairSampler') in the train loader.")
        anchors, partners = data_samples[0::2], data_samples[1::2]
        # Strided views would send convolutions down a slow path.
        logits, extra = self.sd_forward(inputs[0::2].contiguous())
        losses = self.sd_task_losses(logits, extra, anchors,
                                     self._keeps_task_ce)
        with torch.no_grad():
            partner_logits, _ = self.sd_forward(inputs[1::2].contiguous())
        losses[self.sd_loss.loss_name] = self.sd_loss(
            self.sd_align_logits(logits, anchors),
            self.sd_align_logits(partner_logits, partners),
            self.sd_labels(anchors), self.sd_labels(partners))
        return losses
