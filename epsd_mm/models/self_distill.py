"""What every self-distilling model shares: an SD method and task hooks.

A model mixes in :class:`SelfDistillMixin`, calls :meth:`init_self_distill`
in ``__init__`` and implements a few task hooks (how to run the network, the
task losses, how to bring logits to label resolution, where the labels
are). Its ``loss`` returns :meth:`self_distill_loss`, which hands the batch
to the configured SD method (``model.sd``, see
:mod:`epsd_mm.sd_methods`). The method's state (DLB's previous
batch, the PS-KD teacher) lives outside the module tree, so it never enters
``state_dict`` or DDP's parameter list.
"""
import copy
from contextlib import contextmanager
from functools import lru_cache
from typing import Dict, Iterator, List, Optional, Tuple

from torch import Tensor, nn

from epsd_mm.pruning import load_masks_with_state_dict
from epsd_mm.registry import MODELS, SD_METHODS
from epsd_mm.sd_methods import BaseSDMethod


def build_sd_method(sd: Optional[dict]) -> Optional[BaseSDMethod]:
    """Build an SD method config in the ``epsd_mm`` scope.

    Args:
        sd (dict, optional): E.g. ``dict(type='DLB')``; None for none.

    Returns:
        BaseSDMethod | None: The method.
    """
    if sd is None:
        return None
    cfg = dict(sd)
    # Built in our scope even when the model dict was inherited from an
    # mmseg::/mmdet:: config (and so carries their `_scope_`).
    cfg.setdefault('_scope_', 'epsd_mm')
    method = SD_METHODS.build(cfg)
    if not isinstance(method, BaseSDMethod):
        raise TypeError(f'model.sd must build a BaseSDMethod, got '
                        f'{type(method).__name__}.')
    return method


def registered_model_class(model_type: str, key: str, example: str) -> type:
    """The model class registered as ``model_type``, or a fix-it error.

    Args:
        model_type (str): Registry name, e.g. ``'mmseg.EncoderDecoder'``.
        key (str): The config key that named it, for the message.
        example (str): A valid value, for the message.
    """
    base = MODELS.get(model_type)
    if base is None:
        raise KeyError(f'{key} {model_type!r} is not a registered model; '
                       f'e.g. {example!r}.')
    return base


@lru_cache(maxsize=None)
def self_distill_subclass(mixin: type, base: type) -> type:
    """``SelfDistill<Base>``: ``base`` with the self-distillation ``mixin``
    (cached, so it is built once per pair).

    Args:
        mixin (type): A :class:`SelfDistillMixin` subclass for the task.
        base (type): The model class of the config.
    """
    return type(f'SelfDistill{base.__name__}', (mixin, base), {
        '__module__': mixin.__module__,
        '__doc__': f'{base.__name__} trained with self-distillation (see '
        f'{mixin.__name__}).'
    })


def reject_sd_loss_key(kwargs: dict) -> None:
    """Explain the ``sd_loss`` key of epsd_mm < 0.2 configs."""
    if 'sd_loss' in kwargs:
        raise TypeError(
            'model.sd_loss was replaced by model.sd, an SD method with its '
            "loss: e.g. sd=dict(type='DLB', loss=dict(type='DLBLoss', "
            "temperature=3.0)) (methods: 'DLB', 'PSKD', 'CSKD', "
            "'CrossCorrelation'); use sd=None for plain training.")


class SelfDistillMixin:
    """Adds self-distillation training to a model.

    Subclasses call :meth:`init_self_distill` in ``__init__`` and implement
    :meth:`sd_forward`, :meth:`sd_task_losses` and :meth:`sd_labels` (and,
    where needed, :meth:`sd_align_logits` and :meth:`sd_features`); their
    ``loss`` returns :meth:`self_distill_loss`.

    Attributes:
        sd (BaseSDMethod | None): The SD method, None for plain training.
        sd_enabled (bool): When False, ``loss`` returns only the task losses
            (used to score with the plain task loss).
    """

    def init_self_distill(self, sd: Optional[dict]) -> None:
        """Build the SD method; pruned checkpoints load with their masks.

        Args:
            sd (dict, optional): SD method config, e.g. ``dict(type='DLB')``.
                None trains with the task losses only.
        """
        self.sd = build_sd_method(sd)
        self.sd_enabled = self.sd is not None
        # e.g. mmseg.apis.init_model on a training config and checkpoint
        load_masks_with_state_dict(self)

    def sd_snapshot(self) -> nn.Module:
        """A frozen copy of the model (eval mode, no grad, no SD method)."""
        sd = self.sd
        self.sd = None
        try:
            snapshot = copy.deepcopy(self)
        finally:
            self.sd = sd
        return snapshot.eval().requires_grad_(False)

    @contextmanager
    def sd_disabled(self) -> Iterator[None]:
        """Temporarily train with the task losses only."""
        enabled = self.sd_enabled
        self.sd_enabled = False
        try:
            yield
        finally:
            self.sd_enabled = enabled

    def self_distill_loss(self, inputs: Tensor,
                          data_samples: List) -> Dict[str, Tensor]:
        """Loss dict of one training batch under the configured SD method."""
        if self.sd is None or not self.sd_enabled:
            logits, extra = self.sd_forward(inputs)
            return self.sd_task_losses(logits, extra, data_samples, True)
        return self.sd.compute(self, inputs, data_samples)

    # Task hooks -------------------------------------------------------------
    def sd_forward(self, inputs: Tensor) -> Tuple[Tensor, object]:
        """Run the network; return logits and whatever the task losses need."""
        raise NotImplementedError

    def sd_task_losses(self, logits: Tensor, extra: object, data_samples: List,
                       with_main_ce: bool) -> Dict[str, Tensor]:
        """Task losses of the batch; ``with_main_ce=False`` drops the main
        head's cross-entropy (a method whose loss contains it)."""
        raise NotImplementedError

    def sd_align_logits(self, logits: Tensor, data_samples: List) -> Tensor:
        """Bring logits to the resolution of :meth:`sd_labels`."""
        return logits

    def sd_labels(self, data_samples: List) -> Tensor:
        """Labels ``(N,)`` or ``(N, H, W)`` of the batch."""
        raise NotImplementedError

    def sd_features(self, extra: object) -> Tensor:
        """Representation compared with the unpruned self: the last backbone
        feature map, given ``extra`` from :meth:`sd_forward`."""
        return extra[-1]
