"""Stop training the moment the loss stops being a number."""
import math
from typing import Optional

from mmengine.hooks import Hook
from torch import Tensor

from epsd_mm.registry import HOOKS


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Raise when a training iteration's loss is NaN or infinite.

    It runs after every iteration before ``CheckpointHook`` (priority
    ``ABOVE_NORMAL`` against ``VERY_LOW``), so a diverged run exits with an
    error without writing a checkpoint, and ``last_checkpoint`` keeps
    pointing at the last finite one. (mmdet's ``CheckInvalidLossHook`` does a
    similar check with ``assert``, which ``python -O`` removes, and only
    every ``interval`` iterations.)
    """

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs:
            return
        values = {
            k: float(v.detach()) if isinstance(v, Tensor) else float(v)
            for k, v in outputs.items()
        }
        if all(math.isfinite(v) for v in values.values()):
            return
        terms = ', '.join(f'{k}={v:.4g}' for k, v in values.items())
        raise FloatingPointError(
            f'The loss is not finite at iteration {runner.iter + 1} '
            f'({terms}); training stopped without saving a checkpoint. '
            'Lower the learning rate, check the data of this batch, or '
            'resume from the last checkpoint with a smaller lr.')
