"""Channel criteria: one score per output channel of every channel group.

A channel is silenced by one mask ``m_c`` that multiplies every entry the
channel owns in its group (see :class:`~.channels.ChannelMember`): the
filters of all coupled Conv/Linear layers, their biases, and the weight and
bias of the norm layers after them. The gradient criteria score a channel by
that mask's gradient, which by the chain rule is the sum of the element-wise
mask gradients over the channel's entries. Taking the norm layers' entries
in matters: with train-mode BatchNorm after a conv, the conv's output is
invariant to the scale of its filter, so the filter's own share of the sum
is ~0 and the signal sits in the BatchNorm's weight and bias.

Every scorer returns ``{group name: 1-D tensor of num_channels}``; higher
scores are kept by :func:`~.channel_selection.select_channels`.
"""
import inspect
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

import torch
import torch.nn as nn
from torch import Tensor

from .channels import ChannelGraph, ChannelGroup
from .criteria import reject_unknown_options
from .criteria.prospr import prospr_meta_gradients
from .functional import Progress, as_batch_list

LossFn = Callable[[nn.Module, Any], Tensor]
ChannelScores = Dict[str, Tensor]


def channel_sums(values: Mapping[str, Tensor],
                 group: ChannelGroup,
                 filters_only: bool = False) -> Tensor:
    """Sum element-wise values over each channel's entries.

    Args:
        values (Mapping[str, Tensor]): Tensor per parameter name, shaped
            like the parameter (e.g. signed ``dL/dm`` of element-wise masks).
        group (ChannelGroup): The group.
        filters_only (bool): Only sum over Conv/Linear weights. Defaults to
            False.

    Returns:
        Tensor: ``(num_channels,)`` sums, in the values' dtype.
    """
    members = [m for m in group.members if m.is_filter or not filters_only]
    if not members:
        what = 'filters' if filters_only else 'parameter entries'
        raise ValueError(
            f'channel group {group.name!r} has no {what} to score')
    first = values[members[0].param]
    total = torch.zeros(
        group.num_channels, dtype=first.dtype, device=first.device)
    for member in members:
        value = values[member.param].movedim(member.dim, 0)
        positions = torch.tensor(member.positions, device=value.device)
        channels = torch.tensor(member.channels, device=total.device)
        per_position = value[positions].reshape(len(positions), -1).sum(1)
        total.index_add_(0, channels, per_position.to(total))
    return total


def _per_group(graph: ChannelGraph, values: Mapping[str, Tensor],
               filters_only: bool = False) -> ChannelScores:
    return {
        name: channel_sums(values, group, filters_only)
        for name, group in graph.groups.items()
    }


def channel_mask_gradients(graph: ChannelGraph,
                           loss_fn: LossFn,
                           batches: Iterable[Any],
                           num_steps: int = 3,
                           lr: float = 0.1,
                           momentum: float = 0.0,
                           first_order: bool = False,
                           progress: Optional[Progress] = None
                           ) -> ChannelScores:
    """Signed meta-gradient ``dL(w_M)/dm_c`` of every channel mask.

    The element-wise meta-gradients of
    :func:`~epsd_mm.pruning.criteria.prospr.prospr_meta_gradients` on all
    parameters of the groups, summed over each channel's entries. With
    ``num_steps=0`` it is ``sum_e w_e * dL/dw_e`` over the channel's entries
    on ``batches[0]``.

    Args:
        graph (ChannelGraph): The groups of the (dense) model.
        loss_fn (Callable): ``loss_fn(model, batch) -> scalar tensor``.
        batches (Iterable): Batches passed to ``loss_fn``.
        num_steps (int): Inner SGD steps ``M``. Defaults to 3.
        lr (float): Inner learning rate. Defaults to 0.1.
        momentum (float): Inner SGD momentum. Defaults to 0.0.
        first_order (bool): Detach the inner gradients. Defaults to False.
        progress (Callable, optional): ``progress(message, fraction)``
            after every ``loss_fn`` call. Defaults to None.

    Returns:
        dict[str, Tensor]: Signed gradient per channel, by group name.
    """
    graph.check_not_slimmed()
    grads = prospr_meta_gradients(
        graph.model,
        loss_fn,
        batches,
        graph.parameters(),
        num_steps,
        lr,
        momentum,
        first_order,
        progress=progress)
    return _per_group(graph, grads)


def channel_prospr_scores(graph: ChannelGraph,
                          loss_fn: LossFn,
                          batches: Iterable[Any],
                          num_steps: int = 3,
                          lr: float = 0.1,
                          momentum: float = 0.0,
                          first_order: bool = False,
                          progress: Optional[Progress] = None
                          ) -> ChannelScores:
    """ProsPr channel scores ``|dL(w_M)/dm_c|`` (structured EPSD).

    The absolute value of :func:`channel_mask_gradients`; see there for the
    arguments.

    Returns:
        dict[str, Tensor]: Non-negative score per channel, by group name.
    """
    grads = channel_mask_gradients(graph, loss_fn, batches, num_steps, lr,
                                   momentum, first_order, progress)
    return {name: g.abs() for name, g in grads.items()}


def channel_snip_scores(graph: ChannelGraph,
                        loss_fn: LossFn,
                        batches: Iterable[Any],
                        progress: Optional[Progress] = None
                        ) -> ChannelScores:
    """SNIP channel scores ``|dL/dm_c|`` at the current weights.

    ``dL/dm_c = sum_e w_e * dL/dw_e`` over the channel's entries, with the
    gradient summed over all ``batches`` (so on one batch it equals
    :func:`channel_prospr_scores` with ``num_steps=0``).

    Args:
        graph (ChannelGraph): The groups of the (dense) model.
        loss_fn (Callable): ``loss_fn(model, batch) -> scalar tensor``.
        batches (Iterable): Batches passed to ``loss_fn``.
        progress (Callable, optional): ``progress(message, fraction)``
            after every batch. Defaults to None.

    Returns:
        dict[str, Tensor]: Non-negative score per channel, by group name.
    """
    total: Optional[ChannelScores] = None
    batches = as_batch_list(batches)
    for i, batch in enumerate(batches, 1):
        grads = channel_mask_gradients(graph, loss_fn, [batch], num_steps=0)
        total = grads if total is None else {
            name: total[name] + g
            for name, g in grads.items()
        }
        if progress is not None:
            progress(f'gradient batch {i}/{len(batches)}', i / len(batches))
    return {name: g.abs() for name, g in total.items()}


def channel_magnitude_scores(graph: ChannelGraph) -> ChannelScores:
    """L1 norm of each channel's filters (the filter-pruning baseline).

    The score of a channel is the sum of the L1 norms of its filters over
    all coupled Conv/Linear layers of the group (biases and norm layers
    excluded); for a group of a single conv it is that filter's L1 norm.
    Not normalised: filters with a larger fan-in have larger norms, so
    compare groups with ``selection='layerwise'`` or ``normalize='mean'`` in
    :func:`~.channel_selection.select_channels`.

    Args:
        graph (ChannelGraph): The groups of the (dense) model.

    Returns:
        dict[str, Tensor]: Non-negative score per channel, by group name.
    """
    graph.check_not_slimmed()
    magnitudes = {
        name: p.detach().abs()
        for name, p in graph.parameters().items()
    }
    return _per_group(graph, magnitudes, filters_only=True)


def channel_random_scores(graph: ChannelGraph,
                          generator: Optional[torch.Generator] = None
                          ) -> ChannelScores:
    """Uniform random scores in ``[0, 1)``, one per channel.

    Args:
        graph (ChannelGraph): The groups of the (dense) model.
        generator (torch.Generator, optional): Source of randomness, for
            reproducible scores. Defaults to None (the global generator).

    Returns:
        dict[str, Tensor]: Float32 score per channel, by group name.
    """
    graph.check_not_slimmed()
    return {
        name: torch.rand(group.num_channels, generator=generator)
        for name, group in graph.groups.items()
    }


#: Channel criterion name to scoring function. A scoring function takes
#: ``graph`` and any of ``loss_fn``, ``batches``, ``progress`` (by these
#: names) plus its own keyword options, and returns one 1-D score tensor per
#: group.
CHANNEL_SCORERS: Dict[str, Callable[..., ChannelScores]] = {
    'prospr': channel_prospr_scores,
    'snip': channel_snip_scores,
    'magnitude': channel_magnitude_scores,
    'random': channel_random_scores,
}

#: How global selection compares a criterion's scores across groups (the
#: ``normalize`` of :func:`~.channel_selection.select_channels`). Criteria
#: not listed are compared as they are: the gradient criteria estimate the
#: loss change of removing a channel, comparable between groups. A filter's
#: L1 norm grows with its fan-in and a group's with its coupled layers, so
#: magnitude scores are compared relative to their group's mean.
CHANNEL_NORMALIZATION: Dict[str, Optional[str]] = {'magnitude': 'mean'}

_DATA_ARGS = ('loss_fn', 'batches')
_SHARED_ARGS = ('graph', 'progress') + _DATA_ARGS


def get_channel_scorer(criterion: str) -> Callable[..., ChannelScores]:
    """The scoring function of a channel criterion, or a fix-it error.

    Args:
        criterion (str): A key of :data:`CHANNEL_SCORERS`.

    Returns:
        Callable: The scoring function.
    """
    if criterion not in CHANNEL_SCORERS:
        raise ValueError(
            f'unknown channel criterion {criterion!r}; valid channel '
            f"criteria are: {', '.join(sorted(CHANNEL_SCORERS))} (grasp and "
            'synflow score weights only)')
    return CHANNEL_SCORERS[criterion]


def channel_criterion_options(criterion: str) -> Dict[str, Any]:
    """The keyword options of a channel criterion and their defaults.

    Args:
        criterion (str): A key of :data:`CHANNEL_SCORERS`.

    Returns:
        dict[str, Any]: Option name to default, ``graph``, ``loss_fn`` and
        ``batches`` excluded.
    """
    params = inspect.signature(get_channel_scorer(criterion)).parameters
    return {
        name: p.default
        for name, p in params.items()
        if name not in _SHARED_ARGS
    }


def check_channel_criterion_options(criterion: str,
                                    options: Mapping[str, Any]) -> None:
    """Reject options a channel criterion does not take, naming the valid
    ones.

    Args:
        criterion (str): A key of :data:`CHANNEL_SCORERS`.
        options (Mapping[str, Any]): Keyword options for it.
    """
    reject_unknown_options(f'channel criterion {criterion!r}', options,
                           channel_criterion_options(criterion))


def channel_criterion_needs_batches(criterion: str) -> bool:
    """Whether a channel criterion scores on data (needs ``loss_fn`` and
    ``batches``).

    Args:
        criterion (str): A key of :data:`CHANNEL_SCORERS`.

    Returns:
        bool: True for the gradient criteria, False for magnitude/random.
    """
    params = inspect.signature(get_channel_scorer(criterion)).parameters
    return 'batches' in params


def compute_channel_scores(graph: ChannelGraph,
                           loss_fn: Optional[LossFn] = None,
                           batches: Optional[Iterable[Any]] = None,
                           criterion: str = 'prospr',
                           progress: Optional[Progress] = None,
                           **criterion_kwargs: Any) -> ChannelScores:
    """Score every channel of ``graph`` with a criterion.

    ``magnitude`` and ``random`` ignore ``loss_fn`` and ``batches``. The
    model is left unchanged.

    Args:
        graph (ChannelGraph): The groups of the (dense) model.
        loss_fn (Callable, optional): ``loss_fn(model, batch) -> scalar
            tensor``, the scoring loss. Defaults to None.
        batches (Iterable, optional): Batches passed to ``loss_fn``.
            Defaults to None.
        criterion (str): A key of :data:`CHANNEL_SCORERS`. Defaults to
            ``'prospr'``.
        progress (Callable, optional): ``progress(message, fraction)``,
            passed to criteria that report progress. Defaults to None.
        **criterion_kwargs: Options of the criterion, e.g. ``num_steps``
            for ``'prospr'`` or ``generator`` for ``'random'``.

    Returns:
        dict[str, Tensor]: Detached 1-D score per group name
        (``num_channels`` entries each).
    """
    scorer = get_channel_scorer(criterion)
    check_channel_criterion_options(criterion, criterion_kwargs)
    wanted = inspect.signature(scorer).parameters
    available = dict(loss_fn=loss_fn, batches=batches)
    args = {}
    for name in _DATA_ARGS:
        if name in wanted:
            if available[name] is None:
                raise ValueError(
                    f'channel criterion {criterion!r} needs `{name}`, got '
                    'None')
            args[name] = available[name]
    if 'progress' in wanted and progress is not None:
        args['progress'] = progress
    scores = scorer(graph, **args, **criterion_kwargs)
    return {name: score.detach() for name, score in scores.items()}
