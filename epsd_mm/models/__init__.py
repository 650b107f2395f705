from .cam_head import CAMHead
from .cam_localizer import CAMLocalizer
from .sd_segmentor import SelfDistillSegmentor
from .self_distill import SelfDistillMixin

__all__ = ['CAMHead', 'CAMLocalizer', 'SelfDistillMixin', 'SelfDistillSegmentor']
