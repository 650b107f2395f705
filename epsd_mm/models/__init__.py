"""Self-distilling models and their adapters to the pruning core.

Task modules needing an optional library (mmseg for segmentors, mmdet for
the CAM localiser, mmpretrain for classifiers) are imported only when that
library is installed; see :data:`epsd_mm.registry.UNAVAILABLE_MODULES`.
"""
from epsd_mm.registry import import_task_module
from .cam_head import CAMHead
from .scoring import (SCORING_LOSSES, ScoringLoss, model_loss, scoring_state,
                      tensor_forward, trace_forward)
from .self_distill import SelfDistillMixin, build_sd_method
from .slim_model import build_slim_model, slim_model_cfg
from .unpruned_view import UnprunedView

__all__ = [
    'CAMHead', 'SCORING_LOSSES', 'ScoringLoss', 'SelfDistillMixin',
    'UnprunedView', 'build_sd_method', 'build_slim_model', 'model_loss',
    'scoring_state', 'slim_model_cfg', 'tensor_forward', 'trace_forward'
]

if import_task_module('epsd_mm.models.segmentors', requires='mmseg'):
    from .segmentors import (SelfDistillSegmentorMixin,
                             build_self_distill_segmentor,
                             self_distill_segmentor_class)
    __all__ += [
        'SelfDistillSegmentorMixin', 'build_self_distill_segmentor',
        'self_distill_segmentor_class'
    ]
if import_task_module('epsd_mm.models.cam_localizer', requires='mmdet'):
    from .cam_localizer import CAMLocalizer
    __all__ += ['CAMLocalizer']
if import_task_module('epsd_mm.models.classifiers', requires='mmpretrain'):
    from .classifiers import (SelfDistillClassifierMixin,
                              build_self_distill_classifier,
                              self_distill_classifier_class)
    __all__ += [
        'SelfDistillClassifierMixin', 'build_self_distill_classifier',
        'self_distill_classifier_class'
    ]
