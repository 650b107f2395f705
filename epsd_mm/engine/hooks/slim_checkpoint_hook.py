"""Channel-pruned (slim) checkpoints in MMEngine runs: save, rebuild, check.

A slim checkpoint records its slim spec in ``checkpoint['meta']`` (see
:data:`~epsd_mm.models.SLIM_SPEC_META_KEY`). MMEngine builds the dense model
from the config and loads checkpoints non-strictly: tensors of another shape
are skipped with a warning, leaving those layers at their random
initialisation. :class:`SlimCheckpointMixin` closes that gap for a hook:
the slim architecture is rebuilt before the weights load (``--resume`` and
``load_from`` alike), the optimizer and DDP wrapper are re-bound before
MMEngine loads the optimizer state, and tensors that still do not fit stop
the run instead of being skipped.
"""
from typing import List, Mapping, Optional, Tuple

from mmengine.hooks import Hook
from torch import Tensor

from epsd_mm.models.slim_model import (SLIM_SPEC_META_KEY,
                                       slim_spec_of_checkpoint)
from epsd_mm.pruning.slimming import (format_slim_table, get_slim_spec,
                                      rebuild_slim, shape_mismatches)
from epsd_mm.registry import HOOKS
from .channel_pruning import rebind_runner
from .mask_hook import unwrap_model

Mismatch = Tuple[str, Tuple[int, ...], Tuple[int, ...]]


def _model_state(checkpoint: Mapping) -> Mapping[str, Tensor]:
    """The checkpoint's state dict with keys as in the unwrapped model."""
    state = checkpoint.get('state_dict', checkpoint)
    return {
        key[len('module.'):] if key.startswith('module.') else key: value
        for key, value in state.items()
    }


def _is_narrower(mismatches: List[Mismatch]) -> bool:
    return all(
        len(got) == len(want) and all(g <= w for g, w in zip(got, want))
        for _, got, want in mismatches)


class SlimCheckpointMixin:
    """Slim checkpoints for a hook: spec saved, architecture rebuilt on
    load, unfitting tensors refused.

    A hook mixing it in calls :meth:`save_slim_spec` from
    ``before_save_checkpoint``, :meth:`restore_slim` from
    ``after_load_checkpoint`` and :meth:`check_loaded_shapes` at the start
    of training (``strict=False``) and evaluation (``strict=True``).

    * A checkpoint with a slim spec: the model is rebuilt to it (once; the
      same spec again is a no-op, so several such hooks can coexist), then
      every tensor must fit.
    * A checkpoint without one whose mismatched tensors are all narrower
      than the model's (a channel-pruned state dict without its spec) is
      refused: its architecture cannot be rebuilt.
    * Other mismatches (a different head, on purpose when fine-tuning) keep
      MMEngine's warning in training, and are refused before an evaluation
      (a layer left at random initialisation gives meaningless metrics).
    """

    _loaded_slim_spec: Optional[dict] = None
    _loaded_mismatches: Optional[List[Mismatch]] = None

    def save_slim_spec(self, runner, checkpoint: dict) -> None:
        """Record the model's slim spec, if it is slim, in the meta."""
        spec = get_slim_spec(unwrap_model(runner.model))
        if spec is not None:
            checkpoint.setdefault('meta', {})[SLIM_SPEC_META_KEY] = spec

    def restore_slim(self, runner, checkpoint: Mapping) -> Optional[dict]:
        """Rebuild the checkpoint's slim architecture on the runner's model
        (before MMEngine loads the state dict) and note unfitting tensors.

        Returns:
            dict | None: The checkpoint's slim spec.
        """
        name = type(self).__name__
        spec = slim_spec_of_checkpoint(checkpoint)
        model = unwrap_model(runner.model)
        if spec is not None:
            before = dict(model.named_parameters())
            try:
                rebuild_slim(model, spec)
            except ValueError as error:
                raise ValueError(
                    f'{name}: the checkpoint is channel-pruned, but its slim '
                    f'spec does not fit the model: {error}') from None
            if any(p is not before[n] for n, p in model.named_parameters()):
                rebind_runner(runner, before)
                runner.logger.info(
                    f'{name}: rebuilt the slim architecture the checkpoint '
                    'records before loading its weights:\n' +
                    format_slim_table(spec))
        self._loaded_slim_spec = spec
        self._loaded_mismatches = shape_mismatches(model,
                                                   _model_state(checkpoint))
        return spec

    def check_loaded_shapes(self, runner, strict: bool) -> None:
        """Refuse a loaded checkpoint whose tensors did not fit the model
        (see the class doc); ``strict`` refuses any mismatch."""
        mismatches, self._loaded_mismatches = self._loaded_mismatches, None
        if not mismatches:
            return
        spec = self._loaded_slim_spec
        narrower = _is_narrower(mismatches)
        if spec is not None:
            fix = ('The model was rebuilt from the slim spec the checkpoint '
                   'records, so the checkpoint comes from another model '
                   'config: use the config it was trained with.')
        elif narrower:
            fix = ('The checkpoint holds a channel-pruned (slim) network but '
                   f"records no slim spec (checkpoint['meta']"
                   f"['{SLIM_SPEC_META_KEY}']), so its architecture cannot "
                   'be rebuilt: use the checkpoint as epsd_mm saved it, or '
                   "build the model as dict(type='epsd_mm.SlimModel', "
                   'model_type=..., slim_spec=..., ...) with its spec. To '
                   'fine-tune from a checkpoint with a smaller head on '
                   'purpose, load '
                   "it through the backbone's init_cfg instead.")
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
            f'{type(self).__name__}: {len(mismatches)} tensor(s) of the '
            f'loaded checkpoint do not fit '
            f'{type(unwrap_model(runner.model)).__name__}: {shown}{more}. '
            f'{fix}')


@HOOKS.register_module()
class SlimCheckpointHook(SlimCheckpointMixin, Hook):
    """Load and save channel-pruned (slim) checkpoints with any config.

    ``tools/train.py`` and ``tools/test.py`` add it to every run, so a slim
    checkpoint also loads under a config without an ``EarlyPruningHook``
    (e.g. the dense config of the same model): its architecture is rebuilt
    from the spec it records, and the run's own checkpoints record it again.
    Tensors that do not fit stop the run (see :class:`SlimCheckpointMixin`);
    in evaluation any mismatch does.

    Priority is HIGHEST, like the pruning hooks: the architecture is rebuilt
    before other hooks use the model.
    """

    priority = 'HIGHEST'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self.save_slim_spec(runner, checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self.restore_slim(runner, checkpoint)

    def before_train(self, runner) -> None:
        self.check_loaded_shapes(runner, strict=False)

    def before_val(self, runner) -> None:
        self.check_loaded_shapes(runner, strict=True)

    def before_test(self, runner) -> None:
        self.check_loaded_shapes(runner, strict=True)
