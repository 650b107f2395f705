"""Gradient criteria at the current weights: SNIP and GraSP."""
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..functional import (as_batch_list, call_with_tensors, detached_leaves,
                          preserved_state, scalar_loss)
from .base import CRITERIA, Criterion, ScoringInputs

LossFn = Callable[[nn.Module, Any], Tensor]


def _grads(loss: Tensor, leaves: Dict[str, Tensor],
           create_graph: bool = False) -> List[Tensor]:
    """Gradients of ``loss`` w.r.t. ``leaves``, zeros for unused ones."""
    inputs = list(leaves.values())
    grads = torch.autograd.grad(
        loss, inputs, create_graph=create_graph, allow_unused=True)
    return [
        torch.zeros_like(x) if g is None else g
        for x, g in zip(inputs, grads)
    ]


def _report(progress: Optional[Callable[[str, float], None]], done: int,
            total: int, what: str) -> None:
    if progress is not None:
        progress(f'{what} {done}/{total}', done / total)


def _grad_sum(model: nn.Module,
              loss_fn: LossFn,
              batches: List[Any],
              leaves: Dict[str, Tensor],
              progress: Optional[Callable[[str, float], None]] = None,
              total: Optional[int] = None) -> List[Tensor]:
    """Gradient of the loss w.r.t. ``leaves``, summed over ``batches``."""
    grads = [torch.zeros_like(w) for w in leaves.values()]
    for i, batch in enumerate(batches, 1):
        loss = scalar_loss(call_with_tensors(model, leaves, loss_fn, batch))
        for acc, g in zip(grads, _grads(loss, leaves)):
            acc.add_(g)
        _report(progress, i, total or len(batches), 'gradient batch')
    return grads


def snip_saliency(
        model: nn.Module,
        loss_fn: LossFn,
        batches: Iterable[Any],
        params: Mapping[str, Tensor],
        progress: Optional[Callable[[str, float], None]] = None
) -> Dict[str, Tensor]:
    """Signed SNIP saliency ``w * dL/dw`` (``dL/dm`` of element masks).

    The gradient is summed over all ``batches``. The model (parameters,
    buffers, modes, ``.grad``) is left unchanged.

    Args:
        model (nn.Module): The model, in the mode to score in.
        loss_fn (Callable): ``loss_fn(model, batch) -> scalar tensor``.
        batches (Iterable): Batches passed to ``loss_fn``.
        params (Mapping[str, Tensor]): Parameters to score by name.
        progress (Callable, optional): ``progress(message, fraction)``
            after every batch. Defaults to None.

    Returns:
        dict[str, Tensor]: Signed saliency per parameter, detached.
    """
    batches = as_batch_list(batches)
    leaves = detached_leaves(params)
    with preserved_state(model):
        total = _grad_sum(model, loss_fn, batches, leaves, progress)
    return {
        name: w.detach() * g
        for (name, w), g in zip(leaves.items(), total)
    }


def snip_scores(
        model: nn.Module,
        loss_fn: LossFn,
        batches: Iterable[Any],
        params: Mapping[str, Tensor],
        progress: Optional[Callable[[str, float], None]] = None
) -> Dict[str, Tensor]:
    """SNIP connection sensitivity ``|w * dL/dw|``, the absolute value of
    :func:`snip_saliency` (see there for the arguments).

    Returns:
        dict[str, Tensor]: Non-negative scores, detached.
    """
    return {
        name: s.abs()
        for name, s in snip_saliency(model, loss_fn, batches, params,
                                     progress).items()
    }


def grasp_scores(
        model: nn.Module,
        loss_fn: LossFn,
        batches: Iterable[Any],
        params: Mapping[str, Tensor],
        progress: Optional[Callable[[str, float], None]] = None
) -> Dict[str, Tensor]:
    """GraSP (gradient signal preservation), signed so that high is kept.

    With ``g = sum_b dL_b/dw`` (over all ``batches``, prunable weights only)
    and the Hessian-gradient product ``Hg = sum_b d(g . dL_b/dw)/dw``, the
    GraSP paper scores ``S = -w * Hg`` and removes the weights with the
    *largest* ``S``. To follow the rule of this package (keep the highest
    scores) this returns ``-S = w * Hg``: the top-k of it are exactly the
    weights GraSP keeps. Scores are signed. The model is left unchanged.

    Args:
        model (nn.Module): The model, in the mode to score in.
        loss_fn (Callable): ``loss_fn(model, batch) -> scalar tensor``.
        batches (Iterable): Batches passed to ``loss_fn``.
        params (Mapping[str, Tensor]): Prunable weights by name.
        progress (Callable, optional): ``progress(message, fraction)``
            after every gradient and Hessian-gradient batch. Defaults to
            None.

    Returns:
        dict[str, Tensor]: ``w * Hg`` per weight, detached.
    """
    batches = as_batch_list(batches)
    leaves = detached_leaves(params)
    hessian_grad = [torch.zeros_like(w) for w in leaves.values()]
    total = 2 * len(batches)
    with preserved_state(model):
        grad_sum = _grad_sum(model, loss_fn, batches, leaves, progress,
                             total)
        for i, batch in enumerate(batches, len(batches) + 1):
            loss = scalar_loss(
                call_with_tensors(model, leaves, loss_fn, batch))
            grads = _grads(loss, leaves, create_graph=True)
            dot = sum((g * g0).sum() for g, g0 in zip(grads, grad_sum))
            if dot.requires_grad:  # else the gradient is constant: Hg = 0
                for acc, hg in zip(hessian_grad, _grads(dot, leaves)):
                    acc.add_(hg)
            _report(progress, i, total, 'gradient / Hessian batch')
    return {
        name: w.detach() * hg
        for (name, w), hg in zip(leaves.items(), hessian_grad)
    }


@CRITERIA.register('snip')
class SNIP(Criterion):
    """SNIP connection sensitivity (Lee et al., 2019), the gradient summed
    over the scoring batches.

    Weights: ``|w * dL/dw|``. Channels: ``|dL/dm_c|``, the signed saliency
    summed over the channel's entries (on one batch it equals ProsPr with
    ``num_steps=0``).
    """

    def _saliency(self, model: nn.Module, params: Mapping[str, Tensor],
                  inputs: ScoringInputs) -> Dict[str, Tensor]:
        self.check_inputs(inputs)
        return snip_saliency(model, inputs.loss_fn, inputs.batches, params,
                             inputs.progress)

    def weight_scores(self, params: Mapping[str, Tensor],
                      inputs: ScoringInputs) -> Dict[str, Tensor]:
        saliency = self._saliency(inputs.model, params, inputs)
        return {name: s.abs() for name, s in saliency.items()}

    def channel_scores(self, graph, inputs: ScoringInputs) -> Dict[str, Tensor]:
        saliency = self._saliency(graph.model, graph.parameters(), inputs)
        return {
            name: s.abs()
            for name, s in graph.channel_sums(saliency).items()
        }


@CRITERIA.register('grasp')
class GraSP(Criterion):
    """GraSP gradient signal preservation (Wang et al., 2020), signed so
    that the highest scores are kept: :func:`grasp_scores`. Weights only."""

    def weight_scores(self, params: Mapping[str, Tensor],
                      inputs: ScoringInputs) -> Dict[str, Tensor]:
        self.check_inputs(inputs)
        return grasp_scores(inputs.model, inputs.loss_fn, inputs.batches,
                            params, inputs.progress)
