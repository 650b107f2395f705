"""Read a pruned training checkpoint into the model it came from."""
import copy
import inspect
import os.path as osp
from typing import Dict, Mapping, Optional, Tuple

from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope
from mmengine.runner import CheckpointLoader
from torch import Tensor, nn

from epsd_mm.pruning import (attach_mask_buffers, check_masked_state_dict,
                             masked_param_names, rebuild_slim,
                             rename_legacy_mask_keys)
from epsd_mm.registry import HOOKS, MODELS
from epsd_mm.utils import register_checkpoint_safe_globals

#: Pruning hooks whose criterion is implied rather than configured.
IMPLIED_CRITERIA = {'GradualPruningHook': 'magnitude'}


def load_checkpoint_dict(path: str) -> dict:
    """Load a checkpoint file on CPU.

    Args:
        path (str): A ``.pth`` file written by MMEngine.

    Returns:
        dict: The checkpoint, with its ``state_dict`` (mask keys of older
        epsd_mm versions renamed, integrity checked).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    register_checkpoint_safe_globals()
    checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    if 'state_dict' not in checkpoint:
        raise ValueError(
            f'{path} has no "state_dict": it is not an MMEngine checkpoint '
            '(write one with tools/train.py).')
    rename_legacy_mask_keys(checkpoint['state_dict'])
    check_masked_state_dict(checkpoint['state_dict'], path)
    return checkpoint


def build_model(cfg: Config) -> nn.Module:
    """Build ``cfg.model`` in the config's default scope, in eval mode,
    SyncBN turned into BN (as mmseg's inferencer does on CPU). Weights are
    not initialised: no pretrained file is fetched."""
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmengine')):
        # a copy: mmseg's EncoderDecoder writes `pretrained` into the
        # backbone's dict, which a second build would then refuse
        model = MODELS.build(copy.deepcopy(cfg.model))
    return revert_sync_batchnorm(model).eval()


def check_state_dict_fits(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    source: str,
    config: str,
    hint: str = ('Pass the config the checkpoint was trained with (its '
                 'work_dir holds a copy).')
) -> None:
    """Raise unless ``state_dict`` has exactly ``model``'s keys and shapes.

    Args:
        model (nn.Module): The model.
        state_dict (Mapping[str, Tensor]): The state dict to load.
        source (str): How to name the state dict in the error.
        config (str): How to name the config in the error.
        hint (str): How to fix it. Defaults to passing the training config.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    resized = [
        f'{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}'
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = [
        f'{len(keys)} {what} (e.g. {", ".join(keys[:3])})'
        for what, keys in (('missing keys', missing), ('unexpected keys',
                                                       unexpected),
                           ('shape mismatches', resized)) if keys
    ]
    if problems:
        raise ValueError(f'{source} does not fit the model of {config}: '
                         f'{"; ".join(problems)}. {hint}')


def build_masked_model(cfg: Config,
                       state_dict: Mapping[str, Tensor],
                       source: str,
                       slim_spec: Optional[dict] = None) -> nn.Module:
    """The training model of ``cfg`` with the pruned ``state_dict`` loaded,
    masks included (the model that produced the checkpoint).

    Args:
        cfg (Config): The training config.
        state_dict (Mapping[str, Tensor]): The checkpoint's state dict.
        source (str): The checkpoint's name, for errors.
        slim_spec (dict, optional): The checkpoint's slim spec: the model
            is rebuilt to it before loading. Defaults to None (dense).

    Returns:
        nn.Module: The model, in eval mode.
    """
    model = build_model(cfg)
    if slim_spec is not None:
        try:
            rebuild_slim(model, slim_spec)
        except ValueError as error:
            raise ValueError(
                f'{source} is channel-pruned, but its slim spec does not fit '
                f'the model of {cfg.filename}: {error}. Pass the config the '
                'checkpoint was trained with (its work_dir holds a copy).'
            ) from None
    names = masked_param_names(state_dict)
    params = dict(model.named_parameters())
    missing = [name for name in names if name not in params]
    if missing:
        raise ValueError(
            f'{source} masks {len(missing)} parameters the model of '
            f'{cfg.filename} does not have (e.g. {", ".join(missing[:3])}). '
            'Pass the config the checkpoint was trained with (its work_dir '
            'holds a copy).')
    attach_mask_buffers(model, names)
    check_state_dict_fits(model, state_dict, source, cfg.filename)
    model.load_state_dict(state_dict)
    return model


def _hook_args(hook_cfg: dict) -> Tuple[str, Dict]:
    """Hook name and its arguments, defaults filled in from its signature
    (in the default scope the hook is built in)."""
    hook_cls = HOOKS.get(hook_cfg['type'])
    args = {
        name: p.default
        for name, p in inspect.signature(hook_cls).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    args.update({k: v for k, v in hook_cfg.items() if k != 'type'})
    return hook_cls.__name__, args


def pruning_hook_cfg(cfg: Config) -> Optional[Tuple[str, Dict]]:
    """Name and arguments of the config's pruning hook, if any.

    A pruning hook is any hook deriving from
    :class:`~epsd_mm.engine.hooks.BaseMaskHook`, in ``default_hooks`` or
    ``custom_hooks``.
    """
    from epsd_mm.engine.hooks import BaseMaskHook
    hooks = list((cfg.get('default_hooks') or {}).values())
    hooks += list(cfg.get('custom_hooks') or [])
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmengine')):
        for hook in hooks:
            if not isinstance(hook, dict) or 'type' not in hook:
                continue
            hook_cls = HOOKS.get(hook['type'])
            if inspect.isclass(hook_cls) and issubclass(
                    hook_cls, BaseMaskHook):
                return _hook_args(hook)
    return None


def pruning_meta(checkpoint: dict,
                 cfg: Config,
                 masks: Mapping[str, Tensor],
                 source: str,
                 slim_spec: Optional[dict] = None) -> dict:
    """What a deployed checkpoint records about its pruning.

    The sparsity is measured on the masks. The criterion comes from the
    pruning hook of the config the run was trained with, which MMEngine
    stores as text in ``checkpoint['meta']['cfg']``; when that is absent,
    from ``cfg``.

    Args:
        checkpoint (dict): The training checkpoint.
        cfg (Config): The config given for it.
        masks (Mapping[str, Tensor]): Its keep-masks (may be empty for a
            channel-pruned checkpoint).
        source (str): The checkpoint's path.
        slim_spec (dict, optional): Its slim spec, if channel-pruned.
            Defaults to None.

    Returns:
        dict: ``sparsity`` (of the masked weights, 0 without masks),
        ``pruned``/``prunable`` weight counts, the number of
        ``masked_tensors``, ``channels`` (``total``/``kept`` channels in
        scope, None if not channel-pruned), the ``pruning_hook`` name and
        arguments, the ``criterion``, ``config_source`` (where the hook was
        read) and ``source_checkpoint``.
    """
    cfg_text = checkpoint.get('meta', {}).get('cfg')
    hook, config_source = None, None
    if cfg_text:
        hook = pruning_hook_cfg(Config.fromstring(cfg_text, '.py'))
        config_source = "the checkpoint's meta['cfg']"
    if hook is None:
        hook = pruning_hook_cfg(cfg)
        config_source = cfg.filename if hook else None
    name, args = hook or (None, {})
    prunable = sum(m.numel() for m in masks.values())
    pruned = sum(int((~m.bool()).sum()) for m in masks.values())
    return dict(
        sparsity=pruned / prunable if prunable else 0.0,
        pruned=pruned,
        prunable=prunable,
        masked_tensors=len(masks),
        channels=(dict(slim_spec['channels'])
                  if slim_spec and 'channels' in slim_spec else None),
        pruning_hook=name,
        criterion=args.get('criterion', IMPLIED_CRITERIA.get(name)),
        hook_args=to_plain(args),
        config_source=config_source,
        source_checkpoint=osp.abspath(source))


def to_plain(value):
    """Containers of str/int/float/bool/None only, so the meta loads with
    ``torch.load(weights_only=True)``."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)
