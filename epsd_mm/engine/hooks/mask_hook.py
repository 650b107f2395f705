"""What every hook that prunes a model during an MMEngine run shares."""
from typing import Any, Dict, Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop
from torch import nn

from epsd_mm.deploy.complexity import (format_complexity_table,
                                       model_complexity)
from epsd_mm.pruning import (attach_mask_buffers, check_masked_state_dict,
                             format_sparsity_table, get_masks,
                             masked_param_names, overall_sparsity,
                             register_mask_enforcement,
                             rename_legacy_mask_keys, sparsity_stats)

#: ``checkpoint['meta'][META_KEY][<hook class name>]`` records how the
#: checkpoint was pruned (and how far, for schedules over several steps).
META_KEY = 'epsd_pruning'


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP/FSDP wrapper."""
    return model.module if is_model_wrapper(model) else model


def is_training_run(runner) -> bool:
    """Whether the runner was started with ``train()``: only then is its
    train loop built before ``before_run`` (``test()`` and ``val()`` leave
    it a config, and building it would load the training data)."""
    return isinstance(getattr(runner, '_train_loop', None), BaseLoop)


def check_checkpoint(checkpoint: dict, source: str) -> None:
    """Refuse a checkpoint with non-finite tensors or revived pruned weights
    (model state and optimizer state), before anything is loaded."""
    check_masked_state_dict(checkpoint.get('state_dict', {}), source)
    for index, state in checkpoint.get('optimizer', {}).get('state',
                                                            {}).items():
        for key, value in state.items():
            if (isinstance(value, torch.Tensor) and value.is_floating_point()
                    and not torch.isfinite(value).all()):
                raise ValueError(
                    f'{source}: optimizer state {key!r} of parameter '
                    f'{index} holds NaN/inf. The file is corrupted or '
                    'training diverged before it was saved; use an earlier '
                    'checkpoint.')


class BaseMaskHook(Hook):
    """Masks in checkpoints, enforcement after optimizer steps, reporting.

    * ``after_load_checkpoint`` (called before the state dict is loaded)
      renames mask keys of older checkpoints, refuses corrupted checkpoints
      (NaN/inf anywhere, non-zero pruned weights), and creates the mask
      buffers the checkpoint carries, so resume and ``load_from`` restore
      them;
    * the pruning set-up (:meth:`pruning_config`) is recorded in the
      checkpoint's meta; a run that restores masks from a checkpoint pruned
      with other settings than its config asks for stops at
      ``before_train`` (the config values could not take effect) and warns
      at ``before_test``, as it does when a pruning config evaluates a
      checkpoint without masks;
    * :meth:`enforce` keeps pruned weights exactly zero after every
      optimizer step (momentum, weight decay, Adam, AMP);
    * the overall sparsity and the effective parameter count (pruned
      weights excluded) join the val/test metrics, logged next to mIoU and
      the like; per-layer sparsity goes to the log and to the visualizer's
      backends (TensorBoard, W&B, ...) as scalars, with the dense and
      effective params (and FLOPs, given an input) per part.

    Priority is HIGHEST: masks exist before other hooks train, and the
    sparsity enters the metrics before ``RuntimeInfoHook`` (VERY_HIGH) logs
    them.
    """

    priority = 'HIGHEST'

    def __init__(self) -> None:
        self._enforcement = None
        self.loaded_meta: Optional[Dict[str, Any]] = None
        self.loaded_masks = False

    def pruning_config(self) -> Dict[str, Any]:
        """Settings a checkpoint's masks must agree with (for the meta)."""
        return {}

    def pruning_progress(self) -> Dict[str, Any]:
        """How far pruning got, restored by :meth:`restore_progress`."""
        return {}

    def restore_progress(self, progress: Dict[str, Any]) -> None:
        """Continue from what :meth:`pruning_progress` recorded."""

    def model_is_pruned(self, model: nn.Module) -> bool:
        """Whether the (unwrapped) model carries this hook's pruning."""
        return bool(get_masks(model))

    # Checkpoints ----------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.setdefault('meta', {}).setdefault(META_KEY, {})
        meta[type(self).__name__] = dict(
            config=self.pruning_config(), progress=self.pruning_progress())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('state_dict', {})
        rename_legacy_mask_keys(state)
        check_checkpoint(checkpoint, 'the loaded checkpoint')
        names = [
            name[len('module.'):] if name.startswith('module.') else name
            for name in masked_param_names(state)
        ]
        if names:
            attach_mask_buffers(unwrap_model(runner.model), names)
        self.loaded_masks = bool(names)
        self.loaded_meta = checkpoint.get('meta', {}).get(META_KEY, {}).get(
            type(self).__name__)
        if self.loaded_meta:
            self.restore_progress(self.loaded_meta.get('progress', {}))

    def config_mismatch(self) -> Dict[str, tuple]:
        """``{key: (checkpoint value, config value)}`` of the settings that
        differ between the loaded checkpoint and this hook."""
        if not self.loaded_meta:
            return {}
        saved = self.loaded_meta.get('config', {})
        ours = self.pruning_config()
        return {
            key: (saved[key], ours[key])
            for key in ours if key in saved and saved[key] != ours[key]
        }

    def check_restored(self, runner) -> None:
        """Stop a training run whose restored masks contradict its config."""
        mismatch = self.config_mismatch()
        if mismatch:
            diffs = ', '.join(f'{k}: checkpoint {a!r} vs config {b!r}'
                              for k, (a, b) in mismatch.items())
            raise ValueError(
                f'{type(self).__name__}: the loaded checkpoint was pruned '
                f'with other settings than the config asks for ({diffs}). '
                'Masks are restored from checkpoints, never re-scored, so '
                'the config values cannot take effect. Resume with the '
                'settings the checkpoint was pruned with (e.g. --cfg-options '
                f'default_hooks.pruning.{next(iter(mismatch))}='
                f'{next(iter(mismatch.values()))[0]!r}), or start from a '
                'dense checkpoint in a new work_dir.')

    def before_test(self, runner) -> None:
        model = unwrap_model(runner.model)
        mismatch = self.config_mismatch()
        if mismatch:
            runner.logger.warning(
                f'{type(self).__name__}: the checkpoint was pruned with '
                + ', '.join(f'{k}={a!r}' for k, (a, _) in mismatch.items())
                + ', not with the ' + ', '.join(
                    f'{k}={b!r}' for k, (_, b) in mismatch.items()) +
                ' of the config; the reported sparsity is the '
                "checkpoint's.")
        if not self.model_is_pruned(model):
            runner.logger.warning(
                f'{type(self).__name__}: the config prunes, but the '
                'evaluated model has no pruning masks nor removed channels '
                '(a dense checkpoint, or none): the metrics are those of a '
                'dense model.')

    # Training -------------------------------------------------------------
    def enforce(self, runner) -> None:
        """Register mask enforcement on the runner's optimizer (once)."""
        if self._enforcement is None:
            self._enforcement = register_mask_enforcement(
                runner.optim_wrapper.optimizer, unwrap_model(runner.model))

    def log_sparsity(self, runner,
                     inputs: Optional[torch.Tensor] = None) -> None:
        """Per-layer table to the log, per-layer scalars to the visualizer,
        and dense vs effective params (and FLOPs on ``inputs``, e.g. one
        sample of a batch) per part of the model."""
        model = unwrap_model(runner.model)
        stats = sparsity_stats(model)
        runner.logger.info(f'{type(self).__name__}: per-layer sparsity\n' +
                           format_sparsity_table(stats))
        scalars = {f'sparsity/{s.name}': s.sparsity for s in stats}
        scalars['sparsity/total'] = overall_sparsity(stats)
        runner.visualizer.add_scalars(scalars, step=runner.iter)
        training = model.training
        try:
            rows = model_complexity(model.eval(), inputs)
        finally:
            model.train(training)
        runner.logger.info(f'{type(self).__name__}: params and FLOPs, '
                           'dense and effective (pruned weights do no '
                           'work)\n' + format_complexity_table(rows))

    def _add_sparsity(self, runner, metrics: Optional[Dict[str,
                                                           float]]) -> None:
        model = unwrap_model(runner.model)
        stats = sparsity_stats(model)
        if metrics is not None and stats:
            metrics['sparsity'] = overall_sparsity(stats)
            metrics['effective_params'] = model_complexity(
                model)[-1].effective_params

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._add_sparsity(runner, metrics)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._add_sparsity(runner, metrics)
