"""MMEngine side of epsd_mm: hooks that prune and self-distil in a run.

Importing it (MMEngine does so when a config builds one of our hooks)
allow-lists the objects MMEngine 0.10 stores in checkpoints for torch's
``weights_only`` loader, process-wide, because MMEngine's own resume and
``load_from`` call ``torch.load`` themselves; see
:mod:`epsd_mm.utils.checkpoint` for why the list is safe.
"""
from epsd_mm.utils import register_checkpoint_safe_globals
from .hooks import (BaseMaskHook, EarlyPruningHook, FiniteLossHook,
                    GradualPruningHook, ScoringProgress, SelfDistillHook,
                    SlimCheckpointHook, SlimCheckpointMixin, UnprunedView,
                    unwrap_model)

register_checkpoint_safe_globals()

__all__ = [
    'BaseMaskHook', 'EarlyPruningHook', 'FiniteLossHook',
    'GradualPruningHook', 'ScoringProgress', 'SelfDistillHook',
    'SlimCheckpointHook', 'SlimCheckpointMixin', 'UnprunedView',
    'unwrap_model'
]
