"""What every hook that prunes a model during an MMEngine run shares."""
from typing import Dict, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from epsd_mm.pruning import (attach_mask_buffers, format_sparsity_table,
                             masked_param_names, overall_sparsity,
                             register_mask_enforcement, sparsity_stats)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP/FSDP wrapper."""
    return model.module if is_model_wrapper(model) else model


class BaseMaskHook(Hook):
    """Masks in checkpoints, enforcement after optimizer steps, reporting.

    * ``after_load_checkpoint`` (called before the state dict is loaded)
      creates ``*.weight_mask`` buffers for the masks a checkpoint carries,
      so resume and ``load_from`` restore them;
    * :meth:`enforce` keeps pruned weights exactly zero after every
      optimizer step (momentum, weight decay, Adam, AMP);
    * the overall sparsity joins the val/test metrics, logged next to mIoU
      and the like.

    Priority is HIGHEST: masks exist before other hooks train, and the
    sparsity enters the metrics before ``RuntimeInfoHook`` (VERY_HIGH) logs
    them.
    """

    priority = 'HIGHEST'

    def __init__(self) -> None:
        self._enforcement = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        names = [
            name[len('module.'):] if name.startswith('module.') else name
            for name in masked_param_names(checkpoint.get('state_dict', {}))
        ]
        if names:
            attach_mask_buffers(unwrap_model(runner.model), names)

    def enforce(self, runner) -> None:
        """Register mask enforcement on the runner's optimizer (once)."""
        if self._enforcement is None:
            self._enforcement = register_mask_enforcement(
                runner.optim_wrapper.optimizer, unwrap_model(runner.model))

    def log_sparsity(self, runner) -> None:
        runner.logger.info(
            f'{type(self).__name__}: per-layer sparsity\n' +
            format_sparsity_table(sparsity_stats(unwrap_model(runner.model))))

    def _add_sparsity(self, runner, metrics: Optional[Dict[str,
                                                           float]]) -> None:
        stats = sparsity_stats(unwrap_model(runner.model))
        if metrics is not None and stats:
            metrics['sparsity'] = overall_sparsity(stats)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._add_sparsity(runner, metrics)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._add_sparsity(runner, metrics)
