"""FORCE and Iterative SNIP: SNIP rescored along a sparsity schedule.

De Jorge et al., "Progressive Skeletonization: Trimming more fat from a
network at initialization", ICLR 2021 (code: naver/force,
``pruning/pruning_algos.py``).
"""
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..functional import (Progress, as_batch_list, detached_leaves,
                          preserved_state)
from ..selection import check_sparsity, select_masks
from .base import CRITERIA, Criterion, ScoringInputs
from .gradient import _grad_sum

LossFn = Callable[[nn.Module, Any], Tensor]
#: Density schedules of the intermediate steps.
SCHEDULES = ('exp', 'linear')
#: ``'force'``: rescore the dense weights, pruned ones may come back;
#: ``'iter_snip'``: rescore the masked weights, pruned ones stay pruned.
VARIANTS = ('force', 'iter_snip')


def force_densities(sparsity: float,
                    num_steps: int,
                    schedule: str = 'exp') -> List[float]:
    """Density kept after each step of the FORCE schedule.

    With ``d = 1 - sparsity`` and ``T = num_steps``, step ``t`` (1-based)
    keeps ``d ** (t / T)`` (``'exp'``) or ``1 - t (1 - d) / T``
    (``'linear'``) of the weights; the last step keeps ``d``.

    Args:
        sparsity (float): The target sparsity, in ``[0, 1)``.
        num_steps (int): Steps ``T``.
        schedule (str): ``'exp'`` or ``'linear'``. Defaults to ``'exp'``.

    Returns:
        list[float]: ``T`` densities, decreasing to ``1 - sparsity``.
    """
    density = 1.0 - check_sparsity(sparsity)
    if schedule == 'exp':
        steps = [density**(t / num_steps) for t in range(1, num_steps + 1)]
    else:
        steps = [
            1.0 - t * (1.0 - density) / num_steps
            for t in range(1, num_steps + 1)
        ]
    steps[-1] = density
    return steps


def _masked(weights: Mapping[str, Tensor],
            masks: Optional[Mapping[str, Tensor]]) -> Dict[str, Tensor]:
    """``weights`` with pruned entries set to zero (all kept if no masks)."""
    if masks is None:
        return dict(weights)
    return {n: w.masked_fill(~masks[n], 0) for n, w in weights.items()}


def _next_masks(scores: Mapping[str, Tensor],
                masks: Optional[Mapping[str, Tensor]], density: float,
                revive: bool) -> Dict[str, Tensor]:
    """Global top-k keeping ``density`` of the weights; without
    ``revive`` only the weights kept by ``masks`` compete."""
    if masks is not None and not revive:
        scores = {
            n: torch.where(masks[n], s, torch.full_like(s, -1.0))
            for n, s in scores.items()
        }
    return select_masks(scores, 1.0 - density, on_collapse='allow')


def force_scores(model: nn.Module,
                 loss_fn: LossFn,
                 batches: Iterable[Any],
                 params: Mapping[str, Tensor],
                 sparsity: float,
                 num_steps: int = 10,
                 schedule: str = 'exp',
                 variant: str = 'force',
                 progress: Optional[Progress] = None) -> Dict[str, Tensor]:
    """FORCE (or Iterative SNIP) scores of the last step of the schedule.

    Step ``t`` of ``T = num_steps`` scores the network masked by the mask of
    step ``t - 1`` (step 1: unmasked) with the SNIP saliency, the gradient
    ``g`` of the loss w.r.t. the masked weights averaged over ``batches``,
    and keeps the global top ``d_t`` of it (:func:`force_densities`):

    * ``variant='force'`` (FORCE, the paper's method and the repository's
      ``prune_method=3``): saliency ``|w * g|`` with the *dense* weights
      ``w``, so a pruned weight whose gradient grew can come back;
    * ``variant='iter_snip'`` (Iterative SNIP, ``prune_method=1``):
      saliency ``|(w * m) * g|``; pruned weights score 0 and never come
      back.

    The last step's saliencies are returned: ``select_masks(scores,
    sparsity)`` gives the final mask. Ties: the authors keep every weight
    ``>=`` the k-th score and keep ``int(d_t N)`` of ``N`` weights; here
    (as everywhere in this package) exactly ``round(d_t N)`` are kept, the
    earlier position winning a tie. The two agree unless scores tie at the
    threshold or ``d_t N`` has a fractional part of at least 0.5. Under
    ``'iter_snip'`` the weights pruned in earlier steps score exactly 0 and
    may tie with surviving weights of zero saliency.

    Weights zero in the model already (masks of an earlier pruning round)
    stay zero under both variants: their dense value is 0. The model
    (parameters, buffers, modes, ``.grad``) is left unchanged; the scoring
    consumes no randomness of its own (``loss_fn`` may, e.g. Dropout in
    train mode, from the global generator, as for SNIP).

    Args:
        model (nn.Module): The model, in the mode to score in.
        loss_fn (Callable): ``loss_fn(model, batch) -> scalar tensor``.
        batches (Iterable): Batches passed to ``loss_fn``; every step
            averages the gradient over all of them. The authors use 1 batch
            on CIFAR-10, 10 on CIFAR-100, 20 on Tiny-ImageNet, 40 on
            ImageNet (README of naver/force).
        params (Mapping[str, Tensor]): Prunable weights by name.
        sparsity (float): The target sparsity, in ``[0, 1)``.
        num_steps (int): Steps ``T``; 1 is SNIP. Defaults to 10, the default
            of the authors' ``iterative_pruning`` and training scripts (the
            README's example commands use 60).
        schedule (str): ``'exp'`` (the paper's choice) or ``'linear'``.
            Defaults to ``'exp'``.
        variant (str): ``'force'`` or ``'iter_snip'``. Defaults to
            ``'force'``.
        progress (Callable, optional): ``progress(message, fraction)`` after
            every step. Defaults to None.

    Returns:
        dict[str, Tensor]: Non-negative saliencies of the last step,
        detached.
    """
    _check_options(num_steps, schedule, variant)
    densities = force_densities(sparsity, num_steps, schedule)
    batches = as_batch_list(batches)
    dense = {name: w.detach() for name, w in params.items()}
    masks = None
    with preserved_state(model):
        for step, density in enumerate(densities, 1):
            weights = _masked(dense, masks)
            leaves = detached_leaves(weights)
            grads = _grad_sum(model, loss_fn, batches, leaves)
            base = dense if variant == 'force' else weights
            scores = {
                name: (base[name] * g / len(batches)).abs()
                for name, g in zip(leaves, grads)
            }
            if progress is not None:
                progress(f'step {step}/{num_steps} (density {density:.4g})',
                         step / num_steps)
            if step < num_steps:
                masks = _next_masks(scores, masks, density,
                                    revive=variant == 'force')
    return scores


def _check_options(num_steps: int, schedule: str, variant: str) -> None:
    """Raise a fix-it error for invalid FORCE options."""
    if isinstance(num_steps, bool) or not isinstance(
            num_steps, int) or num_steps < 1:
        raise ValueError(f'num_steps must be an integer >= 1 (1 is SNIP), '
                         f'got {num_steps!r}')
    if schedule not in SCHEDULES:
        raise ValueError(
            f'schedule must be one of {SCHEDULES}, got {schedule!r}')
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS} ('force' "
                         'revives pruned weights, \'iter_snip\' does not), '
                         f'got {variant!r}')


@CRITERIA.register('force')
class FORCE(Criterion):
    """FORCE (de Jorge et al., ICLR 2021): SNIP rescored over ``num_steps``
    steps of a decreasing density towards the target, each step scoring the
    dense weights on the network masked by the previous step
    (:func:`force_scores`). ``variant='iter_snip'`` is Iterative SNIP.
    Scores on the loss the pruner or hook gives (the SD loss under EPSD).
    Weights only: the steps mask individual weights.

    Args:
        num_steps (int): Steps ``T``; 1 is SNIP. Defaults to 10 (the
            authors' code; their README examples use 60).
        schedule (str): ``'exp'`` (density ``d^(t/T)``, the paper's) or
            ``'linear'``. Defaults to ``'exp'``.
        variant (str): ``'force'`` (pruned weights may come back) or
            ``'iter_snip'`` (they may not). Defaults to ``'force'``.
    """
    data = 'batches'
    uses_sparsity = True

    def __init__(self,
                 num_steps: int = 10,
                 schedule: str = 'exp',
                 variant: str = 'force') -> None:
        _check_options(num_steps, schedule, variant)
        self.num_steps = num_steps
        self.schedule = schedule
        self.variant = variant

    def weight_scores(self, params: Mapping[str, Tensor],
                      inputs: ScoringInputs) -> Dict[str, Tensor]:
        self.check_inputs(inputs)
        if inputs.sparsity is None:
            raise ValueError(
                f'criterion {self.name!r} prunes towards the target sparsity '
                'in steps and needs it; pass `sparsity` (e.g. '
                "compute_scores(..., criterion='force', sparsity=0.9)); the "
                'pruners and EarlyPruningHook pass their target')
        return force_scores(inputs.model, inputs.loss_fn, inputs.batches,
                            params, inputs.sparsity, self.num_steps,
                            self.schedule, self.variant, inputs.progress)
