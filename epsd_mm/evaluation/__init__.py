from epsd_mm.registry import import_task_module
from .calibration_metric import CalibrationMetric
from .functional import cam_to_bbox, cam_to_bboxes, normalize_cam

__all__ = ['CalibrationMetric', 'cam_to_bbox', 'cam_to_bboxes', 'normalize_cam']

if import_task_module('epsd_mm.evaluation.wsol_metric', requires='mmdet'):
    from .wsol_metric import WSOLMetric
    __all__ += ['WSOLMetric']
