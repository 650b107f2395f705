"""Turn scores into keep-masks at a target sparsity."""
import math
from functools import reduce
from numbers import Real
from typing import Dict, Mapping, Optional, Sequence

import torch
from torch import Tensor

SELECTIONS = ('global', 'layerwise')
_ON_COLLAPSE = ('error', 'allow')


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_sparsity(sparsity: float) -> float:
    """Validate a target sparsity.

    Args:
        sparsity (float): Fraction of prunable weights set to zero.

    Returns:
        float: The sparsity.
    """
    if not _is_number(sparsity) or not 0.0 <= sparsity < 1.0:
        raise ValueError(
            f'sparsity must be in [0, 1), got {sparsity!r}; 0.9 '
            'keeps 10% of prunable weights')
    return float(sparsity)


def check_selection(sparsity: float,
                    selection: str = 'global',
                    min_density: float = 0.0) -> None:
    """Validate the arguments of :func:`select_masks` (types and ranges).

    Args:
        sparsity (float): Target sparsity, in ``[0, 1)``.
        selection (str): ``'global'`` or ``'layerwise'``.
        min_density (float): Per-layer floor, in ``[0, 1]``.
    """
    check_sparsity(sparsity)
    if selection not in SELECTIONS:
        raise ValueError(
            f'selection must be one of {SELECTIONS}, got {selection!r}')
    if not _is_number(min_density) or not 0.0 <= min_density <= 1.0:
        raise ValueError(
            f'min_density must be in [0, 1], got {min_density!r} '
            '(0.01 keeps at least 1% of every layer)')


def kept_count(sparsity: float, numel: int) -> int:
    """Number of weights kept out of ``numel``: ``round((1-s) * numel)``."""
    return int(round((1.0 - sparsity) * numel))


def floor_counts(sizes: Sequence[int], min_density: float) -> int:
    """Entries the per-layer floors keep: ``sum max(1, ceil(d * n_l))``."""
    return sum(max(1, math.ceil(min_density * n)) for n in sizes)


def fitting_min_density(sizes: Sequence[int],
                        sparsity: float) -> Optional[float]:
    """The largest ``min_density`` (3 significant digits, rounded down)
    whose floors fit in the budget that ``sparsity`` keeps.

    Args:
        sizes (Sequence[int]): Entries per layer.
        sparsity (float): The target sparsity.

    Returns:
        float | None: The floor, or None if not even one entry per layer
        fits.
    """
    budget = kept_count(sparsity, sum(sizes))
    if len(sizes) > budget:
        return None
    low, high = 0.0, 1.0
    for _ in range(50):
        mid = (low + high) / 2
        if floor_counts(sizes, mid) <= budget:
            low = mid
        else:
            high = mid
    if low <= 0:
        return None
    digits = 2 - math.floor(math.log10(low))
    return math.floor(low * 10**digits) / 10**digits


def max_sparsity_with_one_each(sizes: Sequence[int]) -> float:
    """The highest sparsity (rounded down to 4 digits) at which global
    selection can still keep one entry in every layer."""
    total = sum(sizes)
    sparsity = math.floor((1.0 - len(sizes) / total) * 1e4) / 1e4
    while sparsity > 0 and kept_count(sparsity, total) < len(sizes):
        sparsity = round(sparsity - 1e-4, 4)
    return max(sparsity, 0.0)


def check_floors_fit(sizes: Sequence[int],
                     sparsity: float,
                     min_density: float,
                     unit: str = 'weight') -> None:
    """Refuse floors that keep more than the budget of ``sparsity``.

    Computable from the layer sizes alone, so callers run it before any
    scoring. Only global selection is bound by the budget.

    Args:
        sizes (Sequence[int]): Entries per layer.
        sparsity (float): The target sparsity.
        min_density (float): The per-layer floor (0: no floor).
        unit (str): What one entry is, in the message. Defaults to
            ``'weight'``.
    """
    if min_density <= 0:
        return
    budget = kept_count(sparsity, sum(sizes))
    floors = floor_counts(sizes, min_density)
    if floors > budget:
        raise ValueError(
            f'min_density={min_density} keeps at least {floors} {unit}s (a '
            f'floor in each of {len(sizes)} layers), more than the {budget} '
            f'that sparsity {sparsity} keeps in total; '
            + _fixes(sizes, sparsity, 'global', exclude_floor=False))


def _fixes(sizes: Sequence[int], sparsity: float, selection: str,
           exclude_floor: bool = True) -> str:
    """Suggestions that work for these layer sizes, as a sentence."""
    fixes = []
    floor = fitting_min_density(sizes, sparsity)
    if floor is not None:
        fixes.append(f'min_density={floor} (the largest floor that fits)'
                     if not exclude_floor else f'min_density={floor}')
    if selection != 'layerwise':
        fixes.append("selection='layerwise' (every layer keeps the same "
                     'fraction)')
    fixes.append('a sparsity of at most '
                 f'{max_sparsity_with_one_each(sizes)}' if floor is None
                 else 'a lower sparsity')
    return 'use ' + ', or '.join(fixes) + '.'


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
        check_floors_fit(sizes, sparsity, min_density, unit)
        floors = [max(1, math.ceil(min_density * n)) for n in sizes]
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


def tied_kept(scores: Mapping[str, Tensor],
              keep: Mapping[str, Tensor],
              selection: str = 'global') -> int:
    """How many kept entries the scores did not choose over pruned ones:
    at a keep boundary where kept and pruned entries share a score, tie
    order (position) picked ``min(kept, pruned)`` of them.

    The boundaries are each layer's (its lowest kept score against its own
    pruned entries: layer-wise quotas, ``min_density`` floors) and, for
    global selection, the model's (the lowest kept score of all layers
    against every pruned entry). Layers that score 0 everywhere are left
    out (the pruners report them on their own).

    Args:
        scores (Mapping[str, Tensor]): Scores per name, as selected.
        keep (Mapping[str, Tensor]): The bool keep-masks chosen from them.
        selection (str): ``'global'`` or ``'layerwise'``, as selected.
            Defaults to ``'global'``.

    Returns:
        int: Kept entries that position, not score, decided.
    """
    layers = [(s.detach(), keep[name]) for name, s in scores.items()
              if s.any() and keep[name].any()]
    if not layers:
        return 0
    lowest = min(float(s[k].min()) for s, k in layers)
    tied = 0
    for s, k in layers:
        floor = float(s[k].min())
        if selection == 'global' and floor == lowest:
            continue  # the model's boundary, counted once below
        tied += min(int((s[k] == floor).sum()), int((s[~k] == floor).sum()))
    if selection == 'global':
        tied += min(sum(int((s[k] == lowest).sum()) for s, k in layers),
                    sum(int((s[~k] == lowest).sum()) for s, k in layers))
    return tied


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
    check_selection(sparsity, selection, min_density)
    if on_collapse not in _ON_COLLAPSE:
        raise ValueError(
            f'on_collapse must be one of {_ON_COLLAPSE}, got {on_collapse!r}')
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
            sizes = [s.numel() for s in scores.values()]
            raise ValueError(
                f'sparsity {sparsity} prunes every {unit} of '
                f"{len(collapsed)} layer(s): {', '.join(collapsed)}. Keep a "
                'floor per layer: ' + _fixes(sizes, sparsity, selection))
    return masks
