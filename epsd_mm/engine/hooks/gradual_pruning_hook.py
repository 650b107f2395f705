"""Self-distilled pruning: gradual magnitude pruning while training."""
import math
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from epsd_mm.pruning import (SELECTIONS, apply_masks, magnitude_scores,
                             normalize_scopes, overall_sparsity,
                             prunable_parameters, select_masks,
                             sparsity_stats)
from epsd_mm.pruning.functional import call_with_tensors
from epsd_mm.registry import HOOKS
from .mask_hook import BaseMaskHook, unwrap_model

PRUNED_KEY = 'pruned_weight_values'


class UnprunedView:
    """A model with its masks lifted, as a no-gradient teacher.

    Its parameters are the model's live weights plus, at pruned positions,
    the values those weights had when they were cut, so the view is "the
    same network, unpruned". BatchNorm buffers are copies: the teacher's
    forward never changes the student's running statistics.

    Args:
        model (nn.Module): The pruned self-distilling model.
        pruned_values (dict[str, Tensor]): Parameter name to a tensor holding
            the cut values at pruned positions and zeros elsewhere.
    """

    def __init__(self, model: nn.Module, pruned_values: Dict[str,
                                                             Tensor]) -> None:
        self.model = model
        self.pruned_values = pruned_values

    def sd_forward(self, inputs: Tensor) -> Any:
        tensors = {
            name: param.detach() + self.pruned_values[name]
            if name in self.pruned_values else param.detach()
            for name, param in self.model.named_parameters()
        }
        tensors.update(
            {name: buf.clone()
             for name, buf in self.model.named_buffers()})
        with torch.no_grad():
            return call_with_tensors(self.model, tensors,
                                     lambda m, x: m.sd_forward(x), inputs)


@HOOKS.register_module()
class GradualPruningHook(BaseMaskHook):
    """Self-distilled pruning (O'Neill et al.): prune gradually by magnitude
    and distil the pruned network from its unpruned self.

    From iteration ``start`` to ``end``, every ``interval`` iterations, the
    smallest-magnitude prunable weights are cut so the sparsity follows the
    cubic schedule of Zhu & Gupta,
    ``s_t = s_f + (s_0 - s_f) * (1 - (t - start) / (end - start)) ** 3``.
    Cut weights stay cut (exactly zero). The values they had when cut are
    kept (and saved in checkpoints), and the model's SD method receives the
    network with its masks lifted (:class:`UnprunedView`): with
    ``sd=dict(type='CrossCorrelation')`` the backbone features of the pruned
    network are pulled towards those of its unpruned self. Without an SD
    method (a plain mmseg/mmdet model) the hook prunes by magnitude only.

    The schedule must reach ``sparsity`` within the run: a pruning step at
    or after ``end`` must fall before ``max_iters``, or the run is refused
    at start (it would otherwise stop short of the target silently). With
    masks already present at start (e.g. an ``EarlyPruningHook`` pruned at
    initialisation, "EPSD followed by gradual pruning"), pruning continues
    from their sparsity; set ``initial_sparsity`` to it.

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
                'GradualPruningHook: need 0 <= initial_sparsity <= sparsity '
                f'< 1, got initial_sparsity={initial_sparsity}, sparsity='
                f'{sparsity}.')
        if interval < 1 or start < 0 or (end is not None and end <= start):
            raise ValueError(
                'GradualPruningHook: need interval >= 1 and 0 <= start < end'
                f', got interval={interval}, start={start}, end={end}.')
        if selection not in SELECTIONS:
            raise ValueError(f'GradualPruningHook: selection must be one of '
                             f'{SELECTIONS}, got {selection!r}.')
        if not 0.0 <= min_density <= 1.0:
            raise ValueError('GradualPruningHook: min_density must be in '
                             f'[0, 1], got {min_density}.')
        self.sparsity = sparsity
        self.start = start
        self.end = end
        self.interval = interval
        self.initial_sparsity = initial_sparsity
        self.scopes = normalize_scopes(scopes)
        self.selection = selection
        self.min_density = min_density
        self.pruned_values: Dict[str, Tensor] = {}

    def schedule_end(self, max_iters: int) -> int:
        """Iteration at which the schedule reaches the final sparsity."""
        if self.end is not None:
            return self.end
        return max(max_iters // 2, self.start + 1)

    def sparsity_at(self, it: int, max_iters: int) -> float:
        """Target sparsity of the schedule at iteration ``it``."""
        end = self.schedule_end(max_iters)
        progress = min(max((it - self.start) / (end - self.start), 0.0), 1.0)
        return self.sparsity + (self.initial_sparsity -
                                self.sparsity) * (1 - progress)**3

    def pruning_config(self) -> Dict[str, Any]:
        return dict(
            sparsity=self.sparsity,
            scopes=list(self.scopes),
            selection=self.selection)

    def before_run(self, runner) -> None:
        try:
            prunable_parameters(unwrap_model(runner.model), self.scopes)
        except ValueError as error:
            raise ValueError(f'GradualPruningHook: {error}') from None

    def check_schedule(self, max_iters: int) -> None:
        """Refuse a schedule that cannot reach its target in ``max_iters``.
        """
        end = self.schedule_end(max_iters)
        # The first pruning step at or after `end` sets the final sparsity.
        last = self.start + math.ceil(
            (end - self.start) / self.interval) * self.interval
        if last >= max_iters:
            raise ValueError(
                f'GradualPruningHook: the schedule reaches sparsity '
                f'{self.sparsity} at iteration {last} (start={self.start}, '
                f'end={end}, interval={self.interval}), but training stops '
                f'at max_iters={max_iters}, so the target would never be '
                'reached. Lower end (or start/interval) so that a pruning '
                'step at or after end falls before max_iters.')

    def before_train(self, runner) -> None:
        self.check_schedule(runner.max_iters)
        if self.loaded_masks:
            self.check_restored(runner)
        self._share_unpruned_view(unwrap_model(runner.model))
        self.enforce(runner)

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
        # Every prunable weight is masked from the first step on (global or
        # layer-wise selection masks them all), so the masked weights' zeros
        # are the sparsity so far.
        current = overall_sparsity(sparsity_stats(model))
        if target <= current + 1e-9:
            return
        params = prunable_parameters(model, self.scopes)
        new_masks = select_masks(
            magnitude_scores(params),
            target,
            selection=self.selection,
            min_density=self.min_density)
        with torch.no_grad():
            for name, mask in new_masks.items():
                cut = params[name].detach() * ~mask
                self.pruned_values[name] = self.pruned_values.get(
                    name, torch.zeros_like(cut)) + cut
        apply_masks(model, new_masks)
        self._share_unpruned_view(model)
        runner.logger.info(
            f'GradualPruningHook: iteration {it}, sparsity {target:.4f}')
        if target >= self.sparsity - 1e-9:
            self.log_sparsity(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[PRUNED_KEY] = self.pruned_values

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        super().after_load_checkpoint(runner, checkpoint)
        self.pruned_values = dict(checkpoint.get(PRUNED_KEY, {}))
