from .hooks import EarlyPruningHook, SelfDistillHook

__all__ = ['EarlyPruningHook', 'SelfDistillHook']
