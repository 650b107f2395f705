"""Weakly supervised object localisation (WSOL) metrics."""
import logging
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmdet.structures.bbox import bbox_overlaps, get_box_tensor
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from epsd_mm.registry import METRICS
from .functional import cam_to_bbox, cam_to_bboxes

#: The ``split`` metainfo of samples that choose the CAM threshold.
HELDOUT = 'heldout'


def _threshold_name(threshold: float) -> str:
    """``0.2 -> '0.20'``; more decimals are kept when there are any."""
    return f'{threshold:.2f}' if round(threshold, 2) == threshold else \
        f'{threshold:g}'


@METRICS.register_module()
class WSOLMetric(BaseMetric):
    """Classification and localisation accuracy of CAM-based localisers.

    All accuracies are percentages over the *evaluated* images, i.e. all
    images except the held-out ones (see below):

    * ``top1_cls``: the top-1 label is the ground-truth class.
    * ``gt_known_loc@<t>``: the CAM box at the fixed CAM threshold ``t`` (the
      model's ``test_cfg.cam_threshold``, e.g. ``gt_known_loc@0.20``) has
      IoU >= ``loc_iou_thr`` with a ground-truth box, whatever the predicted
      class; ``top1_loc@<t>``: both of the above.
    * ``gt_known_loc@best`` and ``top1_loc@best``: the same at the CAM
      threshold ``best_cam_threshold`` that maximises GT-known Loc on the
      *held-out* images, annotated training images that are not evaluated
      (the protocol of Choe et al., "Evaluating Weakly Supervised Object
      Localization Methods Right", CVPR 2020). Samples are held out when
      their ``split`` metainfo is ``'heldout'``: evaluate on
      ``CUB200Dataset(split=('test', 'heldout'), heldout_per_class=5)``
      and add ``'split'`` to the ``meta_keys``. Without held-out samples
      these three are not reported and a warning says how to get them.
    * ``maxboxacc_v2@{30,50,70}`` and their mean ``maxboxacc_v2`` (Choe et
      al.): for each IoU threshold delta, the box accuracy at the best CAM
      threshold *on the evaluated images*, i.e.
      ``max_t mean(IoU(box_t, gt) >= delta)``.

    Here ``box_t`` is the box of the largest connected region of the CAM at
    threshold ``t`` (:func:`~epsd_mm.evaluation.cam_to_bbox`). A fixed
    threshold reads 0 when the CAMs are diffuse (the box covers the image):
    the metric logs which threshold every number used, and warns when the
    fixed-threshold boxes cover on average more than ``diffuse_box_ratio``
    of their image.

    The metric reads, from each prediction, ``pred_instances`` (``labels``
    and ``bboxes``, one per image, in original image coordinates; the box
    must be the CAM box at ``cam_threshold``, which is checked),
    ``pred_cam`` (the normalised CAM at the original image size, see
    :class:`~epsd_mm.models.CAMLocalizer`), ``gt_instances.bboxes`` and the
    ``gt_label`` (and ``split``) metainfo. The ground-truth boxes must be in
    original image coordinates too, so put
    ``mmdet.LoadAnnotations(with_bbox=True)`` *after* the resize of the test
    pipeline (as mmdet's test pipelines do), and add ``'gt_label'`` to the
    ``meta_keys`` of ``mmdet.PackDetInputs``. One evaluation pass suffices,
    in distributed evaluation too: the threshold is chosen after the
    results of all ranks are collected.

    Args:
        cam_threshold (float): The model's ``test_cfg.cam_threshold``, the
            fixed CAM threshold of its predicted boxes. Defaults to 0.2.
        iou_thrs (Sequence[float]): IoU thresholds of MaxBoxAccV2.
            Defaults to ``(0.3, 0.5, 0.7)``.
        loc_iou_thr (float): IoU threshold of Top-1 Loc and GT-known Loc.
            Defaults to 0.5.
        cam_curve_interval (float): Step of the CAM threshold sweep over
            ``[0, 1)`` (MaxBoxAccV2 and the best threshold); the WSOL
            benchmark uses 0.01, the default is cheaper. Defaults to 0.05.
        diffuse_box_ratio (float): Warn when the fixed-threshold boxes of
            the evaluated images cover on average more than this fraction
            of their image. Defaults to 0.8.
        collect_device (str): ``'cpu'`` or ``'gpu'``, where results are
            gathered in distributed evaluation. Defaults to ``'cpu'``.
        prefix (str, optional): Prefix of the metric names. Defaults to
            None (``'wsol'``).
    """

    default_prefix: Optional[str] = 'wsol'

    def __init__(self,
                 cam_threshold: float = 0.2,
                 iou_thrs: Sequence[float] = (0.3, 0.5, 0.7),
                 loc_iou_thr: float = 0.5,
                 cam_curve_interval: float = 0.05,
                 diffuse_box_ratio: float = 0.8,
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
        if not 0 <= cam_threshold <= 1:
            raise ValueError(
                f'cam_threshold must be in [0, 1], got {cam_threshold}.')
        if not 0 < diffuse_box_ratio <= 1:
            raise ValueError('diffuse_box_ratio must be in (0, 1], got '
                             f'{diffuse_box_ratio}.')
        self.cam_threshold = cam_threshold
        self.iou_thrs = tuple(iou_thrs)
        self.loc_iou_thr = loc_iou_thr
        self.cam_thrs = np.arange(0, 1, cam_curve_interval)
        self.diffuse_box_ratio = diffuse_box_ratio

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
            # the dtype the model thresholded, so the box check is exact
            cam = sample['pred_cam']['data'][0].cpu().numpy()
            fixed_bbox = cam_to_bbox(cam, self.cam_threshold)
            pred_bbox = get_box_tensor(pred['bboxes'])[0].float().cpu()
            if not np.array_equal(pred_bbox.numpy(), fixed_bbox):
                raise ValueError(
                    f"The predicted box {pred_bbox.tolist()} of "
                    f"{sample.get('img_path')} is not its CAM box at "
                    f'cam_threshold={self.cam_threshold} '
                    f'({fixed_bbox.tolist()}). Set the cam_threshold of '
                    "WSOLMetric to the model's test_cfg.cam_threshold.")
            cam_bboxes = torch.from_numpy(cam_to_bboxes(cam, self.cam_thrs))
            cam_ious = bbox_overlaps(cam_bboxes, gt_bboxes).max(dim=1).values
            fixed_iou = bbox_overlaps(
                torch.from_numpy(fixed_bbox)[None], gt_bboxes).max()
            box_w, box_h = fixed_bbox[2:] - fixed_bbox[:2]
            self.results.append(
                dict(
                    cls_correct=int(pred['labels'][0]) == int(
                        sample['gt_label']),
                    heldout=sample.get('split') == HELDOUT,
                    fixed_iou=float(fixed_iou),
                    fixed_area=float(box_w * box_h / cam.size),
                    cam_ious=cam_ious.numpy()))

    def _best_threshold(self, heldout: List[dict]) -> int:
        """Index of the sweep threshold with the best GT-known Loc on the
        held-out results (the lowest one on ties)."""
        cam_ious = np.stack([r['cam_ious'] for r in heldout])
        return int(np.argmax((cam_ious >= self.loc_iou_thr).mean(axis=0)))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Aggregate the per-image results.

        Args:
            results (list[dict]): Results of :meth:`process` from all ranks.

        Returns:
            dict[str, float]: The metrics, in percent
            (``best_cam_threshold`` in ``[0, 1)``).
        """
        heldout = [r for r in results if r['heldout']]
        evaluated = [r for r in results if not r['heldout']]
        if not evaluated:
            raise ValueError(
                f'All {len(results)} evaluated images are held out '
                "(split 'heldout'): evaluate on the test images too, e.g. "
                "CUB200Dataset(split=('test', 'heldout')).")
        cls_correct = np.array([r['cls_correct'] for r in evaluated])
        cam_ious = np.stack([r['cam_ious'] for r in evaluated])
        fixed = _threshold_name(self.cam_threshold)
        fixed_loc = np.array([r['fixed_iou'] for r in evaluated
                              ]) >= self.loc_iou_thr
        metrics = {
            'top1_cls': 100 * cls_correct.mean(),
            f'top1_loc@{fixed}': 100 * (cls_correct & fixed_loc).mean(),
            f'gt_known_loc@{fixed}': 100 * fixed_loc.mean(),
        }
        best = None
        if heldout:
            best = self._best_threshold(heldout)
            best_loc = cam_ious[:, best] >= self.loc_iou_thr
            metrics.update({
                'top1_loc@best': 100 * (cls_correct & best_loc).mean(),
                'gt_known_loc@best': 100 * best_loc.mean(),
                'best_cam_threshold': self.cam_thrs[best],
            })
        box_accs = []
        for delta in self.iou_thrs:
            box_acc = 100 * (cam_ious >= delta).mean(axis=0).max()
            metrics[f'maxboxacc_v2@{round(delta * 100)}'] = box_acc
            box_accs.append(box_acc)
        metrics['maxboxacc_v2'] = float(np.mean(box_accs))
        self._log_thresholds(heldout, evaluated, best)
        return {k: float(v) for k, v in metrics.items()}

    def _log_thresholds(self, heldout: List[dict], evaluated: List[dict],
                        best: Optional[int]) -> None:
        """Say which CAM threshold each number used; warn about diffuse
        CAMs and missing held-out images."""
        fixed = _threshold_name(self.cam_threshold)
        lines = [
            f'WSOLMetric on {len(evaluated)} images: top1_loc@{fixed} and '
            f'gt_known_loc@{fixed} use the fixed CAM threshold {fixed} '
            "(the model's test_cfg.cam_threshold)"
        ]
        if best is not None:
            cam_ious = np.stack([r['cam_ious'] for r in heldout])
            heldout_acc = 100 * (cam_ious[:, best] >=
                                 self.loc_iou_thr).mean()
            lines.append(
                'top1_loc@best and gt_known_loc@best the CAM threshold '
                f'{_threshold_name(self.cam_thrs[best])}, best GT-known Loc '
                f'({heldout_acc:.2f}) on {len(heldout)} held-out training '
                'images')
        lines.append('maxboxacc_v2 the best threshold per IoU on the '
                     'evaluated images themselves.')
        print_log('; '.join(lines), logger='current')
        if best is None:
            print_log(
                'WSOLMetric: no held-out images (split "heldout"), so no '
                'top1_loc@best / gt_known_loc@best: evaluate on '
                "CUB200Dataset(split=('test', 'heldout'), heldout_per_class"
                "=5), train on heldout_per_class=5 too, and add 'split' to "
                'the meta_keys of PackDetInputs (see '
                'configs/_base_/datasets/cub_bs32.py).',
                logger='current',
                level=logging.WARNING)
        mean_area = float(np.mean([r['fixed_area'] for r in evaluated]))
        if mean_area > self.diffuse_box_ratio:
            instead = 'top1_loc@best / gt_known_loc@best' if best is not \
                None else 'maxboxacc_v2 (or add held-out images for @best)'
            print_log(
                f'WSOLMetric: at the fixed CAM threshold {fixed} the boxes '
                f'cover {100 * mean_area:.0f}% of their image on average '
                f'(more than {100 * self.diffuse_box_ratio:.0f}%): the CAMs '
                f'are diffuse, and top1_loc@{fixed} / gt_known_loc@{fixed} '
                'mostly count ground-truth boxes that fill the image. Read '
                f'{instead} instead.',
                logger='current',
                level=logging.WARNING)
