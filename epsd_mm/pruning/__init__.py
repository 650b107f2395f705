"""Framework-free pruning core of epsd_mm (plain PyTorch).

Typical use::

    params = prunable_parameters(model, scopes=('backbone',))
    scores = compute_scores(model, loss_fn, batches, criterion='prospr',
                            params=params, num_steps=3)
    masks = select_masks(scores, sparsity=0.9)
    apply_masks(model, masks)
    register_mask_enforcement(optimizer, model)
    print(format_sparsity_table(sparsity_stats(model)))

``loss_fn(model, batch)`` returns a scalar loss; it may call any method of
the model. Nothing here imports MMEngine, mmseg or mmdet.
"""
from .criteria import (SCORERS, compute_scores, grasp_scores,
                       magnitude_scores, prospr_scores, random_scores,
                       snip_scores, synflow_scores)
from .masks import (MASK_SUFFIX, apply_masks, attach_mask_buffers,
                    enforce_masks, get_masks, masked_param_names,
                    register_mask_enforcement, remove_masks)
from .params import PRUNABLE_TYPES, prunable_parameters
from .selection import select_masks
from .stats import (LayerSparsity, format_sparsity_table, overall_sparsity,
                    sparsity_stats)

__all__ = [
    'MASK_SUFFIX', 'PRUNABLE_TYPES', 'SCORERS', 'LayerSparsity',
    'apply_masks', 'attach_mask_buffers', 'compute_scores', 'enforce_masks',
    'format_sparsity_table', 'get_masks', 'grasp_scores', 'magnitude_scores',
    'masked_param_names', 'overall_sparsity', 'prospr_scores',
    'prunable_parameters', 'random_scores', 'register_mask_enforcement',
    'remove_masks', 'select_masks', 'snip_scores', 'sparsity_stats',
    'synflow_scores'
]
