import copy

import pytest
import torch

from epsd_mm.deploy.checkpoint import (build_masked_model, build_model,
                                       pruning_meta)
from epsd_mm.pruning import MASK_SUFFIX, PruningRecord


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


def test_pruning_meta_reads_the_record(pruned):
    checkpoint = torch.load(pruned.checkpoint)
    record = PruningRecord()
    record.set_stage(
        'EarlyPruningHook', dict(criterion='snip', sparsity=0.9),
        dict(rounds_done=1))
    record.write(checkpoint)
    meta = pruning_meta(checkpoint, pruned.masks, 'ckpt.pth')
    assert meta['criteria'] == {'EarlyPruningHook': 'snip'}
    assert meta['stages']['EarlyPruningHook']['config']['sparsity'] == 0.9
    assert meta['sparsity'] == pytest.approx(pruned.sparsity, abs=1e-3)
    assert meta['pruned'] + sum(int(m.sum()) for m in pruned.masks.values()) \
        == meta['prunable']
    assert meta['channels'] is None


def test_pruning_meta_of_a_checkpoint_without_record(pruned):
    """Checkpoints of epsd_mm < 0.4 carry no record: the sparsity is still
    measured, the criterion is unknown (not guessed from a config)."""
    checkpoint = torch.load(pruned.checkpoint)
    del checkpoint['meta']['epsd_pruning']
    meta = pruning_meta(checkpoint, pruned.masks, 'ckpt.pth')
    assert meta['criteria'] == {}
    assert meta['sparsity'] == pytest.approx(pruned.sparsity, abs=1e-3)
