"""Run a model on substituted parameters and leave it as it was."""
from contextlib import contextmanager
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping,
                    Optional)

import torch
import torch.nn as nn
from torch import Tensor
from torch.func import functional_call

#: ``progress(message, fraction)``: what a criterion is doing (e.g. ``'loss
#: evaluation 2/7'``) and the fraction of its work done, in [0, 1].
Progress = Callable[[str, float], None]


class _ModelCall(nn.Module):
    """Holds ``model`` so that ``fn(model, ...)`` becomes a ``forward``.

    :func:`torch.func.functional_call` substitutes tensors only while the
    ``forward`` of the module it is given runs. Wrapping the model makes that
    forward ``fn(self.model, *args)``, so *any* method ``fn`` calls on the
    model (``model.loss(...)``, ``model.backbone(...)``, ...) sees the
    substituted tensors.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.model, *args)


def plain_forward(model: nn.Module, x: Tensor) -> Any:
    """``model(x)``: the default ``forward_fn`` of the criteria that run
    the network on a plain input tensor."""
    return model(x)


def call_with_tensors(model: nn.Module, tensors: Mapping[str, Tensor],
                      fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(model, *args)`` with some parameters/buffers substituted.

    Nothing of ``model`` is modified, except that buffers not listed in
    ``tensors`` are updated in place as usual (e.g. BatchNorm running stats
    in training mode); see :func:`preserved_state`. Tied parameters stay
    tied; entries not listed keep the model's own tensors.

    Args:
        model (nn.Module): The model.
        tensors (Mapping[str, Tensor]): Parameter or buffer name (as in
            ``model.named_parameters()`` / ``named_buffers()``) to the tensor
            used in its place.
        fn (Callable): Called as ``fn(model, *args)``.
        *args: Further arguments of ``fn``.

    Returns:
        Any: What ``fn`` returns.
    """
    substitutes = {f'model.{name}': t for name, t in tensors.items()}
    return functional_call(_ModelCall(model), substitutes, (fn, ) + args)


@contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore all buffers and train/eval modes of ``model`` on exit.

    Scoring runs forward passes that update BatchNorm running statistics
    (and may switch modes); inside this context they are restored afterwards,
    so the model leaves exactly as it came in.

    Args:
        model (nn.Module): The model.
    """
    buffers = {
        name: buf.detach().clone()
        for name, buf in model.named_buffers()
    }
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buf in model.named_buffers():
                if name in buffers:
                    buf.copy_(buffers[name])
        for module, training in modes:
            module.training = training


def detached_leaves(tensors: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Differentiable aliases of ``tensors`` (no copy).

    Fresh leaf tensors sharing storage with the originals: differentiating
    with respect to them never touches ``param.grad`` and works for frozen
    weights too.

    Args:
        tensors (Mapping[str, Tensor]): E.g. the prunable weights.

    Returns:
        dict[str, Tensor]: Leaf tensors requiring grad, by name.
    """
    return {n: t.detach().requires_grad_(True) for n, t in tensors.items()}


def first_sample(batches: Optional[Iterable[Any]], who: str) -> Tensor:
    """One sample of the first batch, with batch size 1.

    The sample tensor is the batch itself, its ``'inputs'`` entry (MMEngine
    models) or its first element (``(inputs, targets)`` tuples).

    Args:
        batches (Iterable, optional): Scoring batches.
        who (str): What needs the sample, for the error message.

    Returns:
        Tensor: ``x[:1]`` of the first batch's input tensor ``x``.
    """
    for batch in batches or ():
        x = batch
        if isinstance(x, Mapping):
            x = x.get('inputs')
        elif isinstance(x, (list, tuple)) and x:
            x = x[0]
        if isinstance(x, Tensor) and x.dim() >= 1:
            return x[:1]
        break
    raise ValueError(
        f'{who} runs the network on one input and needs its shape: pass '
        "batches whose first element is a tensor, a dict with an 'inputs' "
        "tensor or an (inputs, ...) tuple, or the input's shape explicitly")


def as_batch_list(batches: Iterable[Any]) -> List[Any]:
    """Materialise scoring batches into a non-empty list.

    Args:
        batches (Iterable): Batches in the form ``loss_fn`` expects.

    Returns:
        list: The batches.
    """
    result = list(batches)
    if not result:
        raise ValueError('batches is empty; scoring needs at least one batch')
    return result


def scalar_loss(loss: Any) -> Tensor:
    """Check that ``loss_fn`` returned a differentiable scalar tensor.

    Args:
        loss (Any): What ``loss_fn`` returned.

    Returns:
        Tensor: The loss.
    """
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        got = (f'a tensor of shape {tuple(loss.shape)}' if isinstance(
            loss, Tensor) else type(loss).__name__)
        raise TypeError(
            f'loss_fn must return a scalar tensor, got {got}; sum a loss '
            'dict first (e.g. with `model.parse_losses(losses)[0]`)')
    if not loss.requires_grad:
        raise ValueError('the loss returned by loss_fn does not depend on '
                         'any parameter; is the model in no_grad mode?')
    return loss.reshape(())
