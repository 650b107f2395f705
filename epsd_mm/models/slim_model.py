"""Build a channel-pruned (slim) model from a plain model config."""
import copy
from typing import Any, Mapping, Union

from torch import nn

from epsd_mm.pruning.slimming import rebuild_slim
from epsd_mm.registry import MODELS


@MODELS.register_module(name='SlimModel')
def build_slim_model(model_type: Union[str, type], slim_spec: dict,
                     **kwargs: Any) -> nn.Module:
    """Build a model and give it the slim architecture of a slim spec.

    For deploying a channel-pruned checkpoint with plain OpenMMLab APIs
    (``mmseg.apis.init_model``, ``mmdet.apis.init_detector``, their
    inferencers): the model config keeps all its keys, its ``type`` moves
    to ``model_type`` and the spec is added::

        model = dict(
            type='epsd_mm.SlimModel',
            model_type='mmseg.EncoderDecoder',   # the model's own type
            slim_spec=PruningRecord.from_checkpoint(checkpoint).slim_spec,
            backbone=..., decode_head=..., ...)  # the model's own keys

    so APIs that edit ``config.model`` (``backbone.init_cfg``,
    ``pretrained``, ``train_cfg``) find the keys they expect.
    ``tools/deploy/export.py`` writes such a config for a slim checkpoint.
    The result is the built model itself (not a wrapper), with the slim
    channel counts, so the slim checkpoint's state dict loads with its keys
    unchanged and strictly.

    Args:
        model_type (str | type): The model's registered type, e.g.
            ``'mmseg.EncoderDecoder'``.
        slim_spec (dict): Slim spec of the checkpoint (see
            :mod:`epsd_mm.pruning.slimming`).
        **kwargs: The other keys of the model config.

    Returns:
        nn.Module: The slim model (weights are placeholders until a
        checkpoint is loaded).
    """
    if not isinstance(model_type, (str, type)):
        raise TypeError(
            'SlimModel: `model_type` must be the registered type of the '
            "dense model (e.g. 'mmseg.EncoderDecoder'), got "
            f'{type(model_type).__name__}.')
    built = MODELS.build(dict(type=model_type, **kwargs))
    try:
        rebuild_slim(built, slim_spec)
    except ValueError as error:
        raise ValueError(
            f'SlimModel: {error} (slim_spec must come from a checkpoint of '
            'this model config: PruningRecord.from_checkpoint(checkpoint).'
            'slim_spec).') from None
    return built


def slim_model_cfg(model_cfg: Mapping, slim_spec: dict) -> dict:
    """The :func:`build_slim_model` config of a dense model config.

    Args:
        model_cfg (Mapping): Config of the dense model (with ``type``).
        slim_spec (dict): Slim spec of the checkpoint.

    Returns:
        dict: ``dict(type='epsd_mm.SlimModel', model_type=..., slim_spec=...,
        **other keys)``.
    """
    cfg = dict(copy.deepcopy(dict(model_cfg)))
    return dict(
        type='epsd_mm.SlimModel',
        model_type=cfg.pop('type'),
        slim_spec=copy.deepcopy(slim_spec),
        **cfg)
