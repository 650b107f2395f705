"""ChannelGraph: coupled channel groups of a real mmseg ResNetV1c, traced by
torch-pruning."""
import pytest
import torch
import torch.nn as nn

from epsd_mm.pruning.channels import ChannelGraph

IMG = torch.randn(1, 3, 32, 32)


def conv_and_norm_names(model, prefix):
    return {
        name
        for name, m in model.named_modules()
        if name.startswith(prefix) and isinstance(
            m, (nn.Conv2d, nn.BatchNorm2d))
    }


def test_residual_stage_is_one_group(seg_model):
    graph = ChannelGraph(seg_model, IMG)
    # The stem's last conv feeds layer1's residual stream (no downsample):
    # its channels, and those of both blocks' last convs, are one group.
    group = graph.groups['backbone.stem.6']
    assert set(group.modules) == {
        'backbone.stem.6', 'backbone.stem.7', 'backbone.layer1.0.conv2',
        'backbone.layer1.0.bn2', 'backbone.layer1.1.conv2',
        'backbone.layer1.1.bn2'
    }
    assert set(group.consumers) == {
        'backbone.layer1.0.conv1', 'backbone.layer1.1.conv1',
        'backbone.layer2.0.conv1', 'backbone.layer2.0.downsample.0'
    }
    assert group.num_channels == 8
    members = {m.param: m for m in group.members}
    assert set(members) == {
        'backbone.stem.6.weight', 'backbone.stem.7.weight',
        'backbone.stem.7.bias', 'backbone.layer1.0.conv2.weight',
        'backbone.layer1.0.bn2.weight', 'backbone.layer1.0.bn2.bias',
        'backbone.layer1.1.conv2.weight', 'backbone.layer1.1.bn2.weight',
        'backbone.layer1.1.bn2.bias'
    }
    for name, member in members.items():
        assert member.dim == 0
        assert member.positions == member.channels == tuple(range(8))
        assert member.is_filter == name.endswith(('6.weight', 'conv2.weight'))


def test_plain_block_conv_group(seg_model):
    graph = ChannelGraph(seg_model, IMG)
    group = graph.groups['backbone.layer2.1.conv1']
    assert group.modules == ('backbone.layer2.1.conv1',
                             'backbone.layer2.1.bn1')
    assert group.consumers == ('backbone.layer2.1.conv2', )
    assert [m.param for m in group.members] == [
        'backbone.layer2.1.conv1.weight', 'backbone.layer2.1.bn1.weight',
        'backbone.layer2.1.bn1.bias'
    ]


def test_groups_partition_the_backbone(seg_model):
    graph = ChannelGraph(seg_model, IMG)
    cut = [m for g in graph.groups.values() for m in g.modules]
    assert len(cut) == len(set(cut))
    assert set(cut) == conv_and_norm_names(seg_model, 'backbone')
    # groups come in module order, rooted at their first conv
    order = [name for name, _ in seg_model.named_modules()]
    roots = list(graph.groups)
    assert roots == sorted(roots, key=order.index)
    assert graph.num_channels == sum(
        g.num_channels for g in graph.groups.values())


def test_head_is_adapted_never_cut(seg_model):
    graph = ChannelGraph(seg_model, IMG)
    assert not any(
        m.startswith('decode_head') for g in graph.groups.values()
        for m in g.modules)
    last = graph.groups['backbone.layer4.0.downsample.0']
    assert 'decode_head' in last.consumers


def test_scope_restricts_groups(seg_model):
    graph = ChannelGraph(seg_model, IMG, scopes=('backbone.layer4', ))
    cut = {m for g in graph.groups.values() for m in g.modules}
    assert cut == conv_and_norm_names(seg_model, 'backbone.layer4')


def test_groups_reaching_the_output_are_left_out(seg_model):
    # The decode head's channels are the logits: never a group.
    with pytest.raises(ValueError, match='no output channel .* can be cut'):
        ChannelGraph(seg_model, IMG, scopes=('decode_head', ))
    graph = ChannelGraph(seg_model, IMG, scopes=('*', ))
    assert 'decode_head' not in graph.groups
    assert 'backbone.stem.0' in graph.groups


def test_untraced_layers_raise(seg_model):
    with pytest.raises(ValueError, match=r'did not run 1 layer.*decode_head'):
        ChannelGraph(seg_model, IMG, lambda m, x: m.backbone(x))


def test_parameters_and_model_unchanged(seg_model, assert_unchanged):
    with assert_unchanged(seg_model):
        graph = ChannelGraph(seg_model, IMG)
    params = graph.parameters()
    named = dict(seg_model.named_parameters())
    assert all(params[name] is named[name] for name in params)
    assert 'backbone.layer3.1.bn2.bias' in params
    assert not any(name.startswith('decode_head') for name in params)


def test_class_channels_of_a_classifier_are_kept_whole():
    """scopes='*' on a plain classifier: the logits' Linear is reported as
    an output group, never cut; the rest can be."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    graph = ChannelGraph(model, IMG, scopes='*')
    assert graph.output_groups == ['7']
    assert set(graph.groups) == {'0', '3'}
    assert not any('7' in g.modules for g in graph.groups.values())


class _AttentionBlock(nn.Module):
    """Embedding, multi-head attention, MLP: a transformer block."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        e = self.embed(x)
        a = e + self.attn(e, e, e, need_weights=False)[0]
        return self.head(a + self.fc2(torch.relu(self.fc1(a))))


def test_attention_streams_are_kept_whole_and_mlp_channels_cut():
    """nn.MultiheadAttention runs its out_proj functionally (not an
    untraced layer); the channels its embedding width is made of are kept
    whole (the heads must divide it), the MLP hidden channels are cut."""
    from epsd_mm.pruning import select_channels, slim_channels
    model = _AttentionBlock()
    tokens = torch.randn(2, 5, 8)
    graph = ChannelGraph(model, tokens, scopes='*')
    # the residual stream (embed, the attention, fc2) is one group
    assert graph.attention_groups in (['embed'], ['fc2'])
    assert graph.output_groups == ['head']
    assert set(graph.groups) == {'fc1'}
    slim_channels(graph, select_channels(
        {'fc1': torch.arange(32.)}, 0.5))
    assert model.fc1.out_features == model.fc2.in_features == 16
    assert model(tokens).shape == (2, 5, 3)
