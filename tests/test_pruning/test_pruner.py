"""The pruning engine (WeightPruner / ChannelPruner) on plain PyTorch."""
import re
from typing import Dict, Mapping

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from epsd_mm.pruning import (CRITERIA, ChannelPruner, Criterion, ScoreCache,
                             WeightPruner, build_pruner, get_masks,
                             get_slim_spec, layer_channels)


def test_prunes_a_plain_torch_model_with_epsd():
    """The core example of the docs: a dozen lines, no Runner."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8, )))
               for _ in range(4)]
    pruner = WeightPruner(sparsity=0.8, criterion='prospr', scopes='*',
                          min_density=0.05)
    report = pruner.prune(
        model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), batches)

    masks = get_masks(model)
    assert set(masks) == {'0.weight', '5.weight'}
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == round(0.2 * (16 * 3 * 9 + 16 * 10))
    for name, mask in masks.items():  # pruned weights are zero
        weight = model.get_parameter(name)
        assert not weight[~mask.bool()].any()
    assert report.sparsity == pytest.approx(0.8, abs=1e-3)
    assert report.criterion == 'prospr' and report.num_batches == 4
    assert report.round == report.rounds == 1 and not report.cached
    assert 'weight sparsity 0.8' in report.summary()
    assert pruner.done
    with pytest.raises(RuntimeError, match='all 1 rounds are done'):
        pruner.prune(model, None, batches)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def _batches(n: int = 2):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 3, 16, 16, generator=gen),
             torch.randint(0, 4, (4, ), generator=gen)) for _ in range(n)]


def _loss(model: nn.Module, batch) -> Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


@pytest.mark.parametrize('criterion', CRITERIA.names)
def test_rounds_work_with_every_criterion(criterion):
    """EPSD-It's rounds are the pruner's, whatever the criterion: each
    round reaches its target and a pruned weight never comes back."""
    model = _net()
    pruner = WeightPruner(
        sparsity=0.9, criterion=criterion, scopes='*', rounds=3,
        min_density=0.01, num_batches=2)
    data = pruner.criterion.data
    seen, previous = [], None

    def batches(round_: int):
        seen.append(round_)
        return _batches() if data != 'none' else None

    while not pruner.done:
        report = pruner.prune_round(
            model, _loss if data == 'batches' else None,
            batches(pruner.rounds_done + 1))
        masks = {n: m.clone() for n, m in get_masks(model).items()}
        if previous is not None:
            for name, mask in masks.items():
                assert not (mask & ~previous[name]).any(), name
        previous = masks
        assert report.sparsity == pytest.approx(
            pruner.round_sparsity(report.round), abs=2e-3)
    assert seen == [1, 2, 3]
    assert report.sparsity == pytest.approx(0.9, abs=1e-3)
    assert pruner.round_sparsity(1) == pytest.approx(1 - 0.1**(1 / 3))


def test_prune_takes_a_callable_for_each_rounds_batches():
    rounds = []
    pruner = WeightPruner(sparsity=0.5, criterion='snip', scopes='*',
                          rounds=2, num_batches=2)

    def batches(round_: int):
        rounds.append(round_)
        return _batches()

    report = pruner.prune(_net(), _loss, batches)
    assert rounds == [1, 2] and report.round == 2


def test_reduce_and_broadcast_see_every_score_and_mask():
    """The distributed seams: scores are averaged, masks broadcast."""
    reduced, broadcast = [], []
    model = _net()
    pruner = WeightPruner(sparsity=0.5, criterion='snip', scopes='*',
                          num_batches=2)
    pruner.prune(model, _loss, _batches(),
                 reduce=lambda t: reduced.append(t.shape),
                 broadcast=lambda t: broadcast.append(t.shape))
    shapes = [p.shape for n, p in model.named_parameters()
              if n.endswith('weight')]
    assert reduced == shapes and broadcast == shapes


def test_arguments_are_checked_when_built():
    with pytest.raises(ValueError, match="min_density must be in .*'abc'"):
        WeightPruner(min_density='abc')
    with pytest.raises(ValueError, match='sparsity must be in'):
        WeightPruner(sparsity=1.0)
    with pytest.raises(ValueError, match='rounds must be a positive'):
        WeightPruner(rounds=0)
    with pytest.raises(ValueError, match="unknown pruning criterion 'nope'; valid"):
        WeightPruner(criterion='nope')
    with pytest.raises(ValueError, match='granularity'):
        build_pruner('filter')
    with pytest.raises(ValueError, match='num_batches=0'):
        WeightPruner(criterion='snip', num_batches=0)
    assert WeightPruner(criterion='magnitude', num_batches=0).num_batches == 0
    with pytest.raises(ValueError, match="round_to=16 rounds the channels "
                       ".*granularity='channel' or drop round_to"):
        WeightPruner(round_to=16)
    with pytest.raises(ValueError, match='round_to must be a positive'):
        ChannelPruner(round_to=0)


def test_floors_beyond_the_budget_are_refused_before_scoring():
    scored = []

    @CRITERIA.register('_counting_magnitude')
    class Counting(Criterion):
        data = 'none'

        def weight_scores(self, params, inputs):
            scored.append(1)
            return {n: p.detach().abs() for n, p in params.items()}

    try:
        pruner = WeightPruner(sparsity=0.9, min_density=0.5,
                              criterion='_counting_magnitude', scopes='*')
        with pytest.raises(ValueError, match=r'min_density=0.5 keeps at '
                           r'least .* min_density=0\.\d+ \(the largest'):
            pruner.check_model(_net())
        assert not scored
    finally:
        CRITERIA.unregister('_counting_magnitude')


def test_data_free_criterion_refuses_a_loss():
    pruner = WeightPruner(sparsity=0.5, criterion='magnitude', scopes='*')
    with pytest.raises(ValueError, match="'magnitude' is data-free"):
        pruner.prune(_net(), _loss, _batches())
    report = pruner.prune(_net())
    assert report.num_batches == 0 and 'no data' in report.summary()


def test_data_criterion_without_data_names_the_fix():
    pruner = WeightPruner(sparsity=0.5, criterion='snip', scopes='*')
    with pytest.raises(ValueError, match=r"'snip' scores on data and needs "
                       r'`loss_fn`.*or use a data-free criterion'):
        pruner.prune(_net())
    with pytest.raises(ValueError, match='needs `batches`'):
        pruner.prune(_net(), _loss)
    assert pruner.rounds_done == 0


class _FilterNorm(Criterion):
    """A criterion defined outside epsd_mm: |w| on weights, the L2 norm of
    the filters on channels."""
    data = 'none'

    def __init__(self, power: float = 2.0) -> None:
        self.power = power

    def weight_scores(self, params: Mapping[str, Tensor],
                      inputs) -> Dict[str, Tensor]:
        return {n: p.detach().abs()**self.power for n, p in params.items()}

    def channel_scores(self, graph, inputs) -> Dict[str, Tensor]:
        values = {
            name: p.detach()**2
            for name, p in graph.model.named_parameters()
        }
        return graph.channel_sums(values, filters_only=True)


@pytest.fixture
def filter_norm():
    CRITERIA.register('_filter_norm')(_FilterNorm)
    yield '_filter_norm'
    CRITERIA.unregister('_filter_norm')


def test_a_new_criterion_prunes_weights_and_channels(filter_norm):
    assert filter_norm in CRITERIA.channel_names()
    model = _net()
    WeightPruner(sparsity=0.5, criterion=dict(type=filter_norm, power=1.0),
                 scopes='*').prune(model)
    for name, mask in get_masks(model).items():  # = magnitude pruning
        weight = model.get_parameter(name).detach().abs()
        assert weight[mask.bool()].min() >= weight[~mask.bool()].max() - 1e-7

    model = _net()
    report = ChannelPruner(
        sparsity=0.5, criterion=filter_norm,
        scopes=('0', '2')).prune(model, None, _batches(1))
    assert layer_channels(model)['0'][1] < 8 and report.replaced_parameters
    assert get_slim_spec(model)['channels']['kept'] < 16
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 4)


def test_weight_only_criterion_is_refused_for_channels():
    with pytest.raises(ValueError, match="'grasp' scores weights only; the "
                       'criteria that score channels are: .*prospr'):
        ChannelPruner(criterion='grasp')


def _collapse_suggestion(message: str) -> float:
    match = re.search(r'min_density=(0\.\d+)', message)
    assert match, message
    return float(match.group(1))


def test_collapse_keeps_the_scores_and_the_rerun_reuses_them(tmp_path):
    """A refused selection costs the scoring once: the suggested fix fits,
    and its rerun reuses the kept scores with the same result as a fresh
    run."""
    calls = []

    @CRITERIA.register('_counting_snip')
    class CountingSNIP(type(CRITERIA.build('snip'))):

        def weight_scores(self, params, inputs):
            calls.append(1)
            return super().weight_scores(params, inputs)

    try:
        cache = ScoreCache(str(tmp_path / 'scores'))

        def run(min_density, cache):
            torch.manual_seed(3)
            model = _net()
            pruner = WeightPruner(sparsity=0.995, criterion='_counting_snip',
                                  scopes='*', min_density=min_density,
                                  num_batches=2)
            report = pruner.prune(model, _loss, _batches(), score_cache=cache)
            return model, report

        with pytest.raises(ValueError, match='prunes every weight') as error:
            run(0.0, cache)
        assert 'The scores are kept in' in str(error.value)
        assert len(list((tmp_path / 'scores').iterdir())) == 1
        floor = _collapse_suggestion(str(error.value))
        assert calls == [1]

        model, report = run(floor, cache)  # the suggested fix works
        assert calls == [1] and report.cached  # and did not score again
        assert 'cached scores' in report.summary()
        assert not list((tmp_path / 'scores').iterdir())  # used up
        after_cached = torch.rand(3)

        fresh, _ = run(floor, None)
        assert calls == [1, 1]
        after_fresh = torch.rand(3)
        for name, mask in get_masks(fresh).items():
            assert torch.equal(mask, get_masks(model)[name]), name
        # the random state continues as after a fresh scoring
        assert torch.equal(after_cached, after_fresh)
    finally:
        CRITERIA.unregister('_counting_snip')


def test_channel_collapse_suggests_a_floor_that_fits_and_not_what_is_set():
    def uneven():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 16, 3),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(16, 4))

    pruner = ChannelPruner(sparsity=0.9, criterion='magnitude',
                           selection='layerwise', scopes=('0', '2'))
    with pytest.raises(ValueError, match='prunes every channel') as error:
        pruner.prune(uneven(), None, _batches(1))
    message = str(error.value)
    assert "selection='layerwise'" not in message  # it is set already
    floor = _collapse_suggestion(message)
    fixed = ChannelPruner(sparsity=0.9, criterion='magnitude',
                          selection='layerwise', min_density=floor,
                          scopes=('0', '2'))
    model = uneven()
    fixed.prune(model, None, _batches(1))
    assert layer_channels(model)['0'][1] == 1
    assert layer_channels(model)['2'][1] == 2


def test_round_to_slims_to_multiples_and_says_when_off_target():
    model = _net()
    report = ChannelPruner(sparsity=0.3, criterion='magnitude',
                           selection='layerwise', round_to=4,
                           scopes=('0', '2')).prune(model, None, _batches(1))
    assert layer_channels(model)['0'][1] == 4  # 2 blocks: round(1.4) = 1
    assert layer_channels(model)['2'][1] == 4
    assert report.sparsity == 0.5 and report.round_to == 4
    assert any('not the target 0.3000: round_to=4' in w
               for w in report.warnings())
    on_target = ChannelPruner(sparsity=0.5, criterion='magnitude',
                              round_to=4, scopes=('0', '2'))
    assert not on_target.prune(_net(), None, _batches(1)).warnings()


def test_channel_sparsity_leaving_a_group_empty_is_refused():
    pruner = ChannelPruner(sparsity=0.99, criterion='magnitude',
                           scopes=('0', '2'))
    with pytest.raises(ValueError, match=r'sparsity 0.99 keeps 0 of the 16 '
                       r'channels in scope, fewer than one in each of its 2 '
                       r'channel groups; use a sparsity of at most 0.875'):
        pruner.prune(_net(), None, _batches(1))
