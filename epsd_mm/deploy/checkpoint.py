"""Read a pruned training checkpoint into the model it came from."""
import copy
import os.path as osp
from typing import Mapping, Optional

from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope
from mmengine.runner import CheckpointLoader
from torch import Tensor, nn

from epsd_mm.pruning import (PruningRecord, attach_mask_buffers,
                             check_masked_state_dict, masked_param_names,
                             rebuild_slim, rename_legacy_mask_keys)
from epsd_mm.registry import MODELS
from epsd_mm.utils.checkpoint import load_checkpoint_file


def load_checkpoint_dict(path: str) -> dict:
    """Load a checkpoint file on CPU.

    Args:
        path (str): A ``.pth`` file written by MMEngine.

    Returns:
        dict: The checkpoint, with its ``state_dict`` (mask keys of older
        epsd_mm versions renamed, integrity checked).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is truncated or not a torch file (see
            :func:`~epsd_mm.utils.checkpoint.load_checkpoint_file`), or not
            an MMEngine checkpoint.
    """
    checkpoint = load_checkpoint_file(
        path,
        lambda file: CheckpointLoader.load_checkpoint(
            file, map_location='cpu'))
    if not isinstance(checkpoint, dict):
        raise ValueError(
            f'{path} holds a {type(checkpoint).__name__}, not a checkpoint '
            'dict: it is not an MMEngine checkpoint (write one with '
            'tools/train.py).')
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


def pruning_meta(checkpoint: dict, masks: Mapping[str, Tensor],
                 source: str) -> dict:
    """What a deployed checkpoint records about its pruning.

    The sparsity is measured on the masks; how the checkpoint was pruned
    (each pruning hook's settings, criterion included, and the slim spec)
    comes from its :class:`~epsd_mm.pruning.PruningRecord`.

    Args:
        checkpoint (dict): The training checkpoint.
        masks (Mapping[str, Tensor]): Its keep-masks (may be empty for a
            channel-pruned checkpoint).
        source (str): The checkpoint's path.

    Returns:
        dict: ``sparsity`` (of the masked weights, 0 without masks),
        ``pruned``/``prunable`` weight counts, the number of
        ``masked_tensors``, ``channels`` (``total``/``kept`` channels in
        scope, None if not channel-pruned), the ``criteria`` and ``stages``
        of the record, and ``source_checkpoint``.
    """
    record = PruningRecord.from_checkpoint(checkpoint)
    spec = record.slim_spec
    prunable = sum(m.numel() for m in masks.values())
    pruned = sum(int((~m.bool()).sum()) for m in masks.values())
    return dict(
        sparsity=pruned / prunable if prunable else 0.0,
        pruned=pruned,
        prunable=prunable,
        masked_tensors=len(masks),
        channels=dict(spec['channels']) if spec and 'channels' in spec
        else None,
        criteria=record.criteria(),
        stages=record.summary()['stages'],
        source_checkpoint=osp.abspath(source))
