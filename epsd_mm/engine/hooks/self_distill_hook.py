"""Keep the training-time state of self-distillation up to date."""
from mmengine.hooks import Hook

from epsd_mm.registry import HOOKS
from ..runner_utils import is_training_run, unwrap_model

#: Top-level checkpoint key of the SD method's state.
SD_STATE_KEY = 'sd_state'
# Written by epsd_mm < 0.2 (the PS-KD teacher's state dict).
_LEGACY_TEACHER_KEY = 'sd_teacher_state_dict'


@HOOKS.register_module()
class SelfDistillHook(Hook):
    """Drive the SD method of a self-distilling model through training.

    The hook knows no method by name: it lets the model's SD method
    (``model.sd``, see :class:`~epsd_mm.sd_methods.BaseSDMethod`)
    check the train loader before the run, prepare at ``before_train``,
    update its state before every iteration (PS-KD: progress and teacher
    refreshes) and save / restore its state in checkpoints.
    """

    priority = 'NORMAL'

    def __init__(self) -> None:
        self._loaded_state = None

    @staticmethod
    def _method(runner):
        model = unwrap_model(runner.model)
        if not hasattr(model, 'sd_enabled'):
            raise TypeError(
                f'SelfDistillHook needs a self-distilling model '
                f'(SelfDistillMixin), got {type(model).__name__}. Use '
                "e.g. type='epsd_mm.SelfDistillSegmentor' or remove the hook.")
        return model, model.sd

    def before_run(self, runner) -> None:
        _, method = self._method(runner)
        if method is not None and is_training_run(runner):
            method.check_train_loader(runner.train_dataloader)

    def before_train(self, runner) -> None:
        model, method = self._method(runner)
        if method is None:
            return
        if self._loaded_state is not None:
            method.load_state_dict(self._loaded_state)
            self._loaded_state = None
        method.before_train(model)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        model, method = self._method(runner)
        if method is not None:
            method.before_train_iter(model, runner.iter, runner.max_iters,
                                     len(runner.train_dataloader))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        _, method = self._method(runner)
        if method is not None:
            checkpoint[SD_STATE_KEY] = method.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(SD_STATE_KEY)
        if state is None and _LEGACY_TEACHER_KEY in checkpoint:
            state = dict(teacher=checkpoint[_LEGACY_TEACHER_KEY])
        self._loaded_state = state
