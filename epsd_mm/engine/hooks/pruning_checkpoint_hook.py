"""Pruned checkpoints in MMEngine runs: record, restore, check, report."""
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from mmengine.hooks import Hook
from torch import Tensor, nn

from epsd_mm.deploy.complexity import (format_complexity_change,
                                       model_complexity)
from epsd_mm.pruning import (PruningRecord, attach_mask_buffers,
                             check_masked_state_dict, format_slim_table,
                             get_masks, get_slim_spec, is_narrower,
                             masked_param_names,
                             overall_sparsity, rebuild_slim,
                             register_mask_enforcement,
                             rename_legacy_mask_keys, shape_mismatches,
                             sparsity_stats, to_plain)
from epsd_mm.registry import HOOKS
from ..runner_utils import rebind_runner, unwrap_model

Mismatch = Tuple[str, Tuple[int, ...], Tuple[int, ...]]


def strip_wrapper_prefix(state: Mapping[str, Any]) -> Dict[str, Any]:
    """Keys of a DDP-wrapped model's state dict as in the bare model."""
    return {
        key[len('module.'):] if key.startswith('module.') else key: value
        for key, value in state.items()
    }


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


@HOOKS.register_module()
class PruningCheckpointHook(Hook):
    """Pruned models through checkpoints, evaluation and training steps.

    ``tools/train.py`` and ``tools/test.py`` add it to every run whose
    config has no pruning hook (the pruning hooks derive from it), so a
    pruned checkpoint loads under any config:

    * ``after_load_checkpoint`` (before MMEngine loads the state dict)
      refuses corrupted checkpoints (NaN/inf, non-zero pruned weights),
      rebuilds the slim architecture the :class:`~epsd_mm.pruning.
      PruningRecord` describes (re-binding the optimizer and DDP wrapper)
      and attaches the mask buffers the state dict carries;
    * tensors that still do not fit stop the run: always in evaluation (a
      layer left at random initialisation gives meaningless metrics), and
      in training when they are a channel-pruned network without its spec;
    * every saved checkpoint carries the record (the loaded one's stages
      are kept, this hook's stage added by the pruning hooks);
    * pruned weights stay exactly zero after every optimizer step;
    * the sparsity, the effective parameter count and the channel sparsity
      join the val/test metrics.

    A pruning hook overrides :meth:`pruning_config` (its settings, compared
    with a restored checkpoint's: a run whose config asks for other
    settings stops at ``before_train`` and warns at ``before_test``),
    :meth:`pruning_progress`, :meth:`pruning_state` and
    :meth:`restore_stage`.

    Priority is HIGHEST: the architecture and masks exist before other
    hooks use the model, and the sparsity enters the metrics before
    ``RuntimeInfoHook`` logs them.
    """

    priority = 'HIGHEST'

    def __init__(self) -> None:
        self._enforcement = None
        self.loaded_record: Optional[PruningRecord] = None
        self.loaded_masks = False
        self._loaded_mismatches: Optional[List[Mismatch]] = None

    @property
    def name(self) -> str:
        """str: The stage name in the record (the class name)."""
        return type(self).__name__

    # A pruning hook's stage -----------------------------------------------
    def pruning_config(self) -> Optional[Dict[str, Any]]:
        """Settings a checkpoint's pruning must agree with; None: this hook
        prunes nothing itself."""
        return None

    def pruning_progress(self) -> Dict[str, Any]:
        """How far pruning got (e.g. rounds done)."""
        return {}

    def pruning_state(self) -> Dict[str, Tensor]:
        """Tensors the hook keeps across checkpoints."""
        return {}

    def restore_stage(self, stage: Dict[str, Any],
                      state: Dict[str, Tensor]) -> None:
        """Continue from this hook's stage of a loaded record."""

    # Checkpoints ----------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        record = PruningRecord.from_checkpoint(checkpoint)
        if self.loaded_record is not None:
            for name, stage in self.loaded_record.stages.items():
                record.stages.setdefault(name, stage)
        record.slim_spec = get_slim_spec(unwrap_model(runner.model))
        config = self.pruning_config()
        if config is not None:
            record.set_stage(self.name, config, self.pruning_progress(),
                             self.pruning_state())
        record.write(checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('state_dict', {})
        rename_legacy_mask_keys(state)
        check_checkpoint(checkpoint, 'the loaded checkpoint')
        record = PruningRecord.from_checkpoint(checkpoint)
        model = unwrap_model(runner.model)
        if record.slim_spec is not None:  # the architecture first
            before = dict(model.named_parameters())
            try:
                rebuild_slim(model, record.slim_spec)
            except ValueError as error:
                raise ValueError(
                    f'{self.name}: the checkpoint is channel-pruned, but its '
                    f'slim spec does not fit the model: {error}') from None
            if any(p is not before[n] for n, p in model.named_parameters()):
                rebind_runner(runner, before)
                runner.logger.info(
                    f'{self.name}: rebuilt the slim architecture the '
                    'checkpoint records before loading its weights:\n' +
                    format_slim_table(record.slim_spec))
        state = strip_wrapper_prefix(state)
        names = masked_param_names(state)
        if names:
            attach_mask_buffers(model, names)
        self._loaded_mismatches = shape_mismatches(model, state)
        self.loaded_masks = bool(names)
        self.loaded_record = record
        if self.name in record.stages:
            self.restore_stage(record.stages[self.name],
                               record.state.get(self.name, {}))

    def check_loaded_shapes(self, runner, strict: bool) -> None:
        """Refuse a loaded checkpoint whose tensors did not fit the model:
        a slim network without its spec, or (``strict``) anything."""
        mismatches, self._loaded_mismatches = self._loaded_mismatches, None
        if not mismatches:
            return
        spec = self.loaded_record.slim_spec if self.loaded_record else None
        if spec is not None:
            fix = ('The model was rebuilt from the slim spec the checkpoint '
                   'records, so the checkpoint comes from another model '
                   'config: use the config it was trained with.')
        elif is_narrower(mismatches):
            fix = ('The checkpoint holds a channel-pruned (slim) network but '
                   'records no slim spec, so its architecture cannot be '
                   'rebuilt: use the checkpoint as epsd_mm saved it, or '
                   "build the model as dict(type='epsd_mm.SlimModel', "
                   'model_type=..., slim_spec=..., ...) with its spec. To '
                   'fine-tune from a checkpoint with a smaller head on '
                   "purpose, load it through the backbone's init_cfg.")
        elif strict:
            fix = ('The checkpoint comes from a different architecture; '
                   'MMEngine would skip these tensors and evaluate their '
                   'layers at random initialisation. Use the config the '
                   'checkpoint was trained with.')
        else:
            return  # e.g. another head when fine-tuning: MMEngine warned
        shown = '; '.join(f'{key}: checkpoint {got}, model {want}'
                          for key, got, want in mismatches[:5])
        more = (f' (and {len(mismatches) - 5} more)'
                if len(mismatches) > 5 else '')
        raise ValueError(
            f'{self.name}: {len(mismatches)} tensor(s) of the loaded '
            f'checkpoint do not fit '
            f'{type(unwrap_model(runner.model)).__name__}: {shown}{more}. '
            f'{fix}')

    def config_mismatch(self) -> Dict[str, tuple]:
        """``{key: (checkpoint value, config value)}`` of the settings that
        differ between the loaded checkpoint and this hook."""
        ours = self.pruning_config()
        if ours is None or self.loaded_record is None:
            return {}
        saved = self.loaded_record.stages.get(self.name, {}).get('config', {})
        mismatch = {
            key: (saved[key], value)
            for key, value in to_plain(ours).items()
            if key in saved and saved[key] != value
        }
        # What was loaded decides, also for records without a granularity.
        restored = ('channel' if self.loaded_record.slim_spec is not None
                    else 'weight' if self.loaded_masks else None)
        granularity = ours.get('granularity')
        if None not in (restored, granularity) and restored != granularity:
            mismatch['granularity'] = (restored, granularity)
        return mismatch

    def restored_pruning(self) -> bool:
        """Whether the loaded checkpoint brought masks or removed channels."""
        return self.loaded_masks or (self.loaded_record is not None and
                                     self.loaded_record.slim_spec is not None)

    def check_restored(self) -> None:
        """Stop a training run whose restored pruning contradicts its
        config (the config values could not take effect)."""
        mismatch = self.config_mismatch()
        if mismatch:
            diffs = ', '.join(f'{k}: checkpoint {a!r} vs config {b!r}'
                              for k, (a, b) in mismatch.items())
            key, (value, _) = next(iter(mismatch.items()))
            raise ValueError(
                f'{self.name}: the loaded checkpoint was pruned with other '
                f'settings than the config asks for ({diffs}). Pruning is '
                'restored from checkpoints, never redone, so the config '
                'values cannot take effect. Resume with the settings the '
                'checkpoint was pruned with (e.g. --cfg-options '
                f'default_hooks.pruning.{key}={value!r}), or start from a '
                'dense checkpoint in a new work_dir.')

    # Evaluation -----------------------------------------------------------
    def before_val(self, runner) -> None:
        self.check_loaded_shapes(runner, strict=True)

    def before_test(self, runner) -> None:
        self.check_loaded_shapes(runner, strict=True)
        if self.pruning_config() is None:
            return
        mismatch = self.config_mismatch()
        if mismatch:
            runner.logger.warning(
                f'{self.name}: the checkpoint was pruned with ' +
                ', '.join(f'{k}={a!r}' for k, (a, _) in mismatch.items()) +
                ', not with the ' +
                ', '.join(f'{k}={b!r}' for k, (_, b) in mismatch.items()) +
                " of the config; the reported sparsity is the checkpoint's.")
        model = unwrap_model(runner.model)
        if not get_masks(model) and get_slim_spec(model) is None:
            runner.logger.warning(
                f'{self.name}: the config prunes, but the evaluated model '
                'has no pruning masks nor removed channels (a dense '
                'checkpoint, or none): the metrics are those of a dense '
                'model.')

    def _add_metrics(self, runner, metrics: Optional[Dict[str,
                                                          float]]) -> None:
        if metrics is None:
            return
        model = unwrap_model(runner.model)
        stats = sparsity_stats(model)
        if stats:
            metrics['sparsity'] = overall_sparsity(stats)
            metrics['effective_params'] = model_complexity(
                model)[-1].effective_params
        spec = get_slim_spec(model)
        if spec and 'channels' in spec:
            channels = spec['channels']
            metrics['channel_sparsity'] = (
                1.0 - channels['kept'] / channels['total'])

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._add_metrics(runner, metrics)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._add_metrics(runner, metrics)

    # Training -------------------------------------------------------------
    def before_train(self, runner) -> None:
        self.check_loaded_shapes(runner, strict=False)
        self.enforce(runner)

    def enforce(self, runner) -> None:
        """Keep pruned weights exactly zero after every optimizer step (a
        model without masks is left alone)."""
        if self._enforcement is None:
            self._enforcement = register_mask_enforcement(
                runner.optim_wrapper.optimizer, unwrap_model(runner.model))

    def log_pruning(self, runner, table: str, before: list,
                    inputs: Optional[Tensor] = None) -> None:
        """The per-layer result to the log (and, for masks, per-layer
        sparsity scalars to the visualizer backends), then the effective
        params and FLOPs before and after."""
        model = unwrap_model(runner.model)
        runner.logger.info(f'{self.name}: per-layer result\n{table}')
        stats = sparsity_stats(model)
        if stats:
            scalars = {f'sparsity/{s.name}': s.sparsity for s in stats}
            scalars['sparsity/total'] = overall_sparsity(stats)
            runner.visualizer.add_scalars(scalars, step=runner.iter)
        runner.logger.info(
            f'{self.name}: effective params and FLOPs (pruned weights do no '
            'work) before and after pruning\n' + format_complexity_change(
                before, complexity(model, inputs)))


def complexity(model: nn.Module, inputs: Optional[Tensor] = None) -> list:
    """:func:`~epsd_mm.deploy.model_complexity` in eval mode (modes are
    restored)."""
    training = model.training
    try:
        return model_complexity(model.eval(), inputs)
    finally:
        model.train(training)
