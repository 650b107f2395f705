"""Draw class activation maps (CAMs) with predicted and ground-truth boxes."""
import math
from typing import Optional, Sequence, Tuple

import cv2
import mmcv
import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import get_box_tensor
from mmdet.visualization import DetLocalVisualizer

from epsd_mm.registry import VISUALIZERS


@VISUALIZERS.register_module()
class CAMVisualizer(DetLocalVisualizer):
    """Visualise the output of :class:`~epsd_mm.models.CAMLocalizer`.

    :meth:`add_datasample` draws two panels side by side: the image, and the
    CAM (``pred_cam``) as a heat map blended over it. Both show the
    ground-truth boxes and the predicted box, in two colours, with the
    ground-truth and predicted class names. Small images are enlarged so the
    annotations stay legible.

    It is a drop-in replacement of ``mmdet.DetLocalVisualizer``, so
    ``mmdet.DetVisualizationHook`` can draw with it during validation.

    Args:
        name (str): Instance name. Defaults to ``'visualizer'``.
        gt_color (tuple[int]): RGB colour of ground-truth boxes and labels.
            Defaults to green ``(0, 255, 0)``.
        pred_color (tuple[int]): RGB colour of the predicted box and label.
            Defaults to magenta ``(255, 0, 255)``, absent from the heat map.
        cam_alpha (float): Opacity of the heat map. Defaults to 0.5.
        min_size (int): Images whose shorter side is smaller are enlarged
            by an integer factor to at least this size. Defaults to 256.
        **kwargs: Other arguments of ``mmdet.DetLocalVisualizer``
            (``vis_backends``, ``save_dir``, ``line_width``, ...).
    """

    def __init__(self,
                 name: str = 'visualizer',
                 gt_color: Tuple[int, int, int] = (0, 255, 0),
                 pred_color: Tuple[int, int, int] = (255, 0, 255),
                 cam_alpha: float = 0.5,
                 min_size: int = 256,
                 **kwargs) -> None:
        kwargs.setdefault('line_width', 2)
        super().__init__(name=name, **kwargs)
        self.gt_color = tuple(gt_color)
        self.pred_color = tuple(pred_color)
        self.cam_alpha = cam_alpha
        self.min_size = min_size

    def _class_name(self, label: int) -> str:
        classes = self.dataset_meta.get('classes')
        return classes[label] if classes else f'class {label}'

    def _annotate(self, panel: np.ndarray, gt_bboxes: torch.Tensor,
                  pred_bboxes: torch.Tensor, texts: Sequence[Tuple[str,
                                                                   tuple]],
                  scale: int) -> np.ndarray:
        """Draw the boxes and the text lines on one panel."""
        self.set_image(panel)
        for bboxes, color in ((gt_bboxes, self.gt_color),
                              (pred_bboxes, self.pred_color)):
            if len(bboxes):
                self.draw_bboxes(
                    bboxes * scale,
                    edge_colors=color,
                    line_widths=self.line_width)
        font_size = max(8, panel.shape[0] // 24)
        for row, (text, color) in enumerate(texts):
            self.draw_texts(
                text,
                np.array([2, 2 + row * 1.6 * font_size]),
                colors=color,
                font_sizes=font_size,
                bboxes=dict(facecolor='black', alpha=0.6, pad=0.5))
        return self.get_image()

    def draw_cam(self,
                 image: np.ndarray,
                 data_sample: DetDataSample,
                 draw_gt: bool = True,
                 draw_pred: bool = True) -> np.ndarray:
        """Draw the two panels of one prediction.

        Args:
            image (np.ndarray): The original RGB image ``(H, W, 3)``.
            data_sample (DetDataSample): Output of ``CAMLocalizer.predict``
                (with ``rescale=True``), with ``pred_instances``,
                ``pred_cam`` and, for ``draw_gt``, ``gt_instances`` (original
                image coordinates) and the ``gt_label`` metainfo.
            draw_gt (bool): Whether to draw the ground truth.
                Defaults to True.
            draw_pred (bool): Whether to draw the predicted box and class.
                Defaults to True.

        Returns:
            np.ndarray: The RGB drawing ``(s*H, 2*s*W, 3)``, ``s`` being the
            enlargement factor.
        """
        if 'pred_cam' not in data_sample:
            raise KeyError('The data sample has no pred_cam. Draw the output '
                           'of CAMLocalizer.predict().')
        cam = data_sample.pred_cam.data.float()
        if cam.shape[-2:] != image.shape[:2]:
            raise ValueError(
                f'pred_cam has shape {tuple(cam.shape[-2:])} but the image '
                f'{tuple(image.shape[:2])}. Pass the original image and '
                'predict with rescale=True.')
        scale = max(1, math.ceil(self.min_size / min(image.shape[:2])))
        image = image.clip(0, 255).astype(np.uint8)
        if scale > 1:
            image = cv2.resize(
                image, None, fx=scale, fy=scale,
                interpolation=cv2.INTER_NEAREST)
            cam = torch.nn.functional.interpolate(
                cam[None], scale_factor=scale, mode='bilinear')[0]
        heat = self.draw_featmap(
            cam, image, channel_reduction=None, topk=0, alpha=self.cam_alpha)

        empty = torch.zeros((0, 4))
        gt_bboxes, pred_bboxes, texts = empty, empty, []
        if draw_gt and 'gt_instances' in data_sample:
            gt_bboxes = get_box_tensor(data_sample.gt_instances.bboxes)
            if 'gt_label' in data_sample:
                texts.append(
                    (f'GT: {self._class_name(int(data_sample.gt_label))}',
                     self.gt_color))
        if draw_pred:
            pred = data_sample.pred_instances
            pred_bboxes = get_box_tensor(pred.bboxes)
            texts.append((f'Pred: {self._class_name(int(pred.labels[0]))} '
                          f'{float(pred.scores[0]):.2f}', self.pred_color))
        panels = [
            self._annotate(panel, gt_bboxes.cpu().float(),
                           pred_bboxes.cpu().float(), texts, scale)
            for panel in (image, heat)
        ]
        return np.concatenate(panels, axis=1)

    def add_datasample(self,
                       name: str,
                       image: np.ndarray,
                       data_sample: Optional[DetDataSample] = None,
                       draw_gt: bool = True,
                       draw_pred: bool = True,
                       show: bool = False,
                       wait_time: float = 0,
                       out_file: Optional[str] = None,
                       pred_score_thr: float = 0.0,
                       step: int = 0) -> None:
        """Draw a prediction and show, save or log it.

        Args:
            name (str): Image identifier for the visualisation backends.
            image (np.ndarray): The original RGB image.
            data_sample (DetDataSample, optional): The prediction (see
                :meth:`draw_cam`). Without it the image is drawn as is.
            draw_gt (bool): Whether to draw the ground truth.
                Defaults to True.
            draw_pred (bool): Whether to draw the prediction.
                Defaults to True.
            show (bool): Whether to show the drawing in a window.
                Defaults to False.
            wait_time (float): Seconds to show it. Defaults to 0.
            out_file (str, optional): Where to write the drawing (the
                backends are skipped then). Defaults to None.
            pred_score_thr (float): Predictions with a lower score are not
                drawn (``mmdet.DetVisualizationHook`` passes it).
                Defaults to 0.
            step (int): Global step for the backends. Defaults to 0.
        """
        if data_sample is None:
            drawn = image.clip(0, 255).astype(np.uint8)
        else:
            data_sample = data_sample.cpu()
            draw_pred = draw_pred and bool(
                data_sample.pred_instances.scores[0] >= pred_score_thr)
            drawn = self.draw_cam(image, data_sample, draw_gt, draw_pred)
        self.set_image(drawn)
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            mmcv.imwrite(drawn[..., ::-1], out_file)
        else:
            self.add_image(name, drawn, step)
