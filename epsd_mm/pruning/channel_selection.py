"""Turn channel scores into keep-masks at a target channel sparsity."""
from typing import Dict, Mapping, Optional

from torch import Tensor

from .selection import select_masks

_NORMALIZERS = (None, 'mean')


def _normalized(score: Tensor, normalize: Optional[str]) -> Tensor:
    if normalize is None:
        return score
    mean = score.mean()
    return score / mean if mean > 0 else score


def select_channels(scores: Mapping[str, Tensor],
                    sparsity: float,
                    selection: str = 'global',
                    normalize: Optional[str] = None,
                    min_density: float = 0.0) -> Dict[str, Tensor]:
    """Keep the highest-scored channels, removing a fraction ``sparsity``.

    Channels are counted per group: a channel shared by several coupled
    layers (e.g. a residual stream) counts once. The selection itself is
    :func:`~epsd_mm.pruning.select_masks` on the 1-D scores (global or
    layer-wise top-k, deterministic ties, the ``min_density`` floor and the
    error for a group left without channels).

    Scores are compared across groups as they are (``normalize=None``): the
    gradient criteria estimate the change of the loss when a channel is
    removed, which is comparable between groups of any size. Magnitude
    scores are not (a filter's L1 norm grows with its fan-in and a group's
    with its number of coupled layers); ``normalize='mean'`` divides each
    group's scores by their mean first, so global selection compares
    channels relative to their own group.

    Args:
        scores (Mapping[str, Tensor]): 1-D score per group name, e.g. from
            :func:`~.criteria.compute_channel_scores`.
        sparsity (float): Fraction of channels removed, in ``[0, 1)``.
        selection (str): ``'global'`` or ``'layerwise'`` (per group).
            Defaults to ``'global'``.
        normalize (str, optional): None or ``'mean'``; see above. Defaults
            to None.
        min_density (float): Per-group floor of kept channels, in
            ``[0, 1]``. Defaults to 0.0 (no floor: an emptied group raises).

    Returns:
        dict[str, Tensor]: Bool keep-mask (True = kept) per group name,
        shaped and placed like its scores. Plain tensors, so a distributed
        caller can broadcast rank 0's choice.
    """
    if normalize not in _NORMALIZERS:
        raise ValueError(
            f'normalize must be one of {_NORMALIZERS}, got {normalize!r}')
    bad_shape = [name for name, s in scores.items() if s.dim() != 1]
    if bad_shape:
        raise ValueError(
            f"channel scores must be 1-D (one per channel), got shapes "
            f"{[tuple(scores[n].shape) for n in bad_shape]} for "
            f"{', '.join(bad_shape)}; use select_masks for weight scores")
    ranked = {
        name: _normalized(s.detach(), normalize)
        for name, s in scores.items()
    }
    return select_masks(
        ranked,
        sparsity,
        selection=selection,
        min_density=min_density,
        unit='channel')


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
