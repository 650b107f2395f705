"""select_channels: channel counts, ties, normalisation, empty groups."""
import pytest
import torch

from epsd_mm.pruning.channel_selection import channel_sparsity, select_channels


def scores(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        'stem': torch.rand(8, generator=gen),
        'layer1': torch.rand(16, generator=gen),
        'layer2': torch.rand(32, generator=gen),
    }


@pytest.mark.parametrize('sparsity', [0.0, 0.3, 0.5, 0.7])
def test_global_exact_count_and_keeps_highest(sparsity):
    s = scores()
    keep = select_channels(s, sparsity)
    assert sum(int(k.sum()) for k in keep.values()) == round((1 - sparsity) *
                                                            56)
    assert channel_sparsity(keep) == pytest.approx(
        1 - round((1 - sparsity) * 56) / 56)
    kept = torch.cat([s[n][k] for n, k in keep.items()])
    dropped = torch.cat([s[n][~k] for n, k in keep.items()])
    if len(dropped):
        assert kept.min() >= dropped.max()
    for name, k in keep.items():
        assert k.dtype == torch.bool and k.shape == s[name].shape


@pytest.mark.parametrize('sparsity', [0.25, 0.5, 0.7])
def test_layerwise_keeps_same_fraction_per_group(sparsity):
    s = scores()
    keep = select_channels(s, sparsity, selection='layerwise')
    for name, k in keep.items():
        assert int(k.sum()) == round((1 - sparsity) * k.numel())
        assert s[name][k].min() >= s[name][~k].max()


def test_mean_normalisation_compares_within_groups():
    # Raw global top-k would empty the small-valued group; normalised by
    # their means both groups keep their relatively best channels.
    s = {'small': torch.tensor([0.01, 0.02, 0.03, 0.04]),
         'large': torch.tensor([1.0, 2.0, 3.0, 4.0])}
    with pytest.raises(ValueError, match='prunes every channel of 1 layer'):
        select_channels(s, 0.5)
    keep = select_channels(s, 0.5, normalize='mean')
    assert keep['small'].tolist() == [False, False, True, True]
    assert keep['large'].tolist() == [False, False, True, True]


def test_ties_broken_by_position():
    s = {'a': torch.ones(4), 'b': torch.ones(4)}
    keep = select_channels(s, 0.5, min_density=0.25)
    # each group's floor (its first channel), then the budget in order
    assert keep['a'].tolist() == [True, True, True, False]
    assert keep['b'].tolist() == [True, False, False, False]
    keep = select_channels(s, 0.5, selection='layerwise')
    assert keep['a'].tolist() == keep['b'].tolist() == [
        True, True, False, False
    ]


def test_min_density_floor():
    s = {'weak': torch.full((10, ), 0.1), 'strong': torch.ones(10)}
    keep = select_channels(s, 0.5, min_density=0.2)
    assert int(keep['weak'].sum()) == 2
    # the floor's 2 channels come out of the strong group's share: still
    # exactly 50% of all channels removed
    assert int(keep['strong'].sum()) == 8


def test_emptied_group_raises_with_fix():
    s = {'weak': torch.full((2, ), 0.1), 'strong': torch.ones(10)}
    with pytest.raises(ValueError, match='min_density'):
        select_channels(s, 0.5)
    with pytest.raises(ValueError, match=r'of 1 layer\(s\): a\.'):
        select_channels({'a': torch.ones(1)}, 0.6, selection='layerwise')


@pytest.mark.parametrize('selection', ['global', 'layerwise'])
@pytest.mark.parametrize('sparsity', [0.3, 0.5, 0.7])
def test_round_to_keeps_multiples_of_each_groups_best(selection, sparsity):
    gen = torch.Generator().manual_seed(1)
    s = {
        name: torch.rand(size, generator=gen)
        for name, size in (('a', 64), ('b', 128), ('c', 16), ('odd', 40))
    }
    keep = select_channels(
        s, sparsity, selection, min_density=0.05, round_to=16)
    for name, k in keep.items():
        kept = int(k.sum())
        assert kept % 16 == 0 or kept == k.numel(), (name, kept)
        if kept < k.numel():  # a prefix of the group's ranking
            assert s[name][k].min() >= s[name][~k].max()
    # 248 channels in 17 blocks (one of 8): off by less than one block each
    assert abs(channel_sparsity(keep) - sparsity) < 4 * 16 / 248
    assert select_channels(s, sparsity, selection, min_density=0.05,
                           round_to=1).keys() == keep.keys()


def test_round_to_selects_blocks_by_their_mean():
    # channel by channel the best 4 are 1.0, 0.6, 0.6, 0.55; in blocks of 2
    # 'a' offers (1.0, 0.3) with mean 0.65, which beats 'b's (0.55, 0.55)
    s = {'a': torch.tensor([1.0, 0.0, 0.0, 0.0, 0.3, 0.3]),
         'b': torch.tensor([0.6, 0.6, 0.55, 0.55])}
    keep = select_channels(s, 0.6, round_to=2)
    assert keep['a'].tolist() == [True, False, False, False, True, False]
    assert keep['b'].tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match='2-channel block'):
        select_channels(s, 0.75, round_to=2, min_density=0.5)


@pytest.mark.parametrize('kwargs, match', [
    (dict(sparsity=0.5, round_to=0), 'round_to must be a positive integer'),
    (dict(sparsity=0.5, round_to=1.5), 'round_to must be a positive integer'),
    (dict(sparsity=0.5, round_to=True), 'round_to must be a positive'),
    (dict(sparsity=1.0), r'sparsity must be in \[0, 1\)'),
    (dict(sparsity=0.5, selection='per_group'), 'selection'),
    (dict(sparsity=0.5, normalize='max'), 'normalize'),
    (dict(sparsity=0.5, min_density=2.0), 'min_density'),
])
def test_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        select_channels(scores(), **kwargs)


def test_invalid_scores():
    with pytest.raises(ValueError, match='empty'):
        select_channels({}, 0.5)
    with pytest.raises(ValueError, match='1-D .*select_masks'):
        select_channels({'conv.weight': torch.rand(4, 3)}, 0.5)
    with pytest.raises(ValueError, match=r'infinite in 1 layer\(s\): b\.'):
        select_channels({'a': torch.ones(3),
                         'b': torch.tensor([1.0, float('nan')])}, 0.5)
