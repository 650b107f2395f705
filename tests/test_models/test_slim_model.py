"""SlimModel: a channel-pruned checkpoint deployed with plain mmseg APIs."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint
from mmseg.apis import init_model

from epsd_mm.models import build_slim_model, slim_model_cfg, trace_forward
from epsd_mm.pruning import (ChannelGraph, PruningRecord,
                             compute_channel_scores, get_slim_spec,
                             layer_channels, select_channels, slim_channels)
from epsd_mm.registry import MODELS


@pytest.fixture
def slim_checkpoint(tiny_cfg, tmp_path):
    """(model config, slim model, checkpoint path) at 50% channels."""
    cfg = tiny_cfg()
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        model = MODELS.build(copy.deepcopy(cfg.model))
    graph = ChannelGraph(model, torch.randn(1, 3, 64, 64), trace_forward)
    scores = compute_channel_scores(
        graph, criterion='random', generator=torch.Generator().manual_seed(0))
    spec = slim_channels(graph, select_channels(scores, 0.5))
    path = str(tmp_path / 'slim.pth')
    checkpoint = dict(
        state_dict=model.state_dict(),
        meta={'dataset_meta': dict(classes=[str(i) for i in range(21)])})
    PruningRecord(slim_spec=spec).write(checkpoint)
    torch.save(checkpoint, path)
    return cfg.model, model.eval(), path


def test_init_model_loads_slim_checkpoint_strictly(slim_checkpoint, tmp_path):
    model_cfg, slim, path = slim_checkpoint
    checkpoint = torch.load(path)
    spec = PruningRecord.from_checkpoint(checkpoint).slim_spec
    deploy = Config(
        dict(
            default_scope='epsd_mm',
            model=slim_model_cfg(model_cfg, spec)))
    # the spec survives a config file (deployment configs are files)
    deploy.dump(str(tmp_path / 'deploy.py'))
    deploy = Config.fromfile(str(tmp_path / 'deploy.py'))
    assert deploy.model.slim_spec == spec
    assert deploy.model.model_type == model_cfg.type
    assert deploy.model.backbone == model_cfg.backbone  # keys APIs edit
    model = init_model(deploy, path, device='cpu')
    assert type(model) is type(slim)  # the model itself, no wrapper
    assert layer_channels(model) == layer_channels(slim)
    assert get_slim_spec(model) == spec
    state = model.state_dict()
    assert state.keys() == checkpoint['state_dict'].keys()
    for key, value in checkpoint['state_dict'].items():
        assert torch.equal(state[key], value), key
    load_checkpoint(model, path, strict=True)  # no missing/unexpected keys
    inputs = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(inputs), slim(inputs))


def test_slim_model_errors(slim_checkpoint):
    model_cfg, _, path = slim_checkpoint
    spec = PruningRecord.from_checkpoint(torch.load(path)).slim_spec
    with pytest.raises(TypeError, match='registered type of the dense'):
        build_slim_model(model_type=None, slim_spec=spec)
    wider = copy.deepcopy(model_cfg)
    wider.backbone.base_channels = 16
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        with pytest.raises(ValueError,
                           match='SlimModel: the slim spec does not fit .*'
                           'made from 8 out'):
            MODELS.build(slim_model_cfg(wider, spec))
        with pytest.raises(ValueError, match='not a slim spec'):
            MODELS.build(slim_model_cfg(model_cfg, dict(layers={})))


def test_segformer_whole_model_slims_and_rebuilds(helpers):
    """SegFormer (MiT backbone, MLP head), backbone and decode head in
    scope: the MLP hidden and head channels are cut, the streams its
    attentions read are kept whole (named in ``attention_groups``), the
    class channels are kept, and the spec rebuilds the same network."""
    cfg = Config.fromfile(
        helpers.demo_config.replace('epsd_deeplab', 'epsd_segformer'))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        model = MODELS.build(copy.deepcopy(cfg.model)).eval()
    graph = ChannelGraph(model, torch.randn(1, 3, 64, 64), trace_forward,
                         scopes=('backbone', 'decode_head'))
    assert graph.attention_groups  # the residual streams of the MiT stages
    assert all(not name.endswith('out_proj') for name in graph.groups)
    scores = compute_channel_scores(
        graph, criterion='random', generator=torch.Generator().manual_seed(0))
    spec = slim_channels(graph, select_channels(scores, 0.3))
    channels = layer_channels(model)
    assert channels['decode_head.conv_seg'][1] == 21
    assert channels['decode_head.fusion_conv.conv'][1] < 64
    assert any(name.startswith('backbone.') for name in spec['layers'])
    inputs = torch.randn(1, 3, 64, 64)
    rebuilt = build_slim_model(cfg.model.type, spec, **{
        k: v for k, v in copy.deepcopy(cfg.model).items() if k != 'type'})
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(inputs), model(inputs))
