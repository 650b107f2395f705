"""Scoring criteria: registered classes (see :mod:`.base`) and the two
functional entry points, :func:`compute_scores` (weights) and
:func:`compute_channel_scores` (channels of a ChannelGraph)."""
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Union

import torch.nn as nn
from torch import Tensor

from ..functional import Progress
from ..params import Scopes, prunable_parameters
from .base import (CRITERIA, Criterion, CriterionRegistry, ScoringInputs,
                   build_criterion, data_free_criteria)
from .force import FORCE, force_scores
from .gradient import (GraSP, SNIP, grasp_scores, snip_saliency,
                       snip_scores)
from .ntk_sap import NTKSAP, ntk_sap_scores
from .phew import PHEW, phew_scores, trace_layer_graph
from .prospr import ProsPr, prospr_meta_gradients, prospr_scores
from .simple import Magnitude, Random, magnitude_scores, random_scores
from .synflow import SynFlow, synflow_scores

CriterionCfg = Union[str, Mapping[str, Any], Criterion]


def _inputs(model: nn.Module, loss_fn: Optional[Callable],
            batches: Optional[Iterable[Any]], **kwargs: Any) -> ScoringInputs:
    return ScoringInputs(
        model=model,
        loss_fn=loss_fn,
        batches=list(batches or ()) or None,
        **kwargs)


def compute_scores(model: nn.Module,
                   loss_fn: Optional[Callable[[nn.Module, Any],
                                              Tensor]] = None,
                   batches: Optional[Iterable[Any]] = None,
                   criterion: CriterionCfg = 'prospr',
                   params: Optional[Mapping[str, Tensor]] = None,
                   scopes: Scopes = ('backbone', ),
                   forward_fn: Optional[Callable[[nn.Module, Tensor],
                                                 Any]] = None,
                   sparsity: Optional[float] = None,
                   progress: Optional[Progress] = None,
                   **options: Any) -> Dict[str, Tensor]:
    """Score every prunable weight of ``model`` with a criterion.

    Higher scores are kept by :func:`~epsd_mm.pruning.select_masks`. The
    model is left unchanged.

    Args:
        model (nn.Module): The model.
        loss_fn (Callable, optional): ``loss_fn(model, batch) -> scalar
            tensor``, the scoring loss of data criteria. Defaults to None.
        batches (Iterable, optional): Batches passed to ``loss_fn``.
            Defaults to None.
        criterion (str | dict | Criterion): A name of :data:`CRITERIA`
            (``'prospr'``, ``'snip'``, ...), a config ``dict(type='ProsPr',
            num_steps=3)`` or a built criterion. Defaults to ``'prospr'``.
        params (Mapping[str, Tensor], optional): Prunable weights by name.
            Defaults to None (``prunable_parameters(model, scopes)``).
        scopes (str | Sequence[str]): Used when ``params`` is None.
            Defaults to ``('backbone',)``.
        forward_fn (Callable, optional): ``forward_fn(model, x)`` running
            the network on a plain input tensor, for data-free criteria
            (e.g. ``lambda m, x: m(x, mode='tensor')`` for mm models).
            Defaults to None (``model(x)``).
        sparsity (float, optional): The target sparsity, for criteria that
            schedule intermediate masks (iterative SynFlow). Defaults to
            None.
        progress (Callable, optional): ``progress(message, fraction)``,
            called by criteria that report progress. Defaults to None.
        **options: Options of the criterion, e.g. ``num_steps`` for
            ``'prospr'`` or ``input_shape`` for ``'synflow'``.

    Returns:
        dict[str, Tensor]: Detached score tensor per weight name, shaped
        like the weight.
    """
    scorer = build_criterion(criterion, **options)
    if params is None:
        params = prunable_parameters(model, scopes)
    scores = scorer.weight_scores(
        params,
        _inputs(model, loss_fn, batches, forward_fn=forward_fn,
                sparsity=sparsity, progress=progress))
    return {name: score.detach() for name, score in scores.items()}


def compute_channel_scores(graph,
                           loss_fn: Optional[Callable[[nn.Module, Any],
                                                      Tensor]] = None,
                           batches: Optional[Iterable[Any]] = None,
                           criterion: CriterionCfg = 'prospr',
                           progress: Optional[Progress] = None,
                           **options: Any) -> Dict[str, Tensor]:
    """Score every channel of a :class:`~epsd_mm.pruning.ChannelGraph`.

    Data-free criteria ignore ``loss_fn`` and ``batches``. The model is
    left unchanged.

    Args:
        graph (ChannelGraph): The groups of the (dense) model.
        loss_fn (Callable, optional): The scoring loss. Defaults to None.
        batches (Iterable, optional): Batches passed to ``loss_fn``.
            Defaults to None.
        criterion (str | dict | Criterion): A criterion that scores
            channels (see :meth:`CriterionRegistry.channel_names`).
            Defaults to ``'prospr'``.
        progress (Callable, optional): ``progress(message, fraction)``.
            Defaults to None.
        **options: Options of the criterion.

    Returns:
        dict[str, Tensor]: Detached 1-D score per group name.
    """
    scorer = build_criterion(criterion, **options)
    check_scores_channels(scorer)
    graph.check_not_slimmed()
    scores = scorer.channel_scores(
        graph, _inputs(graph.model, loss_fn, batches, progress=progress))
    return {name: score.detach() for name, score in scores.items()}


def check_scores_channels(criterion: Criterion) -> None:
    """Raise a fix-it error for a criterion that scores weights only."""
    if not criterion.scores_channels():
        raise ValueError(
            f'criterion {criterion.name!r} scores weights only; the '
            'criteria that score channels are: '
            f"{', '.join(CRITERIA.channel_names())}")


__all__ = [
    'CRITERIA', 'Criterion', 'CriterionRegistry', 'FORCE', 'GraSP',
    'Magnitude', 'NTKSAP', 'PHEW', 'ProsPr', 'Random', 'SNIP',
    'ScoringInputs', 'SynFlow', 'build_criterion', 'check_scores_channels',
    'compute_channel_scores', 'compute_scores', 'data_free_criteria',
    'force_scores', 'grasp_scores', 'magnitude_scores', 'ntk_sap_scores',
    'phew_scores', 'prospr_meta_gradients', 'prospr_scores', 'random_scores',
    'snip_saliency', 'snip_scores', 'synflow_scores', 'trace_layer_graph'
]
