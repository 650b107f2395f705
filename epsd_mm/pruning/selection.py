"""Turn scores into keep-masks at a target sparsity."""
import math
from functools import reduce
from typing import Dict, Mapping

import torch
from torch import Tensor

SELECTIONS = ('global', 'layerwise')
_ON_COLLAPSE = ('error', 'allow')


def check_sparsity(sparsity: float) -> float:
    """Validate a target sparsity.

    Args:
        sparsity (float): Fraction of prunable weights set to zero.

    Returns:
        float: The sparsity.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(
            f'sparsity must be in [0, 1), got {sparsity}; 0.9 keeps 10% of '
            'prunable weights')
    return float(sparsity)


def kept_count(sparsity: float, numel: int) -> int:
    """Number of weights kept out of ``numel``: ``round((1-s) * numel)``."""
    return int(round((1.0 - sparsity) * numel))


def _top_k(flat: Tensor, k: int) -> Tensor:
    """Bool mask of the ``k`` highest entries of a 1-D tensor.

    Ties are broken deterministically: among equal scores the earlier
    position is kept.
    """
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        order = torch.sort(flat, descending=True, stable=True).indices
        keep[order[:k]] = True
    return keep


def _global_masks(scores: Mapping[str, Tensor],
                  sparsity: float,
                  min_density: float = 0.0,
                  unit: str = 'weight') -> Dict[str, Tensor]:
    """One top-k over all layers; with a floor, every layer first keeps its
    best ``max(1, ceil(min_density * n_l))`` and the rest of the budget goes
    to the highest-scored remaining entries, so the total is still exact."""
    dtype = reduce(torch.promote_types, (s.dtype for s in scores.values()))
    device = next(iter(scores.values())).device
    flat = torch.cat(
        [s.detach().flatten().to(device, dtype) for s in scores.values()])
    sizes = [s.numel() for s in scores.values()]
    budget = kept_count(sparsity, flat.numel())
    if min_density > 0:
        floors = [max(1, math.ceil(min_density * n)) for n in sizes]
        if sum(floors) > budget:
            raise ValueError(
                f'min_density={min_density} keeps at least {sum(floors)} '
                f'{unit}s (a floor in each of {len(sizes)} layers), more '
                f'than the {budget} that sparsity {sparsity} keeps in total; '
                'lower min_density or the sparsity.')
        keep = torch.cat([
            _top_k(chunk, floor)
            for chunk, floor in zip(flat.split(sizes), floors)
        ])
        order = torch.sort(flat, descending=True, stable=True).indices
        rest = order[~keep[order]]
        keep[rest[:budget - sum(floors)]] = True
    else:
        keep = _top_k(flat, budget)
    return {
        name: chunk.view(s.shape).to(s.device)
        for (name, s), chunk in zip(scores.items(), keep.split(sizes))
    }


def select_masks(scores: Mapping[str, Tensor],
                 sparsity: float,
                 selection: str = 'global',
                 min_density: float = 0.0,
                 on_collapse: str = 'error',
                 unit: str = 'weight') -> Dict[str, Tensor]:
    """Keep the highest-scored weights, pruning a fraction ``sparsity``.

    With ``selection='global'`` exactly ``round((1 - sparsity) * N)`` of all
    ``N`` scored weights are kept (one top-k over all layers); with
    ``'layerwise'`` every layer keeps ``round((1 - sparsity) * n_l)`` of its
    own ``n_l`` weights. Among equal scores the weight that comes first (in
    the order of ``scores``, then in flattened order) is kept, so the result
    is deterministic.

    A layer keeping no weight at all (layer collapse) cuts the network. With
    ``min_density > 0`` every layer keeps at least
    ``max(1, ceil(min_density * n_l))`` of its highest-scored weights. Global
    selection still keeps exactly the target count (the floors first, the
    rest of the budget by score; an error if the floors alone exceed it);
    layer-wise selection keeps the floor where it exceeds the layer's share,
    so its total may exceed the target. Otherwise
    ``on_collapse='error'`` raises and ``'allow'`` returns the collapsed
    masks.

    Args:
        scores (Mapping[str, Tensor]): Score per weight name, e.g. from
            :func:`~epsd_mm.pruning.compute_scores`.
        sparsity (float): Fraction of scored weights set to zero, in
            ``[0, 1)``.
        selection (str): ``'global'`` or ``'layerwise'``. Defaults to
            ``'global'``.
        min_density (float): Per-layer floor of kept weights, in ``[0, 1]``.
            Defaults to 0.0 (no floor).
        on_collapse (str): ``'error'`` or ``'allow'``; what to do when a
            layer would keep nothing and there is no floor. Defaults to
            ``'error'``.
        unit (str): What one score stands for, in error messages
            (``'weight'``, ``'channel'``). Defaults to ``'weight'``.

    Returns:
        dict[str, Tensor]: Bool keep-mask (True = kept) per weight name,
        shaped and placed like its score.

    Raises:
        ValueError: On invalid arguments, non-finite scores or (with
            ``on_collapse='error'``) a collapsed layer.
    """
    check_sparsity(sparsity)
    if selection not in SELECTIONS:
        raise ValueError(
            f'selection must be one of {SELECTIONS}, got {selection!r}')
    if on_collapse not in _ON_COLLAPSE:
        raise ValueError(
            f'on_collapse must be one of {_ON_COLLAPSE}, got {on_collapse!r}')
    if not 0.0 <= min_density <= 1.0:
        raise ValueError(f'min_density must be in [0, 1], got {min_density}')
    if not scores:
        raise ValueError('scores is empty: there is nothing to prune')
    bad = [name for name, s in scores.items() if not torch.isfinite(s).all()]
    if bad:
        raise ValueError(
            f"scores are NaN or infinite in {len(bad)} layer(s): "
            f"{', '.join(bad)}. The scoring loss probably diverged: check "
            'that the loss is finite on the scoring batches, lower the inner '
            'lr or use fewer num_steps (prospr), or compute in float64 '
            '(synflow).')

    if selection == 'global':
        masks = _global_masks(scores, sparsity, min_density, unit)
    else:
        masks = {
            name: _top_k(s.detach().flatten(),
                         kept_count(sparsity, s.numel())).view(s.shape)
            for name, s in scores.items()
        }

    if min_density > 0:
        for name, s in scores.items():
            floor = max(1, math.ceil(min_density * s.numel()))
            if masks[name].sum() < floor:
                masks[name] = _top_k(s.detach().flatten(),
                                     floor).view(s.shape)
    elif on_collapse == 'error':
        collapsed = [name for name, m in masks.items() if not m.any()]
        if collapsed:
            raise ValueError(
                f'sparsity {sparsity} prunes every {unit} of '
                f"{len(collapsed)} layer(s): {', '.join(collapsed)}. Keep a "
                'floor per layer with min_density (e.g. min_density=0.01), '
                "use selection='layerwise' (every layer keeps the same "
                'fraction), or lower the sparsity.')
    return masks
