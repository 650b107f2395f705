"""Self-distilled pruning: gradual magnitude pruning while training."""
from typing import Dict, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from epsd_mm.pruning import (apply_masks, magnitude_scores, overall_sparsity,
                             prunable_parameters, select_masks, sparsity_stats)
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

    def sd_forward(self, inputs: Tensor):
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
    kept (and saved in checkpoints), and the model's teacher is the network
    with its masks lifted (:class:`UnprunedView`): with
    ``sd_loss=dict(type='CrossCorrelationLoss')`` the backbone features of
    the pruned network are pulled towards those of its unpruned self.

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
        self.sparsity = sparsity
        self.start = start
        self.end = end
        self.interval = interval
        self.initial_sparsity = initial_sparsity
        self.scopes = (scopes, ) if isinstance(scopes, str) else tuple(scopes)
        self.selection = selection
        self.min_density = min_density
        self.pruned_values: Dict[str, Tensor] = {}

    def sparsity_at(self, it: int, max_iters: int) -> float:
        """Target sparsity of the schedule at iteration ``it``."""
        end = self.end if self.end is not None else max(
            max_iters // 2, self.start + 1)
        progress = min(max((it - self.start) / (end - self.start), 0.0), 1.0)
        return self.sparsity + (self.initial_sparsity -
                                self.sparsity) * (1 - progress)**3

    def before_run(self, runner) -> None:
        prunable_parameters(unwrap_model(runner.model), self.scopes)

    def before_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        if self.pruned_values:  # resumed: the teacher continues
            model.set_sd_teacher(UnprunedView(model, self.pruned_values))
        self.enforce(runner)

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
        model.set_sd_teacher(UnprunedView(model, self.pruned_values))
        runner.logger.info(
            f'GradualPruningHook: iteration {it}, sparsity {target:.4f}')
        if target >= self.sparsity - 1e-9:
            self.log_sparsity(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[PRUNED_KEY] = self.pruned_values

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        super().after_load_checkpoint(runner, checkpoint)
        self.pruned_values = dict(checkpoint.get(PRUNED_KEY, {}))
