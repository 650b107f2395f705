"""NTK-SAP: data-free, weight-agnostic scores of the NTK spectrum."""
import math
from contextlib import contextmanager
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping,
                    Optional, Sequence, Tuple)

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..functional import (call_with_tensors, first_sample, plain_forward,
                          preserved_state)
from ..masks import get_masks
from ..selection import select_masks
from .base import CRITERIA, Criterion, ScoringInputs



def _output_tensors(out: Any) -> List[Tensor]:
    """The tensors of a tensor or a (nested) list/tuple of them."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (list, tuple)) and out:
        return [t for o in out for t in _output_tensors(o)]
    raise TypeError('forward_fn must return a tensor or a non-empty '
                    f'list/tuple of tensors, got {type(out).__name__}')


def _squared_distance(a: Any, b: Any) -> Tensor:
    """``sum ||a - b||^2`` over every output tensor of two forwards."""
    return sum(((x - y)**2).sum()
               for x, y in zip(_output_tensors(a), _output_tensors(b)))


def batch_input_shape(batches: Optional[Iterable[Any]]) -> Tuple[int, ...]:
    """The full shape (batch size included) of the first batch's input.

    The input is found as by :func:`~epsd_mm.pruning.functional.first_sample`
    (the batch itself, its ``'inputs'`` entry or its first element).

    Args:
        batches (Iterable, optional): Scoring batches.

    Returns:
        tuple[int, ...]: E.g. ``(2, 3, 512, 512)``.
    """
    sample = first_sample(batches, 'ntk_sap')  # the fix-it error if absent
    batch = next(iter(batches))
    if isinstance(batch, Mapping):
        batch = batch['inputs']
    elif isinstance(batch, (list, tuple)):
        batch = batch[0]
    return (batch.shape[0], ) + tuple(sample.shape[1:])


def _owner(model: nn.Module, name: str) -> nn.Module:
    prefix = name.rpartition('.')[0]
    return model.get_submodule(prefix) if prefix else model


def default_init(module: nn.Module, weight: Tensor,
                 generator: torch.Generator) -> Tensor:
    """A fresh sample of ``weight`` from PyTorch's default initialisation of
    its module type (what ``module.reset_parameters()`` draws), on the CPU.

    ``Conv*d``, ``ConvTranspose*d`` and ``Linear`` (and subclasses, e.g.
    mmcv's wrappers) draw ``kaiming_uniform_(a=sqrt(5))``, i.e.
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``; the Q/K/V projections of
    ``nn.MultiheadAttention`` draw ``xavier_uniform_``.

    Args:
        module (nn.Module): The module owning ``weight``.
        weight (Tensor): The weight (only its shape and dtype are used).
        generator (torch.Generator): A CPU generator.

    Returns:
        Tensor: The new weight, on the CPU.
    """
    fresh = torch.empty(weight.shape, dtype=weight.dtype)
    if isinstance(module, nn.MultiheadAttention):
        return nn.init.xavier_uniform_(fresh, generator=generator)
    if weight.dim() < 2:
        raise ValueError(
            f'ntk_sap(reinit=True) cannot re-sample the {weight.dim()}-d '
            f'weight of a {type(module).__name__}: PyTorch has no default '
            'initialisation for it here; use reinit=False (score at the '
            "model's own weights)")
    return nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=generator)


def _fresh_statistics(model: nn.Module) -> Dict[str, Tensor]:
    """Reset running statistics of every BatchNorm that tracks them, as new
    tensors (``reset_running_stats`` without touching the model)."""
    stats = {}
    for name, module in model.named_modules():
        if not (isinstance(module, _BatchNorm)
                and module.running_mean is not None):
            continue
        prefix = f'{name}.' if name else ''
        stats[prefix + 'running_mean'] = torch.zeros_like(module.running_mean)
        stats[prefix + 'running_var'] = torch.ones_like(module.running_var)
        stats[prefix + 'num_batches_tracked'] = torch.zeros_like(
            module.num_batches_tracked)
    return stats


@contextmanager
def _statistics_mode(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers in training mode with momentum 1 (a forward sets
    their running statistics to the batch's), every other module in eval
    mode (no dropout); momenta are restored on exit, modes by the caller's
    :func:`preserved_state`."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [m.momentum for m in norms]
    model.eval()
    for module in norms:
        module.train()
        module.momentum = 1.0
    try:
        yield
    finally:
        for module, momentum in zip(norms, momenta):
            module.momentum = momentum
        model.eval()


def _draw_gradients(model: nn.Module, masks: Mapping[str, Tensor],
                    weights: Mapping[str, Tensor],
                    noisy: Mapping[str, Tensor], x: Tensor,
                    forward_fn: Callable[[nn.Module, Tensor], Any]
                    ) -> List[Optional[Tensor]]:
    """Gradient of ``||f(x; w * m) - f(x; (w + eps d) * m)||^2`` with
    respect to the masks ``m``, for one draw of weights, noise and input.

    BatchNorm statistics come from a forward of the masked weights on
    ``x`` (training mode, momentum 1); both copies then run in eval mode
    with them.
    """
    stats = _fresh_statistics(model)

    def substitutes(w: Mapping[str, Tensor],
                    m: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        return {**{n: w[n] * mask for n, mask in m.items()}, **stats}

    with torch.no_grad(), _statistics_mode(model):
        call_with_tensors(model, substitutes(weights, masks), forward_fn, x)
    leaves = {n: m.clone().requires_grad_(True) for n, m in masks.items()}
    clean = call_with_tensors(model, substitutes(weights, leaves),
                              forward_fn, x)
    perturbed = call_with_tensors(model, substitutes(noisy, leaves),
                                  forward_fn, x)
    distance = _squared_distance(clean, perturbed)
    return torch.autograd.grad(
        distance, list(leaves.values()), allow_unused=True)


def _initial_masks(model: nn.Module,
                   params: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The model's keep-masks of ``params`` (ones where it has none)."""
    stored = get_masks(model)
    return {
        name: (stored[name].to(w.dtype) if name in stored else
               torch.ones_like(w)).detach().to(w.device)
        for name, w in params.items()
    }


def ntk_sap_scores(model: nn.Module,
                   params: Mapping[str, Tensor],
                   batches: Optional[Iterable[Any]] = None,
                   input_shape: Optional[Sequence[int]] = None,
                   forward_fn: Optional[Callable[[nn.Module, Tensor],
                                                 Any]] = None,
                   sparsity: Optional[float] = None,
                   iterations: int = 20,
                   repeats: int = 1,
                   epsilon: float = 0.01,
                   reinit: bool = True,
                   generator: Optional[torch.Generator] = None,
                   progress: Optional[Callable[[str, float], None]] = None
                   ) -> Dict[str, Tensor]:
    """NTK-SAP scores (Wang et al., ICLR 2023), data-free.

    The score of a mask entry ``m_j`` is ``|d/dm_j sum_r ||f(x_r; w_r * m)
    - f(x_r; (w_r + epsilon * d_r) * m)||^2|``, a finite-difference proxy of
    the trace of the network's neural tangent kernel, summed over
    ``repeats`` draws ``r`` of a standard Gaussian input ``x_r`` of
    ``input_shape``, Gaussian noise ``d_r`` and (with ``reinit``) fresh
    weights ``w_r``. Every BatchNorm layer normalises with the statistics of
    the draw: a forward of the masked weights on ``x_r`` with its running
    statistics reset and momentum 1 (training mode for BatchNorm, eval mode
    for the rest, so no dropout), after which both copies run in eval mode.
    Only the prunable weights are re-sampled or perturbed; biases and
    normalisation parameters keep the model's values.

    With ``iterations = T > 1`` the masks are pruned in ``T`` steps, step
    ``k`` keeping ``d0 * (d / d0) ** (k / T)`` of the weights (``d0`` the
    density of the model's masks when scoring starts, ``d = 1 -
    sparsity``); pruned weights score 0 (scores are multiplied by ``m !=
    0``), so ``select_masks(scores, sparsity)`` of the returned last step
    reproduces the iterative mask.

    Nothing of the model is modified: weights, BatchNorm statistics and
    masks are substituted through :func:`torch.func.functional_call`;
    modes, buffers and BatchNorm momenta are restored; all randomness comes
    from ``generator``, not from the global RNG.

    Args:
        model (nn.Module): The model.
        params (Mapping[str, Tensor]): Prunable weights by name.
        batches (Iterable, optional): Only used for ``input_shape`` when it
            is not given (the first batch's input shape). Defaults to None.
        input_shape (Sequence[int], optional): Shape of the Gaussian input,
            batch size included, e.g. ``(2, 3, 64, 64)``. Defaults to None
            (from ``batches``).
        forward_fn (Callable, optional): ``forward_fn(model, x)`` returning a
            tensor or a (nested) list/tuple of tensors; the distance sums
            over all of them. Defaults to None (``model(x)``).
        sparsity (float, optional): Target sparsity, needed when
            ``iterations > 1``. Defaults to None.
        iterations (int): Pruning steps ``T``. Defaults to 20.
        repeats (int): Draws ``R`` per step. Defaults to 1.
        epsilon (float): Scale of the weight perturbation. Defaults to 0.01.
        reinit (bool): Re-sample the prunable weights for every draw from
            PyTorch's default initialisation of their module type
            (:func:`default_init`); False scores at the model's weights.
            Defaults to True.
        generator (torch.Generator, optional): CPU generator of every draw.
            Defaults to None (a generator seeded with 0).
        progress (Callable, optional): ``progress(message, fraction)``
            after every step. Defaults to None.

    Returns:
        dict[str, Tensor]: Non-negative scores of the last step, detached.
    """
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f'iterations must be an integer >= 1, got '
                         f'{iterations!r}')
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f'repeats must be an integer >= 1, got {repeats!r}')
    if iterations > 1 and sparsity is None:
        raise ValueError('iterative NTK-SAP (iterations > 1) needs the target '
                         '`sparsity` to schedule the intermediate masks')
    if input_shape is None:
        input_shape = batch_input_shape(batches)
    forward_fn = forward_fn or plain_forward
    generator = generator or torch.Generator().manual_seed(0)
    first = next(iter(params.values()))
    device, dtype = first.device, first.dtype
    owners = {name: _owner(model, name) for name in params}
    masks = _initial_masks(model, params)
    total = sum(m.numel() for m in masks.values())
    start = sum(float(m.count_nonzero()) for m in masks.values()) / total
    with preserved_state(model):
        for k in range(1, iterations + 1):
            sums = {n: torch.zeros_like(m) for n, m in masks.items()}
            for _ in range(repeats):
                weights = {
                    n: (default_init(owners[n], w, generator).to(device)
                        if reinit else w.detach())
                    for n, w in params.items()
                }
                x = torch.randn(
                    tuple(input_shape), generator=generator,
                    dtype=dtype).to(device)
                noisy = {
                    n: w + epsilon * torch.randn(
                        w.shape, generator=generator, dtype=w.dtype).to(device)
                    for n, w in weights.items()
                }
                grads = _draw_gradients(model, masks, weights, noisy, x,
                                        forward_fn)
                for name, grad in zip(masks, grads):
                    if grad is not None:
                        sums[name] += grad
            scores = {n: s.abs() * (masks[n] != 0) for n, s in sums.items()}
            if progress is not None:
                progress(f'iteration {k}/{iterations}', k / iterations)
            if k < iterations:
                density = start * ((1.0 - sparsity) / start)**(k / iterations)
                keep = select_masks(
                    scores, 1.0 - density, on_collapse='allow')
                masks = {
                    n: m * keep[n].to(m.dtype) for n, m in masks.items()
                }
    return scores


@CRITERIA.register('ntk_sap')
class NTKSAP(Criterion):
    """NTK-SAP (Wang et al., "NTK-SAP: Improving neural network pruning by
    aligning training dynamics", ICLR 2023): :func:`ntk_sap_scores`,
    data-free (Gaussian inputs of the data's shape), weight-agnostic (fresh
    random weights per draw) and iterative. Weights only.

    The defaults are those of the authors' published setting (YiteWang/
    NTK-SAP, ``scripts/run.sh`` and README): ``T = 20`` pruning iterations
    (``--prune-epochs``; ``main.py`` defaults to 1), ``epsilon = 0.01``
    (``--ntksap_epsilon``) and ``R = 1`` (``--ntksap_R``; the README raises it
    to 5 for CIFAR-10 only, as ``run.sh`` does). Their inputs are one
    Gaussian batch per pruning batch of the data; here one of the scoring
    batch's shape (or ``input_shape``), ``repeats`` times per iteration.

    The authors re-initialise the whole model with its own
    ``_initialize_weights``; a general model has none, so ``reinit=True``
    re-samples each prunable weight from PyTorch's default initialisation
    of its module type (``reset_parameters``, see :func:`default_init`),
    keeping biases and normalisation parameters. With BatchNorm after each
    convolution the scores are insensitive to the per-layer scale of that
    initialisation.

    Args:
        input_shape (Sequence[int], optional): ``(N, C, H, W)`` of the
            Gaussian input. Defaults to None (the first scoring batch's).
        iterations (int): Pruning steps ``T``. Defaults to 20.
        repeats (int): Draws ``R`` of weights, noise and input per step.
            Defaults to 1.
        epsilon (float): Scale of the weight perturbation. Defaults to 0.01.
        reinit (bool): Re-sample the prunable weights for every draw
            (weight-agnostic, as the paper); False scores at the model's
            own weights. Defaults to True.
        seed (int, optional): Seed of the ``torch.Generator`` all draws come
            from (the global RNG is never used): the same seed gives the same
            scores. Defaults to None (``torch.initial_seed()``, i.e. the
            run's seed, so runs with different seeds draw differently).
    """
    data = 'input'

    def __init__(self,
                 input_shape: Optional[Sequence[int]] = None,
                 iterations: int = 20,
                 repeats: int = 1,
                 epsilon: float = 0.01,
                 reinit: bool = True,
                 seed: Optional[int] = None) -> None:
        for key, value in (('iterations', iterations), ('repeats', repeats)):
            if (isinstance(value, bool) or not isinstance(value, int)
                    or value < 1):
                raise ValueError(
                    f'ntk_sap: {key} must be an integer >= 1, got {value!r}')
        if (isinstance(epsilon, bool) or not isinstance(epsilon, (int, float))
                or not epsilon > 0):
            raise ValueError(f'ntk_sap: epsilon must be a number > 0 (the '
                             f'paper uses 0.01), got {epsilon!r}')
        if not isinstance(reinit, bool):
            raise ValueError(f'ntk_sap: reinit must be True or False, got '
                             f'{reinit!r}')
        if seed is not None and (isinstance(seed, bool)
                                 or not isinstance(seed, int)):
            raise ValueError(
                f'ntk_sap: seed must be an integer or None, got {seed!r}')
        if input_shape is not None and (
                len(input_shape) < 2
                or not all(isinstance(s, int) and s > 0 for s in input_shape)):
            raise ValueError(
                'ntk_sap: input_shape must be the full input shape with the '
                f'batch size, e.g. (2, 3, 512, 512), got {input_shape!r}')
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.iterations = iterations
        self.repeats = repeats
        self.epsilon = float(epsilon)
        self.reinit = reinit
        self.seed = seed
        self.uses_sparsity = iterations > 1

    def generator(self) -> torch.Generator:
        """A CPU generator seeded with :attr:`seed` (or the run's seed)."""
        seed = torch.initial_seed() if self.seed is None else self.seed
        return torch.Generator().manual_seed(seed)

    def weight_scores(self, params: Mapping[str, Tensor],
                      inputs: ScoringInputs) -> Dict[str, Tensor]:
        return ntk_sap_scores(inputs.model, params, inputs.batches,
                              self.input_shape, inputs.forward_fn,
                              inputs.sparsity, self.iterations, self.repeats,
                              self.epsilon, self.reinit, self.generator(),
                              inputs.progress)
