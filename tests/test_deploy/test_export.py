import copy
import os
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmseg.apis import init_model
from mmseg.datasets import PascalVOCDataset

from epsd_mm.deploy import (export_pruned_checkpoint, identical_state_dicts,
                            load_sparse_checkpoint)
from epsd_mm.deploy.checkpoint import build_model
from epsd_mm.models import trace_forward
from epsd_mm.pruning import (MASK_SUFFIX, ChannelGraph, PruningRecord,
                             compute_channel_scores, get_slim_spec,
                             select_channels, slim_channels)
from .conftest import randomise_batch_norms


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
    assert pruning['criteria'] == {
        'EarlyPruningHook': 'prospr',
        'GradualPruningHook': 'magnitude'
    }
    assert pruning['stages']['EarlyPruningHook']['progress'] == {
        'rounds_done': 1
    }
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
    with pytest.raises(ValueError, match='no masks.*To export a dense model '
                       'as ONNX .* add --onnx'):
        export_pruned_checkpoint(
            pruned.cfg, osp.join(out_dir, 'folded.pth'), out, log=_quiet)
    assert not osp.exists(out)


def test_a_dense_checkpoint_exports_as_onnx(exported, pruned, tmp_path):
    out_dir, _ = exported
    logged = []
    result = export_pruned_checkpoint(
        pruned.cfg,
        osp.join(out_dir, 'folded.pth'),
        str(tmp_path / 'out'),
        shape=(64, 64),
        onnx=True,
        log=logged.append)
    assert any('is dense (no masks, no slim spec)' in m for m in logged)
    assert result.meta['sparsity'] == 0.0 and result.onnx_diff <= 1e-4
    assert osp.isfile(tmp_path / 'out' / 'model.onnx')


@pytest.mark.parametrize('damage', ['truncated', 'foreign'])
def test_refuses_an_unreadable_checkpoint(pruned, tmp_path, damage):
    """A half-written .pth (or any other file) gives one message naming the
    file, not torch's `failed finding central directory`."""
    raw = open(pruned.checkpoint, 'rb').read()
    path = str(tmp_path / 'iter_3.pth')
    with open(path, 'wb') as f:
        f.write(raw[:len(raw) // 2] if damage == 'truncated' else
                b'model weights: see the wiki\n')
    out = str(tmp_path / 'out')
    with pytest.raises(ValueError,
                       match=f'{path} is not a readable checkpoint '
                       r'\(truncated or not a torch file'):
        export_pruned_checkpoint(pruned.cfg, path, out, log=_quiet)
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


# --------------------------------------------------------------------------
# Channel-pruned (slim) checkpoints
# --------------------------------------------------------------------------
def _onnx_input(path: str) -> list:
    import onnx
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value for d in dims]


def test_onnx_takes_the_size_the_test_pipeline_gives(pruned, tmp_path):
    """Without --shape, the ONNX graph gets the test images' preprocessed
    size (here 80x80 from a fixed test Resize, the crop is 64), so
    test_onnx.py can evaluate it; unreadable test data falls back to the
    crop size, saying why."""
    cfg = copy.deepcopy(pruned.cfg)
    cfg.test_dataloader.dataset.pipeline[1] = dict(
        type='Resize', scale=(80, 80), keep_ratio=False, _scope_='mmseg')
    said = []
    export_pruned_checkpoint(cfg, pruned.checkpoint, str(tmp_path / 'a'),
                             onnx=True, log=said.append)
    assert _onnx_input(str(tmp_path / 'a' / 'model.onnx')) == [1, 3, 80, 80]
    assert any('ONNX input size 80x80: what `test_dataloader` gives' in m
               for m in said)
    cfg.test_dataloader.dataset.data_root = str(tmp_path / 'nowhere')
    said = []
    export_pruned_checkpoint(cfg, pruned.checkpoint, str(tmp_path / 'b'),
                             onnx=True, log=said.append)
    assert _onnx_input(str(tmp_path / 'b' / 'model.onnx')) == [1, 3, 64, 64]
    assert any('ONNX input size 64x64' in m and 'could not be read' in m
               and '--shape H W' in m for m in said)


@pytest.fixture(scope='module')
def slim(pruned, tmp_path_factory):
    """The tiny config's model with half of its backbone channels removed,
    saved as a run saves it (slim spec and config text in ``meta``), and
    its export (ONNX included)."""
    tmp = tmp_path_factory.mktemp('slim')
    torch.manual_seed(0)
    model = build_model(pruned.cfg)
    randomise_batch_norms(model)
    graph = ChannelGraph(model, torch.randn(1, 3, 64, 64), trace_forward)
    scores = compute_channel_scores(
        graph, criterion='random', generator=torch.Generator().manual_seed(0))
    spec = slim_channels(graph, select_channels(scores, 0.5))
    path = str(tmp / 'iter_3.pth')
    checkpoint = dict(
        meta={
            'cfg': pruned.cfg.pretty_text,
            'dataset_meta': dict(PascalVOCDataset.METAINFO)
        },
        state_dict=model.state_dict())
    PruningRecord(slim_spec=spec).write(checkpoint)
    torch.save(checkpoint, path)
    out_dir = str(tmp / 'deploy')
    result = export_pruned_checkpoint(
        pruned.cfg, path, out_dir, onnx=True, log=_quiet)
    return SimpleNamespace(
        model=model.eval(), spec=spec, path=path, out_dir=out_dir,
        result=result)


def test_slim_checkpoint_exports_a_slim_deploy_config(slim):
    deploy_cfg = Config.fromfile(osp.join(slim.out_dir, 'deploy_config.py'))
    assert deploy_cfg.model.type == 'epsd_mm.SlimModel'
    assert deploy_cfg.model.model_type == 'mmseg.EncoderDecoder'
    assert deploy_cfg.model.slim_spec == slim.spec
    assert 'epsd_mm' in deploy_cfg.custom_imports.imports
    assert 'sd' not in deploy_cfg.model
    folded = torch.load(osp.join(slim.out_dir, 'folded.pth'))
    assert folded['state_dict'].keys() == slim.model.state_dict().keys()
    pruning = folded['meta']['pruning']
    assert pruning['channels'] == slim.spec['channels']
    assert pruning['prunable'] == 0 and pruning['masked_tensors'] == 0
    # the dense network's folded checkpoint is larger than the slim one
    assert slim.result.dense_bytes > 1.5 * slim.result.files[0][1]
    assert slim.result.onnx_diff <= 1e-4


def test_mmseg_init_model_runs_the_slim_network(slim):
    model = init_model(
        osp.join(slim.out_dir, 'deploy_config.py'),
        osp.join(slim.out_dir, 'folded.pth'),
        device='cpu')
    assert type(model).__name__ == 'EncoderDecoder'  # plain mmseg, slim
    assert get_slim_spec(model) == slim.spec
    inputs = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            model(inputs, mode='tensor'), slim.model(inputs, mode='tensor'),
            rtol=0, atol=1e-5)


def test_slim_checkpoint_on_another_model_config_is_refused(
        slim, pruned, tmp_path):
    cfg = copy.deepcopy(pruned.cfg)
    cfg.model.backbone.base_channels = 16
    with pytest.raises(ValueError, match='is channel-pruned, but its slim '
                       'spec does not fit the model'):
        export_pruned_checkpoint(
            cfg, slim.path, str(tmp_path / 'out'), log=_quiet)
    assert not osp.exists(tmp_path / 'out')
