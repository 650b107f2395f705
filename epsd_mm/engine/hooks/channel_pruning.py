"""MMEngine side of structured (channel) pruning, for the pruning hooks.

The pruning core (:mod:`epsd_mm.pruning.channels`, ``channel_scores``,
``channel_selection``, ``slimming``) traces, scores, selects and removes
channels on a plain ``nn.Module``. Here are the steps a Runner adds:
averaging scores over ranks and broadcasting rank 0's choice, pointing the
optimizer and the DDP wrapper at the slim parameters, and measuring
parameters and FLOPs with ``mmengine.analysis``.
"""
import copy
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from mmengine import dist
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from epsd_mm.models.scoring import ScoringLoss, scoring_state, trace_forward
from epsd_mm.pruning.channel_scores import (CHANNEL_NORMALIZATION,
                                            compute_channel_scores)
from epsd_mm.pruning.channel_selection import select_channels
from epsd_mm.pruning.channels import ChannelGraph
from epsd_mm.pruning.functional import Progress, preserved_state
from epsd_mm.pruning.slimming import (get_slim_spec, rebind_optimizer,
                                      slim_channels)
from .mask_hook import unwrap_model


def prune_channels(model: nn.Module,
                   batches: Sequence[dict],
                   example: Tensor,
                   sparsity: float,
                   criterion: str,
                   criterion_cfg: Mapping[str, Any],
                   loss: str,
                   scopes: Sequence[str],
                   selection: str = 'global',
                   min_density: float = 0.0,
                   progress: Optional[Progress] = None) -> dict:
    """Score, select and remove channels of ``model``, identically on every
    rank.

    The groups are traced with :func:`~epsd_mm.models.scoring.trace_forward`
    on ``example``; each rank scores on its own ``batches`` in the scoring
    state of ``loss``; the scores are averaged over ranks, and rank 0's
    keep-masks are broadcast before the surgery. ``sparsity`` is the
    fraction of the dense model's channels in scope removed in total: for a
    model slim already (a later EPSD-It round) the remaining channels are
    cut down to ``1 - sparsity`` of the dense count.

    Args:
        model (nn.Module): The unwrapped model, changed in place.
        batches (Sequence[dict]): Preprocessed batches for the scoring loss
            (empty for data-free criteria).
        example (Tensor): A preprocessed input batch to trace with (its
            first image is used).
        sparsity (float): Fraction of the dense channels in scope removed.
        criterion (str): A channel criterion (see
            :data:`~epsd_mm.pruning.channel_scores.CHANNEL_SCORERS`).
        criterion_cfg (Mapping[str, Any]): Its options.
        loss (str): Scoring loss, ``'sd'`` or ``'task'``.
        scopes (Sequence[str]): Modules whose output channels may be cut.
        selection (str): ``'global'`` or ``'layerwise'``. Defaults to
            ``'global'``.
        min_density (float): Per-group floor of kept channels. Defaults to 0.
        progress (Callable, optional): ``progress(message, fraction)``
            while scoring. Defaults to None.

    Returns:
        dict: The model's slim spec (relative to the dense model).
    """
    graph = ChannelGraph(model, example[:1], trace_forward, scopes)
    earlier = get_slim_spec(model)
    dense_total = (earlier['channels']['total']
                   if earlier and 'channels' in earlier else
                   graph.num_channels)
    kept = round((1.0 - sparsity) * dense_total)
    with scoring_state(model, loss):
        scores = compute_channel_scores(
            graph,
            ScoringLoss(model),
            list(batches) or None,
            criterion=criterion,
            progress=progress,
            **criterion_cfg)
    for score in scores.values():
        dist.all_reduce(score, op='mean')  # no-op when not distributed
    keep = select_channels(
        scores,
        max(0.0, 1.0 - kept / graph.num_channels),
        selection=selection,
        normalize=CHANNEL_NORMALIZATION.get(criterion),
        min_density=min_density)
    # Ties or per-rank randomness must not split the ranks' architectures.
    for mask in keep.values():
        dist.broadcast(mask, src=0)  # no-op when not distributed
    return slim_channels(graph, keep)


def rebind_runner(runner, before: Mapping[str, Tensor]) -> None:
    """Point the runner's optimizers and DDP wrapper at slim parameters.

    Slimming replaces the ``nn.Parameter`` objects of the changed layers;
    the optimizer (built before ``before_train`` and before a checkpoint
    loads) and the DDP wrapper (built with the Runner) still hold the dense
    ones. Call this before the first optimizer step, and before MMEngine
    loads a checkpoint's optimizer state.

    Args:
        runner (Runner): The runner.
        before (Mapping[str, Tensor]): ``dict(model.named_parameters())``
            of the unwrapped model, taken before slimming.
    """
    model = unwrap_model(runner.model)
    optim_wrapper = runner.optim_wrapper
    if isinstance(optim_wrapper, OptimWrapperDict):
        wrappers = list(optim_wrapper.values())
    elif isinstance(optim_wrapper, OptimWrapper):
        wrappers = [optim_wrapper]
    else:  # not built yet (test/val runs): it will bind the slim model
        wrappers = []
    for wrapper in wrappers:
        rebind_optimizer(wrapper.optimizer, before, model)
    if is_model_wrapper(runner.model):
        if not isinstance(runner.model, DistributedDataParallel):
            raise TypeError(
                'channel pruning replaces parameters, so the model wrapper '
                'must be rebuilt; this works for (MM)DistributedDataParallel,'
                f' not for {type(runner.model).__name__}. Use '
                "model_wrapper_cfg=dict(type='MMDistributedDataParallel') or "
                'weight pruning.')
        # DDP's reducer holds the dense parameters: wrap the slim model anew
        # (its constructor broadcasts rank 0's weights, identical already).
        runner.model = runner.wrap_model(
            copy.deepcopy(runner.cfg.get('model_wrapper_cfg')), model)


def model_complexity(model: nn.Module, inputs: Tensor) -> Dict[str, int]:
    """Parameters and inference FLOPs of ``model`` on ``inputs``.

    FLOPs by ``mmengine.analysis.FlopAnalyzer`` (a multiply-add counts as
    one FLOP) on the plain forward, ``model(inputs)`` (``mode='tensor'`` for
    MMEngine models: auxiliary heads and losses excluded), in eval mode; the
    model's modes and buffers are restored.

    Args:
        model (nn.Module): The unwrapped model.
        inputs (Tensor): An input batch, e.g. one preprocessed image.

    Returns:
        dict[str, int]: ``params`` and ``flops``.
    """
    with preserved_state(model), torch.no_grad():
        model.eval()
        analyzer = FlopAnalyzer(model, (inputs, ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        flops = analyzer.total()
    return dict(params=parameter_count(model)[''], flops=int(flops))


def _size(value: float) -> str:
    for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if value >= scale:
            return f'{value / scale:.3g}{unit}'
    return f'{value:.3g}'


def format_complexity(before: Mapping[str, int], after: Mapping[str, int],
                      inputs: Tensor) -> str:
    """One line comparing :func:`model_complexity` before and after."""
    shape = 'x'.join(str(s) for s in inputs.shape)
    return (f"params {_size(before['params'])} -> {_size(after['params'])} "
            f"({after['params'] / before['params']:.1%}), FLOPs "
            f"{_size(before['flops'])} -> {_size(after['flops'])} "
            f"({after['flops'] / before['flops']:.1%}) on a {shape} input "
            '(mmengine.analysis, inference forward)')
