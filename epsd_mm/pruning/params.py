"""Which parameters of a model can be pruned."""
import fnmatch
from typing import Dict, Iterator, Mapping, Sequence, Tuple, Union

import torch.nn as nn
from torch.nn.modules.conv import _ConvNd

#: Module types (subclasses count, e.g. mmcv's ``Conv2d`` wrappers) and the
#: names of their parameters that are weight matrices doing the work of a
#: linear map. ``nn.MultiheadAttention`` keeps its Q/K/V projection as bare
#: parameters (``in_proj_weight``, or ``q/k/v_proj_weight`` when the key and
#: value sizes differ) and passes them to the functional attention directly;
#: its ``out_proj`` is a ``Linear`` and counts through that entry. Masks act
#: on the parameters themselves, so they hold whether or not the module's
#: forward calls ``Linear.forward``.
PRUNABLE_WEIGHTS: Mapping[type, Tuple[str, ...]] = {
    _ConvNd: ('weight', ),
    nn.Linear: ('weight', ),
    nn.MultiheadAttention: ('in_proj_weight', 'q_proj_weight',
                            'k_proj_weight', 'v_proj_weight'),
}

Scopes = Union[str, Sequence[str]]


def normalize_scopes(scopes: Scopes) -> Tuple[str, ...]:
    """Turn one scope or a sequence of scopes into a non-empty tuple.

    Args:
        scopes (str | Sequence[str]): A module name / glob, or several.

    Returns:
        tuple[str, ...]: The scopes.
    """
    result = (scopes, ) if isinstance(scopes, str) else tuple(scopes)
    if not result:
        raise ValueError('scopes must name at least one module, e.g. '
                         "('backbone',); use ('*',) for the whole model")
    return result


def scope_matches(module_name: str, scope: str) -> bool:
    """Whether a qualified module name lies inside a scope.

    A scope matches the module it names and every module below it
    (``'backbone'`` matches ``'backbone'`` and ``'backbone.layer1.0.conv1'``),
    or is a case-sensitive glob matched against the whole name
    (``'backbone.layer*'``, ``'*'`` for everything).

    Args:
        module_name (str): Name as in ``model.named_modules()``.
        scope (str): Module name or glob pattern.

    Returns:
        bool: True if the module is inside the scope.
    """
    return (module_name == scope or module_name.startswith(scope + '.')
            or fnmatch.fnmatchcase(module_name, scope))


def _weight_matrices(
        module: nn.Module) -> Iterator[Tuple[str, nn.Parameter]]:
    """``(local name, parameter)`` of the prunable weights of one module."""
    for module_type, names in PRUNABLE_WEIGHTS.items():
        if isinstance(module, module_type):
            for local in names:
                param = module._parameters.get(local)
                if param is not None:
                    yield local, param


def prunable_parameters(model: nn.Module,
                        scopes: Scopes = ('backbone', )
                        ) -> Dict[str, nn.Parameter]:
    """Collect the prunable weights of a model.

    Prunable are the weight matrices of :data:`PRUNABLE_WEIGHTS` modules
    (``Conv*d``, ``ConvTranspose*d``, ``Linear``, the Q/K/V projections of
    ``nn.MultiheadAttention``, and their subclasses) whose module's
    qualified name lies inside one of ``scopes`` (see
    :func:`scope_matches`). Biases, normalisation layers, embeddings and
    position tables are never prunable. Frozen weights
    (``requires_grad=False``) are included: pruning zeroes them too.

    Args:
        model (nn.Module): The model.
        scopes (str | Sequence[str]): Module names or glob patterns; each
            must contain at least one prunable weight. Defaults to
            ``('backbone',)``.

    Returns:
        dict[str, nn.Parameter]: Full parameter name (as in
        ``model.named_parameters()``, e.g. ``'backbone.conv1.weight'``) to
        parameter, in module order.

    Raises:
        ValueError: If a scope contains no prunable weight (a typo would
            otherwise silently leave part of the intended model dense).
    """
    scopes = normalize_scopes(scopes)
    names: Dict[int, str] = {}
    for name, param in model.named_parameters():
        names.setdefault(id(param), name)
    params: Dict[str, nn.Parameter] = {}
    used = set()
    for module_name, module in model.named_modules():
        matched = [s for s in scopes if scope_matches(module_name, s)]
        if not matched:
            continue
        for _, param in _weight_matrices(module):
            params.setdefault(names[id(param)], param)
            used.update(matched)
    dead = [scope for scope in scopes if scope not in used]
    if dead:
        children = [name for name, _ in model.named_children()]
        listing = (f"top-level modules are: {', '.join(children)}"
                   if children else 'it has no submodules')
        raise ValueError(
            f'scope(s) {dead!r} match no Conv/Linear/attention weight of '
            f'{type(model).__name__}; {listing}. Fix the name (a scope is a '
            "module name like 'backbone' or a glob like 'backbone.layer*') "
            'or remove it.')
    return params
