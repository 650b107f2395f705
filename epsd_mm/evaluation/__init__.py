from .calibration_metric import CalibrationMetric
from .functional import cam_to_bbox, cam_to_bboxes, normalize_cam
from .wsol_metric import WSOLMetric

__all__ = [
    'CalibrationMetric', 'WSOLMetric', 'cam_to_bbox', 'cam_to_bboxes',
    'normalize_cam'
]
