from .early_pruning_hook import EarlyPruningHook
from .finite_loss_hook import FiniteLossHook
from .gradual_pruning_hook import GradualPruningHook
from .pruning_checkpoint_hook import PruningCheckpointHook
from .self_distill_hook import SelfDistillHook

__all__ = [
    'EarlyPruningHook', 'FiniteLossHook', 'GradualPruningHook',
    'PruningCheckpointHook', 'SelfDistillHook'
]
