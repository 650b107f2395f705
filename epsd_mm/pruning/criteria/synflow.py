"""SynFlow: data-free, iterative synaptic-flow scores."""
from itertools import chain
from typing import (Any, Callable, Dict, Iterable, Mapping, Optional,
                    Sequence, Tuple)

import torch
import torch.nn as nn
from torch import Tensor

from ..functional import call_with_tensors, preserved_state
from ..selection import select_masks


def _forward(model: nn.Module, x: Tensor) -> Any:
    return model(x)


def _sum_outputs(out: Any) -> Tensor:
    """Sum of all elements of a tensor or a (nested) list/tuple of them."""
    if isinstance(out, Tensor):
        return out.sum()
    if isinstance(out, (list, tuple)) and out:
        return sum(_sum_outputs(o) for o in out)
    raise TypeError('forward_fn must return a tensor or a non-empty '
                    f'list/tuple of tensors, got {type(out).__name__}')


def _input_shape(batches: Optional[Iterable[Any]]) -> Tuple[int, ...]:
    """Shape of one sample of the first batch, with batch size 1.

    The sample tensor is the batch itself, its ``'inputs'`` entry (MMEngine
    models) or its first element (``(inputs, targets)`` tuples).
    """
    for batch in batches or ():
        x = batch
        if isinstance(x, Mapping):
            x = x.get('inputs')
        elif isinstance(x, (list, tuple)) and x:
            x = x[0]
        if isinstance(x, Tensor) and x.dim() >= 1:
            return (1, ) + tuple(x.shape[1:])
        break
    raise ValueError(
        'synflow runs the network on an all-ones input and needs its shape: '
        'pass input_shape=(1, C, H, W), or batches whose first element is '
        "a tensor, a dict with an 'inputs' tensor or an (inputs, ...) "
        'tuple to take it from')


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
        input_shape = _input_shape(batches)
    forward_fn = forward_fn or _forward
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
