"""Build a channel-pruned (slim) model from a plain model config."""
from typing import Any, Mapping, Optional

from torch import nn

from epsd_mm.pruning.slimming import check_slim_spec, rebuild_slim
from epsd_mm.registry import MODELS

#: ``checkpoint['meta'][SLIM_SPEC_META_KEY]`` holds the slim spec of a
#: channel-pruned checkpoint.
SLIM_SPEC_META_KEY = 'epsd_slim_spec'


def slim_spec_of_checkpoint(checkpoint: Mapping) -> Optional[dict]:
    """The slim spec a checkpoint records, or None for a dense one.

    Args:
        checkpoint (Mapping): A loaded MMEngine checkpoint.

    Returns:
        dict | None: The spec.
    """
    spec = (checkpoint.get('meta') or {}).get(SLIM_SPEC_META_KEY)
    if spec is not None:
        check_slim_spec(spec)
    return spec


@MODELS.register_module(name='SlimModel')
def build_slim_model(model: dict, slim_spec: dict, **kwargs: Any) -> nn.Module:
    """Build a model and give it the slim architecture of a slim spec.

    For deploying a channel-pruned checkpoint with plain OpenMMLab APIs,
    e.g. ``mmseg.apis.init_model``: the config's model becomes::

        model = dict(
            type='epsd_mm.SlimModel',
            model=<the model config the checkpoint was trained with>,
            slim_spec=slim_spec_of_checkpoint(checkpoint))

    The result is the built model itself (not a wrapper), with the slim
    channel counts, so the slim checkpoint's state dict loads with its keys
    unchanged and strictly.

    Args:
        model (dict): Config of the dense model.
        slim_spec (dict): Slim spec of the checkpoint (see
            :mod:`epsd_mm.pruning.slimming`).
        **kwargs: Further keys of the model config. APIs that set keys on
            ``config.model`` (mmseg's ``init_model`` sets
            ``pretrained=None`` and ``train_cfg=None``) reach the built
            model this way.

    Returns:
        nn.Module: The slim model (weights are placeholders until a
        checkpoint is loaded).
    """
    if not isinstance(model, dict) or 'type' not in model:
        raise TypeError(
            'SlimModel: `model` must be the config dict of the dense model '
            f"(with a 'type'), got {type(model).__name__}.")
    built = MODELS.build({**model, **kwargs})
    try:
        rebuild_slim(built, slim_spec)
    except ValueError as error:
        raise ValueError(
            f'SlimModel: {error} (slim_spec must come from a checkpoint of '
            'this model config, see slim_spec_of_checkpoint).') from None
    return built
