from .early_pruning_hook import EarlyPruningHook, ScoringProgress
from .finite_loss_hook import FiniteLossHook
from .gradual_pruning_hook import GradualPruningHook, UnprunedView
from .mask_hook import BaseMaskHook, unwrap_model
from .self_distill_hook import SelfDistillHook
from .slim_checkpoint_hook import SlimCheckpointHook, SlimCheckpointMixin

__all__ = [
    'BaseMaskHook', 'EarlyPruningHook', 'FiniteLossHook',
    'GradualPruningHook', 'ScoringProgress', 'SelfDistillHook',
    'SlimCheckpointHook', 'SlimCheckpointMixin', 'UnprunedView',
    'unwrap_model'
]
