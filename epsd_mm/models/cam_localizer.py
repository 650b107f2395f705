"""Weakly supervised object localiser based on class activation maps."""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.detectors import BaseDetector
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData, PixelData
from torch import Tensor

from epsd_mm.evaluation.functional import cam_to_bbox, normalize_cam
from epsd_mm.registry import MODELS
from .self_distill import SelfDistillMixin

#: Flip direction of ``mmdet.RandomFlip`` -> dims of an ``(H, W)`` map.
_FLIP_DIMS = {'horizontal': (-1, ), 'vertical': (-2, ), 'diagonal': (-2, -1)}


@MODELS.register_module()
class CAMLocalizer(SelfDistillMixin, BaseDetector):
    """Classifier that localises its object with a class activation map.

    Trained with image-level labels only (``gt_label`` in the metainfo of the
    data samples, see :class:`~epsd_mm.datasets.CUB200Dataset`), optionally
    with a self-distillation method (``sd``: ``DLB``, ``PSKD``, ``CSKD`` or
    any registered plug-in) applied to the logits.

    At test time every image gets one box: the CAM of one class is resized to
    the original image (undoing padding and flips), min-max normalised, and
    thresholded at ``test_cfg.cam_threshold``; the box is that of the largest
    connected region. Each returned :class:`DetDataSample` holds

    * ``pred_instances``: ``bboxes`` ``(1, 4)`` in original image
      coordinates, the top-1 ``labels`` ``(1,)`` and their softmax
      ``scores`` ``(1,)``;
    * ``pred_cam``: :class:`PixelData` whose ``data`` ``(1, H, W)`` is the
      normalised CAM at the original image size, so
      :class:`~epsd_mm.evaluation.WSOLMetric` can sweep thresholds.

    Args:
        backbone (dict): Backbone config, e.g. ``dict(type='mmdet.ResNet',
            depth=50, out_indices=(3, ))``. The head uses its last output.
        head (dict): Config of :class:`~epsd_mm.models.CAMHead`.
        sd (dict, optional): SD method config, e.g.
            ``dict(type='CSKD', loss=dict(loss_weight=3.0))``. Defaults to
            None (plain cross-entropy training).
        test_cfg (dict, optional): Inference options:

            - ``cam_threshold`` (float): Threshold on the normalised CAM.
              Defaults to 0.2.
            - ``cam_class`` (str): Whose CAM gives the box and ``pred_cam``:
              ``'pred'`` (the top-1 class, for images without labels) or
              ``'gt'`` (the ground-truth class, the WSOL benchmark protocol
              of GT-known Loc and MaxBoxAccV2; Top-1 Loc is unchanged since it
              only counts correctly classified images). Defaults to
              ``'pred'``.
        data_preprocessor (dict, optional): Usually
            ``dict(type='mmdet.DetDataPreprocessor', ...)``. Defaults to None.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    DEFAULT_TEST_CFG = dict(cam_threshold=0.2, cam_class='pred')

    def __init__(self,
                 backbone: dict,
                 head: dict,
                 sd: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.head = MODELS.build(head)
        self.test_cfg = self._check_test_cfg(test_cfg or {})
        self.init_self_distill(sd)

    def _check_test_cfg(self, test_cfg: dict) -> dict:
        unknown = set(test_cfg) - set(self.DEFAULT_TEST_CFG)
        if unknown:
            raise ValueError(
                f'Unknown test_cfg keys {sorted(unknown)}; CAMLocalizer '
                f'accepts {sorted(self.DEFAULT_TEST_CFG)}.')
        cfg = {**self.DEFAULT_TEST_CFG, **test_cfg}
        if not 0 <= cfg['cam_threshold'] <= 1:
            raise ValueError('test_cfg.cam_threshold must be in [0, 1], got '
                             f"{cfg['cam_threshold']}.")
        if cfg['cam_class'] not in ('pred', 'gt'):
            raise ValueError("test_cfg.cam_class must be 'pred' or 'gt', got "
                             f"{cfg['cam_class']!r}.")
        return cfg

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        """Backbone features of a batch."""
        return self.backbone(batch_inputs)

    def _forward(self,
                 batch_inputs: Tensor,
                 batch_data_samples: Optional[List[DetDataSample]] = None
                 ) -> Tensor:
        """Class activation maps ``(N, num_classes, h, w)``."""
        return self.head(self.extract_feat(batch_inputs))

    # Self-distillation task hooks ------------------------------------------
    def sd_forward(self, inputs: Tensor) -> Tuple[Tensor, Tuple[Tensor]]:
        """Logits ``(N, num_classes)`` and the backbone features."""
        feats = self.extract_feat(inputs)
        return self.head.pool(self.head(feats)), feats

    def sd_task_losses(self, logits: Tensor, extra: Tuple[Tensor],
                       data_samples: List[DetDataSample],
                       with_main_ce: bool) -> Dict[str, Tensor]:
        """Cross-entropy ``loss_cls``, or nothing when the SD loss contains
        it."""
        if not with_main_ce:
            return {}
        return self.head.loss(logits, self.sd_labels(data_samples))

    def sd_labels(self, data_samples: List[DetDataSample]) -> Tensor:
        """Image-level labels ``(N,)`` from the ``gt_label`` metainfo."""
        return torch.as_tensor([self._gt_label(ds) for ds in data_samples],
                               dtype=torch.long,
                               device=self.head.conv_cls.weight.device)

    @staticmethod
    def _gt_label(data_sample: DetDataSample) -> int:
        if 'gt_label' not in data_sample:
            raise KeyError(
                'The data sample has no gt_label. Use CUB200Dataset (or '
                "another dataset setting 'gt_label') and add 'gt_label' to "
                "the meta_keys of mmdet.PackDetInputs.")
        return int(data_sample.gt_label)

    # MMEngine modes ---------------------------------------------------------
    def loss(self, batch_inputs: Tensor,
             batch_data_samples: List[DetDataSample]) -> Dict[str, Tensor]:
        """Classification loss plus the configured self-distillation loss."""
        return self.self_distill_loss(batch_inputs, batch_data_samples)

    def predict(self,
                batch_inputs: Tensor,
                batch_data_samples: List[DetDataSample],
                rescale: bool = True) -> List[DetDataSample]:
        """Predict the class, one box and the CAM of every image.

        Args:
            batch_inputs (Tensor): Preprocessed images ``(N, 3, H, W)``.
            batch_data_samples (list[DetDataSample]): Their data samples,
                with ``img_shape``, ``ori_shape`` (and ``flip``,
                ``flip_direction`` if flipped) in the metainfo.
            rescale (bool): Whether boxes and CAMs are given at the original
                image size (True) or at ``img_shape``. Defaults to True.

        Returns:
            list[DetDataSample]: The data samples with ``pred_instances``
            and ``pred_cam`` added (detached from the graph).
        """
        cams = self._forward(batch_inputs).detach()
        scores, labels = self.head.pool(cams).softmax(dim=1).max(dim=1)
        results = []
        for i, data_sample in enumerate(batch_data_samples):
            cam_class = (
                labels[i] if self.test_cfg['cam_class'] == 'pred' else
                self._gt_label(data_sample))
            cam = self._cam_to_image(cams[i, cam_class],
                                     batch_inputs.shape[-2:],
                                     data_sample.metainfo, rescale)
            box = cam_to_bbox(cam.cpu().numpy(),
                              self.test_cfg['cam_threshold'])
            results.append(
                InstanceData(
                    bboxes=torch.from_numpy(box)[None].to(cam.device),
                    labels=labels[i:i + 1],
                    scores=scores[i:i + 1]))
            data_sample.pred_cam = PixelData(data=cam[None])
        return self.add_pred_to_datasample(batch_data_samples, results)

    @staticmethod
    def _cam_to_image(cam: Tensor, batch_shape: Tuple[int, int],
                      metainfo: dict, rescale: bool) -> Tensor:
        """Bring one ``(h, w)`` CAM to the image and normalise it.

        The CAM covers the padded batch: resize it to the batch shape, crop
        the image's unpadded part, undo its flip, and resize to the original
        size when ``rescale``.
        """
        img_h, img_w = metainfo['img_shape'][:2]
        cam = F.interpolate(
            cam[None, None],
            size=tuple(batch_shape),
            mode='bilinear',
            align_corners=False)[..., :img_h, :img_w]
        if metainfo.get('flip', False):
            cam = cam.flip(_FLIP_DIMS[metainfo['flip_direction']])
        if rescale:
            cam = F.interpolate(
                cam,
                size=tuple(metainfo['ori_shape'][:2]),
                mode='bilinear',
                align_corners=False)
        return normalize_cam(cam[0, 0])
