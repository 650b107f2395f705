import copy

import pytest
import torch

from epsd_mm.deploy.checkpoint import (build_masked_model, build_model,
                                       pruning_meta)
from epsd_mm.pruning import MASK_SUFFIX


def test_build_model_leaves_the_config_alone(pruned):
    cfg = copy.deepcopy(pruned.cfg)
    cfg.model.pretrained = 'open-mmlab://resnet18_v1c'  # not fetched
    before = cfg.model.to_dict()
    build_model(cfg)
    build_model(cfg)  # mmseg would refuse a backbone it wrote into
    assert cfg.model.to_dict() == before


def test_build_masked_model_refuses_masks_of_unknown_parameters(pruned):
    state = dict(pruned.model.state_dict())
    mask = state.pop('backbone.stem.0.weight' + MASK_SUFFIX)
    state['backbone.nowhere.weight'] = torch.zeros(mask.shape)
    state['backbone.nowhere.weight' + MASK_SUFFIX] = mask
    with pytest.raises(
            ValueError,
            match='masks 1 parameters the model of '
            '.* does not have .*backbone.nowhere.weight'):
        build_masked_model(pruned.cfg, state, 'ckpt.pth')


def test_pruning_meta_reads_the_checkpoints_config(pruned):
    cfg = copy.deepcopy(pruned.cfg)
    cfg.default_hooks.pruning.criterion = 'snip'  # not what the run used
    meta = pruning_meta(
        torch.load(pruned.checkpoint), cfg, pruned.masks, 'ckpt.pth')
    assert meta['criterion'] == 'prospr'
    assert meta['config_source'] == "the checkpoint's meta['cfg']"
    assert meta['hook_args']['sparsity'] == 0.9
    assert meta['hook_args']['loss'] == 'sd'  # the hook's default


def test_pruning_meta_falls_back_to_the_given_config(pruned):
    cfg = copy.deepcopy(pruned.cfg)
    cfg.default_hooks.pruning = dict(
        type='epsd_mm.GradualPruningHook', sparsity=0.9)
    meta = pruning_meta(dict(meta={}), cfg, pruned.masks, 'ckpt.pth')
    assert meta['pruning_hook'] == 'GradualPruningHook'
    assert meta['criterion'] == 'magnitude'
    assert meta['config_source'] == cfg.filename
    assert meta['pruned'] + sum(int(m.sum()) for m in pruned.masks.values()) \
        == meta['prunable']
    cfg.default_hooks.pop('pruning')
    meta = pruning_meta(dict(meta={}), cfg, pruned.masks, 'ckpt.pth')
    assert meta['pruning_hook'] is None and meta['criterion'] is None
