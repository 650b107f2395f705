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
from .criteria import (SCORERS, check_criterion_options, compute_scores,
                       criterion_needs_batches, criterion_options,
                       get_scorer, grasp_scores, magnitude_scores,
                       prospr_meta_gradients, prospr_scores, random_scores,
                       snip_scores, synflow_scores)
from .masks import (LEGACY_MASK_SUFFIX, MASK_SUFFIX, apply_masks,
                    attach_mask_buffers, check_masked_state_dict,
                    enforce_masks, get_masks, load_masks_with_state_dict,
                    masked_param_names,
                    register_mask_enforcement, remove_masks,
                    rename_legacy_mask_keys)
from .params import PRUNABLE_WEIGHTS, normalize_scopes, prunable_parameters
from .selection import SELECTIONS, check_sparsity, select_masks
from .stats import (LayerSparsity, format_sparsity_table, overall_sparsity,
                    sparsity_stats)

__all__ = [
    'LEGACY_MASK_SUFFIX', 'MASK_SUFFIX', 'PRUNABLE_WEIGHTS', 'SCORERS',
    'SELECTIONS', 'LayerSparsity', 'apply_masks', 'attach_mask_buffers',
    'check_criterion_options', 'check_masked_state_dict', 'check_sparsity',
    'compute_scores', 'criterion_needs_batches', 'criterion_options',
    'enforce_masks', 'format_sparsity_table', 'get_masks', 'get_scorer',
    'grasp_scores', 'load_masks_with_state_dict', 'magnitude_scores',
    'masked_param_names',
    'normalize_scopes', 'overall_sparsity', 'prospr_meta_gradients',
    'prospr_scores', 'prunable_parameters', 'random_scores',
    'register_mask_enforcement', 'remove_masks', 'rename_legacy_mask_keys',
    'select_masks', 'snip_scores', 'sparsity_stats', 'synflow_scores'
]
