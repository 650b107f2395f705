"""Channel criteria: hand-computed cases, finite differences, prospr M=0 ==
snip, and the BatchNorm scale invariance that makes norm entries matter."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from epsd_mm.pruning import compute_channel_scores
from epsd_mm.pruning.channels import ChannelGraph
from epsd_mm.pruning.criteria.prospr import prospr_meta_gradients


class ConvReLUHead(nn.Module):
    """``head(relu(backbone(x)))``: a 3x3 conv with bias, then a 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Conv2d(2, 3, 3, padding=1).double()
        self.head = nn.Conv2d(3, 1, 1, bias=False).double()

    def forward(self, x):
        return self.head(F.relu(self.backbone(x)))


class ConvBNNet(nn.Module):
    """Two conv-BN-ReLU layers (train-mode BatchNorm) and a 1x1 head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3),
            nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(4), nn.ReLU()).double()
        with torch.no_grad():  # non-trivial affine parameters
            for bn in (self.backbone[1], self.backbone[4]):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
        self.head = nn.Conv2d(4, 1, 1).double()

    def forward(self, x):
        return self.head(self.backbone(x))


def sum_loss(model, x):
    return model(x).sum()


def square_loss(model, x):
    return model(x).pow(2).mean()


@pytest.fixture
def images():
    gen = torch.Generator().manual_seed(0)
    return [
        torch.randn(2, 2, 5, 5, generator=gen, dtype=torch.float64)
        for _ in range(2)
    ]


def test_snip_and_magnitude_by_hand(images):
    """``y = sum_c v_c relu(m_c z_c)`` with ``z_c = W_c * x + b_c``: for
    ``L = sum(y)``, ``dL/dm_c = v_c * sum relu(z_c)`` (ReLU is positively
    homogeneous), summed over the batches."""
    model = ConvReLUHead()
    graph = ChannelGraph(model, images[0][:1])
    assert list(graph.groups) == ['backbone']
    conv, v = model.backbone, model.head.weight.detach().flatten()
    with torch.no_grad():
        relu_sums = sum(
            F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1)).sum(
                (0, 2, 3)) for x in images)
    scores = compute_channel_scores(graph, sum_loss, images, 'snip')
    torch.testing.assert_close(scores['backbone'], (v * relu_sums).abs())

    l1 = conv.weight.detach().abs().sum((1, 2, 3))
    scores = compute_channel_scores(graph, criterion='magnitude')
    torch.testing.assert_close(scores['backbone'], l1)


def test_magnitude_sums_coupled_filters(seg_model):
    graph = ChannelGraph(seg_model, torch.randn(1, 3, 32, 32))
    scores = compute_channel_scores(graph, criterion='magnitude')
    named = dict(seg_model.named_parameters())
    expected = sum(named[f'backbone.{name}.weight'].detach().abs().sum(
        (1, 2, 3)) for name in ('stem.6', 'layer1.0.conv2', 'layer1.1.conv2'))
    torch.testing.assert_close(scores['backbone.stem.6'], expected)
    assert set(scores) == set(graph.groups)
    for name, group in graph.groups.items():
        assert scores[name].shape == (group.num_channels, )


def channel_loss_after_steps(model, graph, channel_masks, batches, lr):
    """Reference: the loss after one SGD step from ``w * m`` (channel
    masks expanded to the members' entries), written out directly."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    for name, group in graph.groups.items():
        for member in group.members:
            scale = torch.ones(params[member.param].shape[member.dim],
                               dtype=torch.float64)
            scale[list(member.positions)] = channel_masks[name][list(
                member.channels)]
            shape = [1] * params[member.param].dim()
            shape[member.dim] = -1
            params[member.param] = params[member.param] * scale.view(shape)
    params = {n: p.requires_grad_(True) for n, p in params.items()}
    loss = square_loss(lambda x: functional_call(model, params, (x, )),
                       batches[0])
    grads = torch.autograd.grad(loss, list(params.values()))
    stepped = {n: p - lr * g for (n, p), g in zip(params.items(), grads)}
    return square_loss(lambda x: functional_call(model, stepped, (x, )),
                       batches[1]).detach()


def test_prospr_channel_gradient_matches_finite_differences(images):
    model = ConvBNNet().train()
    graph = ChannelGraph(model, images[0])
    grads = graph.channel_sums(
        prospr_meta_gradients(model, square_loss, images, graph.parameters(),
                              num_steps=1, lr=0.1))
    assert list(grads) == ['backbone.0', 'backbone.3']
    eps = 1e-6
    for name, group in graph.groups.items():
        for c in range(group.num_channels):
            masks = {
                n: torch.ones(g.num_channels, dtype=torch.float64)
                for n, g in graph.groups.items()
            }
            masks[name][c] = 1 + eps
            up = channel_loss_after_steps(model, graph, masks, images, 0.1)
            masks[name][c] = 1 - eps
            down = channel_loss_after_steps(model, graph, masks, images, 0.1)
            numeric = (up - down) / (2 * eps)
            torch.testing.assert_close(
                grads[name][c], numeric, rtol=1e-5, atol=1e-9)


def test_batchnorm_entries_carry_the_score(images):
    """Train-mode BN makes the conv's output invariant to its filter's
    scale (up to BN's eps): the filter share of ``dL/dm_c`` is ~0 and a
    channel score from conv weights alone would be meaningless."""
    model = ConvBNNet().train()
    graph = ChannelGraph(model, images[0])
    element = prospr_meta_gradients(
        model, square_loss, images[:1], graph.parameters(), num_steps=0)
    filter_sums = graph.channel_sums(element, filters_only=True)
    for name, total in graph.channel_sums(element).items():
        filters = filter_sums[name]
        assert filters.abs().max() < 1e-3 * total.abs().max()
        assert (total.abs() > 1e-6).all()


def test_prospr_without_steps_is_snip(seg_model, seg_loss_fn, seg_batches,
                                      assert_unchanged):
    graph = ChannelGraph(seg_model, seg_batches[0][0][:1])
    with assert_unchanged(seg_model):
        prospr = compute_channel_scores(
            graph, seg_loss_fn, seg_batches[:1], 'prospr', num_steps=0)
        snip = compute_channel_scores(graph, seg_loss_fn, seg_batches[:1],
                                      'snip')
    assert prospr.keys() == snip.keys() == graph.groups.keys()
    for name in graph.groups:
        torch.testing.assert_close(prospr[name], snip[name])
        assert (prospr[name] > 0).any()


def test_prospr_steps_change_the_scores(seg_model, seg_loss_fn, seg_batches):
    graph = ChannelGraph(seg_model, seg_batches[0][0][:1])
    batches = seg_batches[:2]  # one per loss evaluation of num_steps=1
    full = compute_channel_scores(
        graph, seg_loss_fn, batches, num_steps=1, lr=0.1)
    first = compute_channel_scores(
        graph, seg_loss_fn, batches, num_steps=1, lr=0.1,
        first_order=True)
    snip = compute_channel_scores(graph, seg_loss_fn, seg_batches[:1],
                                  'snip')
    flat = [torch.cat(list(s.values())) for s in (full, first, snip)]
    assert all(torch.isfinite(f).all() and (f >= 0).all() for f in flat)
    assert not torch.allclose(flat[0], flat[2])
    assert not torch.allclose(flat[0], flat[1])


def test_random_scores_are_reproducible(seg_model):
    graph = ChannelGraph(seg_model, torch.randn(1, 3, 32, 32))

    def draw():
        return compute_channel_scores(
            graph,
            criterion='random',
            generator=torch.Generator().manual_seed(3))

    a, b = draw(), draw()
    for name, group in graph.groups.items():
        assert a[name].shape == (group.num_channels, )
        assert torch.equal(a[name], b[name])
        assert ((a[name] >= 0) & (a[name] < 1)).all()


def test_invalid_criterion_and_missing_data(seg_model):
    graph = ChannelGraph(seg_model, torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="'grasp' scores weights only; .*"
                       'magnitude, prospr, random, snip'):
        compute_channel_scores(graph, criterion='grasp')
    with pytest.raises(ValueError, match="unknown pruning criterion 'snap'"):
        compute_channel_scores(graph, criterion='snap')
    with pytest.raises(ValueError, match='needs `loss_fn`'):
        compute_channel_scores(graph, criterion='snip', batches=[1])
