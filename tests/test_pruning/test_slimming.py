"""Channel surgery on the tiny demo DeepLabV3 (real mmseg model, data,
pipeline and data preprocessor): coupled channels cut together, heads
adapted, all three modes run, the slim spec rebuilds the architecture."""
import copy
import json

import pytest
import torch
import torch.nn as nn
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from epsd_mm.pruning import compute_channel_scores
from epsd_mm.pruning.channel_selection import select_channels
from epsd_mm.pruning.channels import ChannelGraph
from epsd_mm.pruning.masks import apply_masks
from epsd_mm.pruning.slimming import (check_state_dict_shapes,
                                      format_slim_table, get_slim_spec,
                                      layer_channels, rebind_optimizer,
                                      rebuild_slim, slim_channels)
from epsd_mm.registry import MODELS


def build_model(cfg, seed=0):
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    return model


def seg_forward(model, inputs):
    """Traced forward reaching the decode and the auxiliary head."""
    feats = model.extract_feat(inputs)
    return [model.decode_head(feats), model.auxiliary_head(feats)]


def random_keep(graph, sparsity=0.5, seed=0):
    scores = compute_channel_scores(
        graph,
        criterion='random',
        generator=torch.Generator().manual_seed(seed))
    return select_channels(scores, sparsity)


@pytest.fixture
def cfg(tiny_cfg):
    return tiny_cfg(random_aug=False)


@pytest.fixture
def batch(cfg):
    """Two preprocessed val images (64 px) with their labels."""
    loader = copy.deepcopy(cfg.val_dataloader)
    loader.dataset['_scope_'] = 'mmseg'
    loader.sampler = dict(type='DefaultSampler', shuffle=False)
    return next(iter(Runner.build_dataloader(loader, seed=0)))


@pytest.fixture
def slimmed(cfg, batch):
    """(dense copy, slim model, graph, keep, spec) at 50% channels."""
    model = build_model(cfg)
    dense = copy.deepcopy(model)
    inputs = model.data_preprocessor(batch)['inputs']
    graph = ChannelGraph(model, inputs[:1], seg_forward)
    keep = random_keep(graph)
    spec = slim_channels(graph, keep)
    return dense, model, graph, keep, spec


def test_coupled_channels_cut_together(slimmed):
    dense, model, graph, keep, _ = slimmed
    out_keep = {m: keep[g] for g, grp in graph.groups.items()
                for m in grp.modules}
    in_keep = {m: keep[g] for g, grp in graph.groups.items()
               for m in grp.consumers}
    dense_modules = dict(dense.named_modules())
    checked = 0
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
            continue
        full = dense_modules[name]
        rows = out_keep.get(name, slice(None))
        if isinstance(module, nn.Conv2d):
            cols = in_keep.get(name, slice(None))
            assert torch.equal(module.weight, full.weight[rows][:, cols]), name
        else:
            assert torch.equal(module.weight, full.weight[rows]), name
            assert torch.equal(module.running_var, full.running_var[rows])
        checked += 1
    assert checked > 40
    # the residual stream of layer1 (fed by the stem) has one width
    width = keep['backbone.stem.6'].sum()
    for name in ('stem.6', 'layer1.0.conv2', 'layer1.1.conv2'):
        assert model.backbone.get_submodule(name).out_channels == width
    # heads: adapted input channels only
    layer4 = int(keep['backbone.layer4.0.downsample.0'].sum())
    layer3 = int(keep['backbone.layer3.0.downsample.0'].sum())
    for conv in model.decode_head.aspp_modules:
        assert conv.conv.in_channels == layer4
        assert conv.conv.out_channels == dense.decode_head.channels
    assert model.auxiliary_head.convs[0].conv.in_channels == layer3
    assert model.decode_head.conv_seg.out_channels == 21


def test_slim_model_runs_in_all_modes(slimmed, batch):
    dense, model, *_ = slimmed
    dense_params = sum(p.numel() for p in dense.backbone.parameters())
    slim_params = sum(p.numel() for p in model.backbone.parameters())
    assert slim_params < 0.5 * dense_params
    data = model.data_preprocessor(batch, training=True)
    model.train()
    # the parameters were replaced: a new optimizer must bind the new ones
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = model(**data, mode='loss')
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(data['inputs'], mode='tensor')
        preds = model(**data, mode='predict')
    assert logits.shape[:2] == (2, 21)
    assert len(preds) == 2
    assert preds[0].pred_sem_seg.data.shape[-2:] == preds[0].ori_shape


def test_optimizer_rebound_to_slim_parameters(cfg, batch):
    model = build_model(cfg)
    data = model.data_preprocessor(batch, training=True)
    graph = ChannelGraph(model, data['inputs'][:1], seg_forward)
    optimizer = torch.optim.SGD([
        dict(params=model.backbone.parameters(), lr=0.01),
        dict(params=model.decode_head.parameters(), lr=0.1)
    ], momentum=0.9)
    before = dict(model.named_parameters())
    slim_channels(graph, random_keep(graph))
    rebind_optimizer(optimizer, before, model)
    assert [p for g in optimizer.param_groups for p in g['params']] == list(
        model.backbone.parameters()) + list(model.decode_head.parameters())
    assert [g['lr'] for g in optimizer.param_groups] == [0.01, 0.1]
    start = model.backbone.stem[0].weight.detach().clone()
    model.train()
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    loss.backward()
    optimizer.step()
    assert not torch.equal(model.backbone.stem[0].weight, start)
    with pytest.raises(ValueError, match='already stepped'):
        rebind_optimizer(optimizer, dict(model.named_parameters()), model)


def test_rebuild_and_load_round_trip(slimmed, cfg, batch):
    _, model, _, _, spec = slimmed
    spec = json.loads(json.dumps(spec))  # e.g. through checkpoint meta
    fresh = build_model(cfg, seed=1)
    with pytest.raises(ValueError, match=r'channel-pruned \(slim\) network '
                       r'and the model is dense: rebuild .*rebuild_slim'):
        check_state_dict_shapes(fresh, model.state_dict())
    rebuild_slim(fresh, spec)
    check_state_dict_shapes(fresh, model.state_dict())
    fresh.load_state_dict(model.state_dict())
    assert layer_channels(fresh) == layer_channels(model)
    data = model.data_preprocessor(batch)
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(
            model(data['inputs'], mode='tensor'),
            fresh(data['inputs'], mode='tensor'))
        a = model(**data, mode='predict')[0].seg_logits.data
        b = fresh(**data, mode='predict')[0].seg_logits.data
    assert torch.equal(a, b)


def test_dense_state_dict_into_slim_model(slimmed, cfg):
    _, model, *_ = slimmed
    dense_sd = build_model(cfg).state_dict()
    with pytest.raises(ValueError, match='different architecture'):
        check_state_dict_shapes(model, dense_sd)


def test_spec_lists_changed_layers_only(slimmed):
    dense, model, _, keep, spec = slimmed
    layers = spec['layers']
    assert 'decode_head.conv_seg' not in layers
    assert layers['decode_head.aspp_modules.0.conv']['out_channels'] == [
        dense.decode_head.channels, dense.decode_head.channels
    ]
    stem = layers['backbone.stem.6']
    assert stem['type'] == 'Conv2d'
    assert stem['out_channels'] == [
        keep['backbone.stem.6'].numel(),
        int(keep['backbone.stem.6'].sum())
    ]
    table = format_slim_table(spec)
    assert 'backbone.stem.6' in table and '->' in table
    assert len(table.splitlines()) == len(layers) + 1


def test_keep_everything_changes_nothing(cfg, batch):
    model = build_model(cfg)
    dense = copy.deepcopy(model)
    inputs = model.data_preprocessor(batch)['inputs']
    graph = ChannelGraph(model, inputs[:1], seg_forward)
    spec = slim_channels(graph, random_keep(graph, sparsity=0.0))
    assert spec['layers'] == {}
    model.eval(), dense.eval()
    with torch.no_grad():
        assert torch.equal(model(inputs), dense(inputs))


def test_rebuild_rejects_a_spec_of_another_model(slimmed, cfg):
    _, _, _, _, spec = slimmed
    for edit, match in [
        (lambda s: s['layers']['backbone.stem.6'].update(type='Linear'),
         'the spec has a Linear, the model a Conv2d'),
        (lambda s: s['layers']['backbone.stem.6']['out_channels'].__setitem__(
            0, 99), 'made from 99 out'),
        (lambda s: s['layers'].update({'neck.conv': s['layers'][
            'backbone.stem.6']}), 'neck.conv: no such layer'),
        (lambda s: s.update(version=7), 'version 7 is not supported'),
        (lambda s: s.update(format='x'), 'not a slim spec'),
    ]:
        bad = copy.deepcopy(spec)
        edit(bad)
        fresh = build_model(cfg)
        before = copy.deepcopy(fresh.state_dict())
        with pytest.raises(ValueError, match=match):
            rebuild_slim(fresh, bad)
        after = fresh.state_dict()
        assert all(after[k].shape == v.shape for k, v in before.items())


def test_slim_rejects_bad_keep_and_reuse(cfg, batch):
    model = build_model(cfg)
    inputs = model.data_preprocessor(batch)['inputs']
    graph = ChannelGraph(model, inputs[:1], seg_forward)
    keep = random_keep(graph)
    partial = dict(keep)
    partial.pop('backbone.stem.0')
    with pytest.raises(ValueError, match=r"missing groups: \['backbone"):
        slim_channels(graph, partial)
    empty = dict(keep, **{'backbone.stem.0': torch.zeros(4, dtype=bool)})
    with pytest.raises(ValueError, match='keeps no channel'):
        slim_channels(graph, empty)
    short = dict(keep, **{'backbone.stem.0': torch.ones(3, dtype=bool)})
    with pytest.raises(ValueError, match='has shape'):
        slim_channels(graph, short)
    assert layer_channels(model) == layer_channels(build_model(cfg))
    slim_channels(graph, keep)
    with pytest.raises(RuntimeError, match='build a new ChannelGraph'):
        slim_channels(graph, keep)


def test_weight_masked_model_is_refused(cfg, batch):
    model = build_model(cfg)
    inputs = model.data_preprocessor(batch)['inputs']
    graph = ChannelGraph(model, inputs[:1], seg_forward)
    weight = model.backbone.layer1[0].conv1.weight
    apply_masks(model, {
        'backbone.layer1.0.conv1.weight':
        torch.rand_like(weight) > 0.5
    })
    with pytest.raises(ValueError, match='weight masks .*remove_masks'):
        slim_channels(graph, random_keep(graph))


def test_slim_model_records_its_spec_and_rebuild_is_idempotent(
        slimmed, cfg):
    _, model, _, keep, spec = slimmed
    assert get_slim_spec(model) == json.loads(json.dumps(spec))
    assert spec['channels'] == dict(
        total=sum(k.numel() for k in keep.values()),
        kept=sum(int(k.sum()) for k in keep.values()))
    assert spec['groups'] == {
        name: dict(channels=k.numel(), kept=k.nonzero().flatten().tolist())
        for name, k in keep.items()
    }
    fresh = build_model(cfg, seed=1)
    assert get_slim_spec(fresh) is None
    rebuild_slim(fresh, spec)
    params = dict(fresh.named_parameters())
    rebuild_slim(fresh, json.loads(json.dumps(spec)))  # e.g. a second hook
    assert all(p is params[n] for n, p in fresh.named_parameters())
    other = copy.deepcopy(spec)
    other['layers'].pop('backbone.stem.6')
    with pytest.raises(ValueError, match='slim already, by another slim '
                       'spec'):
        rebuild_slim(fresh, other)


def test_slimming_twice_composes_one_spec(cfg, batch):
    model = build_model(cfg)
    dense = layer_channels(model)
    inputs = model.data_preprocessor(batch)['inputs'][:1]
    graph = ChannelGraph(model, inputs, seg_forward)
    first = slim_channels(graph, random_keep(graph))
    graph = ChannelGraph(model, inputs, seg_forward)
    scores = compute_channel_scores(
        graph, criterion='random', generator=torch.Generator().manual_seed(1))
    keep = select_channels(scores, 0.3, selection='layerwise')
    composed = slim_channels(graph, keep)
    assert composed == get_slim_spec(model)
    assert composed['channels'] == dict(
        total=first['channels']['total'],
        kept=sum(int(k.sum()) for k in keep.values()))
    # kept channels as indices of the dense groups: a subset of the first's
    for name, group in composed['groups'].items():
        assert group['channels'] == first['groups'][name]['channels']
        assert len(group['kept']) == int(keep[name].sum())
        assert set(group['kept']) <= set(first['groups'][name]['kept'])
    slim = layer_channels(model)
    assert set(composed['layers']) >= set(first['layers'])
    for name, layer in composed['layers'].items():
        assert layer['out_channels'] == [dense[name][1], slim[name][1]]
        assert layer['in_channels'] == [dense[name][2], slim[name][2]]
    fresh = build_model(cfg, seed=1)
    rebuild_slim(fresh, composed)
    fresh.load_state_dict(model.state_dict())
    assert layer_channels(fresh) == slim
