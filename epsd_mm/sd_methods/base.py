"""The interface every self-distillation method implements."""
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

from torch import Tensor, nn

from epsd_mm.registry import MODELS


class BaseSDMethod:
    """One self-distillation method: its loss call, state and checkpoints.

    A self-distilling model (see :class:`~epsd_mm.models.SelfDistillMixin`)
    holds one method object as ``model.sd`` and hands it every training
    batch; hooks talk to it through the methods below, so neither the models
    nor the hooks know any method by name. The model side offers the task
    adapter the method works with: ``model.sd_forward(inputs) -> (logits,
    extra)``, ``model.sd_task_losses(logits, extra, data_samples,
    with_main_ce)``, ``model.sd_align_logits(logits, data_samples)``,
    ``model.sd_labels(data_samples)``, ``model.sd_features(extra)`` and
    ``model.sd_snapshot()``.

    Subclasses set :attr:`default_loss` and implement :meth:`compute`; they
    override the other methods where they keep state. A new method is a
    subclass registered with ``@SD_METHODS.register_module()``; configs
    select it with ``model.sd=dict(type='MyMethod', ...)``.

    Args:
        loss (dict, optional): Config of the loss, merged over
            :attr:`default_loss` (so ``loss=dict(temperature=4.0)`` keeps the
            default type). Defaults to None (the default loss).
    """

    #: Config of the loss used when ``loss`` does not say otherwise.
    default_loss: Dict[str, Any] = {}

    def __init__(self, loss: Optional[dict] = None) -> None:
        cfg = {**self.default_loss, **(loss or {})}
        if 'type' not in cfg:
            raise ValueError(
                f'{type(self).__name__} has no default loss; give '
                "loss=dict(type=...) (e.g. type='DLBLoss').")
        # Built in our scope even when the model dict was inherited from an
        # mmseg::/mmdet:: config (and so carries their `_scope_`).
        cfg.setdefault('_scope_', 'epsd_mm')
        self.loss: nn.Module = MODELS.build(cfg)

    @property
    def loss_name(self) -> str:
        """str: The key of the SD term in the loss dict."""
        return self.loss.loss_name

    @property
    def keeps_task_loss(self) -> bool:
        """bool: False when the loss contains the main head's
        cross-entropy (PS-KD), which the model then leaves out."""
        return not getattr(self.loss, 'replaces_task_loss', False)

    # Training ---------------------------------------------------------------
    def compute(self, model: nn.Module, inputs: Tensor,
                data_samples: List) -> Dict[str, Tensor]:
        """The loss dict of one training batch: task losses plus the SD term
        under :attr:`loss_name` (present every iteration, so logs and DDP see
        the same keys).

        Args:
            model (nn.Module): The self-distilling model.
            inputs (Tensor): The preprocessed batch.
            data_samples (list): Its data samples.

        Returns:
            dict[str, Tensor]: The loss dict.
        """
        raise NotImplementedError

    def check_train_loader(self, dataloader: Any) -> None:
        """Refuse a train dataloader the method cannot work with (e.g. a
        sampler that does not build the pairs it needs). Called before
        training starts."""

    def before_train(self, model: nn.Module) -> None:
        """Prepare for training (after any checkpoint was loaded)."""
        self.reset()

    def before_train_iter(self, model: nn.Module, iteration: int,
                          max_iters: int, epoch_length: int) -> None:
        """Update the state before a training iteration.

        Args:
            model (nn.Module): The model.
            iteration (int): The iteration about to run (0-based).
            max_iters (int): Iterations of the whole run.
            epoch_length (int): Iterations per epoch of the train loader.
        """

    def reset(self) -> None:
        """Forget per-iteration state (e.g. after pruning-time scoring)."""

    def set_unpruned(self, view: Any) -> None:
        """Receive the network with its pruning masks lifted (from
        :class:`~epsd_mm.engine.GradualPruningHook`); only methods that
        distil from the unpruned network use it."""

    # Pruning-time scoring ---------------------------------------------------
    @contextmanager
    def scoring_state(self, model: nn.Module) -> Iterator[None]:
        """Define the SD loss at initialisation, for scoring before training,
        and restore the training state afterwards."""
        self.reset()
        try:
            yield
        finally:
            self.reset()

    def get_state(self) -> Any:
        """The per-iteration state a loss evaluation depends on, so that a
        scoring criterion can recompute an evaluation exactly."""
        return None

    def set_state(self, state: Any) -> None:
        """Restore what :meth:`get_state` returned."""

    # Checkpoints --------------------------------------------------------------
    def state_dict(self) -> dict:
        """What the method saves in checkpoints (beyond the model)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved."""

    def __repr__(self) -> str:
        return f'{type(self).__name__}(loss={self.loss!r})'
