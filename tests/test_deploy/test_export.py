import copy
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmseg.apis import init_model

from epsd_mm.deploy import (export_pruned_checkpoint, identical_state_dicts,
                            load_sparse_checkpoint)
from epsd_mm.deploy.checkpoint import build_model
from epsd_mm.pruning import MASK_SUFFIX


def _quiet(_):
    pass


@pytest.fixture(scope='module')
def exported(pruned, tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp('export') / 'deploy')
    result = export_pruned_checkpoint(
        pruned.cfg, pruned.checkpoint, out_dir, log=_quiet)
    return out_dir, result


def test_folded_is_a_plain_checkpoint(exported, pruned):
    out_dir, result = exported
    folded = torch.load(osp.join(out_dir, 'folded.pth'))
    assert set(folded) == {'meta', 'state_dict'}  # no optimizer, SD state
    assert not any(k.endswith(MASK_SUFFIX) for k in folded['state_dict'])
    for name, mask in pruned.masks.items():
        assert (folded['state_dict'][name][~mask] == 0).all()
    meta = folded['meta']
    assert meta['dataset_meta']['classes'][0] == 'background'
    pruning = meta['pruning']
    assert pruning == result.meta
    assert pruning['sparsity'] == pytest.approx(pruned.sparsity, abs=1e-4)
    assert pruning['criterion'] == 'prospr'
    assert pruning['pruning_hook'] == 'EarlyPruningHook'
    assert pruning['config_source'] == "the checkpoint's meta['cfg']"
    assert pruning['source_checkpoint'] == osp.abspath(pruned.checkpoint)
    # strict loading into the deployed network: no missing/unexpected keys
    deploy_cfg = Config.fromfile(osp.join(out_dir, 'deploy_config.py'))
    load_checkpoint(
        build_model(deploy_cfg), osp.join(out_dir, 'folded.pth'), strict=True)


def test_mmseg_init_model_gives_the_masked_logits(exported, pruned):
    out_dir, result = exported
    model = init_model(
        osp.join(out_dir, 'deploy_config.py'),
        osp.join(out_dir, 'folded.pth'),
        device='cpu')
    assert type(model).__name__ == 'EncoderDecoder'
    inputs = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        expected = pruned.model(inputs, mode='tensor')
        got = model(inputs, mode='tensor')
    assert (got - expected).abs().max() <= 1e-5
    assert result.logits_diff <= 1e-5


def test_sparse_decodes_to_folded(exported):
    out_dir, result = exported
    folded = torch.load(osp.join(out_dir, 'folded.pth'))['state_dict']
    assert identical_state_dicts(
        load_sparse_checkpoint(osp.join(out_dir, 'sparse.pth')), folded)
    assert result.sparse.ratio <= 0.15


def test_refuses_a_checkpoint_without_masks(exported, pruned, tmp_path):
    out_dir, _ = exported
    out = str(tmp_path / 'out')
    with pytest.raises(ValueError, match='no masks'):
        export_pruned_checkpoint(
            pruned.cfg, osp.join(out_dir, 'folded.pth'), out, log=_quiet)
    assert not osp.exists(out)


def test_refuses_a_config_of_another_model(pruned, tmp_path):
    cfg = copy.deepcopy(pruned.cfg)
    cfg.model.decode_head.channels = 24
    out = str(tmp_path / 'out')
    with pytest.raises(
            ValueError,
            match='does not fit the model of .*demo.py'
            '.*shape mismatches.*config the checkpoint was trained'):
        export_pruned_checkpoint(cfg, pruned.checkpoint, out, log=_quiet)
    assert not osp.exists(out)


def test_refuses_an_output_dir_with_files_unless_forced(pruned, tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'folded.pth').write_text('precious')
    with pytest.raises(FileExistsError, match='--force'):
        export_pruned_checkpoint(
            pruned.cfg, pruned.checkpoint, str(out), log=_quiet)
    assert os.listdir(out) == ['folded.pth']
    assert (out / 'folded.pth').read_text() == 'precious'
    export_pruned_checkpoint(
        pruned.cfg, pruned.checkpoint, str(out), force=True, log=_quiet)
    assert 'state_dict' in torch.load(str(out / 'folded.pth'))
