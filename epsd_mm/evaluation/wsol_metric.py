"""Weakly supervised object localisation (WSOL) metrics."""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmdet.structures.bbox import bbox_overlaps, get_box_tensor
from mmengine.evaluator import BaseMetric

from epsd_mm.registry import METRICS
from .functional import cam_to_bboxes


@METRICS.register_module()
class WSOLMetric(BaseMetric):
    """Classification and localisation accuracy of CAM-based localisers.

    All values are percentages over the evaluated images:

    * ``top1_cls``: the top-1 label is the ground-truth class.
    * ``gt_known_loc``: the predicted box has IoU >= ``loc_iou_thr`` with a
      ground-truth box, whatever the predicted class.
    * ``top1_loc``: both of the above.
    * ``maxboxacc_v2@{30,50,70}`` and their mean ``maxboxacc_v2``
      (Choe et al., "Evaluating Weakly Supervised Object Localization Methods
      Right", CVPR 2020): for each IoU threshold delta, the box accuracy at
      the best CAM threshold, i.e. ``max_t mean(IoU(box_t, gt) >= delta)``
      where ``box_t`` is the box of the largest connected region of the CAM
      at threshold ``t``.

    The metric reads, from each prediction, ``pred_instances`` (``labels``
    and ``bboxes``, one per image, in original image coordinates),
    ``pred_cam`` (the normalised CAM at the original image size, see
    :class:`~epsd_mm.models.CAMLocalizer`), ``gt_instances.bboxes`` and the
    ``gt_label`` metainfo. The ground-truth boxes must be in original image
    coordinates too, so put ``mmdet.LoadAnnotations(with_bbox=True)`` *after*
    the resize of the test pipeline (as mmdet's test pipelines do), and add
    ``'gt_label'`` to the ``meta_keys`` of ``mmdet.PackDetInputs``.

    Args:
        iou_thrs (Sequence[float]): IoU thresholds of MaxBoxAccV2.
            Defaults to ``(0.3, 0.5, 0.7)``.
        loc_iou_thr (float): IoU threshold of Top-1 Loc and GT-known Loc.
            Defaults to 0.5.
        cam_curve_interval (float): Step of the CAM threshold sweep over
            ``[0, 1)``; the WSOL benchmark uses 0.01, the default is cheaper.
            Defaults to 0.05.
        collect_device (str): ``'cpu'`` or ``'gpu'``, where results are
            gathered in distributed evaluation. Defaults to ``'cpu'``.
        prefix (str, optional): Prefix of the metric names. Defaults to
            None (``'wsol'``).
    """

    default_prefix: Optional[str] = 'wsol'

    def __init__(self,
                 iou_thrs: Sequence[float] = (0.3, 0.5, 0.7),
                 loc_iou_thr: float = 0.5,
                 cam_curve_interval: float = 0.05,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not 0 < cam_curve_interval < 1:
            raise ValueError('cam_curve_interval must be in (0, 1), got '
                             f'{cam_curve_interval}.')
        for thr in (*iou_thrs, loc_iou_thr):
            if not 0 < thr <= 1:
                raise ValueError(
                    f'IoU thresholds must be in (0, 1], got {thr}.')
        self.iou_thrs = tuple(iou_thrs)
        self.loc_iou_thr = loc_iou_thr
        self.cam_thrs = np.arange(0, 1, cam_curve_interval)

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Reduce each prediction to its class hit and IoUs.

        Args:
            data_batch (dict): The batch from the dataloader (unused).
            data_samples (Sequence[dict]): Predictions of the model, as
                dicts (``DetDataSample.to_dict()``).
        """
        for sample in data_samples:
            if 'gt_label' not in sample:
                raise KeyError(
                    "WSOLMetric needs the 'gt_label' metainfo: add it to the "
                    'meta_keys of mmdet.PackDetInputs in the test pipeline.')
            gt_bboxes = get_box_tensor(
                sample['gt_instances']['bboxes']).float().cpu()
            if len(gt_bboxes) == 0:
                raise ValueError(
                    f"Image {sample.get('img_path')} has no ground-truth box. "
                    'Add mmdet.LoadAnnotations(with_bbox=True) after the '
                    'resize of the test pipeline.')
            pred = sample['pred_instances']
            pred_bbox = get_box_tensor(pred['bboxes'])[:1].float().cpu()
            cam = sample['pred_cam']['data'][0].float().cpu().numpy()
            cam_bboxes = torch.from_numpy(cam_to_bboxes(cam, self.cam_thrs))
            cam_ious = bbox_overlaps(cam_bboxes, gt_bboxes).max(dim=1).values
            self.results.append(
                dict(
                    cls_correct=int(pred['labels'][0]) == int(
                        sample['gt_label']),
                    iou=float(bbox_overlaps(pred_bbox, gt_bboxes).max()),
                    cam_ious=cam_ious.numpy()))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Aggregate the per-image results.

        Args:
            results (list[dict]): Results of :meth:`process` from all ranks.

        Returns:
            dict[str, float]: The metrics, in percent.
        """
        cls_correct = np.array([r['cls_correct'] for r in results])
        loc_correct = np.array([r['iou'] for r in results]) >= self.loc_iou_thr
        cam_ious = np.stack([r['cam_ious'] for r in results])
        metrics = dict(
            top1_cls=100 * cls_correct.mean(),
            top1_loc=100 * (cls_correct & loc_correct).mean(),
            gt_known_loc=100 * loc_correct.mean())
        box_accs = []
        for delta in self.iou_thrs:
            box_acc = 100 * (cam_ious >= delta).mean(axis=0).max()
            metrics[f'maxboxacc_v2@{round(delta * 100)}'] = box_acc
            box_accs.append(box_acc)
        metrics['maxboxacc_v2'] = float(np.mean(box_accs))
        return {k: float(v) for k, v in metrics.items()}
