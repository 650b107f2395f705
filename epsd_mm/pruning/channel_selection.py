"""Turn channel scores into keep-masks at a target channel sparsity."""
from numbers import Integral
from typing import Dict, Mapping, Optional

import torch
from torch import Tensor

from .selection import select_masks

_NORMALIZERS = (None, 'mean')


def _normalized(score: Tensor, normalize: Optional[str]) -> Tensor:
    if normalize is None:
        return score
    mean = score.mean()
    return score / mean if mean > 0 else score


def check_round_to(round_to: int) -> int:
    """Validate the channel multiple of :func:`select_channels`."""
    if (isinstance(round_to, bool) or not isinstance(round_to, Integral)
            or round_to < 1):
        raise ValueError(
            f'round_to must be a positive integer, got {round_to!r} (16 '
            'keeps every channel group at a multiple of 16 channels; 1 '
            'does not round)')
    return int(round_to)


def _blocks(score: Tensor, round_to: int) -> list:
    """A group's channel indices, best first, in blocks of ``round_to``
    (the last one shorter when the group is not a multiple)."""
    order = torch.sort(score, descending=True, stable=True).indices
    return list(order.split(round_to))


def _select_blocks(ranked: Mapping[str, Tensor], sparsity: float,
                   selection: str, min_density: float,
                   round_to: int) -> Dict[str, Tensor]:
    """:func:`select_masks` on blocks of each group's best channels, scored
    by their mean: every group keeps a prefix of its blocks."""
    blocks = {name: _blocks(s, round_to) for name, s in ranked.items()}
    block_scores = {
        name: torch.stack([ranked[name][b].mean() for b in group])
        for name, group in blocks.items()
    }
    kept_blocks = select_masks(
        block_scores,
        sparsity,
        selection=selection,
        min_density=min_density,
        unit=f'{round_to}-channel block')
    keep = {}
    for name, group in blocks.items():
        mask = torch.zeros_like(ranked[name], dtype=torch.bool)
        for block, kept in zip(group, kept_blocks[name].tolist()):
            mask[block] = kept
        keep[name] = mask
    return keep


def select_channels(scores: Mapping[str, Tensor],
                    sparsity: float,
                    selection: str = 'global',
                    normalize: Optional[str] = None,
                    min_density: float = 0.0,
                    round_to: int = 1) -> Dict[str, Tensor]:
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

    Inference engines compute channels in blocks (onnxruntime's CPU
    convolutions in blocks of 16 on AVX-512 machines, 8 on AVX2), so a
    layer with 45 channels runs as slowly as one with 48. With
    ``round_to > 1`` every group keeps a multiple of ``round_to`` channels
    (or all of them): each group's channels are ranked and cut into blocks
    of ``round_to`` (its best channels first), and whole blocks are
    selected by their mean score, globally or per group as above;
    ``sparsity`` and ``min_density`` then count blocks. The channel
    sparsity reached differs from ``sparsity`` where groups are not
    multiples of ``round_to`` (:func:`channel_sparsity` tells).

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
        round_to (int): Keep a multiple of this many channels per group;
            see above. Defaults to 1 (no rounding).

    Returns:
        dict[str, Tensor]: Bool keep-mask (True = kept) per group name,
        shaped and placed like its scores. Plain tensors, so a distributed
        caller can broadcast rank 0's choice.
    """
    round_to = check_round_to(round_to)
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
    if round_to > 1:
        return _select_blocks(ranked, sparsity, selection, min_density,
                              round_to)
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
