"""trace_forward: the forward channel groups are traced with reaches every
head that training uses."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.registry import DefaultScope

from epsd_mm.models import tensor_forward, trace_forward
from epsd_mm.pruning import (ChannelGraph, compute_channel_scores,
                             select_channels, select_masks, slim_channels)
from epsd_mm.registry import MODELS

IMG = torch.randn(1, 3, 64, 64)
CONFIGS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))), 'configs')


def build(model_cfg):
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        return MODELS.build(model_cfg)


def test_auxiliary_head_consumes_backbone_channels(tiny_cfg):
    model = build(copy.deepcopy(tiny_cfg().model))
    graph = ChannelGraph(model, IMG, trace_forward)
    stage3 = graph.groups['backbone.layer3.0.downsample.0']
    assert 'auxiliary_head.convs.0.conv' in stage3.consumers
    # mode='tensor' skips the auxiliary head: slimming would break it
    with pytest.raises(ValueError, match='did not run .*auxiliary_head'):
        ChannelGraph(model, IMG, tensor_forward)


def test_cascade_segmentor_stages_and_auxiliary_head(tiny_cfg):
    """An OCRNet-style cascade: every decode stage and the auxiliary head
    adapt to the slim backbone, and training still runs."""
    cfg = copy.deepcopy(tiny_cfg().model)
    norm = dict(type='BN', requires_grad=True)
    cfg.segmentor_type = 'mmseg.CascadeEncoderDecoder'
    cfg.num_stages = 2
    cfg.decode_head = [
        dict(type='FCNHead', in_channels=64, channels=16, num_convs=1,
             concat_input=False, num_classes=21, norm_cfg=norm,
             loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)),
        dict(type='OCRHead', in_channels=64, channels=16, ocr_channels=8,
             num_classes=21, norm_cfg=norm,
             loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    ]
    model = build(cfg)
    graph = ChannelGraph(model, IMG, trace_forward)
    scores = compute_channel_scores(
        graph, criterion='random', generator=torch.Generator().manual_seed(0))
    slim_channels(graph, select_channels(scores, 0.5))
    width = model.backbone.layer4[1].conv2.out_channels
    assert width < 64
    assert model.decode_head[0].convs[0].conv.in_channels == width
    assert model.decode_head[1].bottleneck.conv.in_channels == width
    assert model.auxiliary_head.convs[0].conv.in_channels == \
        model.backbone.layer3[1].conv2.out_channels
    model.eval()
    with torch.no_grad():
        assert model(IMG, mode='tensor').shape[:2] == (1, 21)


@pytest.mark.parametrize('config', [
    'epsd_deeplab_voc_demo.py', 'epsd_segformer_voc_demo.py',
    'epsd_cam_cub_demo.py', 'epsd_resnet_cifar_demo.py'
])
def test_data_free_criteria_score_every_demo_model(config):
    """The input-driven data-free criteria run every task's model through
    trace_forward, as the pruning hook does: every prunable weight gets a
    finite score (ResNet backbones, SegFormer attention, the CAM head)."""
    from mmengine.config import Config

    from epsd_mm.pruning import CRITERIA, compute_scores, prunable_parameters
    cfg = Config.fromfile(osp.join(CONFIGS, 'demo', config))
    model = build(cfg.model).train()
    params = prunable_parameters(model)
    size = 32 if 'cifar' in config else 64
    options = dict(
        synflow=dict(), ntk_sap=dict(iterations=2), phew=dict(seed=0))
    for name in CRITERIA.names:
        if CRITERIA.get(name).data != 'input':
            continue
        assert name in options, f'add small options for {name!r}'
        scores = compute_scores(
            model, criterion=name, forward_fn=trace_forward, sparsity=0.9,
            input_shape=(2, 3, size, size), **options[name])
        assert list(scores) == list(params), name
        for weight, score in scores.items():
            assert torch.isfinite(score).all(), (name, weight)
        if name != 'synflow':  # synflow: whole zero-init branches score 0
            # with the config's floor (SegFormer keeps 2% per layer: NTK-SAP
            # empties some of its FFN convs at 90%, as SynFlow-like flow
            # criteria may)
            floor = cfg.default_hooks.pruning.get('min_density', 0.0)
            masks = select_masks(scores, 0.9, min_density=floor)
            assert all(m.any() for m in masks.values()), name
