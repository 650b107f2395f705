"""mmseg's EncoderDecoder trained with self-distillation."""
from typing import Dict, List, Optional, Tuple

from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.utils import add_prefix
from torch import Tensor

from epsd_mm.registry import MODELS
from .self_distill import SelfDistillMixin


@MODELS.register_module()
class SelfDistillSegmentor(SelfDistillMixin, EncoderDecoder):
    """An :class:`mmseg.models.EncoderDecoder` with an SD term in its loss.

    The decode head's logits are distilled pixel-wise (DLB, PS-KD) at label
    resolution, after the same bilinear resize the decode head's own loss
    uses; ``ignore_index`` pixels of the ground truth are excluded. Loss keys
    are the usual ``decode.loss_ce`` / ``aux.loss_ce`` plus the SD loss's name
    (``loss_dlb``, ``loss_pskd``, ``loss_cskd``), so MMEngine logs them apart.

    CS-KD for segmentation is class-wise (see ``CSKDLoss``): a batch holds
    (anchor, partner) pairs of images sharing at least one class
    (``ClassPairSampler``); for each class present in both, the partner's
    mean predicted distribution over that class's pixels is the soft target
    of the anchor's pixels of that class.

    Inference (``predict``/``_forward``) is mmseg's, unchanged.

    Args:
        sd_loss (dict, optional): ``DLBLoss``, ``PSKDLoss`` or ``CSKDLoss``
            config; None trains like a plain EncoderDecoder.
        **kwargs: Arguments of :class:`mmseg.models.EncoderDecoder`.
    """

    def __init__(self, sd_loss: Optional[dict] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.init_self_distill(sd_loss)

    def loss(self, inputs: Tensor, data_samples: List) -> Dict[str, Tensor]:
        return self.self_distill_loss(inputs, data_samples)

    def sd_forward(self, inputs: Tensor) -> Tuple[Tensor, Tuple[Tensor]]:
        feats = self.extract_feat(inputs)
        return self.decode_head.forward(feats), feats

    def sd_task_losses(self, logits: Tensor, feats: Tuple[Tensor],
                       data_samples: List,
                       with_main_ce: bool) -> Dict[str, Tensor]:
        decode = self.decode_head.loss_by_feat(logits, data_samples)
        if not with_main_ce:
            decode = {k: v for k, v in decode.items() if not k.startswith('loss')}
        losses = add_prefix(decode, 'decode')
        if self.with_auxiliary_head:
            losses.update(self._auxiliary_head_forward_train(feats, data_samples))
        return losses

    def sd_align_logits(self, logits: Tensor, data_samples: List) -> Tensor:
        size = data_samples[0].gt_sem_seg.shape
        return resize(
            logits,
            size=size,
            mode='bilinear',
            align_corners=self.decode_head.align_corners)

    def sd_labels(self, data_samples: List) -> Tensor:
        return self.decode_head._stack_batch_gt(data_samples).squeeze(1).long()
