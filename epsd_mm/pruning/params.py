"""Which parameters of a model can be pruned."""
import fnmatch
from typing import Dict, Sequence, Tuple, Union

import torch.nn as nn
from torch.nn.modules.conv import _ConvNd

#: Module types whose ``weight`` is prunable (subclasses count, e.g. mmcv's
#: ``Conv2d`` wrappers). ``_ConvNd`` covers 1d/2d/3d and transposed convs.
PRUNABLE_TYPES: Tuple[type, ...] = (_ConvNd, nn.Linear)

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


def prunable_parameters(model: nn.Module,
                        scopes: Scopes = ('backbone', )
                        ) -> Dict[str, nn.Parameter]:
    """Collect the prunable weights of a model.

    Prunable are the ``weight`` parameters of :data:`PRUNABLE_TYPES` modules
    (``Conv*d``, ``ConvTranspose*d``, ``Linear`` and their subclasses) whose
    qualified name lies inside one of ``scopes`` (see :func:`scope_matches`).
    Biases and normalisation layers are never prunable. Frozen weights
    (``requires_grad=False``) are included: pruning zeroes them too.

    Args:
        model (nn.Module): The model.
        scopes (str | Sequence[str]): Module names or glob patterns.
            Defaults to ``('backbone',)``.

    Returns:
        dict[str, nn.Parameter]: Full parameter name (as in
        ``model.named_parameters()``, e.g. ``'backbone.conv1.weight'``) to
        parameter, in module order.

    Raises:
        ValueError: If no prunable layer lies inside the scopes.
    """
    scopes = normalize_scopes(scopes)
    names: Dict[int, str] = {}
    for name, param in model.named_parameters():
        names.setdefault(id(param), name)
    params: Dict[str, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        if not isinstance(module, PRUNABLE_TYPES):
            continue
        if any(scope_matches(module_name, scope) for scope in scopes):
            params.setdefault(names[id(module.weight)], module.weight)
    if not params:
        children = [name for name, _ in model.named_children()]
        listing = (f"top-level modules are: {', '.join(children)}"
                   if children else 'it has no submodules')
        raise ValueError(
            f'scope {scopes!r} matches no Conv/Linear layer of '
            f'{type(model).__name__}; {listing}. Set `scopes` to one of '
            "them or a glob like 'backbone.layer*'.")
    return params
