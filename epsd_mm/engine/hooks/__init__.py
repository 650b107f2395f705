from .early_pruning_hook import EarlyPruningHook
from .gradual_pruning_hook import GradualPruningHook, UnprunedView
from .mask_hook import BaseMaskHook, unwrap_model
from .self_distill_hook import SelfDistillHook

__all__ = [
    'BaseMaskHook', 'EarlyPruningHook', 'GradualPruningHook',
    'SelfDistillHook', 'UnprunedView', 'unwrap_model'
]
