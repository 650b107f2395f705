"""Turn channel scores into keep-masks at a target channel sparsity."""
import math
from functools import reduce
from typing import Dict, Mapping, Optional

import torch
from torch import Tensor

from .selection import check_sparsity, kept_count

_SCOPES = ('global', 'layerwise')
_NORMALIZERS = (None, 'mean')


def _top_k(flat: Tensor, k: int) -> Tensor:
    """Bool mask of the ``k`` highest entries; earlier wins among ties."""
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    order = torch.sort(flat, descending=True, stable=True).indices
    keep[order[:k]] = True
    return keep


def _normalized(score: Tensor, normalize: Optional[str]) -> Tensor:
    if normalize is None:
        return score
    mean = score.mean()
    return score / mean if mean > 0 else score


def select_channels(scores: Mapping[str, Tensor],
                    sparsity: float,
                    scope: str = 'global',
                    normalize: Optional[str] = None,
                    min_density: float = 0.0) -> Dict[str, Tensor]:
    """Keep the highest-scored channels, removing a fraction ``sparsity``.

    Channels are counted per group: a channel shared by several coupled
    layers (e.g. a residual stream) counts once. With ``scope='global'``
    exactly ``round((1 - sparsity) * N)`` of all ``N`` channels are kept (one
    top-k over all groups); with ``'layerwise'`` every group keeps
    ``round((1 - sparsity) * n_g)`` of its own ``n_g``. Among equal scores
    the channel that comes first (in the order of ``scores``, then by index)
    is kept, so the result is deterministic.

    Scores are compared across groups as they are (``normalize=None``): the
    gradient criteria estimate the change of the loss when a channel is
    removed, which is comparable between groups of any size. Magnitude
    scores are not (a filter's L1 norm grows with its fan-in and a group's
    with its number of coupled layers); ``normalize='mean'`` divides each
    group's scores by their mean first, so global selection compares
    channels relative to their own group.

    A group keeping no channel would cut the network, so that is an error
    unless ``min_density > 0``, which makes every group keep at least
    ``max(1, ceil(min_density * n_g))`` of its highest-scored channels (the
    total kept may then exceed the target slightly).

    Args:
        scores (Mapping[str, Tensor]): 1-D score per group name, e.g. from
            :func:`~.channel_scores.compute_channel_scores`.
        sparsity (float): Fraction of channels removed, in ``[0, 1)``.
        scope (str): ``'global'`` or ``'layerwise'``. Defaults to
            ``'global'``.
        normalize (str, optional): None or ``'mean'``; see above. Defaults
            to None.
        min_density (float): Per-group floor of kept channels, in
            ``[0, 1]``. Defaults to 0.0 (no floor: an emptied group raises).

    Returns:
        dict[str, Tensor]: Bool keep-mask (True = kept) per group name,
        shaped and placed like its scores. Plain tensors, so a distributed
        caller can broadcast rank 0's choice.

    Raises:
        ValueError: On invalid arguments, non-finite scores or a group that
            would keep no channel.
    """
    check_sparsity(sparsity)
    if scope not in _SCOPES:
        raise ValueError(f'scope must be one of {_SCOPES}, got {scope!r}')
    if normalize not in _NORMALIZERS:
        raise ValueError(
            f'normalize must be one of {_NORMALIZERS}, got {normalize!r}')
    if not 0.0 <= min_density <= 1.0:
        raise ValueError(f'min_density must be in [0, 1], got {min_density}')
    if not scores:
        raise ValueError('scores is empty: there is no channel to prune')
    bad_shape = [name for name, s in scores.items() if s.dim() != 1]
    if bad_shape:
        raise ValueError(
            f"channel scores must be 1-D (one per channel), got shapes "
            f"{[tuple(scores[n].shape) for n in bad_shape]} for "
            f"{', '.join(bad_shape)}; use select_masks for weight scores")
    bad = [name for name, s in scores.items() if not torch.isfinite(s).all()]
    if bad:
        raise ValueError(
            f"channel scores are NaN or infinite in {len(bad)} group(s): "
            f"{', '.join(bad)}. The scoring loss probably diverged: check "
            'that the loss is finite on the scoring batches, or lower the '
            'inner lr or num_steps (prospr).')

    ranked = {
        name: _normalized(s.detach(), normalize)
        for name, s in scores.items()
    }
    if scope == 'global':
        dtype = reduce(torch.promote_types, (s.dtype for s in ranked.values()))
        device = next(iter(ranked.values())).device
        flat = torch.cat([s.to(device, dtype) for s in ranked.values()])
        keep = _top_k(flat, kept_count(sparsity, flat.numel()))
        sizes = [s.numel() for s in ranked.values()]
        masks = {
            name: chunk.to(s.device)
            for (name, s), chunk in zip(ranked.items(), keep.split(sizes))
        }
    else:
        masks = {
            name: _top_k(s, kept_count(sparsity, s.numel()))
            for name, s in ranked.items()
        }

    if min_density > 0:
        for name, s in ranked.items():
            floor = max(1, math.ceil(min_density * s.numel()))
            if masks[name].sum() < floor:
                masks[name] = _top_k(s, floor)
    else:
        emptied = [name for name, m in masks.items() if not m.any()]
        if emptied:
            raise ValueError(
                f'channel sparsity {sparsity} removes every channel of '
                f"{len(emptied)} group(s): {', '.join(emptied)}. Lower the "
                "sparsity, use scope='layerwise', or keep a floor per group "
                'with min_density (e.g. min_density=0.05).')
    return masks


def channel_sparsity(keep: Mapping[str, Tensor]) -> float:
    """Fraction of channels removed by keep-masks (counted per group).

    Args:
        keep (Mapping[str, Tensor]): Bool keep-mask per group name.

    Returns:
        float: Removed channels over all channels.
    """
    total = sum(m.numel() for m in keep.values())
    kept = sum(int(m.sum()) for m in keep.values())
    return 1.0 - kept / total if total else 0.0
