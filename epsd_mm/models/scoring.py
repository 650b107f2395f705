"""Adapters from MMEngine models to the pruning core's scoring interface.

The pruning core scores with ``loss_fn(model, batch) -> scalar`` and, for
data-free criteria, ``forward_fn(model, x)``; channel groups are traced
with a forward through every layer training uses (:func:`trace_forward`).
For an MMEngine model the batch is the data preprocessor's output
(``dict(inputs=..., data_samples=...)``). A self-distilling model's scoring loss is its SD loss, defined at
initialisation by its SD method (:meth:`BaseSDMethod.scoring_state`), or
the plain task loss for the "simple combination" baseline.
"""
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional

from torch import Tensor, nn

#: Scoring losses: the SD loss (EPSD) or the plain task loss.
SCORING_LOSSES = ('sd', 'task')


def scoring_loss_of(criterion, loss: Optional[str]) -> Optional[str]:
    """The scoring loss a pruning hook uses with ``criterion``.

    Args:
        criterion (Criterion): The built criterion.
        loss (str, optional): The configured loss: ``'sd'``, ``'task'`` or
            None (``'sd'`` for data criteria).

    Returns:
        str | None: ``'sd'`` or ``'task'``; None for data-free criteria,
        which score without a loss (configuring one for them is refused:
        it could not take effect).
    """
    if criterion.data != 'batches':
        if loss is not None:
            raise ValueError(
                f'criterion {criterion.name!r} is data-free: it scores '
                f'without a loss, so loss={loss!r} cannot take effect. '
                'Remove default_hooks.pruning.loss, or use a data criterion '
                "(e.g. 'prospr', 'snip').")
        return None
    loss = loss or 'sd'
    if loss not in SCORING_LOSSES:
        raise ValueError("loss must be 'sd' (EPSD) or 'task' (simple "
                         f'combination), got {loss!r}.')
    return loss


def model_loss(model: nn.Module, batch: dict) -> Tensor:
    """The scalar training loss of an MMEngine model on a preprocessed
    batch."""
    losses = model(**batch, mode='loss')
    loss, _ = model.parse_losses(losses)
    return loss


def tensor_forward(model: nn.Module, x: Tensor) -> Any:
    """Run an MMEngine model on a plain input tensor (``mode='tensor'``)."""
    return model(x, mode='tensor')


def as_module_list(heads: nn.Module) -> List[nn.Module]:
    """The stages of a head given as one module or an ``nn.ModuleList``."""
    return list(heads) if isinstance(heads, nn.ModuleList) else [heads]


def decode_stages(heads: List[nn.Module], feats: Any) -> List[Tensor]:
    """Logits of every decode stage of an mmseg segmentor on ``feats``:
    one for an ``EncoderDecoder``; a cascade's later stages refine the
    previous stage's output."""
    outputs = [heads[0](feats)]
    for stage in heads[1:]:
        outputs.append(stage(feats, outputs[-1]))
    return outputs


def trace_forward(model: nn.Module, x: Tensor) -> Any:
    """Run every layer of an MMEngine model that training uses on a plain
    input tensor (the forward channel groups are traced with).

    ``mode='tensor'`` skips the auxiliary heads of mmseg segmentors, whose
    input channels must follow the backbone's too. So a segmentor with
    auxiliary heads runs its features (backbone and neck, computed once)
    through every decode stage (cascades included) and every auxiliary
    head; any other model runs ``mode='tensor'`` (e.g. the CAM localiser:
    backbone and head).

    Args:
        model (nn.Module): The (unwrapped) model.
        x (Tensor): A preprocessed input batch.

    Returns:
        Tensor | list[Tensor]: The outputs of all heads.
    """
    if not getattr(model, 'with_auxiliary_head', False):
        return tensor_forward(model, x)
    feats = model.extract_feat(x)
    outputs = decode_stages(as_module_list(model.decode_head), feats)
    outputs += [head(feats) for head in as_module_list(model.auxiliary_head)]
    return outputs


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
    ``loss='task'`` switches the SD term off; None (data-free criteria)
    changes nothing. A plain MMEngine model (no SD method) scores with its
    own loss either way. Everything is restored on exit.

    Args:
        model (nn.Module): The (unwrapped) model.
        loss (str, optional): ``'sd'``, ``'task'`` or None.
    """
    if loss is not None and loss not in SCORING_LOSSES:
        raise ValueError(f"scoring loss must be 'sd' or 'task', got {loss!r}")
    method = getattr(model, 'sd', None)
    if method is None or loss is None:
        yield
        return
    with (model.sd_disabled()
          if loss == 'task' else method.scoring_state(model)):
        yield
