"""Framework-free pruning core of epsd_mm (plain PyTorch).

Typical use::

    params = prunable_parameters(model, scopes=('backbone',))
    scores = compute_scores(model, loss_fn, batches, criterion='prospr',
                            params=params, num_steps=3)
    masks = select_masks(scores, sparsity=0.9)
    apply_masks(model, masks)
    register_mask_enforcement(optimizer, model)
    print(format_sparsity_table(sparsity_stats(model)))

Channels (structured pruning, torch-pruning's dependency graph)::

    graph = ChannelGraph(model, example_inputs, forward_fn)
    scores = compute_channel_scores(graph, loss_fn, batches, 'prospr')
    spec = slim_channels(graph, select_channels(scores, sparsity=0.5))
    rebuild_slim(fresh_dense_model, spec)  # before loading slim weights

``loss_fn(model, batch)`` returns a scalar loss; it may call any method of
the model. Nothing here imports MMEngine, mmseg or mmdet.
"""
from .channel_scores import (CHANNEL_NORMALIZATION, CHANNEL_SCORERS,
                             channel_criterion_needs_batches,
                             channel_criterion_options,
                             check_channel_criterion_options,
                             compute_channel_scores, get_channel_scorer)
from .channel_selection import channel_sparsity, select_channels
from .channels import ChannelGraph, ChannelGroup, ChannelMember
from .criteria import (SCORERS, check_criterion_batches,
                       check_criterion_options, compute_scores,
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
from .slimming import (check_slim_spec, check_state_dict_shapes,
                       compose_slim_specs, format_slim_table, get_slim_spec,
                       layer_channels, rebind_optimizer, rebuild_slim,
                       shape_mismatches, slim_channels)
from .stats import (LayerSparsity, format_sparsity_table, overall_sparsity,
                    sparsity_stats)

__all__ = [
    'CHANNEL_NORMALIZATION', 'CHANNEL_SCORERS', 'LEGACY_MASK_SUFFIX',
    'MASK_SUFFIX', 'PRUNABLE_WEIGHTS', 'SCORERS', 'SELECTIONS',
    'ChannelGraph', 'ChannelGroup', 'ChannelMember', 'LayerSparsity',
    'apply_masks', 'attach_mask_buffers', 'channel_criterion_needs_batches',
    'channel_criterion_options', 'channel_sparsity',
    'check_channel_criterion_options', 'check_criterion_batches',
    'check_criterion_options',
    'check_masked_state_dict', 'check_slim_spec', 'check_sparsity',
    'check_state_dict_shapes', 'compose_slim_specs', 'compute_channel_scores',
    'compute_scores', 'criterion_needs_batches', 'criterion_options',
    'enforce_masks', 'format_slim_table', 'format_sparsity_table',
    'get_channel_scorer', 'get_masks', 'get_scorer', 'get_slim_spec',
    'grasp_scores', 'layer_channels', 'load_masks_with_state_dict',
    'magnitude_scores', 'masked_param_names', 'normalize_scopes',
    'overall_sparsity', 'prospr_meta_gradients', 'prospr_scores',
    'prunable_parameters', 'random_scores', 'rebind_optimizer',
    'rebuild_slim',
    'register_mask_enforcement', 'remove_masks', 'rename_legacy_mask_keys',
    'select_channels', 'select_masks', 'shape_mismatches', 'slim_channels',
    'snip_scores', 'sparsity_stats', 'synflow_scores'
]
