"""EarlyPruningHook with a real Runner on the tiny EPSD DeepLabV3 config."""
import math
import os.path as osp
import re

import pytest
import torch
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import Runner
from torch import nn

from epsd_mm.engine import EarlyPruningHook
from epsd_mm.pruning import (get_masks, magnitude_scores, prunable_parameters,
                             select_masks)

# Runners, subprocesses or torchrun: the integrations, run end to end
pytestmark = pytest.mark.e2e

#: Conv weights of the tiny ResNetV1c-18 backbone (stem 3, 16 in blocks, 3
#: downsample convs).
NUM_BACKBONE_CONVS = 22


def _model(runner) -> nn.Module:
    return runner.model.module if is_model_wrapper(
        runner.model) else runner.model


def _train(cfg) -> Runner:
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def _run_log(runner) -> str:
    """The log of this runner only (a work_dir may hold several runs)."""
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        return f.read()


def _masks(model) -> dict:
    return {k: v.detach().clone() for k, v in get_masks(model).items()}


def _assert_pruned(model: nn.Module, sparsity: float) -> dict:
    """Exactly the asked number of backbone weights kept, the others zero."""
    masks = get_masks(model)
    prunable = prunable_parameters(model, ('backbone', ))
    assert len(prunable) == NUM_BACKBONE_CONVS
    assert set(masks) == set(prunable)  # backbone convs only, no head/BN
    total = sum(p.numel() for p in prunable.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == int(round((1 - sparsity) * total))
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert mask.dtype == torch.bool and mask.shape == params[name].shape
        assert mask.any(), f'{name} collapsed'
        pruned = params[name].detach()[~mask]
        assert torch.equal(pruned, torch.zeros_like(pruned)), name
        # kept weights are live (non-zero) except by accident
        assert (params[name].detach()[mask] != 0).float().mean() > 0.99
    return masks


def _no_checkpoint(work_dir, helpers):
    assert helpers.checkpoints(str(work_dir)) == []


def test_hook_in_demo_config_builds():
    hook = HOOKS.build(
        dict(type='epsd_mm.EarlyPruningHook', sparsity=0.9, num_batches=4))
    assert isinstance(hook, EarlyPruningHook)
    assert hook.pruner.criterion.name == 'prospr' and hook.loss == 'sd'
    # the criterion's own defaults apply
    assert hook.pruner.criterion.options == dict(
        num_steps=3, lr=0.1, momentum=0.0, first_order=False,
        memory_efficient=True)
    assert hook.pruner.rounds == 1
    assert hook.priority == 'HIGHEST'


# --------------------------------------------------------------------------
# Pruning before training, masks kept through optimizer steps
# --------------------------------------------------------------------------
def test_prunes_before_train_sgd_momentum_weight_decay(tiny_cfg, tmp_path,
                                                       helpers):
    cfg = tiny_cfg(max_iters=3)
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'SGD' and optimizer.momentum == 0.9
    assert optimizer.weight_decay > 0
    runner = _train(cfg)
    model = _model(runner)
    masks = _assert_pruned(model, 0.9)
    # the pruned model was really trained: every masked layer has momentum
    # at its kept weights and none at its pruned ones
    state = runner.optim_wrapper.optimizer.state
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        buf = state[params[name]]['momentum_buffer']
        assert buf[mask].abs().sum() > 0, name
        assert torch.equal(buf[~mask], torch.zeros_like(buf[~mask])), name
    # masks are persistent buffers: they are in the checkpoint
    ckpt = torch.load(osp.join(tmp_path, 'iter_3.pth'))
    for name, mask in masks.items():
        assert torch.equal(ckpt['state_dict'][name + '_epsd_mask'], mask)
        assert torch.equal(ckpt['state_dict'][name][~mask],
                           torch.zeros(int((~mask).sum())))
    log = helpers.read_logs(str(tmp_path))
    assert ('EarlyPruningHook: pruning weights of backbone with ProsPr('
            'num_steps=1' in log)
    assert 'on the sd loss (2 batches), target sparsity 0.9000' in log
    assert 'EarlyPruningHook: per-layer result' in log
    assert re.search(r'total\s+[\d,]+\s+[\d,]+\s+10\.00%\s+90\.00%', log)


def test_adamw_grad_clip_and_paramwise_cfg(tiny_cfg):
    cfg = tiny_cfg({
        'default_hooks.pruning.criterion': 'magnitude',
        'default_hooks.pruning.sparsity': 0.8
    })
    cfg.optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
        clip_grad=dict(max_norm=1.0),
        paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
    cfg.param_scheduler = []
    runner = _train(cfg)
    model = _model(runner)
    masks = _assert_pruned(model, 0.8)
    optimizer = runner.optim_wrapper.optimizer
    assert type(optimizer) is torch.optim.AdamW
    assert runner.optim_wrapper.clip_grad_kwargs == dict(max_norm=1.0)
    params = dict(model.named_parameters())
    lr_of = {}
    for group in optimizer.param_groups:
        for p in group['params']:
            lr_of[id(p)] = group['lr']
    assert lr_of[id(params['backbone.stem.0.weight'])] == pytest.approx(1e-4)
    assert lr_of[id(params['decode_head.conv_seg.weight'])] == \
        pytest.approx(1e-3)
    for name, mask in masks.items():
        state = optimizer.state[params[name]]
        assert state['exp_avg'][mask].abs().sum() > 0
        assert torch.equal(state['exp_avg'][~mask],
                           torch.zeros(int((~mask).sum())))


# --------------------------------------------------------------------------
# Every criterion through the hook
# --------------------------------------------------------------------------
NO_ZERO_INIT = {'model.backbone.zero_init_residual': False}
# One Runner run per way a criterion is fed (SD or task loss, data-free with
# or without an input, EPSD-It rounds) and per criterion added after the
# engine refactor; every criterion's scores are tested on the core
# (tests/test_pruning), the hook has no per-criterion code.
CRITERIA = [
    # (criterion, loss, sparsity, min_density, extra overrides)
    pytest.param('prospr', 'sd', 0.9, 0.0, {}, id='prospr-sd'),
    pytest.param('prospr', 'task', 0.9, 0.0, {}, id='prospr-task'),
    # At random init mmseg's ResNet zero-initialises the last BN of every
    # residual block (zero_init_residual=True), so SNIP/GraSP/SynFlow see
    # zero gradient/flow in all residual branches; init them normally.
    pytest.param('snip', 'task', 0.9, 0.0, NO_ZERO_INIT, id='snip-task'),
    pytest.param('grasp', 'task', 0.9, 0.0, NO_ZERO_INIT, id='grasp-task'),
    pytest.param('magnitude', None, 0.9, 0.0, {}, id='magnitude'),
    # SynFlow legitimately prunes whole residual branches/shortcuts of a
    # ResNet at high sparsity: keep a floor. Iterative SynFlow needs the
    # target sparsity, which the hook passes
    pytest.param(
        'synflow',
        None,
        0.9,
        0.01, {
            **NO_ZERO_INIT, 'default_hooks.pruning.criterion_cfg':
            dict(_delete_=True, rounds=3)
        },
        id='synflow-rounds'),
    # the later pruning-at-initialisation methods, without hook code of
    # their own: FORCE on EPSD's SD loss with two EPSD-It rounds; NTK-SAP
    # and PHEW data-free at their defaults
    pytest.param(
        'force',
        'sd',
        0.9,
        0.0, {
            **NO_ZERO_INIT, 'default_hooks.pruning.criterion_cfg':
            dict(_delete_=True, num_steps=2),
            'default_hooks.pruning.rounds': 2
        },
        id='force-sd-rounds'),
    pytest.param('ntk_sap', None, 0.9, 0.0, {}, id='ntk_sap'),
    pytest.param('phew', None, 0.9, 0.0, {}, id='phew'),
]


@pytest.mark.parametrize('criterion, loss, sparsity, min_density, extra',
                         CRITERIA)
def test_each_criterion_via_hook(tiny_cfg, tmp_path, helpers, criterion, loss,
                                 sparsity, min_density, extra):
    overrides = {
        'default_hooks.pruning.criterion': criterion,
        'default_hooks.pruning.loss': loss,
        'default_hooks.pruning.sparsity': sparsity,
        'default_hooks.pruning.min_density': min_density,
        **extra
    }
    runner = _train(tiny_cfg(overrides, max_iters=1))
    model = _model(runner)
    if min_density == 0:
        _assert_pruned(model, sparsity)
    else:
        masks = get_masks(model)
        total = sum(m.numel() for m in masks.values())
        kept = sum(int(m.sum()) for m in masks.values())
        assert kept >= round((1 - sparsity) * total)
        assert kept <= round((1 - sparsity) * total) + sum(
            math.ceil(min_density * m.numel()) for m in masks.values())
        params = dict(model.named_parameters())
        for name, mask in masks.items():
            assert mask.sum() >= math.ceil(min_density * mask.numel())
            assert (params[name].detach()[~mask] == 0).all()
    log = helpers.read_logs(str(tmp_path))
    if loss is not None:
        assert f'on the {loss} loss (2 batches)' in log
    else:  # data-free: no loss, no batches scored on
        line = log.split('pruning weights of backbone')[1].splitlines()[0]
        assert 'loss' not in line and 'batches' not in line
    if 'default_hooks.pruning.criterion_cfg' in extra:
        assert ('SynFlow(input_shape=None, rounds=3' in log
                or "FORCE(num_steps=2, schedule='exp'" in log)
    if 'default_hooks.pruning.rounds' in extra:
        assert 'round 2/2: weight sparsity 0.9000' in log


def test_scoring_loss_matters_and_is_deterministic(pruned_run, tiny_cfg,
                                                  tmp_path):
    """loss='sd' (EPSD) and loss='task' (simple combination) score the same
    batches differently; the same setting again gives the same masks."""
    masks = {}
    for loss in ('sd', 'task'):
        cfg = tiny_cfg({'default_hooks.pruning.loss': loss},
                       work_dir=tmp_path / loss,
                       max_iters=1)
        masks[loss] = _masks(_model(_train(cfg)))
    # pruned_run scored with the same seed, data and loss='sd'
    saved = pruned_run['masks']
    assert masks['sd'].keys() == masks['task'].keys() == saved.keys()
    assert all(torch.equal(masks['sd'][k], saved[k]) for k in saved)
    differ = sum(int((masks['sd'][k] != masks['task'][k]).sum())
                 for k in saved)
    assert differ > 0


def test_prunes_the_loaded_weights(tiny_cfg, tmp_path):
    """Pruning at before_train sees the weights after load_from: magnitude
    masks are the global top-k of the loaded checkpoint's |w|."""
    dense_cfg = tiny_cfg(work_dir=tmp_path / 'dense', max_iters=1)
    dense_cfg.default_hooks.pop('pruning')
    dense = _model(_train(dense_cfg))
    assert get_masks(dense) == {}
    ckpt_path = str(tmp_path / 'dense' / 'iter_1.pth')
    loaded = torch.load(ckpt_path)['state_dict']
    assert not any(k.endswith('_epsd_mask') for k in loaded)

    cfg = tiny_cfg({
        'default_hooks.pruning.criterion': 'magnitude',
        'default_hooks.pruning.sparsity': 0.7,
        'load_from': ckpt_path,
    },
                   work_dir=tmp_path / 'pruned',
                   max_iters=1)
    model = _model(_train(cfg))
    names = prunable_parameters(model, ('backbone', ))
    expected = select_masks(
        magnitude_scores({n: loaded[n]
                          for n in names}), 0.7)
    masks = get_masks(model)
    assert masks.keys() == expected.keys()
    for name in masks:
        assert torch.equal(masks[name], expected[name]), name


# --------------------------------------------------------------------------
# Masks travel through checkpoints and are never re-scored
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def pruned_run(tmp_path_factory, voc_root, helpers):
    """2 iterations of EPSD (ProsPr + DLB) with a checkpoint at the end."""
    work_dir = str(tmp_path_factory.mktemp('pruned_run'))
    cfg = helpers.make_tiny_cfg(voc_root, work_dir, max_iters=2)
    runner = _train(cfg)
    ckpt = osp.join(work_dir, 'iter_2.pth')
    saved = {
        k[:-len('_epsd_mask')]: v
        for k, v in torch.load(ckpt)['state_dict'].items()
        if k.endswith('.weight_epsd_mask')
    }
    assert len(saved) == NUM_BACKBONE_CONVS
    return dict(
        work_dir=work_dir,
        ckpt=ckpt,
        masks=saved,
        runner=runner,
        log=helpers.read_logs(work_dir))


def _assert_same_masks(model, saved):
    masks = get_masks(model)
    assert masks.keys() == saved.keys()
    for name, mask in masks.items():
        assert torch.equal(mask, saved[name]), name
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert (params[name].detach()[~mask] == 0).all()


def test_resume_restores_masks_without_rescoring(pruned_run, tiny_cfg,
                                                 helpers):
    work_dir = pruned_run['work_dir']
    assert 'EarlyPruningHook: pruning weights' in pruned_run['log']
    cfg = tiny_cfg({'train_cfg.val_interval': 100},
                   work_dir=work_dir,
                   max_iters=4)
    cfg.resume = True
    runner = _train(cfg)
    assert runner.iter == 4
    model = _model(runner)
    _assert_same_masks(model, pruned_run['masks'])
    log = _run_log(runner)
    assert 'restored from the checkpoint; not re-scoring (1/1 rounds done)' in log
    assert 'EarlyPruningHook: pruning weights' not in log
    assert 'Iter(train) [3/4]' in log and 'Iter(train) [1/4]' not in log
    final = torch.load(osp.join(work_dir, 'iter_4.pth'))['state_dict']
    for name, mask in pruned_run['masks'].items():
        assert torch.equal(final[name + '_epsd_mask'], mask)
        assert (final[name][~mask] == 0).all()
        # training went on: kept weights moved since iteration 2
    before = torch.load(pruned_run['ckpt'])['state_dict']
    assert any(not torch.equal(before[n], final[n])
               for n in pruned_run['masks'])


def test_load_from_pruned_checkpoint_keeps_masks(pruned_run, tiny_cfg,
                                                 tmp_path):
    cfg = tiny_cfg({'load_from': pruned_run['ckpt']}, max_iters=2)
    runner = _train(cfg)
    assert runner.iter == 2  # a fresh run, starting at 0
    _assert_same_masks(_model(runner), pruned_run['masks'])
    log = _run_log(runner)
    assert 'restored from the checkpoint; not re-scoring (1/1 rounds done)' in log
    assert 'EarlyPruningHook: pruning weights' not in log
    assert f'Load checkpoint from {pruned_run["ckpt"]}' in log


def test_val_and_test_metrics_include_sparsity(pruned_run):
    runner = pruned_run['runner']
    # train() ended with a validation at iteration 2
    logged = runner.message_hub.get_scalar('val/sparsity').current()
    expected = sum(int((~m).sum()) for m in pruned_run['masks'].values()) / \
        sum(m.numel() for m in pruned_run['masks'].values())
    assert expected == pytest.approx(0.9, abs=1e-5)
    assert logged == pytest.approx(expected, abs=1e-6)
    assert 'val/mIoU' in runner.message_hub.log_scalars
    metrics = runner.val()
    assert set(metrics) >= {'aAcc', 'mIoU', 'mAcc', 'sparsity'}
    assert metrics['sparsity'] == pytest.approx(expected, abs=1e-6)
    metrics = runner.test()
    assert metrics['sparsity'] == pytest.approx(expected, abs=1e-6)
    assert 0 <= metrics['mIoU'] <= 100


# --------------------------------------------------------------------------
# Errors: raised before anything is written
# --------------------------------------------------------------------------
@pytest.mark.parametrize('kwargs, match', [
    (dict(sparsity=1.0), 'sparsity must be in'),
    (dict(sparsity=-0.1), 'sparsity must be in'),
    (dict(criterion='obd'), 'unknown pruning criterion'),
    (dict(criterion_cfg=dict(steps=3)), r"no option\(s\) \['steps'\]"),
    (dict(selection='per_layer'), 'selection must be one of'),
    (dict(min_density=2), 'min_density must be in'),
    (dict(rounds=0), 'rounds must be a positive integer'),
    (dict(scopes=()), 'at least one'),
    (dict(loss='kd'), "loss must be 'sd'"),
    (dict(criterion='synflow', loss='sd'),
     r"'synflow' is data-free: .* Remove default_hooks.pruning.loss"),
    (dict(num_batches=0), 'needs num_batches >= 1'),
    (dict(num_batches=6), r'num_batches=6: 6 scoring batches do not split '
     r'evenly over the 4 loss evaluations of num_steps=3'),
    (dict(num_batches=5, criterion_cfg=dict(num_steps=1),
          granularity='channel'), r'\(1 surplus\).*e\.g\. 4 or 6'),
    (dict(round_to=16), r"EarlyPruningHook: round_to=16 .*granularity="
     r"'channel' or drop round_to"),
    (dict(round_to=0, granularity='channel'), 'round_to must be a positive'),
],
                         ids=['sparsity1', 'negative', 'criterion',
                              'criterion_cfg', 'selection', 'min_density',
                              'rounds', 'scopes', 'loss', 'data_free_loss',
                              'num_batches0',
                              'prospr_groups', 'channel_prospr_groups',
                              'round_to_weights', 'round_to0'])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HOOKS.build(dict(type='epsd_mm.EarlyPruningHook', **kwargs))


def test_invalid_arguments_fail_at_runner_build(tiny_cfg, tmp_path, helpers):
    with pytest.raises(ValueError, match='sparsity must be in'):
        Runner.from_cfg(tiny_cfg({'default_hooks.pruning.sparsity': 1.0}))
    _no_checkpoint(tmp_path, helpers)


@pytest.mark.parametrize('overrides, match', [
    ({'default_hooks.pruning.scopes': ('neck', )},
     r"scope\(s\) \['neck'\] match no Conv/Linear/attention weight"),
    ({'model.sd': None}, 'has no SD method'),
    ({'default_hooks.pruning.sparsity': 0.9999,
      'default_hooks.pruning.criterion': 'magnitude'},
     'prunes every weight of'),
    ({'default_hooks.pruning.criterion_cfg.lr': 1e30},
     'scores are NaN or infinite'),
    # mmseg's zero_init_residual at random init: SNIP scores every
    # residual-branch conv exactly 0, the tie-break then empties the last
    # one even at 50% -- reported clearly instead of training a cut network
    ({'default_hooks.pruning.criterion': 'snip',
      'default_hooks.pruning.loss': 'task',
      'default_hooks.pruning.sparsity': 0.5,
      'model.backbone.zero_init_residual': True},
     r'prunes every weight of \d+ layer\(s\): backbone\.layer4\.1\.conv'),
],
                         ids=['scope', 'no_sd_loss', 'collapse', 'nan',
                              'snip_zero_init'])
def test_errors_before_any_checkpoint(tiny_cfg, tmp_path, helpers, overrides,
                                      match):
    runner = Runner.from_cfg(tiny_cfg(overrides, max_iters=1))
    with pytest.raises(ValueError, match=match):
        runner.train()
    _no_checkpoint(tmp_path, helpers)
    assert runner.iter == 0
    assert get_masks(_model(runner)) == {}


def test_task_loss_scoring_of_a_plain_model(tiny_cfg):
    """loss='task' works on a model without SD (sd=None)."""
    runner = _train(
        tiny_cfg({
            'model.sd': None,
            'default_hooks.pruning.loss': 'task'
        },
                 max_iters=1))
    _assert_pruned(_model(runner), 0.9)


def test_too_few_batches(tiny_cfg, tmp_path, helpers):
    """An epoch-based loader with 8 batches cannot give 10 scoring batches
    (5 micro-batches for each of the 2 loss evaluations of num_steps=1)."""
    cfg = tiny_cfg({'default_hooks.pruning.num_batches': 10})
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    runner = Runner.from_cfg(cfg)
    assert len(runner.train_dataloader) == 8  # 16 samples (train + aug) / 2
    with pytest.raises(ValueError,
                       match='yielded only 8 batches but num_batches=10'):
        runner.train()
    _no_checkpoint(tmp_path, helpers)


def test_min_density_floor_at_extreme_sparsity(tiny_cfg, tmp_path, helpers):
    runner = _train(
        tiny_cfg({
            'default_hooks.pruning.sparsity': 0.995,
            'default_hooks.pruning.criterion': 'magnitude',
            'default_hooks.pruning.min_density': 0.002,
        },
                 max_iters=1))
    model = _model(runner)
    masks = get_masks(model)
    assert len(masks) == NUM_BACKBONE_CONVS
    params = dict(model.named_parameters())
    total = sum(m.numel() for m in masks.values())
    for name, mask in masks.items():
        floor = max(1, math.ceil(0.002 * mask.numel()))
        assert int(mask.sum()) >= floor
        assert (params[name].detach()[~mask] == 0).all()
    # the floors are part of the budget: the sparsity is exact
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == round(0.005 * total)


def test_min_density_beyond_the_sparsity_budget_stops(tiny_cfg, tmp_path,
                                                      helpers):
    """Floors that alone keep more than the sparsity allows cannot both take
    effect: the run stops before a checkpoint is written."""
    cfg = tiny_cfg({
        'default_hooks.pruning.sparsity': 0.9999,
        'default_hooks.pruning.criterion': 'magnitude',
        'default_hooks.pruning.min_density': 0.01,
    })
    with pytest.raises(ValueError, match=r'min_density=0.01 keeps at least '
                       r'\d+ weights .* more than the 17 that sparsity '
                       r'0.9999 keeps in total; use selection=.layerwise. '
                       r'.*or a sparsity of at most 0.9998'):
        Runner.from_cfg(cfg).train()
    _no_checkpoint(tmp_path, helpers)


# --------------------------------------------------------------------------
# A checkpoint that cannot be what its config says, or is corrupted
# --------------------------------------------------------------------------
def test_resume_with_other_pruning_settings_stops(pruned_run, tiny_cfg,
                                                  tmp_path, helpers):
    """Masks are never re-scored, so a resumed config asking for another
    sparsity/criterion could not take effect: refuse, write nothing."""
    work_dir = tmp_path / 'resume'
    work_dir.mkdir()
    ckpt = torch.load(pruned_run['ckpt'], weights_only=False)
    torch.save(ckpt, work_dir / 'iter_2.pth')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
    cfg = tiny_cfg(
        {
            'default_hooks.pruning.sparsity': 0.5,
            'default_hooks.pruning.criterion': 'random',
        },
        work_dir=work_dir,
        max_iters=4)
    cfg.resume = True
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError) as info:
        runner.train()
    message = str(info.value)
    assert 'sparsity: checkpoint 0.9 vs config 0.5' in message
    assert "criterion: checkpoint 'prospr' vs config 'random'" in message
    assert helpers.checkpoints(str(work_dir)) == [str(work_dir / 'iter_2.pth')]
    assert (work_dir / 'last_checkpoint').read_text().endswith('iter_2.pth')


def test_test_run_reports_the_checkpoints_real_settings(pruned_run, tiny_cfg,
                                                        tmp_path):
    cfg = tiny_cfg({'default_hooks.pruning.sparsity': 0.5,
                    'load_from': pruned_run['ckpt']})
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert metrics['sparsity'] == pytest.approx(0.9, abs=1e-5)
    log = _run_log(runner)
    assert ('the checkpoint was pruned with sparsity=0.9, not with the '
            'sparsity=0.5 of the config' in log)


def test_dense_checkpoint_under_pruning_config_warns(tiny_cfg, tmp_path):
    dense_cfg = tiny_cfg(work_dir=tmp_path / 'dense', max_iters=1)
    dense_cfg.default_hooks.pop('pruning')
    _train(dense_cfg)
    cfg = tiny_cfg({'load_from': str(tmp_path / 'dense' / 'iter_1.pth')},
                   work_dir=tmp_path / 'test')
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert 'sparsity' not in metrics
    assert 'the evaluated model has no pruning masks' in _run_log(runner)


@pytest.mark.parametrize('corruption, match', [
    ('nan', "tensor 'backbone.layer1.0.conv1.weight' holds 3 NaN/inf"),
    ('revived', "'backbone.layer1.0.conv1.weight' has 1 non-zero value"),
    ('momentum', 'optimizer state'),
])
def test_corrupted_checkpoint_is_refused(pruned_run, tiny_cfg, tmp_path,
                                         corruption, match):
    """NaN x 0 = NaN: a corrupted pruned weight must not be evaluated or
    trained on; the error names the tensor."""
    ckpt = torch.load(pruned_run['ckpt'], weights_only=False)
    name = 'backbone.layer1.0.conv1.weight'
    weight = ckpt['state_dict'][name]
    mask = ckpt['state_dict'][name + '_epsd_mask']
    if corruption == 'nan':
        weight.view(-1)[:3] = float('nan')
    elif corruption == 'revived':
        weight[~mask] = 0
        weight.view(-1)[(~mask).view(-1).nonzero()[0]] = 0.5
    else:
        state = next(iter(ckpt['optimizer']['state'].values()))
        state['momentum_buffer'].view(-1)[0] = float('inf')
    path = tmp_path / 'corrupted.pth'
    torch.save(ckpt, path)
    for mode in ('test', 'train'):
        cfg = tiny_cfg({'load_from': str(path)},
                       work_dir=tmp_path / mode,
                       max_iters=1)
        if mode == 'train' and corruption == 'momentum':
            cfg.resume = True  # only a resume loads the optimizer state
        runner = Runner.from_cfg(cfg)
        with pytest.raises(ValueError, match=match):
            getattr(runner, mode)()
        assert not list((tmp_path / mode).rglob('*.pth'))


def test_checkpoint_with_legacy_mask_names_loads(pruned_run, tiny_cfg,
                                                 tmp_path):
    """epsd_mm < 0.2 named the masks *.weight_mask (as torch's prune
    does); such checkpoints still restore their masks."""
    ckpt = torch.load(pruned_run['ckpt'], weights_only=False)
    state = ckpt['state_dict']
    for key in [k for k in state if k.endswith('_epsd_mask')]:
        state[key[:-len('_epsd_mask')] + '_mask'] = state.pop(key)
    ckpt['meta'].pop('epsd_pruning')  # older checkpoints had no record
    path = tmp_path / 'legacy.pth'
    torch.save(ckpt, path)
    runner = _train(tiny_cfg({'load_from': str(path)},
                             work_dir=tmp_path / 'run',
                             max_iters=1))
    _assert_same_masks(_model(runner), pruned_run['masks'])


def test_non_finite_loss_stops_training_without_a_checkpoint(
        tiny_cfg, tmp_path, helpers):
    cfg = tiny_cfg({'default_hooks.pruning.criterion': 'magnitude',
                    'optim_wrapper.optimizer.lr': 1e12,
                    'default_hooks.checkpoint.interval': 1},
                   max_iters=6)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(FloatingPointError,
                       match=r'not finite at iteration (\d+)'):
        runner.train()
    saved = helpers.checkpoints(str(tmp_path))
    for path in saved:  # every checkpoint written holds finite weights
        state = torch.load(path, weights_only=False)['state_dict']
        assert all(torch.isfinite(v).all() for v in state.values()
                   if v.is_floating_point())
    assert len(saved) < 6


# --------------------------------------------------------------------------
# EPSD-It: the target in several rounds
# --------------------------------------------------------------------------
def test_rounds_reach_the_target_exactly(tiny_cfg, tmp_path, helpers):
    runner = _train(
        tiny_cfg({'default_hooks.pruning.rounds': 3}, max_iters=1))
    _assert_pruned(_model(runner), 0.9)
    log = helpers.read_logs(str(tmp_path))
    targets = [1 - 0.1**(1 / 3), 1 - 0.1**(2 / 3), 0.9]
    for r, target in enumerate(targets, 1):
        assert (f'round {r}/3: pruning weights of backbone with ProsPr('
                in log)
        assert f'(2 batches), target sparsity {target:.4f}' in log


def test_rounds_between_iterations_resume_at_the_right_round(
        tiny_cfg, tmp_path, helpers):
    """Rounds 2 iterations apart; a run stopped after iteration 2 (round 2
    done, round 3 due at iteration 4) resumes and runs round 3 only."""
    rounds = {'default_hooks.pruning.rounds': 3,
              'default_hooks.pruning.iters_between_rounds': 2,
              'default_hooks.checkpoint.interval': 1,
              'train_cfg.val_interval': 100}
    first = _train(tiny_cfg(rounds, max_iters=3))
    sparsity_after_2 = 1 - 0.1**(2 / 3)
    masks = get_masks(_model(first))
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == round((1 - sparsity_after_2) * total)
    assert 'round 3/3' not in _run_log(first)

    cfg = tiny_cfg(rounds, work_dir=tmp_path, max_iters=5)
    cfg.resume = True
    second = _train(cfg)
    log = _run_log(second)
    assert 'restored from the checkpoint; not re-scoring (2/3 rounds done)' in log
    assert 'round 1/3' not in log and 'round 2/3' not in log
    assert 'round 3/3: pruning weights' in log
    _assert_pruned(_model(second), 0.9)


def test_scoring_progress_and_sparsity_scalars_reach_log_and_tensorboard(
        tiny_cfg, tmp_path, helpers):
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    cfg = tiny_cfg({'default_hooks.pruning.criterion': 'snip',
                    'default_hooks.pruning.loss': 'task'},
                   max_iters=1)
    cfg.visualizer.vis_backends = [dict(type='TensorboardVisBackend')]
    _train(cfg)
    log = helpers.read_logs(str(tmp_path))
    assert re.search(r'EarlyPruningHook: scoring: gradient batch 2/2 \(100%, '
                     r'elapsed [\d.]+s, ETA 0\.0s\)', log)
    events = list(tmp_path.rglob('events.out.tfevents.*'))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    tags = accumulator.Tags()['scalars']
    assert 'sparsity/total' in tags
    layer_tags = [t for t in tags if t.startswith('sparsity/backbone.')]
    assert len(layer_tags) == NUM_BACKBONE_CONVS
    total = accumulator.Scalars('sparsity/total')[-1].value
    assert total == pytest.approx(0.9, abs=1e-4)
