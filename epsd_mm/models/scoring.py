"""Adapters from MMEngine models to the pruning core's scoring interface.

The pruning core scores with ``loss_fn(model, batch) -> scalar`` and, for
data-free criteria, ``forward_fn(model, x)``. For an MMEngine model the
batch is the data preprocessor's output (``dict(inputs=..., data_samples=
...)``). A self-distilling model's scoring loss is its SD loss, defined at
initialisation by its SD method (:meth:`BaseSDMethod.scoring_state`), or
the plain task loss for the "simple combination" baseline.
"""
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from torch import Tensor, nn

#: Scoring losses: the SD loss (EPSD) or the plain task loss.
SCORING_LOSSES = ('sd', 'task')


def model_loss(model: nn.Module, batch: dict) -> Tensor:
    """The scalar training loss of an MMEngine model on a preprocessed
    batch."""
    losses = model(**batch, mode='loss')
    loss, _ = model.parse_losses(losses)
    return loss


def tensor_forward(model: nn.Module, x: Tensor) -> Any:
    """Run an MMEngine model on a plain input tensor (``mode='tensor'``)."""
    return model(x, mode='tensor')


class ScoringLoss:
    """:func:`model_loss` for the pruning core, with an optional callback.

    It exposes the SD method's per-iteration state through ``get_state`` /
    ``set_state``, so a criterion that recomputes an inner step (ProsPr's
    memory-saving path) sees exactly the state that step saw.

    Args:
        model (nn.Module): The (unwrapped) model.
        on_call (Callable, optional): Called after every loss evaluation,
            e.g. to report progress. Defaults to None.
    """

    def __init__(self,
                 model: nn.Module,
                 on_call: Optional[Callable[[], None]] = None) -> None:
        self.model = model
        self.on_call = on_call

    def __call__(self, module: nn.Module, batch: dict) -> Tensor:
        loss = model_loss(module, batch)
        if self.on_call is not None:
            self.on_call()
        return loss

    def _method(self):
        return getattr(self.model, 'sd', None)

    def get_state(self) -> Any:
        method = self._method()
        return None if method is None else method.get_state()

    def set_state(self, state: Any) -> None:
        method = self._method()
        if method is not None:
            method.set_state(state)


@contextmanager
def scoring_state(model: nn.Module, loss: str) -> Iterator[None]:
    """Put a model in the state its scoring loss is defined in.

    ``loss='sd'`` uses the SD method's definition at initialisation;
    ``loss='task'`` switches the SD term off. A plain MMEngine model (no SD
    method) scores with its own loss either way. Everything is restored on
    exit.

    Args:
        model (nn.Module): The (unwrapped) model.
        loss (str): ``'sd'`` or ``'task'``.
    """
    if loss not in SCORING_LOSSES:
        raise ValueError(f"scoring loss must be 'sd' or 'task', got {loss!r}")
    method = getattr(model, 'sd', None)
    if method is None:
        yield
        return
    with (model.sd_disabled()
          if loss == 'task' else method.scoring_state(model)):
        yield
