"""Self-distilled pruning: gradual magnitude pruning while training."""
import math
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from epsd_mm.models.unpruned_view import UnprunedView
from epsd_mm.pruning import (WeightPruner, overall_sparsity,
                             prunable_parameters, sparsity_stats)
from epsd_mm.registry import HOOKS
from ..runner_utils import broadcast_from_rank0, unwrap_model
from .pruning_checkpoint_hook import PruningCheckpointHook, complexity


def cubic_sparsity(it: int, start: int, end: int, initial: float,
                   final: float) -> float:
    """The cubic schedule of Zhu & Gupta (2017) at iteration ``it``:
    ``s_f + (s_0 - s_f) * (1 - (it - start) / (end - start)) ** 3``,
    constant before ``start`` and after ``end``."""
    progress = min(max((it - start) / (end - start), 0.0), 1.0)
    return final + (initial - final) * (1 - progress)**3


@HOOKS.register_module()
class GradualPruningHook(PruningCheckpointHook):
    """Self-distilled pruning (O'Neill et al.): prune gradually by magnitude
    and distil the pruned network from its unpruned self.

    From iteration ``start`` to ``end``, every ``interval`` iterations, the
    smallest-magnitude prunable weights are cut (a
    :class:`~epsd_mm.pruning.WeightPruner` with the ``magnitude``
    criterion) so that the sparsity follows :func:`cubic_sparsity`. Cut
    weights stay cut (exactly zero). The values they had when cut are kept
    (in the checkpoints' pruning record), and the model's SD method
    receives the network with its masks lifted
    (:class:`~epsd_mm.models.unpruned_view.UnprunedView`): with
    ``sd=dict(type='CrossCorrelation')`` the backbone features of the
    pruned network are pulled towards those of its unpruned self. A plain
    mmseg/mmdet model (no SD method) is pruned by magnitude only.

    The schedule must reach ``sparsity`` within the run, or the run is
    refused at start. With masks present at start (``EarlyPruningHook``
    pruned at initialisation: EPSD followed by gradual pruning) pruning
    continues from their sparsity; set ``initial_sparsity`` to it. A run
    resumed under other settings than its checkpoint's stops.

    Args:
        sparsity (float): Final sparsity ``s_f`` in ``[0, 1)``.
            Defaults to 0.9.
        start (int): Iteration of the first pruning step. Defaults to 0.
        end (int, optional): Iteration at which ``s_f`` is reached; None
            means half of ``max_iters``. Defaults to None.
        interval (int): Iterations between pruning steps. Defaults to 100.
        initial_sparsity (float): ``s_0`` of the schedule. Defaults to 0.
        scopes (Sequence[str]): Prunable module names or globs.
            Defaults to ``('backbone',)``.
        selection (str): ``'global'`` or ``'layerwise'`` top-k.
            Defaults to ``'global'``.
        min_density (float): Floor of kept weights per layer.
            Defaults to 0.
    """

    def __init__(self,
                 sparsity: float = 0.9,
                 start: int = 0,
                 end: Optional[int] = None,
                 interval: int = 100,
                 initial_sparsity: float = 0.0,
                 scopes: Union[str, Sequence[str]] = ('backbone', ),
                 selection: str = 'global',
                 min_density: float = 0.0) -> None:
        super().__init__()
        if not 0 <= initial_sparsity <= sparsity < 1:
            raise ValueError(
                f'{self.name}: need 0 <= initial_sparsity <= sparsity < 1, '
                f'got initial_sparsity={initial_sparsity}, sparsity='
                f'{sparsity}.')
        if interval < 1 or start < 0 or (end is not None and end <= start):
            raise ValueError(
                f'{self.name}: need interval >= 1 and 0 <= start < end, got '
                f'interval={interval}, start={start}, end={end}.')
        try:
            self.pruner = WeightPruner(
                sparsity,
                'magnitude',
                scopes,
                selection=selection,
                min_density=min_density,
                num_batches=0)
        except ValueError as error:
            raise ValueError(f'{self.name}: {error}') from None
        self.start = start
        self.end = end
        self.interval = interval
        self.initial_sparsity = initial_sparsity
        self.pruned_values: Dict[str, Tensor] = {}

    def schedule_end(self, max_iters: int) -> int:
        """Iteration at which the schedule reaches the final sparsity."""
        if self.end is not None:
            return self.end
        return max(max_iters // 2, self.start + 1)

    def sparsity_at(self, it: int, max_iters: int) -> float:
        """Target sparsity of the schedule at iteration ``it``."""
        return cubic_sparsity(it, self.start, self.schedule_end(max_iters),
                              self.initial_sparsity, self.pruner.sparsity)

    def pruning_config(self) -> Dict[str, Any]:
        return dict(
            self.pruner.config(),
            start=self.start,
            end=self.end,
            interval=self.interval,
            initial_sparsity=self.initial_sparsity)

    def pruning_state(self) -> Dict[str, Tensor]:
        return dict(pruned_values=self.pruned_values)

    def restore_stage(self, stage: Dict[str, Any], state: dict) -> None:
        self.pruned_values = dict(state.get('pruned_values', {}))

    def before_run(self, runner) -> None:
        try:
            prunable_parameters(unwrap_model(runner.model),
                                self.pruner.scopes)
        except ValueError as error:
            raise ValueError(f'{self.name}: {error}') from None

    def check_schedule(self, max_iters: int) -> None:
        """Refuse a schedule that cannot reach its target in
        ``max_iters``."""
        end = self.schedule_end(max_iters)
        # The first pruning step at or after `end` sets the final sparsity.
        last = self.start + math.ceil(
            (end - self.start) / self.interval) * self.interval
        if last >= max_iters:
            raise ValueError(
                f'{self.name}: the schedule reaches sparsity '
                f'{self.pruner.sparsity} at iteration {last} (start='
                f'{self.start}, end={end}, interval={self.interval}), but '
                f'training stops at max_iters={max_iters}, so the target '
                'would never be reached. Lower end (or start/interval) so '
                'that a pruning step at or after end falls before max_iters.')

    def before_train(self, runner) -> None:
        self.check_schedule(runner.max_iters)
        super().before_train(runner)
        if self.restored_pruning():
            self.check_restored()
        self._share_unpruned_view(unwrap_model(runner.model))

    def _share_unpruned_view(self, model: nn.Module) -> None:
        """Hand the SD method the network with its masks lifted (None until
        something is pruned); a plain model has no method to hand it to."""
        method = getattr(model, 'sd', None)
        if method is not None:
            method.set_unpruned(
                UnprunedView(model, self.pruned_values)
                if self.pruned_values else None)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        it = runner.iter
        if it < self.start or (it - self.start) % self.interval:
            return
        target = self.sparsity_at(it, runner.max_iters)
        model = unwrap_model(runner.model)
        # Every prunable weight is masked from the first step on, so the
        # masked weights' zeros are the sparsity so far.
        if target <= overall_sparsity(sparsity_stats(model)) + 1e-9:
            return
        params = prunable_parameters(model, self.pruner.scopes)
        weights = {n: p.detach().clone() for n, p in params.items()}
        before = complexity(model) if target >= self.pruner.sparsity else None
        report = self.pruner.prune_to(
            model, target, broadcast=broadcast_from_rank0)
        with torch.no_grad():  # pruned entries are zero in `weights` already
            for name, param in params.items():
                cut = weights[name] - param.detach()
                self.pruned_values[name] = self.pruned_values.get(
                    name, torch.zeros_like(cut)) + cut
        self._share_unpruned_view(model)
        runner.logger.info(f'{self.name}: iteration {it}, '
                           f'{report.summary()}')
        if before is not None:
            self.log_pruning(runner, report.table, before)
