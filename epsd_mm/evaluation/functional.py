"""Boxes from class activation maps (CAMs).

Plain NumPy / PyTorch helpers shared by :class:`~epsd_mm.models.CAMLocalizer`
(its predicted box) and :class:`~epsd_mm.evaluation.WSOLMetric` (the CAM
threshold sweep of MaxBoxAccV2), so both derive boxes the same way.
"""
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor


def normalize_cam(cam: Tensor) -> Tensor:
    """Min-max normalise each map to ``[0, 1]``.

    A constant map becomes all zeros.

    Args:
        cam (Tensor): Maps of shape ``(..., H, W)``.

    Returns:
        Tensor: The normalised maps, same shape and dtype.
    """
    flat = cam.flatten(-2)
    low = flat.min(-1).values[..., None, None]
    high = flat.max(-1).values[..., None, None]
    span = high - low
    return torch.where(span > 0, (cam - low) / span.clamp(min=1e-12),
                       torch.zeros_like(cam))


def cam_to_bbox(cam: np.ndarray, threshold: float) -> np.ndarray:
    """Box of the largest connected region where ``cam >= threshold``.

    This is the classic CAM localisation rule: threshold the normalised map
    and take the bounding box of its largest 8-connected component.

    Args:
        cam (np.ndarray): A map of shape ``(H, W)``, normally normalised to
            ``[0, 1]``.
        threshold (float): Pixels with ``cam >= threshold`` are foreground.

    Returns:
        np.ndarray: The box ``(x1, y1, x2, y2)`` as float32 in pixel-edge
        coordinates (a single pixel ``(x, y)`` is ``(x, y, x + 1, y + 1)``),
        or all zeros (an empty box) when no pixel passes the threshold.
    """
    mask = np.ascontiguousarray(cam >= threshold, dtype=np.uint8)
    num_labels, _, stats, _ = cv2.connectedComponentsWithStats(
        mask, connectivity=8)
    if num_labels <= 1:  # label 0 is the background
        return np.zeros(4, dtype=np.float32)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = stats[largest, :4]
    return np.array([x, y, x + w, y + h], dtype=np.float32)


def cam_to_bboxes(cam: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Boxes of :func:`cam_to_bbox` for several thresholds.

    Args:
        cam (np.ndarray): A map of shape ``(H, W)``.
        thresholds (Sequence[float]): The thresholds.

    Returns:
        np.ndarray: Boxes of shape ``(len(thresholds), 4)``.
    """
    return np.stack([cam_to_bbox(cam, t) for t in thresholds]).reshape(-1, 4)
