"""Instruments that explain pruned checkpoints (used by tools/analysis)."""
from .compare_masks import (MaskComparison, PrunedCheckpoint, check_comparable,
                            checkpoint_complexity, compare_masks,
                            format_comparison, load_pruned_checkpoint,
                            plot_densities)

__all__ = [
    'MaskComparison', 'PrunedCheckpoint', 'check_comparable',
    'checkpoint_complexity', 'compare_masks', 'format_comparison',
    'load_pruned_checkpoint', 'plot_densities'
]
