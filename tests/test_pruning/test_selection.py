"""Tests of epsd_mm.pruning.select_masks."""
import math

import pytest
import torch

from epsd_mm.pruning import select_masks
from epsd_mm.pruning.selection import tied_kept


def random_scores(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        'a.weight': torch.rand(8, 3, 3, 3, generator=gen),
        'b.weight': torch.rand(16, 8, 3, 3, generator=gen),
        'c.weight': torch.rand(10, 16, generator=gen),
    }


def pruned(masks):
    return sum(int((~m).sum()) for m in masks.values())


@pytest.mark.parametrize('sparsity', [0.0, 0.3, 0.5, 0.9, 0.99])
def test_global_exact_count_and_keeps_highest(sparsity):
    scores = random_scores()
    total = sum(s.numel() for s in scores.values())
    masks = select_masks(scores, sparsity)
    assert pruned(masks) == total - round((1 - sparsity) * total)
    kept = torch.cat([s[m] for s, m in zip(scores.values(), masks.values())])
    dropped = torch.cat(
        [s[~m] for s, m in zip(scores.values(), masks.values())])
    if len(kept) and len(dropped):
        assert kept.min() >= dropped.max()
    for name, m in masks.items():
        assert m.dtype == torch.bool and m.shape == scores[name].shape


@pytest.mark.parametrize('sparsity', [0.25, 0.5, 0.8])
def test_layerwise_keeps_same_fraction_per_layer(sparsity):
    scores = random_scores()
    masks = select_masks(scores, sparsity, selection='layerwise')
    for name, m in masks.items():
        n = m.numel()
        assert int(m.sum()) == round((1 - sparsity) * n)
        assert scores[name][m].min() >= scores[name][~m].max()


def test_ties_broken_by_position():
    scores = {'a': torch.ones(4), 'b': torch.ones(4)}
    masks = select_masks(scores, 0.75, on_collapse='allow')
    assert masks['a'].tolist() == [True, True, False, False]
    assert not masks['b'].any()
    masks = select_masks(scores, 0.5, selection='layerwise')
    assert masks['a'].tolist() == masks['b'].tolist() == [
        True, True, False, False
    ]


def test_tied_kept_counts_what_position_chose():
    # distinct scores: the scores decide every kept weight
    scores = {'a': torch.tensor([4., 3, 2, 1]), 'b': torch.tensor([8., 7])}
    assert tied_kept(scores, select_masks(scores, 0.5)) == 0
    # a tie across the global boundary (score 1 in both layers)
    scores = {'a': torch.tensor([4., 1, 0, 0]), 'b': torch.tensor([1., 1])}
    masks = select_masks(scores, 0.5)  # keeps 4, a's 1 and b's first 1
    assert tied_kept(scores, masks) == 1  # one 1 of three was pruned
    # layer-wise quotas filled from a tie inside a layer
    scores = {'a': torch.tensor([5., 0, 0, 0]), 'b': torch.tensor([2., 1])}
    masks = select_masks(scores, 0.5, selection='layerwise')
    assert masks['a'].tolist() == [True, True, False, False]
    # a's second keep was one 0 of three; b's lowest kept (1) ties with
    # nothing in b: across layers there is no competition layer-wise
    assert tied_kept(scores, masks, 'layerwise') == 1
    assert tied_kept({'a': scores['a']}, {'a': masks['a']}) == 1
    # layers scoring 0 everywhere are reported on their own, not here
    scores = {'a': torch.zeros(4), 'b': torch.tensor([2., 1])}
    masks = select_masks(scores, 0.5, selection='layerwise')
    assert tied_kept(scores, masks, 'layerwise') == 0


def test_mixed_dtypes_are_compared_exactly():
    scores = {
        'a': torch.tensor([1.0, 3.0], dtype=torch.float32),
        'b': torch.tensor([2.0, 1e-300], dtype=torch.float64),
    }
    masks = select_masks(scores, 0.5)
    assert masks['a'].tolist() == [False, True]
    assert masks['b'].tolist() == [True, False]


@pytest.mark.parametrize('sparsity', [-0.1, 1.0, 1.5, float('nan')])
def test_invalid_sparsity(sparsity):
    with pytest.raises(ValueError, match=r'sparsity must be in \[0, 1\)'):
        select_masks(random_scores(), sparsity)


def test_invalid_options():
    with pytest.raises(ValueError, match='selection'):
        select_masks(random_scores(), 0.5, selection='per_layer')
    with pytest.raises(ValueError, match='on_collapse'):
        select_masks(random_scores(), 0.5, on_collapse='ignore')
    with pytest.raises(ValueError, match='min_density'):
        select_masks(random_scores(), 0.5, min_density=1.5)
    with pytest.raises(ValueError, match='empty'):
        select_masks({}, 0.5)


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_scores_name_the_layers(bad):
    scores = random_scores()
    scores['b.weight'][0, 0, 0, 0] = bad
    with pytest.raises(ValueError) as info:
        select_masks(scores, 0.5)
    message = str(info.value)
    assert 'b.weight' in message and 'a.weight' not in message
    assert 'lr' in message


def collapsing_scores():
    scores = random_scores()
    scores['c.weight'] = scores['c.weight'] * 1e-6  # all below the others
    return scores


def test_collapse_raises_naming_the_layer():
    with pytest.raises(ValueError) as info:
        select_masks(collapsing_scores(), 0.85)
    message = str(info.value)
    assert 'c.weight' in message and 'min_density' in message
    assert 'a.weight' not in message


def test_collapse_allowed_on_request():
    masks = select_masks(collapsing_scores(), 0.85, on_collapse='allow')
    assert not masks['c.weight'].any()


@pytest.mark.parametrize('min_density', [1e-9, 0.05])
def test_min_density_keeps_a_floor_per_layer(min_density):
    scores = collapsing_scores()
    masks = select_masks(scores, 0.85, min_density=min_density)
    reference = select_masks(scores, 0.85, on_collapse='allow')
    floors = {}
    for name, m in masks.items():
        floors[name] = max(1, math.ceil(min_density * m.numel()))
        assert int(m.sum()) >= floors[name]
        # within a layer, the highest-scored weights are kept
        assert scores[name][m].min() >= scores[name][~m].max()
    assert int(masks['c.weight'].sum()) == floors['c.weight']
    # still exactly the target overall: the floor's weights come from the
    # lowest-scored weights kept elsewhere
    assert pruned(masks) == pruned(reference)
    kept = torch.cat([scores[n][masks[n]] for n in masks if n != 'c.weight'])
    lost = torch.cat([scores[n][reference[n] & ~masks[n]] for n in masks])
    assert lost.numel() == floors['c.weight']
    assert lost.max() <= kept.min()


def test_floors_beyond_the_budget_are_refused():
    with pytest.raises(ValueError, match=r'min_density=0.5 keeps at least '
                       r'\d+ weights .*more than the \d+ that sparsity 0.85'):
        select_masks(collapsing_scores(), 0.85, min_density=0.5)


def test_layerwise_ignores_the_scale_of_other_layers():
    masks = select_masks(collapsing_scores(), 0.99, selection='layerwise')
    assert [int(m.sum()) for m in masks.values()] == [2, 12, 2]
