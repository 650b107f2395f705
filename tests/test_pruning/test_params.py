"""Tests of epsd_mm.pruning.params."""
import pytest
import torch
import torch.nn as nn
from mmdet.models.backbones import ResNet

from epsd_mm.pruning import prunable_parameters


class TinyDetNet(nn.Module):
    """mmdet ResNet-18 (8 base channels, stage 1 frozen) plus neck/head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet(
            depth=18, stem_channels=8, base_channels=8, frozen_stages=1)
        self.neck = nn.Conv2d(64, 16, 1)
        self.bbox_head = nn.Linear(16, 4)


@pytest.fixture
def det_model() -> TinyDetNet:
    return TinyDetNet()


def test_backbone_scope_takes_every_conv_weight_and_nothing_else(det_model):
    params = prunable_parameters(det_model)
    convs = [
        name for name, m in det_model.backbone.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    assert list(params) == [f'backbone.{name}.weight' for name in convs]
    assert len(params) == 20  # stem conv + 16 block convs + 3 downsamples
    named = dict(det_model.named_parameters())
    for name, param in params.items():
        assert named[name] is param
        assert param.dim() == 4


def test_frozen_weights_are_prunable(det_model):
    params = prunable_parameters(det_model)
    assert not params['backbone.conv1.weight'].requires_grad
    assert params['backbone.layer2.0.conv1.weight'].requires_grad


def test_several_scopes_and_linear_layers(det_model):
    params = prunable_parameters(det_model, scopes=('neck', 'bbox_head'))
    assert list(params) == ['neck.weight', 'bbox_head.weight']
    assert prunable_parameters(det_model, scopes='neck').keys() == {
        'neck.weight'
    }


def test_glob_and_prefix_scopes(det_model):
    layer1 = prunable_parameters(det_model, scopes=('backbone.layer1*', ))
    assert layer1 and all(
        name.startswith('backbone.layer1.') for name in layer1)
    block = prunable_parameters(det_model, scopes=('backbone.layer1.0', ))
    assert list(block) == [
        'backbone.layer1.0.conv1.weight', 'backbone.layer1.0.conv2.weight'
    ]
    everything = prunable_parameters(det_model, scopes=('*', ))
    assert len(everything) == 22


def test_scope_must_match_whole_name_components(det_model):
    with pytest.raises(ValueError, match="'back'"):
        prunable_parameters(det_model, scopes=('back', ))


def test_scope_matching_nothing_names_scope_and_children(det_model):
    with pytest.raises(ValueError) as info:
        prunable_parameters(det_model, scopes=('decode_head', ))
    message = str(info.value)
    assert "['decode_head']" in message
    assert 'TinyDetNet' in message
    assert 'backbone, neck, bbox_head' in message


def test_dead_scope_next_to_live_ones_is_named(det_model):
    # a typo must not silently leave the intended part dense
    with pytest.raises(ValueError) as info:
        prunable_parameters(det_model, scopes=('backbone', 'bbox_hed'))
    assert "['bbox_hed']" in str(info.value)
    assert "'backbone'" not in str(info.value).split(';')[0]


def test_attention_projections_are_prunable():
    """nn.MultiheadAttention's Q/K/V projection is a bare parameter (not a
    Linear); it is a weight matrix and prunable, next to out_proj."""
    model = nn.Module()
    model.backbone = nn.Sequential(
        nn.MultiheadAttention(8, 2),
        nn.MultiheadAttention(8, 2, kdim=4, vdim=6))
    names = list(prunable_parameters(model))
    assert names == [
        'backbone.0.in_proj_weight', 'backbone.0.out_proj.weight',
        'backbone.1.q_proj_weight', 'backbone.1.k_proj_weight',
        'backbone.1.v_proj_weight', 'backbone.1.out_proj.weight'
    ]


def test_empty_scopes_rejected(det_model):
    with pytest.raises(ValueError, match='at least one'):
        prunable_parameters(det_model, scopes=())


def test_tied_weight_listed_once():
    model = nn.Module()
    model.backbone = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model.backbone[1].weight = model.backbone[0].weight
    assert list(prunable_parameters(model)) == ['backbone.0.weight']


# --------------------------------------------------------------------------
# Transformer backbones: every weight matrix, attention projections included
# --------------------------------------------------------------------------
def _transformers():
    from mmseg.models.backbones import (MixVisionTransformer,
                                        SwinTransformer, VisionTransformer)
    return {
        'mit':
        lambda: MixVisionTransformer(
            embed_dims=8,
            num_layers=[1, 1, 1, 1],
            num_heads=[1, 2, 2, 4],
            sr_ratios=[4, 2, 1, 1]),
        'swin':
        lambda: SwinTransformer(
            embed_dims=8,
            depths=(1, 1),
            num_heads=(1, 2),
            window_size=4,
            strides=(4, 2),
            out_indices=(0, 1)),
        'vit':
        lambda: VisionTransformer(
            img_size=(32, 32),
            patch_size=8,
            embed_dims=16,
            num_layers=2,
            num_heads=2,
            out_indices=(1, )),
    }


@pytest.mark.parametrize('name', ['mit', 'swin', 'vit'])
def test_reported_sparsity_is_the_true_zero_fraction(name):
    """The logged sparsity is computed from the tensors themselves and
    covers every weight matrix of the backbone: MiT's attention keeps its
    Q/K/V projection as nn.MultiheadAttention.in_proj_weight, a bare
    parameter its forward hands to the functional attention."""
    from epsd_mm.pruning import (apply_masks, overall_sparsity,
                                 random_scores, register_mask_enforcement,
                                 select_masks, sparsity_stats)
    torch.manual_seed(0)
    model = nn.Module()
    model.backbone = _transformers()[name]()
    params = prunable_parameters(model)
    attention = [
        m for m in model.modules() if isinstance(m, nn.MultiheadAttention)
    ]
    for module in attention:  # its bare projection is in the prunable set
        assert any(p is module.in_proj_weight for p in params.values())
    # every weight matrix of a linear map in the backbone is prunable
    matrices = {
        n: p
        for n, p in model.named_parameters() if p.dim() >= 2 and (
            n.endswith('.weight') or n.endswith('proj_weight'))
        and 'norm' not in n and 'pos_embed' not in n
    }
    assert set(matrices) == set(params)
    apply_masks(model, select_masks(random_scores(params), 0.9))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    register_mask_enforcement(optimizer, model)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(2):  # the module's own forward, then optimizer steps
        optimizer.zero_grad()
        sum(o.square().mean() for o in model.backbone(x)).backward()
        optimizer.step()
    zeros = sum(int((p == 0).sum()) for p in params.values())
    total = sum(p.numel() for p in params.values())
    assert overall_sparsity(sparsity_stats(model)) == zeros / total
    assert zeros / total == pytest.approx(0.9, abs=1e-3)
