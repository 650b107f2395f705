from .hooks import (BaseMaskHook, EarlyPruningHook, GradualPruningHook,
                    SelfDistillHook, UnprunedView, unwrap_model)

__all__ = [
    'BaseMaskHook', 'EarlyPruningHook', 'GradualPruningHook',
    'SelfDistillHook', 'UnprunedView', 'unwrap_model'
]
