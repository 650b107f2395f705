"""ProsPr: meta-gradient of the loss after a few training steps."""
from typing import Any, Callable, Dict, Iterable, List, Mapping

import torch
import torch.nn as nn
from torch import Tensor

from ..functional import (as_batch_list, call_with_tensors, preserved_state,
                          scalar_loss)

LossFn = Callable[[nn.Module, Any], Tensor]


def prospr_scores(model: nn.Module,
                  loss_fn: LossFn,
                  batches: Iterable[Any],
                  params: Mapping[str, Tensor],
                  num_steps: int = 3,
                  lr: float = 0.1,
                  momentum: float = 0.0,
                  first_order: bool = False) -> Dict[str, Tensor]:
    """ProsPr (prospect pruning) scores, the criterion of EPSD.

    The absolute value of :func:`prospr_meta_gradients`; see there.

    Args:
        model (nn.Module): The model, in the mode to score in.
        loss_fn (Callable): ``loss_fn(model, batch) -> scalar tensor``.
        batches (Iterable): Batches passed to ``loss_fn``.
        params (Mapping[str, Tensor]): Prunable weights by name.
        num_steps (int): Inner SGD steps ``M``. Defaults to 3.
        lr (float): Inner learning rate. Defaults to 0.1.
        momentum (float): Inner SGD momentum. Defaults to 0.0.
        first_order (bool): Detach the inner gradients. Defaults to False.

    Returns:
        dict[str, Tensor]: Non-negative scores, detached, one per weight.
    """
    grads = prospr_meta_gradients(model, loss_fn, batches, params,
                                  num_steps, lr, momentum, first_order)
    return {name: g.abs() for name, g in grads.items()}


def prospr_meta_gradients(model: nn.Module,
                          loss_fn: LossFn,
                          batches: Iterable[Any],
                          params: Mapping[str, Tensor],
                          num_steps: int = 3,
                          lr: float = 0.1,
                          momentum: float = 0.0,
                          first_order: bool = False) -> Dict[str, Tensor]:
    """Signed meta-gradient ``dL(w_M) / dm`` of element-wise masks.

    Masks ``m = 1`` multiply the prunable weights, ``w_0 = w * m``; then
    ``num_steps`` functional SGD steps update *all* trainable parameters of
    the model, ``w_{k+1} = w_k - lr * v_k`` with ``v_k = g_k + momentum *
    v_{k-1}`` and ``g_k = dL(w_k; batches[k]) / dw_k``. The score is the
    meta-gradient ``dL(w_M; batches[M]) / dm`` through all steps (batches
    are cycled if there are fewer than ``num_steps + 1``). With
    ``first_order=True`` the inner gradients are treated as constants (cheap
    variant, ``w * dL(w_M)/dw_M``). ``num_steps=0`` is SNIP's signed
    ``w * dL/dw`` on ``batches[0]``. ``params`` may hold any parameters
    (biases and norm weights too): channel criteria sum these element-wise
    meta-gradients over a channel's entries, since a channel mask is the
    mask of all of them.

    The model is run through :func:`torch.func.functional_call`, so its
    parameters, ``.grad`` and (restored) buffers and modes are unchanged
    afterwards. ``loss_fn`` is called once per inner step, in order, with
    ``batches[k]`` and then once more for the final loss, so a stateful
    ``loss_fn`` (e.g. DLB's targets from the previous batch) sees the
    outputs of the previous inner step.

    Args:
        model (nn.Module): The model, in the mode to score in (usually
            train).
        loss_fn (Callable): ``loss_fn(model, batch) -> scalar tensor``. It
            may call any method of ``model``; all of them see the stepped
            parameters.
        batches (Iterable): Batches passed to ``loss_fn``.
        params (Mapping[str, Tensor]): Masked parameters by name, e.g.
            from :func:`~epsd_mm.pruning.prunable_parameters`.
        num_steps (int): Inner SGD steps ``M``. Defaults to 3.
        lr (float): Inner learning rate. Defaults to 0.1.
        momentum (float): Inner SGD momentum. Defaults to 0.0.
        first_order (bool): Detach the inner gradients. Defaults to False.

    Returns:
        dict[str, Tensor]: Signed ``dL/dm``, detached, shaped like each
        parameter (zeros where the loss does not depend on it).
    """
    if num_steps < 0:
        raise ValueError(f'num_steps must be >= 0, got {num_steps}')
    batches = as_batch_list(batches)
    named = dict(model.named_parameters())
    unknown = [name for name in params if name not in named]
    if unknown:
        raise ValueError(f"{', '.join(unknown)} are not parameter names of "
                         f'{type(model).__name__}; take `params` from '
                         'prunable_parameters(model)')
    masks = {
        name: torch.ones_like(w, requires_grad=True)
        for name, w in params.items()
    }
    fast: Dict[str, Tensor] = {}  # the parameters being stepped
    trainable: List[str] = []
    for name, param in named.items():
        if name in masks:
            fast[name] = param.detach() * masks[name]
        elif param.requires_grad:
            fast[name] = param.detach().requires_grad_(True)
        if param.requires_grad:
            trainable.append(name)
    velocity: Dict[str, Tensor] = {}

    with preserved_state(model):
        for step in range(num_steps):
            batch = batches[step % len(batches)]
            loss = scalar_loss(call_with_tensors(model, fast, loss_fn, batch))
            grads = torch.autograd.grad(
                loss, [fast[name] for name in trainable],
                create_graph=not first_order,
                allow_unused=True)
            for name, grad in zip(trainable, grads):
                if grad is None:
                    continue
                if momentum:
                    if name in velocity:
                        grad = momentum * velocity[name] + grad
                    velocity[name] = grad
                fast[name] = fast[name] - lr * grad
        batch = batches[num_steps % len(batches)]
        loss = scalar_loss(call_with_tensors(model, fast, loss_fn, batch))
        meta_grads = torch.autograd.grad(
            loss, list(masks.values()), allow_unused=True)
    return {
        name: torch.zeros_like(m) if g is None else g.detach()
        for (name, m), g in zip(masks.items(), meta_grads)
    }
