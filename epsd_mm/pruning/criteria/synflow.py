"""SynFlow: data-free, iterative synaptic-flow scores."""
from itertools import chain
from typing import (Any, Callable, Dict, Iterable, Mapping, Optional,
                    Sequence)

import torch
import torch.nn as nn
from torch import Tensor

from ..functional import (call_with_tensors, first_sample, plain_forward,
                          preserved_state)
from ..selection import select_masks
from .base import CRITERIA, Criterion, ScoringInputs



def _sum_outputs(out: Any) -> Tensor:
    """Sum of all elements of a tensor or a (nested) list/tuple of them."""
    if isinstance(out, Tensor):
        return out.sum()
    if isinstance(out, (list, tuple)) and out:
        return sum(_sum_outputs(o) for o in out)
    raise TypeError('forward_fn must return a tensor or a non-empty '
                    f'list/tuple of tensors, got {type(out).__name__}')


def synflow_scores(model: nn.Module,
                   params: Mapping[str, Tensor],
                   batches: Optional[Iterable[Any]] = None,
                   input_shape: Optional[Sequence[int]] = None,
                   forward_fn: Optional[Callable[[nn.Module, Tensor],
                                                 Any]] = None,
                   sparsity: Optional[float] = None,
                   rounds: int = 1,
                   dtype: torch.dtype = torch.float64,
                   progress: Optional[Callable[[str, float], None]] = None
                   ) -> Dict[str, Tensor]:
    """SynFlow scores ``|w * dR/dw|`` (Tanaka et al., 2020), data-free.

    Every floating-point parameter and buffer is replaced by its absolute
    value, the model runs in eval mode (BatchNorm uses its running stats,
    Dropout is off) on an all-ones input and ``R`` is the sum of all
    outputs. Nothing of the model is modified: the substitution goes through
    :func:`torch.func.functional_call` and the modes are restored.

    With ``rounds = n > 1`` the scoring is iterative: after round ``k`` the
    weights are masked (global top-k) to density ``d^(k/n)``, ``d = 1 -
    sparsity``, and the next round scores the masked network. The scores of
    the last round are returned; weights pruned in earlier rounds score 0, so
    ``select_masks(scores, sparsity)`` reproduces the iterative mask (and
    reports a layer pruned away in an earlier round as collapsed). In
    residual networks SynFlow may legitimately prune a whole residual branch,
    since the skip connection carries the flow; use ``min_density`` there.

    The computation runs in ``dtype`` (float64 by default) because ``R``
    grows geometrically with depth and overflows float32 in deep networks;
    the scores are returned in that dtype.

    Args:
        model (nn.Module): The model.
        params (Mapping[str, Tensor]): Prunable weights by name.
        batches (Iterable, optional): Only used to infer ``input_shape``
            from the first batch when it is not given (one sample of it).
            Defaults to None.
        input_shape (Sequence[int], optional): Shape of the all-ones input,
            e.g. ``(1, 3, 64, 64)``. Defaults to None (from ``batches``).
        forward_fn (Callable, optional): ``forward_fn(model, x)`` returning a
            tensor or a (nested) list/tuple of tensors, e.g.
            ``lambda m, x: m.backbone(x)`` for an mm model whose ``forward``
            needs data samples. Defaults to None (``model(x)``).
        sparsity (float, optional): Target sparsity, needed when
            ``rounds > 1``. Defaults to None.
        rounds (int): Number of scoring rounds ``n``. Defaults to 1.
        dtype (torch.dtype): Dtype of the computation. Defaults to
            ``torch.float64``.
        progress (Callable, optional): ``progress(message, fraction)``
            after every round. Defaults to None.

    Returns:
        dict[str, Tensor]: Non-negative scores of the last round, detached.
    """
    if rounds < 1:
        raise ValueError(f'rounds must be >= 1, got {rounds}')
    if rounds > 1 and sparsity is None:
        raise ValueError('iterative SynFlow (rounds > 1) needs the target '
                         '`sparsity` to schedule the intermediate masks')
    if input_shape is None:
        input_shape = tuple(first_sample(batches, 'synflow').shape)
    forward_fn = forward_fn or plain_forward
    device = next(iter(params.values())).device
    ones = torch.ones(tuple(input_shape), dtype=dtype, device=device)
    absolute = {
        name: t.detach().abs().to(dtype)
        for name, t in chain(model.named_parameters(), model.named_buffers())
        if t.is_floating_point()
    }
    masks: Dict[str, Tensor] = {}
    with preserved_state(model):
        model.eval()
        for k in range(1, rounds + 1):
            leaves = {}
            for name in params:
                w = (absolute[name] * masks[name]
                     if masks else absolute[name].clone())
                leaves[name] = w.requires_grad_(True)
            flow = _sum_outputs(
                call_with_tensors(model, {**absolute, **leaves}, forward_fn,
                                  ones))
            grads = torch.autograd.grad(
                flow, list(leaves.values()), allow_unused=True)
            scores = {
                name:
                torch.zeros_like(w) if g is None else (w.detach() * g).abs()
                for (name, w), g in zip(leaves.items(), grads)
            }
            if progress is not None:
                progress(f'round {k}/{rounds}', k / rounds)
            if k < rounds:
                density = (1.0 - sparsity)**(k / rounds)
                masks = select_masks(
                    scores, 1.0 - density, on_collapse='allow')
    return scores


@CRITERIA.register('synflow')
class SynFlow(Criterion):
    """SynFlow (Tanaka et al., 2020): :func:`synflow_scores`, data-free and
    iterative. It runs the network on an all-ones input of one sample's
    shape (``input_shape``, or taken from one batch). Weights only.

    Args:
        input_shape (Sequence[int], optional): ``(1, C, H, W)``. Defaults
            to None (from the first scoring batch).
        rounds (int): Scoring rounds ``n``. Defaults to 1.
        dtype (torch.dtype): Dtype of the computation. Defaults to
            ``torch.float64``.
    """
    data = 'input'

    def __init__(self,
                 input_shape: Optional[Sequence[int]] = None,
                 rounds: int = 1,
                 dtype: torch.dtype = torch.float64) -> None:
        if not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f'rounds must be an integer >= 1, got {rounds!r}')
        self.input_shape = input_shape
        self.rounds = rounds
        self.dtype = dtype
        self.uses_sparsity = rounds > 1

    def weight_scores(self, params: Mapping[str, Tensor],
                      inputs: ScoringInputs) -> Dict[str, Tensor]:
        return synflow_scores(inputs.model, params, inputs.batches,
                              self.input_shape, inputs.forward_fn,
                              inputs.sparsity, self.rounds, self.dtype,
                              inputs.progress)
