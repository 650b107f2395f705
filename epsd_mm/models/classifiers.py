"""Self-distillation for any mmpretrain image classifier."""
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.registry import DefaultScope, Registry
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.models.heads import ClsHead
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from epsd_mm.registry import MODELS
from .self_distill import (SelfDistillMixin, registered_model_class,
                           reject_sd_loss_key, self_distill_subclass)


class SelfDistillClassifierMixin(SelfDistillMixin):
    """Task hooks of mmpretrain's ``ImageClassifier`` family.

    The distilled logits are the head's output ``(N, num_classes)`` on the
    neck's features; the task loss is the head's own loss on those same
    logits (mmpretrain's ``loss`` key, e.g. cross-entropy or label
    smoothing), left out when the SD loss contains it (PS-KD). Labels are
    the ``gt_label`` of the data samples; the features compared with the
    unpruned self (cross-correlation) are the head's pre-logits. Inference
    is mmpretrain's, unchanged.
    """

    def loss(self, inputs: Tensor,
             data_samples: List[DataSample]) -> Dict[str, Tensor]:
        if self.sd is not None and self.sd_enabled:
            # refuse soft or multiple labels before any method sees them
            self.sd_labels(data_samples)
        return self.self_distill_loss(inputs, data_samples)

    def sd_forward(self, inputs: Tensor) -> Tuple[Tensor, Tuple[Tensor]]:
        """Logits ``(N, num_classes)`` and the neck's features."""
        feats = self.extract_feat(inputs)
        logits = self.head(feats)
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            got = (tuple(logits.shape)
                   if isinstance(logits, Tensor) else type(logits).__name__)
            raise TypeError(
                f'{type(self.head).__name__} returns {got} in training; SD '
                'methods distil one (N, num_classes) logits tensor. Use a '
                'head with a single output, e.g. mmpretrain.LinearClsHead.')
        return logits, feats

    def sd_task_losses(self, logits: Tensor, extra: Tuple[Tensor],
                       data_samples: List[DataSample],
                       with_main_ce: bool) -> Dict[str, Tensor]:
        """The head's loss (``loss``), or nothing when the SD loss contains
        it."""
        if not with_main_ce:
            return {}
        # The head's public `loss` would run its forward again; the task and
        # SD losses must see the same logits (dropout, and DLB's stored
        # predictions).
        return self.head._get_loss(logits, data_samples)

    def sd_labels(self, data_samples: List[DataSample]) -> Tensor:
        """Single labels ``(N,)`` from the ``gt_label`` of the samples."""
        labels = []
        for i, sample in enumerate(data_samples):
            if 'gt_score' in sample:
                raise ValueError(
                    'The data samples carry soft labels (gt_score, e.g. from '
                    'Mixup/CutMix batch augmentation), but SD methods '
                    'distil against the hard label of an unmixed image. '
                    'Remove the batch augmentation or set model.sd=None.')
            label = sample.get('gt_label')
            if label is None or label.numel() != 1:
                raise ValueError(
                    f'Sample {i} of the batch has gt_label {label}; '
                    'self-distillation needs exactly one class per image '
                    '(a single-label dataset such as CIFAR10 or ImageNet).')
            labels.append(label.reshape(1))
        return torch.cat(labels).long()

    def sd_features(self, extra: Tuple[Tensor]) -> Tensor:
        """The head's pre-logits features of the neck's output."""
        return self.head.pre_logits(extra)


def self_distill_classifier_class(base: type) -> type:
    """The self-distilling subclass of an ``ImageClassifier`` class.

    Args:
        base (type): mmpretrain's ``ImageClassifier`` or a subclass of it.

    Returns:
        type: ``SelfDistill<Base>`` (cached, so it is built once per base).
    """
    if not (isinstance(base, type) and issubclass(base, ImageClassifier)):
        raise TypeError(
            'SelfDistillClassifier works with mmpretrain ImageClassifier and '
            f'its subclasses, got {getattr(base, "__name__", base)!r}.')
    return self_distill_subclass(SelfDistillClassifierMixin, base)


def _check_no_batch_augments(kwargs: dict) -> None:
    """Refuse batch augmentations: Mixup/CutMix mix two images and their
    labels, while every SD method distils per-image predictions against one
    hard label.

    Args:
        kwargs (dict): Arguments of the classifier class (``train_cfg``,
            ``data_preprocessor``).
    """
    preprocessor = kwargs.get('data_preprocessor') or {}
    augments = ((kwargs.get('train_cfg') or {}).get('augments')
                or preprocessor.get('batch_augments'))
    if augments:
        raise ValueError(
            'SelfDistillClassifier with an SD method cannot train with batch '
            f'augmentations ({augments}): they mix images and labels, while '
            'SD methods distil the prediction of one image against its hard '
            'label. Drop model.train_cfg.augments (and data_preprocessor.'
            'batch_augments), or set model.sd=None.')


@MODELS.register_module(name='SelfDistillClassifier')
def build_self_distill_classifier(
        classifier_type: str = 'mmpretrain.ImageClassifier',
        sd: Optional[dict] = None,
        **kwargs) -> nn.Module:
    """Build an mmpretrain classifier that trains with self-distillation.

    Config usage, on top of any mmpretrain single-label classifier config::

        model = dict(
            type='epsd_mm.SelfDistillClassifier',
            classifier_type='mmpretrain.ImageClassifier',
            sd=dict(type='DLB'))

    The classifier's own parts (backbone, neck, head, data preprocessor)
    are built in its registry's scope (``mmpretrain`` for
    ``'mmpretrain.ImageClassifier'``), so their types need no prefix, as in
    mmpretrain's configs.

    Args:
        classifier_type (str): Registry name of the classifier class, an
            ``ImageClassifier`` or a subclass. Defaults to
            ``'mmpretrain.ImageClassifier'``.
        sd (dict, optional): SD method config (``DLB``, ``PSKD``, ``CSKD``,
            ``CrossCorrelation`` or a registered plug-in). Defaults to None
            (plain training).
        **kwargs: Arguments of the classifier class. Its head must be a
            single-label ``ClsHead`` (e.g. ``LinearClsHead``).

    Returns:
        nn.Module: An instance of ``SelfDistill<Classifier>``.
    """
    reject_sd_loss_key(kwargs)
    base = registered_model_class(classifier_type, 'classifier_type',
                                  'mmpretrain.ImageClassifier')
    cls = self_distill_classifier_class(base)
    if sd is not None:
        _check_no_batch_augments(kwargs)
    scope = Registry.split_scope_key(classifier_type)[0]
    with DefaultScope.overwrite_default_scope(scope):
        model = cls(**kwargs)
    if not isinstance(model.head, ClsHead):
        raise TypeError(
            f'SelfDistillClassifier needs a single-label mmpretrain ClsHead '
            f'(e.g. LinearClsHead), got {type(model.head).__name__}.')
    model.init_self_distill(sd)
    return model
