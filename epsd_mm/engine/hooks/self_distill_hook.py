"""Keep the training-time state of self-distillation up to date."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from epsd_mm.registry import HOOKS

TEACHER_KEY = 'sd_teacher_state_dict'


@HOOKS.register_module()
class SelfDistillHook(Hook):
    """Feed a :class:`~epsd_mm.models.SelfDistillMixin` model its SD state.

    * sets ``model.sd_progress = iter / max_iters`` before every iteration
      (PS-KD's alpha grows with it);
    * for PS-KD, keeps a frozen snapshot of the model as teacher and refreshes
      it every ``snapshot_interval`` iterations (default: once per epoch, i.e.
      every ``len(train_dataloader)`` iterations), so the teacher is "the
      model at the end of the previous epoch" without storing per-pixel
      predictions of the whole dataset; the snapshot is saved in checkpoints
      and restored on resume;
    * clears DLB's previous batch when training starts.

    Args:
        snapshot_interval (int, optional): Iterations between PS-KD teacher
            refreshes. Defaults to None (one epoch).
    """

    priority = 'NORMAL'

    def __init__(self, snapshot_interval: Optional[int] = None) -> None:
        if snapshot_interval is not None and snapshot_interval < 1:
            raise ValueError('SelfDistillHook: snapshot_interval must be a '
                             f'positive number of iterations, got '
                             f'{snapshot_interval}.')
        self.snapshot_interval = snapshot_interval
        self._teacher_state = None

    @staticmethod
    def _model(runner):
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        if not hasattr(model, 'sd_enabled'):
            raise TypeError(
                f'SelfDistillHook needs a self-distilling model '
                f'(SelfDistillMixin), got {type(model).__name__}. Use '
                "e.g. type='epsd_mm.SelfDistillSegmentor' or remove the hook.")
        return model

    def _interval(self, runner) -> int:
        return self.snapshot_interval or len(runner.train_dataloader)

    def before_train(self, runner) -> None:
        model = self._model(runner)
        model.reset_sd_state()
        if model.sd_method == 'pskd':
            teacher = model.sd_snapshot()
            if self._teacher_state is not None:
                teacher.load_state_dict(self._teacher_state)
                self._teacher_state = None
            model.set_sd_teacher(teacher)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        model = self._model(runner)
        model.sd_progress = min(runner.iter / max(runner.max_iters, 1), 1.0)
        if (model.sd_method == 'pskd' and runner.iter > 0
                and runner.iter % self._interval(runner) == 0):
            model.set_sd_teacher(model.sd_snapshot())

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        model = self._model(runner)
        if model.sd_method == 'pskd' and model.sd_teacher is not None:
            checkpoint[TEACHER_KEY] = model.sd_teacher.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._teacher_state = checkpoint.get(TEACHER_KEY)
