"""CS-KD: class-wise self-knowledge distillation."""
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn

from epsd_mm.registry import SD_METHODS
from .base import BaseSDMethod


@SD_METHODS.register_module()
class CSKD(BaseSDMethod):
    """CS-KD (Yun et al., CVPR 2020): a partner of the same class teaches.

    Batches hold (anchor, partner) pairs at even/odd positions, built by a
    sampler that pairs samples by class
    (:class:`~epsd_mm.datasets.ClassPairSampler`). Task losses use the
    anchors; the partners are predicted without gradient and their
    predictions are the soft targets of ``CSKDLoss`` (class-wise for dense
    predictions). A batch whose partner does not share a class with its
    anchor is refused, and so is a train loader whose sampler does not
    build such pairs.

    Args:
        loss (dict, optional): Merged over ``dict(type='CSKDLoss')``
            (T=4, lambda=1). Defaults to None.
    """

    default_loss = dict(type='CSKDLoss')

    def check_train_loader(self, dataloader: Any) -> None:
        sampler = getattr(dataloader, 'sampler', None)
        if not getattr(sampler, 'pairs_by_class', False):
            raise ValueError(
                'CS-KD trains on (anchor, partner) pairs of the same class, '
                f'but the train sampler is {type(sampler).__name__}, which '
                'does not build them. Set train_dataloader.sampler='
                "dict(type='epsd_mm.ClassPairSampler') (with an even "
                'batch_size).')
        batch_size = getattr(dataloader, 'batch_size', None)
        if batch_size is not None and batch_size % 2:
            raise ValueError(
                f'CS-KD needs an even batch size (anchor, partner pairs); '
                f'train_dataloader.batch_size is {batch_size}.')

    def compute(self, model: nn.Module, inputs: Tensor,
                data_samples: List) -> Dict[str, Tensor]:
        if len(data_samples) % 2:
            raise ValueError(
                f'CS-KD needs (anchor, partner) pairs, but the batch has '
                f'{len(data_samples)} samples. Use an even batch size and '
                "sampler=dict(type='epsd_mm.ClassPairSampler').")
        anchors, partners = data_samples[0::2], data_samples[1::2]
        labels = model.sd_labels(anchors)
        partner_labels = model.sd_labels(partners)
        self._check_pairs(labels, partner_labels)
        # Strided views would send convolutions down a slow path.
        logits, extra = model.sd_forward(inputs[0::2].contiguous())
        losses = model.sd_task_losses(logits, extra, anchors,
                                      self.keeps_task_loss)
        with torch.no_grad():
            partner_logits, _ = model.sd_forward(inputs[1::2].contiguous())
        losses[self.loss_name] = self.loss(
            model.sd_align_logits(logits, anchors),
            model.sd_align_logits(partner_logits, partners), labels,
            partner_labels)
        return losses

    def _check_pairs(self, labels: Tensor, partner_labels: Tensor) -> None:
        """Every partner must share a class with its anchor."""
        ignore = getattr(self.loss, 'ignore_index', None)
        for i, (a, p) in enumerate(zip(labels, partner_labels)):
            shared = set(a.unique().tolist()) & set(p.unique().tolist())
            shared.discard(ignore)
            if not shared:
                raise ValueError(
                    f'CS-KD: the partner of anchor {i} in the batch shares '
                    f'no class with it (anchor classes {_classes(a, ignore)}'
                    f', partner classes {_classes(p, ignore)}). Batches must '
                    'come from epsd_mm.ClassPairSampler (anchor, partner '
                    'pairs at even/odd positions, an even batch size).')


def _classes(labels: Tensor, ignore: Optional[int]) -> List[int]:
    return sorted(c for c in labels.unique().tolist() if c != ignore)
