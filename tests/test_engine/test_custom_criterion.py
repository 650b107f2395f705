"""A criterion defined here, outside epsd_mm, prunes weights and channels
through EarlyPruningHook: the registry is the one extension point."""
from typing import Dict, Mapping

import pytest
import torch
from mmengine.runner import Runner
from torch import Tensor

from epsd_mm.pruning import (CRITERIA, Criterion, PruningRecord, get_masks,
                             get_slim_spec)


class GradientMagnitude(Criterion):
    """``|dL/dw| ** power`` summed over the batches (a data criterion)."""
    data = 'batches'

    def __init__(self, power: float = 1.0) -> None:
        self.power = power

    def _gradients(self, params: Mapping[str, Tensor],
                   inputs) -> Dict[str, Tensor]:
        names = list(params)
        totals = {name: torch.zeros_like(params[name]) for name in names}
        for batch in inputs.batches:
            loss = inputs.loss_fn(inputs.model, batch)
            grads = torch.autograd.grad(
                loss, [params[n] for n in names], allow_unused=True)
            for name, grad in zip(names, grads):
                if grad is not None:
                    totals[name] += grad.detach().abs()**self.power
        return totals

    def weight_scores(self, params, inputs) -> Dict[str, Tensor]:
        return self._gradients(params, inputs)

    def channel_scores(self, graph, inputs) -> Dict[str, Tensor]:
        params = dict(graph.model.named_parameters())
        return graph.channel_sums(self._gradients(params, inputs),
                                  filters_only=True)


@pytest.fixture
def gradient_magnitude():
    CRITERIA.register('grad_magnitude')(GradientMagnitude)
    yield
    CRITERIA.unregister('grad_magnitude')


@pytest.mark.e2e
@pytest.mark.parametrize('granularity', ['weight', 'channel'])
def test_hook_prunes_with_a_criterion_registered_outside(
        gradient_magnitude, granularity, tiny_cfg, tmp_path, helpers):
    cfg = tiny_cfg(
        {
            'default_hooks.pruning.criterion':
            dict(type='GradientMagnitude', power=2.0),
            'default_hooks.pruning.granularity': granularity,
            'default_hooks.pruning.sparsity': 0.5,
            'default_hooks.pruning.num_batches': 2,
        },
        max_iters=1)
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model
    if granularity == 'weight':
        assert get_masks(model) and get_slim_spec(model) is None
    else:
        assert not get_masks(model)
        assert get_slim_spec(model)['channels']['kept'] < \
            get_slim_spec(model)['channels']['total']
    log = helpers.read_logs(str(tmp_path))
    assert 'grad_magnitude' in log and 'on the sd loss (2 batches)' in log
    checkpoint = torch.load(helpers.checkpoints(str(tmp_path))[-1])
    stage = PruningRecord.from_checkpoint(checkpoint).stages[
        'EarlyPruningHook']
    assert stage['config']['criterion'] == 'grad_magnitude'
    assert stage['config']['criterion_options'] == {'power': 2.0}
