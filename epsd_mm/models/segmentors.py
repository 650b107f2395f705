"""Self-distillation for any mmseg encoder-decoder segmentor."""
from typing import Dict, List, NamedTuple, Optional, Tuple

from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.utils import add_prefix
from torch import Tensor, nn

from epsd_mm.registry import MODELS
from .scoring import as_module_list, decode_stages
from .self_distill import (SelfDistillMixin, registered_model_class,
                           reject_sd_loss_key, self_distill_subclass)


class SegmentorOutputs(NamedTuple):
    """What a segmentor's forward keeps for the task losses.

    Attributes:
        feats (tuple[Tensor]): Backbone (and neck) features.
        stage_logits (list[Tensor]): Logits of every decode stage (one for
            an ``EncoderDecoder``, one per stage of a cascade).
    """
    feats: Tuple[Tensor, ...]
    stage_logits: List[Tensor]


class SelfDistillSegmentorMixin(SelfDistillMixin):
    """Task hooks of mmseg's ``EncoderDecoder`` family.

    Works for a single decode head and for the stages of a
    ``CascadeEncoderDecoder`` (e.g. OCRNet): the distilled logits are those
    of the last decode stage, at label resolution after the same bilinear
    resize the head's own loss uses, ``ignore_index`` pixels excluded. Loss
    keys are mmseg's (``decode.loss_ce`` or ``decode_0/1.loss_ce``,
    ``aux.loss_ce``) plus the SD method's. Inference is mmseg's, unchanged.
    """

    def loss(self, inputs: Tensor, data_samples: List) -> Dict[str, Tensor]:
        return self.self_distill_loss(inputs, data_samples)

    @property
    def _decode_heads(self) -> List[nn.Module]:
        return as_module_list(self.decode_head)

    def sd_forward(self, inputs: Tensor) -> Tuple[Tensor, SegmentorOutputs]:
        feats = self.extract_feat(inputs)
        stage_logits = decode_stages(self._decode_heads, feats)
        return stage_logits[-1], SegmentorOutputs(feats, stage_logits)

    def sd_task_losses(self, logits: Tensor, extra: SegmentorOutputs,
                       data_samples: List,
                       with_main_ce: bool) -> Dict[str, Tensor]:
        heads = self._decode_heads
        losses = {}
        for i, (head, stage) in enumerate(zip(heads, extra.stage_logits)):
            decode = head.loss_by_feat(stage, data_samples)
            if not with_main_ce and i == len(heads) - 1:
                decode = {
                    k: v
                    for k, v in decode.items() if not k.startswith('loss')
                }
            prefix = 'decode' if len(heads) == 1 else f'decode_{i}'
            losses.update(add_prefix(decode, prefix))
        if self.with_auxiliary_head:
            losses.update(
                self._auxiliary_head_forward_train(extra.feats, data_samples))
        return losses

    def sd_align_logits(self, logits: Tensor, data_samples: List) -> Tensor:
        return resize(
            logits,
            size=data_samples[0].gt_sem_seg.shape,
            mode='bilinear',
            align_corners=self._decode_heads[-1].align_corners)

    def sd_labels(self, data_samples: List) -> Tensor:
        head = self._decode_heads[-1]
        return head._stack_batch_gt(data_samples).squeeze(1).long()

    def sd_features(self, extra: SegmentorOutputs) -> Tensor:
        return extra.feats[-1]


def self_distill_segmentor_class(base: type) -> type:
    """The self-distilling subclass of an ``EncoderDecoder`` class.

    Args:
        base (type): ``EncoderDecoder`` or a subclass of it.

    Returns:
        type: ``SelfDistill<Base>`` (cached, so it is built once per base).
    """
    if not (isinstance(base, type) and issubclass(base, EncoderDecoder)):
        raise TypeError(
            'SelfDistillSegmentor works with mmseg EncoderDecoder and its '
            'subclasses (e.g. mmseg.CascadeEncoderDecoder), got '
            f'{getattr(base, "__name__", base)!r}.')
    return self_distill_subclass(SelfDistillSegmentorMixin, base)


@MODELS.register_module(name='SelfDistillSegmentor')
def build_self_distill_segmentor(segmentor_type: str = 'mmseg.EncoderDecoder',
                                 sd: Optional[dict] = None,
                                 **kwargs) -> nn.Module:
    """Build an mmseg segmentor that trains with self-distillation.

    Config usage, on top of any mmseg segmentor config::

        model = dict(
            type='epsd_mm.SelfDistillSegmentor',
            segmentor_type='mmseg.CascadeEncoderDecoder',  # e.g. OCRNet
            sd=dict(type='DLB'))

    Args:
        segmentor_type (str): Registry name of the segmentor class, an
            ``EncoderDecoder`` or a subclass. Defaults to
            ``'mmseg.EncoderDecoder'``.
        sd (dict, optional): SD method config (``DLB``, ``PSKD``, ``CSKD``,
            ``CrossCorrelation`` or a registered plug-in). Defaults to None
            (plain training).
        **kwargs: Arguments of the segmentor class.

    Returns:
        nn.Module: An instance of ``SelfDistill<Segmentor>``.
    """
    reject_sd_loss_key(kwargs)
    base = registered_model_class(segmentor_type, 'segmentor_type',
                                  'mmseg.EncoderDecoder')
    if 'num_stages' in kwargs and base is EncoderDecoder:
        raise TypeError(
            'The model config has num_stages (a cascade such as OCRNet) but '
            f'segmentor_type is {segmentor_type!r}; set '
            "segmentor_type='mmseg.CascadeEncoderDecoder'.")
    model = self_distill_segmentor_class(base)(**kwargs)
    model.init_self_distill(sd)
    return model
