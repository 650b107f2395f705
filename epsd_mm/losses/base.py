"""What every self-distillation loss shares."""
import torch.nn as nn

from .kd_utils import check_loss_weight


class BaseSDLoss(nn.Module):
    """Base of the SD losses: weight, name in the loss dict, checks.

    Subclasses compute the unweighted term and multiply by
    :attr:`loss_weight`; they list their own options in :meth:`_repr_args`.

    Args:
        loss_weight (float): Weight of the loss, ``>= 0``. Defaults to 1.0.
        loss_name (str): Key of the loss in the loss dict. MMEngine sums and
            back-propagates only keys starting with ``'loss'``, so other
            names are refused. Defaults to ``'loss_sd'``.
    """

    #: Whether the loss already contains the task cross-entropy (PS-KD),
    #: so models drop their own for the distilled head; False: it is added.
    replaces_task_loss: bool = False

    def __init__(self,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_sd') -> None:
        super().__init__()
        if not isinstance(loss_name, str) or not loss_name.startswith('loss'):
            raise ValueError(
                f"loss_name must start with 'loss' (MMEngine only sums and "
                f'back-propagates such keys), got {loss_name!r}.')
        self.loss_weight = check_loss_weight(loss_weight)
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        """str: Name of the loss item in the loss dict."""
        return self._loss_name

    def _repr_args(self) -> dict:
        """Options shown by ``repr`` besides weight and name."""
        return {}

    def extra_repr(self) -> str:
        args = {**self._repr_args(), 'loss_weight': self.loss_weight,
                'loss_name': self.loss_name}
        return ', '.join(f'{k}={v!r}' for k, v in args.items())
