"""MMEngine side of epsd_mm: hooks that prune and self-distil in a run,
thin adapters around the pruning core (:mod:`epsd_mm.pruning`)."""
from .hooks import (EarlyPruningHook, FiniteLossHook, GradualPruningHook,
                    PruningCheckpointHook, SelfDistillHook)
from .runner_utils import ScoringProgress, unwrap_model

__all__ = [
    'EarlyPruningHook', 'FiniteLossHook', 'GradualPruningHook',
    'PruningCheckpointHook', 'ScoringProgress', 'SelfDistillHook',
    'unwrap_model'
]
