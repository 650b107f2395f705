"""Fold the keep-masks of a pruned state dict into its weights."""
from collections import OrderedDict
from typing import Dict, Mapping, Tuple

from torch import Tensor

from epsd_mm.pruning import MASK_SUFFIX, masked_param_names


def fold_masks(
    state_dict: Mapping[str, Tensor],
    require_masks: bool = True
) -> Tuple['OrderedDict[str, Tensor]', Dict[str, Tensor]]:
    """Multiply every mask into its weight and drop the mask entries.

    Pruned entries become exactly ``+0.0`` (``masked_fill``, so neither the
    sign of a negative weight nor a NaN survives as ``-0.0``/NaN), which
    makes the folded weights a pure function of kept values and masks.

    Args:
        state_dict (Mapping[str, Tensor]): A pruned model's state dict, e.g.
            ``checkpoint['state_dict']`` of a run with a pruning hook.
        require_masks (bool): Refuse a state dict without masks. Defaults
            to True; False for channel-pruned checkpoints, pruned without
            masks.

    Returns:
        tuple: The folded state dict (same order, no mask entries) and the
        bool keep-mask of every folded weight, by parameter name.

    Raises:
        ValueError: If the state dict holds no masks (and
            ``require_masks``), or a mask's shape
            differs from its weight's.
    """
    names = masked_param_names(state_dict)
    if not names and require_masks:
        raise ValueError(
            f'the state dict holds no masks (no "*{MASK_SUFFIX}" entries): '
            'it is not a pruned model. Pass a checkpoint written by a run '
            'with a pruning hook (e.g. EarlyPruningHook in default_hooks).')
    masks = {name: state_dict[name + MASK_SUFFIX].bool() for name in names}
    for name, mask in masks.items():
        if mask.shape != state_dict[name].shape:
            raise ValueError(
                f'mask {name + MASK_SUFFIX!r} has shape {tuple(mask.shape)} '
                f'but {name!r} has {tuple(state_dict[name].shape)}; the '
                'checkpoint is corrupted or was edited by hand.')
    mask_keys = {name + MASK_SUFFIX for name in names}
    folded = OrderedDict()
    for key, value in state_dict.items():
        if key in mask_keys:
            continue
        folded[key] = (
            value.masked_fill(~masks[key], 0) if key in masks else value)
    return folded, masks
