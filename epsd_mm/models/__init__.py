from .sd_segmentor import SelfDistillSegmentor
from .self_distill import SelfDistillMixin

__all__ = ['SelfDistillMixin', 'SelfDistillSegmentor']
