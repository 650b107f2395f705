"""Apply keep-masks to a model and keep pruned weights at exactly zero.

A mask lives on the module owning the weight, as a persistent bool buffer
named ``<param>_epsd_mask`` (``weight_epsd_mask`` for ``weight``), so it is
part of ``state_dict()`` and of every checkpoint. The name is our own:
``torch.nn.utils.prune`` uses ``weight_mask`` (next to ``weight_orig``), and
checkpoints of epsd_mm < 0.2 did too; :func:`rename_legacy_mask_keys`
upgrades those. Bool was chosen over the weight's dtype because it is exact
under any dtype conversion (``model.half()`` and AMP leave bool buffers
alone) and takes a quarter of the memory of float32.

Pruned entries are *set* to zero (``masked_fill``), never multiplied by the
mask: ``NaN * 0`` is NaN, so a multiplication would carry a corrupted value
into the "pruned" model. Two mechanisms keep them at zero during training:

* a gradient hook on the weight zeroes incoming gradients at pruned
  positions (before they are accumulated or all-reduced by DDP);
* :func:`register_mask_enforcement` re-applies the masks after every
  optimizer step, which momentum, weight decay and Adam-style updates would
  otherwise use to revive pruned weights.

:func:`check_masked_state_dict` verifies a (loaded) state dict before it
reaches a model: finite tensors, and exact zeros wherever a mask is False.
"""
from typing import Dict, Iterable, Iterator, List, Mapping, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

#: Suffix of a mask buffer's name: ``weight`` is masked by
#: ``weight_epsd_mask``.
MASK_SUFFIX = '_epsd_mask'
#: Suffix used by epsd_mm < 0.2 (and by ``torch.nn.utils.prune``).
LEGACY_MASK_SUFFIX = '_mask'
# Module attribute holding {param local name: gradient hook handle}.
_HOOKS_ATTR = '_epsd_mask_hooks'


class _MaskGradient:
    """Tensor hook zeroing a gradient where the module's mask is False.

    The mask is looked up at call time, so it follows ``module.to(...)`` and
    in-place updates such as ``load_state_dict``.
    """

    def __init__(self, module: nn.Module, mask_name: str) -> None:
        self.module = module
        self.mask_name = mask_name

    def __call__(self, grad: Tensor) -> Tensor:
        return grad.masked_fill(~getattr(self.module, self.mask_name), 0)


def _split(param_name: str) -> Tuple[str, str]:
    module_name, _, local = param_name.rpartition('.')
    return module_name, local


def _owner(model: nn.Module, param_name: str) -> Tuple[nn.Module, str]:
    """The module owning ``param_name`` and the parameter's local name."""
    module_name, local = _split(param_name)
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        module = None
    if module is None or module._parameters.get(local) is None:
        raise ValueError(f'{param_name!r} is not a parameter of '
                         f'{type(model).__name__}')
    return module, local


def _attach(module: nn.Module, local: str, mask: Tensor) -> None:
    """Store ``mask`` as buffer of ``module`` and hook the weight's grads."""
    param = module._parameters[local]
    mask_name = local + MASK_SUFFIX
    current = module._buffers.get(mask_name)
    if current is not None and current.shape == mask.shape:
        current.copy_(mask)
    else:
        module.register_buffer(mask_name, mask.clone(), persistent=True)
    hooks = module.__dict__.setdefault(_HOOKS_ATTR, {})
    if local in hooks:
        hooks.pop(local).remove()
    if param.requires_grad:
        hooks[local] = param.register_hook(_MaskGradient(module, mask_name))


def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Prune ``model`` with keep-masks.

    For every ``name -> mask`` the owning module gets a bool buffer
    ``<param>_mask``, the pruned entries of the weight are set to zero in
    place (set, not multiplied) and a gradient hook zeroes their gradients (only for weights with
    ``requires_grad``). Applying masks again replaces the earlier ones
    without stacking hooks. Pair it with :func:`register_mask_enforcement`
    to keep pruned weights at zero through optimizer steps.

    Args:
        model (nn.Module): The model (unwrapped, not DDP).
        masks (Mapping[str, Tensor]): Parameter name to keep-mask of the
            same shape (True / non-zero = keep).
    """
    resolved = []
    for name, mask in masks.items():
        module, local = _owner(model, name)
        param = module._parameters[local]
        if mask.shape != param.shape:
            raise ValueError(f'mask of {name!r} has shape {tuple(mask.shape)}'
                             f', the weight has {tuple(param.shape)}')
        resolved.append((module, local, mask.to(param.device) != 0))
    for module, local, mask in resolved:
        _attach(module, local, mask)
    enforce_masks(model)


def attach_mask_buffers(model: nn.Module, param_names: Iterable[str]) -> None:
    """Attach all-ones masks, e.g. before loading a pruned checkpoint.

    A fresh model has no ``*_mask`` buffers, so ``load_state_dict`` would
    reject a checkpoint of a pruned model. Attaching all-ones masks (same
    buffers and gradient hooks as :func:`apply_masks`, weights unchanged)
    first lets the checkpoint's masks load into them in place.

    Args:
        model (nn.Module): The model.
        param_names (Iterable[str]): Names of the masked parameters, e.g.
            from :func:`masked_param_names`.
    """
    masks = {}
    for name in param_names:
        module, local = _owner(model, name)
        masks[name] = torch.ones_like(
            module._parameters[local], dtype=torch.bool)
    apply_masks(model, masks)


def masked_param_names(state_dict: Mapping[str, Tensor]) -> List[str]:
    """Names of the parameters masked in a state dict.

    Args:
        state_dict (Mapping[str, Tensor]): E.g. a checkpoint's
            ``'state_dict'``.

    Returns:
        list[str]: Every ``key`` for which ``key + MASK_SUFFIX`` is present.
    """
    return [
        key[:-len(MASK_SUFFIX)] for key in state_dict
        if key.endswith(MASK_SUFFIX) and key[:-len(MASK_SUFFIX)] in state_dict
    ]


def _masked(model: nn.Module) -> Iterator[Tuple[str, nn.Parameter, Tensor]]:
    """Yield ``(param name, param, mask)`` for every masked parameter."""
    for module_name, module in model.named_modules():
        for buffer_name, mask in module._buffers.items():
            local = buffer_name[:-len(MASK_SUFFIX)]
            if (mask is None or not buffer_name.endswith(MASK_SUFFIX)
                    or module._parameters.get(local) is None):
                continue
            name = f'{module_name}.{local}' if module_name else local
            yield name, module._parameters[local], mask


def get_masks(model: nn.Module) -> Dict[str, Tensor]:
    """The masks of a model.

    Args:
        model (nn.Module): The model.

    Returns:
        dict[str, Tensor]: Parameter name to its mask buffer (the live
        buffer, not a copy); empty if the model is not pruned.
    """
    return {name: mask for name, _, mask in _masked(model)}


@torch.no_grad()
def enforce_masks(model: nn.Module) -> None:
    """Set every pruned weight of ``model`` to exactly zero, in place.

    Args:
        model (nn.Module): The model.
    """
    for _, param, mask in _masked(model):
        param.masked_fill_(~mask, 0)


def rename_legacy_mask_keys(state_dict: Dict[str, Tensor]) -> List[str]:
    """Rename the mask keys of an epsd_mm < 0.2 state dict, in place.

    Older checkpoints named the mask of ``<param>`` ``<param>_mask``. A key
    is taken for such a mask only when ``<param>`` is in the state dict too
    and ``<param>_orig`` is not (``torch.nn.utils.prune`` stores the
    original weight as ``<param>_orig`` and its own ``<param>_mask``).

    Args:
        state_dict (dict[str, Tensor]): E.g. ``checkpoint['state_dict']``.

    Returns:
        list[str]: The parameter names whose masks were renamed.
    """
    renamed = []
    for key in list(state_dict):
        if key.endswith(MASK_SUFFIX) or not key.endswith(LEGACY_MASK_SUFFIX):
            continue
        param = key[:-len(LEGACY_MASK_SUFFIX)]
        if (param in state_dict and param + '_orig' not in state_dict
                and param + MASK_SUFFIX not in state_dict):
            state_dict[param + MASK_SUFFIX] = state_dict.pop(key)
            renamed.append(param)
    return renamed


class _AttachMasksOnLoad:
    """``load_state_dict`` pre-hook: mask buffers for the masks a state dict
    brings (legacy names renamed), so it loads without unexpected keys."""

    def __call__(self, module: nn.Module, state_dict: Dict[str, Tensor],
                 prefix: str, *args) -> None:
        rename_legacy_mask_keys(state_dict)
        names = [
            name[len(prefix):] for name in masked_param_names(state_dict)
            if name.startswith(prefix)
        ]
        if names:
            attach_mask_buffers(module, names)


def load_masks_with_state_dict(model: nn.Module) -> None:
    """Let ``model.load_state_dict`` restore pruning masks by itself.

    A freshly built model has no mask buffers, so loading a pruned
    checkpoint into it (``mmseg.apis.init_model``, ``load_checkpoint``)
    would report the masks as unexpected keys and drop them. With this
    pre-hook the masks found in the state dict are attached first and load
    with the weights.

    Args:
        model (nn.Module): The model (e.g. in its ``__init__``).
    """
    model.register_load_state_dict_pre_hook(_AttachMasksOnLoad())


def check_masked_state_dict(state_dict: Mapping[str, Tensor],
                            source: str = 'the checkpoint') -> None:
    """Refuse a state dict whose tensors cannot be a trained pruned model.

    Every floating-point tensor must be finite, and every masked weight must
    be exactly zero wherever its mask is False (pruned weights are zero
    after every optimizer step, so a non-zero value there means the file was
    corrupted or edited). Run it before loading, so a corrupted checkpoint
    never reaches the model nor gets evaluated or trained further.

    Args:
        state_dict (Mapping[str, Tensor]): E.g. ``checkpoint['state_dict']``.
        source (str): How to name the state dict in errors.
            Defaults to ``'the checkpoint'``.

    Raises:
        ValueError: Naming the first offending tensor.
    """
    for key, value in state_dict.items():
        if (isinstance(value, Tensor) and value.is_floating_point()
                and not torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(
                f'{source}: tensor {key!r} holds {bad} NaN/inf value(s) of '
                f'{value.numel()}. The file is corrupted or training '
                'diverged before it was saved; use an earlier checkpoint '
                '(and a lower learning rate if training diverged).')
    for name in masked_param_names(state_dict):
        weight, mask = state_dict[name], state_dict[name + MASK_SUFFIX]
        if mask.shape != weight.shape:
            raise ValueError(
                f'{source}: mask {name + MASK_SUFFIX!r} has shape '
                f'{tuple(mask.shape)} but {name!r} has {tuple(weight.shape)}'
                '. The file is corrupted or was edited by hand.')
        revived = int((weight[~mask.bool()] != 0).sum())
        if revived:
            raise ValueError(
                f'{source}: {name!r} has {revived} non-zero value(s) where '
                f'its mask {name + MASK_SUFFIX!r} is 0 (pruned positions are '
                'exactly zero in every checkpoint epsd_mm writes). The file '
                'is corrupted or was edited; use an earlier checkpoint.')


def register_mask_enforcement(optimizer: Optimizer,
                              model: nn.Module) -> RemovableHandle:
    """Re-apply the masks of ``model`` after every ``optimizer.step()``.

    Momentum, weight decay and Adam-style updates move pruned weights even
    when their gradients are zero; this post-step hook sets them back to
    exactly zero. With MMEngine pass ``optim_wrapper.optimizer``. AMP's
    ``GradScaler`` calls the same ``step``, or skips it (weights unchanged).

    Args:
        optimizer (Optimizer): The optimizer of ``model``'s parameters.
        model (nn.Module): The pruned model (or a wrapper holding it).

    Returns:
        RemovableHandle: Call ``.remove()`` to stop enforcing.
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            'optimizer must be a torch.optim.Optimizer, got '
            f'{type(optimizer).__name__}; for an MMEngine OptimWrapper pass '
            '`optim_wrapper.optimizer`')

    def enforce(*_) -> None:
        enforce_masks(model)

    return optimizer.register_step_post_hook(enforce)


def remove_masks(model: nn.Module) -> None:
    """Drop all mask buffers and gradient hooks; weights stay as they are.

    Args:
        model (nn.Module): The model.
    """
    for module in model.modules():
        for handle in module.__dict__.pop(_HOOKS_ATTR, {}).values():
            handle.remove()
    for name, _, _ in list(_masked(model)):
        module_name, local = _split(name)
        del model.get_submodule(module_name)._buffers[local + MASK_SUFFIX]
