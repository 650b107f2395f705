"""Framework-free pruning core of epsd_mm (plain PyTorch).

Prune a model before training with EPSD (ProsPr on any loss)::

    pruner = WeightPruner(sparsity=0.9, criterion='prospr', scopes='backbone')
    report = pruner.prune(model, loss_fn, batches)
    register_mask_enforcement(optimizer, model)  # pruned weights stay zero
    print(report.summary())

or remove whole channels (torch-pruning groups the coupled ones)::

    pruner = ChannelPruner(sparsity=0.5, criterion='prospr')
    report = pruner.prune(model, loss_fn, batches)

``loss_fn(model, batch)`` returns a scalar loss; it may call any method of
the model. Criteria are registered classes (:data:`CRITERIA`), built from a
name or a config dict; the lower-level steps (:func:`compute_scores`,
:func:`select_masks`, :func:`apply_masks`, :class:`ChannelGraph`,
:func:`slim_channels`, ...) are public too. :class:`PruningRecord` is what a
checkpoint records about its pruning. Nothing here imports MMEngine, mmseg
or mmdet; torch-pruning only when channels are pruned.
"""
from .channel_selection import channel_sparsity, select_channels
from .channels import ChannelGraph, ChannelGroup, ChannelMember
from .criteria import (CRITERIA, FORCE, NTKSAP, PHEW, Criterion,
                       CriterionRegistry, GraSP, Magnitude, ProsPr, Random,
                       ScoringInputs, SNIP, SynFlow, build_criterion,
                       compute_channel_scores, compute_scores, force_scores,
                       grasp_scores, magnitude_scores, ntk_sap_scores,
                       phew_scores, prospr_meta_gradients, prospr_scores,
                       random_scores, snip_saliency, snip_scores,
                       synflow_scores)
from .functional import first_sample
from .masks import (LEGACY_MASK_SUFFIX, MASK_SUFFIX, apply_masks,
                    attach_mask_buffers, check_masked_state_dict,
                    enforce_masks, get_masks, load_masks_with_state_dict,
                    masked_param_names, register_mask_enforcement,
                    remove_masks, rename_legacy_mask_keys)
from .params import PRUNABLE_WEIGHTS, normalize_scopes, prunable_parameters
from .pruner import (PRUNERS, ChannelPruner, Pruner, PruningReport,
                     WeightPruner, build_pruner)
from .record import RECORD_KEY, PruningRecord, to_plain
from .score_cache import ScoreCache
from .selection import (SELECTIONS, check_floors_fit, check_selection,
                        check_sparsity, select_masks)
from .slimming import (check_slim_spec, check_state_dict_shapes,
                       compose_slim_specs, format_slim_table, get_slim_spec,
                       layer_channels, rebind_optimizer, rebuild_slim,
                       is_narrower, shape_mismatches, slim_channels)
from .stats import (LayerSparsity, format_sparsity_table, overall_sparsity,
                    sparsity_stats)

__all__ = [
    'CRITERIA', 'FORCE', 'NTKSAP', 'PHEW', 'force_scores', 'ntk_sap_scores',
    'phew_scores', 'ChannelGraph', 'ChannelGroup', 'ChannelMember',
    'ChannelPruner', 'Criterion', 'CriterionRegistry', 'GraSP',
    'LEGACY_MASK_SUFFIX', 'LayerSparsity', 'MASK_SUFFIX', 'Magnitude',
    'PRUNABLE_WEIGHTS', 'PRUNERS', 'ProsPr', 'Pruner', 'PruningRecord',
    'PruningReport', 'RECORD_KEY', 'Random', 'SELECTIONS', 'SNIP',
    'ScoreCache', 'ScoringInputs', 'SynFlow', 'WeightPruner', 'apply_masks',
    'attach_mask_buffers', 'build_criterion', 'build_pruner',
    'channel_sparsity', 'check_floors_fit', 'check_masked_state_dict',
    'check_selection', 'check_slim_spec', 'check_sparsity',
    'check_state_dict_shapes', 'compose_slim_specs',
    'compute_channel_scores', 'compute_scores', 'enforce_masks', 'first_sample',
    'format_slim_table', 'format_sparsity_table', 'get_masks',
    'get_slim_spec', 'grasp_scores', 'layer_channels',
    'load_masks_with_state_dict', 'magnitude_scores', 'masked_param_names',
    'normalize_scopes', 'overall_sparsity', 'prospr_meta_gradients',
    'prospr_scores', 'prunable_parameters', 'random_scores',
    'rebind_optimizer', 'rebuild_slim', 'register_mask_enforcement',
    'remove_masks', 'rename_legacy_mask_keys', 'select_channels',
    'is_narrower', 'select_masks', 'shape_mismatches', 'slim_channels', 'snip_saliency',
    'snip_scores', 'sparsity_stats', 'synflow_scores', 'to_plain'
]
