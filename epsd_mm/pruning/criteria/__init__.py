"""Scoring criteria and the registry that dispatches to them.

A criterion is a function returning one score tensor per prunable weight
(higher is kept). What it needs is declared by its own signature: the
shared arguments it names (``model``, ``loss_fn``, ``batches``, ``params``,
``forward_fn``, ``sparsity``, ``progress``) are passed by
:func:`compute_scores`, required
ones must be available, and its keyword options carry their own defaults
(e.g. ProsPr's ``num_steps=3``). So a caller (such as the pruning hook)
needs no per-criterion knowledge: :func:`criterion_needs_batches` tells it
whether to draw data.
"""
import inspect
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

import torch.nn as nn
from torch import Tensor

from ..functional import Progress
from ..params import Scopes, prunable_parameters
from .gradient import grasp_scores, snip_scores
from .prospr import check_num_batches, prospr_meta_gradients, prospr_scores
from .simple import magnitude_scores, random_scores
from .synflow import synflow_scores

#: Criterion name to scoring function. Add an entry to register a new
#: criterion; its signature declares what it needs (see the module doc).
SCORERS: Dict[str, Callable[..., Dict[str, Tensor]]] = {
    'prospr': prospr_scores,
    'snip': snip_scores,
    'grasp': grasp_scores,
    'synflow': synflow_scores,
    'magnitude': magnitude_scores,
    'random': random_scores,
}

#: Criterion name to ``check(num_batches, **options)``, for criteria that
#: accept only some numbers of scoring batches: it raises a fix-it
#: ``ValueError`` before any data is drawn.
BATCH_CHECKS: Dict[str, Callable[..., None]] = {
    'prospr': check_num_batches,
}

#: Arguments :func:`compute_scores` passes to a scorer that names them.
SHARED_ARGS = ('model', 'loss_fn', 'batches', 'params', 'forward_fn',
               'sparsity', 'progress')



def get_scorer(criterion: str) -> Callable[..., Dict[str, Tensor]]:
    """The scoring function of a criterion, or a fix-it error.

    Args:
        criterion (str): A key of :data:`SCORERS`.

    Returns:
        Callable: The scoring function.
    """
    if criterion not in SCORERS:
        raise ValueError(f'unknown pruning criterion {criterion!r}; valid '
                         f"criteria are: {', '.join(sorted(SCORERS))}")
    return SCORERS[criterion]


def criterion_options(criterion: str) -> Dict[str, Any]:
    """The keyword options of a criterion and their defaults.

    Args:
        criterion (str): A key of :data:`SCORERS`.

    Returns:
        dict[str, Any]: Option name to default (``inspect.Parameter.empty``
        for options without a default), shared arguments excluded.
    """
    params = inspect.signature(get_scorer(criterion)).parameters
    return {
        name: p.default
        for name, p in params.items() if name not in SHARED_ARGS
    }


def criterion_needs_batches(criterion: str) -> Optional[bool]:
    """Whether a criterion scores on data.

    Args:
        criterion (str): A key of :data:`SCORERS`.

    Returns:
        bool | None: True if it requires ``batches``, None if it only
        accepts them (e.g. SynFlow infers its input shape from one batch),
        False if it takes none.
    """
    params = inspect.signature(get_scorer(criterion)).parameters
    if 'batches' not in params:
        return False
    return True if params['batches'].default is inspect.Parameter.empty \
        else None


def check_criterion_options(criterion: str, options: Mapping[str,
                                                             Any]) -> None:
    """Reject options a criterion does not take, naming the valid ones.

    Args:
        criterion (str): A key of :data:`SCORERS`.
        options (Mapping[str, Any]): Keyword options for it.
    """
    reject_unknown_options(f'criterion {criterion!r}', options,
                           criterion_options(criterion))


def reject_unknown_options(what: str, options: Mapping[str, Any],
                           valid: Mapping[str, Any]) -> None:
    """Raise for keys of ``options`` not in ``valid``, naming the valid
    ones.

    Args:
        what (str): What takes the options, e.g. ``"criterion 'prospr'"``.
        options (Mapping[str, Any]): The options given.
        valid (Mapping[str, Any]): The options it takes.
    """
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f'{what} takes no option(s) {unknown}; its options are: '
            f"{', '.join(sorted(valid)) or 'none'}")


def check_criterion_batches(criterion: str, num_batches: int,
                            options: Mapping[str, Any]) -> None:
    """Check that a criterion can score on ``num_batches`` batches.

    Args:
        criterion (str): A criterion name (channel criteria of the same
            name share the check: they score through the same function).
        num_batches (int): Scoring batches to be drawn.
        options (Mapping[str, Any]): Keyword options of the criterion.
    """
    check = BATCH_CHECKS.get(criterion)
    if check is not None:
        check(num_batches, **options)


def compute_scores(model: nn.Module,
                   loss_fn: Optional[Callable[[nn.Module, Any],
                                              Tensor]] = None,
                   batches: Optional[Iterable[Any]] = None,
                   criterion: str = 'prospr',
                   params: Optional[Mapping[str, Tensor]] = None,
                   scopes: Scopes = ('backbone', ),
                   forward_fn: Optional[Callable[[nn.Module, Tensor],
                                                 Any]] = None,
                   sparsity: Optional[float] = None,
                   progress: Optional[Progress] = None,
                   **criterion_kwargs: Any) -> Dict[str, Tensor]:
    """Score every prunable weight of ``model`` with a criterion.

    Higher scores are kept by :func:`~epsd_mm.pruning.select_masks`. Each
    criterion receives the shared arguments its signature names; the model
    is left unchanged.

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
        forward_fn (Callable, optional): ``forward_fn(model, x)`` running
            the network on a plain input tensor, for data-free criteria
            (e.g. ``lambda m, x: m(x, mode='tensor')`` for mm models).
            Defaults to None (``model(x)``).
        sparsity (float, optional): The target sparsity, for criteria that
            schedule intermediate masks (iterative SynFlow). Defaults to
            None.
        progress (Callable, optional): ``progress(message, fraction)``,
            called by criteria that report progress. Defaults to None.
        **criterion_kwargs: Options of the criterion, e.g. ``num_steps``
            for ``'prospr'`` or ``input_shape`` for ``'synflow'``.

    Returns:
        dict[str, Tensor]: Detached score tensor per weight name, shaped
        like the weight.
    """
    scorer = get_scorer(criterion)
    check_criterion_options(criterion, criterion_kwargs)
    if params is None:
        params = prunable_parameters(model, scopes)
    available = dict(
        model=model,
        loss_fn=loss_fn,
        batches=batches,
        params=params,
        forward_fn=forward_fn,
        sparsity=sparsity,
        progress=progress)
    args = {}
    for name, param in inspect.signature(scorer).parameters.items():
        if name not in SHARED_ARGS:
            continue
        if available[name] is not None:
            args[name] = available[name]
        elif param.default is inspect.Parameter.empty:
            raise ValueError(
                f'criterion {criterion!r} needs `{name}`, got None')
    scores = scorer(**args, **criterion_kwargs)
    return {name: score.detach() for name, score in scores.items()}


__all__ = [
    'BATCH_CHECKS', 'Progress', 'SCORERS', 'SHARED_ARGS',
    'check_criterion_batches', 'check_criterion_options', 'compute_scores',
    'reject_unknown_options',
    'criterion_needs_batches', 'criterion_options', 'get_scorer',
    'grasp_scores', 'magnitude_scores', 'prospr_meta_gradients',
    'prospr_scores', 'random_scores', 'snip_scores', 'synflow_scores'
]
