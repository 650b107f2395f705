"""Scoring criteria and the registry that dispatches to them."""
import inspect
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

import torch.nn as nn
from torch import Tensor

from ..params import Scopes, prunable_parameters
from .gradient import grasp_scores, snip_scores
from .prospr import prospr_meta_gradients, prospr_scores
from .simple import magnitude_scores, random_scores
from .synflow import synflow_scores

#: Criterion name to scoring function. A scoring function takes any of the
#: arguments ``model``, ``loss_fn``, ``batches``, ``params`` (by these names)
#: plus its own keyword options and returns one score tensor per weight;
#: higher scores are kept. Add an entry to register a new criterion.
SCORERS: Dict[str, Callable[..., Dict[str, Tensor]]] = {
    'prospr': prospr_scores,
    'snip': snip_scores,
    'grasp': grasp_scores,
    'synflow': synflow_scores,
    'magnitude': magnitude_scores,
    'random': random_scores,
}

_SHARED_ARGS = ('model', 'loss_fn', 'batches', 'params')


def compute_scores(model: nn.Module,
                   loss_fn: Optional[Callable[[nn.Module, Any],
                                              Tensor]] = None,
                   batches: Optional[Iterable[Any]] = None,
                   criterion: str = 'prospr',
                   params: Optional[Mapping[str, Tensor]] = None,
                   scopes: Scopes = ('backbone', ),
                   **criterion_kwargs: Any) -> Dict[str, Tensor]:
    """Score every prunable weight of ``model`` with a criterion.

    Higher scores are kept by :func:`~epsd_mm.pruning.select_masks`.
    Criteria that need no data (``synflow``, ``magnitude``, ``random``)
    ignore ``loss_fn`` and ``batches``. The model is left unchanged.

    Args:
        model (nn.Module): The model.
        loss_fn (Callable, optional): ``loss_fn(model, batch) -> scalar
            tensor``, the scoring loss. Defaults to None.
        batches (Iterable, optional): Batches passed to ``loss_fn``.
            Defaults to None.
        criterion (str): A key of :data:`SCORERS`. Defaults to
            ``'prospr'``.
        params (Mapping[str, Tensor], optional): Prunable weights by name.
            Defaults to None (``prunable_parameters(model, scopes)``).
        scopes (str | Sequence[str]): Used when ``params`` is None.
            Defaults to ``('backbone',)``.
        **criterion_kwargs: Options of the criterion, e.g. ``num_steps``
            for ``'prospr'`` or ``input_shape`` for ``'synflow'``.

    Returns:
        dict[str, Tensor]: Detached score tensor per weight name, shaped
        like the weight.
    """
    if criterion not in SCORERS:
        raise ValueError(f'unknown pruning criterion {criterion!r}; valid '
                         f"criteria are: {', '.join(sorted(SCORERS))}")
    scorer = SCORERS[criterion]
    if params is None:
        params = prunable_parameters(model, scopes)
    available = dict(
        model=model, loss_fn=loss_fn, batches=batches, params=params)
    wanted = inspect.signature(scorer).parameters
    args = {}
    for name in _SHARED_ARGS:
        if name in wanted:
            if available[name] is None:
                raise ValueError(
                    f'criterion {criterion!r} needs `{name}`, got None')
            args[name] = available[name]
    scores = scorer(**args, **criterion_kwargs)
    return {name: score.detach() for name, score in scores.items()}


__all__ = [
    'SCORERS', 'compute_scores', 'grasp_scores', 'magnitude_scores',
    'prospr_meta_gradients', 'prospr_scores', 'random_scores', 'snip_scores',
    'synflow_scores'
]
