from .early_pruning_hook import EarlyPruningHook
from .self_distill_hook import SelfDistillHook

__all__ = ['EarlyPruningHook', 'SelfDistillHook']
