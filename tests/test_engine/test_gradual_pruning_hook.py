"""GradualPruningHook + CrossCorrelationLoss: self-distilled pruning."""
import json

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

from epsd_mm.engine import GradualPruningHook, unwrap_model
from epsd_mm.models import UnprunedView
from epsd_mm.pruning import PruningRecord, get_masks, prunable_parameters

# Runners, subprocesses or torchrun: the integrations, run end to end
pytestmark = pytest.mark.e2e

XCORR = {
    'model.sd':
    dict(
        _delete_=True,
        type='CrossCorrelation',
        loss=dict(lambda_offdiag=5e-3, loss_weight=1e-2)),
    'default_hooks.pruning':
    dict(
        _delete_=True,
        type='epsd_mm.GradualPruningHook',
        sparsity=0.8,
        start=1,
        end=5,
        interval=2),
}


def test_cubic_schedule():
    hook = GradualPruningHook(
        sparsity=0.9, start=10, end=20, interval=1, initial_sparsity=0.1)
    assert hook.sparsity_at(0, 100) == pytest.approx(0.1)
    assert hook.sparsity_at(10, 100) == pytest.approx(0.1)
    assert hook.sparsity_at(15, 100) == pytest.approx(0.9 - 0.8 * 0.5**3)
    assert hook.sparsity_at(20, 100) == pytest.approx(0.9)
    assert hook.sparsity_at(99, 100) == pytest.approx(0.9)
    default_end = GradualPruningHook(sparsity=0.5, interval=1)
    assert default_end.sparsity_at(50, 100) == pytest.approx(0.5)


@pytest.mark.parametrize('kwargs', [
    dict(sparsity=1.0),
    dict(sparsity=0.5, initial_sparsity=0.6),
    dict(interval=0),
    dict(start=5, end=5),
])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match='GradualPruningHook'):
        GradualPruningHook(**kwargs)


def _sparsity(model):
    params = prunable_parameters(model)
    zeros = sum(int((p == 0).sum()) for p in params.values())
    return zeros / sum(p.numel() for p in params.values())


def test_prunes_on_schedule_and_distils_from_unpruned_self(
        tiny_cfg, tmp_path):
    runner = Runner.from_cfg(tiny_cfg(XCORR, max_iters=7))
    runner.train()
    model = unwrap_model(runner.model)
    masks = get_masks(model)
    params = prunable_parameters(model)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(p.numel() for p in params.values())
    assert kept == round(0.2 * total)
    assert _sparsity(model) == pytest.approx(0.8, abs=1e-4)
    for name, mask in masks.items():
        assert torch.count_nonzero(params[name][~mask]) == 0

    # The teacher lifts the masks: cut weights carry their old values.
    teacher = model.sd._view
    assert isinstance(teacher, UnprunedView)
    hook = next(h for h in runner.hooks if isinstance(h, GradualPruningHook))
    assert set(hook.pruned_values) == set(masks)
    for name, mask in masks.items():
        values = hook.pruned_values[name]
        assert torch.count_nonzero(values[mask]) == 0
        assert torch.count_nonzero(values[~mask]) == int((~mask).sum())

    logs = [
        json.loads(line) for path in tmp_path.glob('*/vis_data/scalars.json')
        for line in path.read_text().splitlines()
    ]
    xcorr = {r['step']: r['loss_xcorr'] for r in logs if 'loss_xcorr' in r}
    # Steps at iters 1, 3, 5 (0-based) aim at 0 (the schedule's start),
    # 0.7 and 0.8: until the first cut there is no teacher and no loss.
    assert [xcorr[step] for step in (1, 2, 3)] == [0, 0, 0]
    assert all(xcorr[step] > 0 for step in range(4, 8)), xcorr


def test_teacher_forward_leaves_student_untouched(tiny_cfg):
    runner = Runner.from_cfg(tiny_cfg(XCORR, max_iters=6))
    runner.train()
    model = unwrap_model(runner.model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = torch.randn(2, 3, 64, 64)
    model.train()
    _, lifted = model.sd._view.sd_forward(inputs)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    # Lifting the masks changes the features: the pruned weights count.
    _, pruned = UnprunedView(model, {}).sd_forward(inputs)
    assert not torch.allclose(lifted.feats[-1], pruned.feats[-1])


class StopAfter(Hook):
    """Kills a run after a given iteration (and its checkpoint)."""
    priority = 'LOWEST'

    def __init__(self, iteration):
        self.iteration = iteration

    def after_train_iter(self, runner, *args, **kwargs):
        if runner.iter + 1 == self.iteration:
            raise KeyboardInterrupt


def test_resume_keeps_masks_and_cut_values(tiny_cfg, tmp_path):
    runner = Runner.from_cfg(
        tiny_cfg({**XCORR, 'default_hooks.checkpoint.interval': 4},
                 max_iters=7))
    runner.register_hook(StopAfter(4))
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    first = torch.load(tmp_path / 'iter_4.pth', map_location='cpu')
    resumed = Runner.from_cfg(
        tiny_cfg(dict(XCORR, resume=True), max_iters=7))
    resumed.train()
    hook = next(h for h in resumed.hooks
                if isinstance(h, GradualPruningHook))
    model = unwrap_model(resumed.model)
    cut = PruningRecord.from_checkpoint(first).state['GradualPruningHook']
    assert cut['pruned_values']
    for name, values in cut['pruned_values'].items():
        # values cut before the checkpoint are still the teacher's
        mask = first['state_dict'][name + '_epsd_mask']
        assert torch.equal(hook.pruned_values[name][~mask], values[~mask])
    assert _sparsity(model) == pytest.approx(0.8, abs=1e-4)
    assert isinstance(model.sd._view, UnprunedView)

    # resuming under another target would silently finish there: refused
    other = Runner.from_cfg(
        tiny_cfg(
            dict(XCORR, resume=True, **{'default_hooks.pruning.sparsity':
                                        0.7}),
            work_dir=tmp_path,
            max_iters=7))
    with pytest.raises(ValueError, match='sparsity: checkpoint 0.8 vs '
                       'config 0.7'):
        other.train()


def test_schedule_that_cannot_finish_is_refused(tiny_cfg, tmp_path,
                                                helpers):
    """end beyond max_iters silently stopped at a fraction of the target;
    now the run is refused before anything is written."""
    runner = Runner.from_cfg(
        tiny_cfg({**XCORR, 'default_hooks.pruning.end': 9}, max_iters=7))
    with pytest.raises(ValueError, match='never be reached'):
        runner.train()
    assert helpers.checkpoints(str(tmp_path)) == []
    # the last step must land at or after `end` and before max_iters:
    # start=1, end=6, interval=2 -> steps 1, 3, 5, 7 (7 >= max_iters)
    runner = Runner.from_cfg(
        tiny_cfg({**XCORR, 'default_hooks.pruning.end': 6}, max_iters=7))
    with pytest.raises(ValueError, match='at iteration 7'):
        runner.train()


def test_prunes_a_plain_model_without_self_distillation(tiny_cfg):
    """Gradual magnitude pruning alone, on mmseg's own EncoderDecoder."""
    cfg = tiny_cfg({'default_hooks.pruning': XCORR['default_hooks.pruning']},
                   max_iters=6)
    cfg.model.pop('sd')
    cfg.model.type = cfg.model.pop('segmentor_type')
    cfg.default_hooks.pop('self_distill')
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = unwrap_model(runner.model)
    assert type(model).__name__ == 'EncoderDecoder'
    assert _sparsity(model) == pytest.approx(0.8, abs=1e-4)


def test_cross_correlation_without_gradual_pruning_is_refused(tiny_cfg):
    runner = Runner.from_cfg(
        tiny_cfg({'model.sd': XCORR['model.sd'],
                  'default_hooks.pruning.criterion': 'magnitude'},
                 max_iters=1))
    with pytest.raises(RuntimeError, match='GradualPruningHook'):
        runner.train()
