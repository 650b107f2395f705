"""EarlyPruningHook(granularity='channel') with a real Runner on the tiny
EPSD DeepLabV3: channels removed before training, slim checkpoints through
resume, load_from and test, clear errors on mismatches."""
import copy
import os.path as osp
import re

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS, DefaultScope
from mmengine.runner import Runner

from epsd_mm.engine import EarlyPruningHook, PruningCheckpointHook
from epsd_mm.pruning import (PruningRecord, get_masks, get_slim_spec,
                             layer_channels, rebuild_slim)
from epsd_mm.registry import MODELS

# Runners, subprocesses or torchrun: the integrations, run end to end
pytestmark = pytest.mark.e2e

CHANNEL = {
    'default_hooks.pruning.granularity': 'channel',
    'default_hooks.pruning.sparsity': 0.5,
}
#: Output channels of the tiny ResNetV1c-18 backbone, counted per group.
NUM_CHANNELS = 368


def _train(cfg, *hooks: Hook) -> Runner:
    runner = Runner.from_cfg(cfg)
    for hook in hooks:
        runner.register_hook(hook)
    runner.train()
    return runner


def _run_log(runner) -> str:
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        return f.read()


def _backbone_numel(state_dict) -> int:
    return sum(v.numel() for k, v in state_dict.items()
               if k.startswith('backbone.') and v.is_floating_point())


def _without_pruning(cfg):
    cfg.default_hooks.pop('pruning')
    return cfg


class _Record(Hook):
    """Records the model's state and the optimizer's state dict when
    training starts (after every other hook's ``before_train``)."""

    priority = 'LOWEST'

    def before_train(self, runner) -> None:
        model = runner.model
        self.state = {k: v.clone() for k, v in model.state_dict().items()}
        self.optimizer = copy.deepcopy(
            runner.optim_wrapper.optimizer.state_dict())


class _Stop(RuntimeError):
    pass


class _Interrupt(Hook):
    """Stops the run after iteration ``at`` (after its checkpoint)."""

    priority = 'LOWEST'

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if runner.iter + 1 == self.at:
            raise _Stop(f'interrupted after iteration {self.at}')


@pytest.fixture(scope='module')
def slim_run(tmp_path_factory, voc_root, helpers):
    """2 iterations of structured EPSD (ProsPr + DLB, 50% channels)."""
    work_dir = str(tmp_path_factory.mktemp('slim_run'))
    cfg = helpers.make_tiny_cfg(voc_root, work_dir, CHANNEL, max_iters=2)
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        dense = MODELS.build(copy.deepcopy(cfg.model))
    runner = _train(cfg)
    ckpt = osp.join(work_dir, 'iter_2.pth')
    return dict(
        cfg=cfg,
        runner=runner,
        ckpt=ckpt,
        checkpoint=torch.load(ckpt),
        dense=dense,
        channels=layer_channels(runner.model),
        log=helpers.read_logs(work_dir))


# --------------------------------------------------------------------------
# Channels removed before the first optimizer step
# --------------------------------------------------------------------------
def test_channels_removed_before_training(slim_run):
    runner, checkpoint = slim_run['runner'], slim_run['checkpoint']
    model = runner.model
    spec = get_slim_spec(model)
    assert spec['channels'] == dict(total=NUM_CHANNELS, kept=NUM_CHANNELS // 2)
    assert get_masks(model) == {}
    # the checkpoint holds fewer backbone parameters than the dense model
    dense_numel = _backbone_numel(slim_run['dense'].state_dict())
    assert _backbone_numel(checkpoint['state_dict']) < 0.5 * dense_numel
    record = PruningRecord.from_checkpoint(checkpoint)
    assert record.slim_spec == spec
    recorded = record.stages['EarlyPruningHook']
    assert recorded['config']['granularity'] == 'channel'
    # heads adapt their input channels only
    layer4 = model.backbone.layer4[1].conv2.out_channels
    assert layer4 < 64
    for branch in model.decode_head.aspp_modules:
        assert branch.conv.in_channels == layer4
        assert branch.conv.out_channels == 16
    assert model.auxiliary_head.convs[0].conv.in_channels == \
        model.backbone.layer3[1].conv2.out_channels
    assert model.decode_head.conv_seg.out_channels == 21
    # the optimizer trained the slim parameters (and only those)
    optimizer = runner.optim_wrapper.optimizer
    bound = [p for g in optimizer.param_groups for p in g['params']]
    assert {id(p) for p in bound} == {id(p) for p in model.parameters()}
    for p in bound:
        buf = optimizer.state[p]['momentum_buffer']
        assert buf.shape == p.shape
    log = slim_run['log']
    assert ('pruning channels of backbone with ProsPr(num_steps=1' in log
            and 'on the sd loss (2 batches), target sparsity 0.5000' in log)
    # the last progress line of the scoring (always logged), with its ETA
    assert re.search(r'EarlyPruningHook: scoring: back through step 1/\d+, '
                     r'batch 1/1 \(loss evaluation (\d+)/\1\) \(100%, '
                     r'elapsed [\d.]+s, ETA 0\.0s\)', log)
    assert ('channel sparsity 0.5000 (target 0.5000): 184 of '
            f'{NUM_CHANNELS} channels kept, by prospr on 2 batches' in log)
    assert 'FLOPs' in log and 'params' in log and '-> ' in log
    assert 'backbone.layer4.1.conv2' in log  # the slim table
    metrics = runner.val()
    assert metrics['channel_sparsity'] == pytest.approx(0.5)
    assert 'sparsity' not in metrics  # no weight masks


# --------------------------------------------------------------------------
# The slim architecture persists
# --------------------------------------------------------------------------
def test_interrupted_run_resumes_slim(tiny_cfg, tmp_path):
    """A run stopped after iteration 2 resumes on the slim network with
    its optimizer state (momentum of the slim tensors), never re-scoring."""
    overrides = {**CHANNEL, 'default_hooks.checkpoint.interval': 1,
                 'train_cfg.val_interval': 100,
                 'default_hooks.pruning.criterion': 'snip',
                 'default_hooks.pruning.loss': 'task'}
    runner = Runner.from_cfg(tiny_cfg(overrides, max_iters=3))
    runner.register_hook(_Interrupt(at=2))
    with pytest.raises(_Stop):
        runner.train()
    channels = layer_channels(runner.model)
    saved = torch.load(str(tmp_path / 'iter_2.pth'))
    assert not (tmp_path / 'iter_3.pth').exists()

    cfg = tiny_cfg(overrides, max_iters=3)
    cfg.resume = True
    record = _Record()
    resumed = _train(cfg, record)
    assert resumed.iter == 3
    assert layer_channels(resumed.model) == channels
    log = _run_log(resumed)
    assert 'rebuilt the slim architecture' in log
    assert 'pruning restored from the checkpoint; not re-scoring' in log
    assert 'pruning channels' not in log
    assert 'Iter(train) [3/3]' in log and 'Iter(train) [1/3]' not in log
    # at the start of training: the checkpoint's weights and momentum
    for key, value in saved['state_dict'].items():
        assert torch.equal(record.state[key], value), key
    loaded = record.optimizer['state']
    assert loaded.keys() == saved['optimizer']['state'].keys()
    for index, state in saved['optimizer']['state'].items():
        assert torch.equal(loaded[index]['momentum_buffer'],
                           state['momentum_buffer'])
    optimizer = resumed.optim_wrapper.optimizer
    assert {id(p) for g in optimizer.param_groups for p in g['params']} == \
        {id(p) for p in resumed.model.parameters()}


def test_load_from_slim_checkpoint(slim_run, tiny_cfg):
    cfg = tiny_cfg({**CHANNEL, 'load_from': slim_run['ckpt']}, max_iters=1)
    record = _Record()
    runner = _train(cfg, record)
    assert layer_channels(runner.model) == slim_run['channels']
    for key, value in slim_run['checkpoint']['state_dict'].items():
        assert torch.equal(record.state[key], value), key
    assert record.optimizer['state'] == {}  # a fresh run: no momentum yet
    log = _run_log(runner)
    assert 'not re-scoring' in log and 'pruning channels' not in log
    assert 'Iter(train) [1/1]' in log


def test_test_and_other_configs_evaluate_the_slim_network(
        slim_run, tiny_cfg, tmp_path):
    """The channel config, the weight config (warned about) and a config
    without pruning hook (PruningCheckpointHook, as tools/test.py adds it) all
    evaluate the same slim network."""
    metrics = {}
    for name, overrides in [('channel', CHANNEL), ('weight', {}),
                            ('none', None)]:
        cfg = tiny_cfg({**(overrides or {}), 'load_from': slim_run['ckpt']},
                       work_dir=tmp_path / name)
        if overrides is None:
            _without_pruning(cfg)
        runner = Runner.from_cfg(cfg)
        if overrides is None:
            runner.register_hook(PruningCheckpointHook())
        metrics[name] = runner.test()
        assert layer_channels(runner.model) == slim_run['channels']
        if name == 'weight':
            assert ("pruned with granularity='channel', sparsity=0.5, not "
                    "with the granularity='weight', sparsity=0.9 of the "
                    'config' in _run_log(runner))
    assert metrics['channel']['channel_sparsity'] == pytest.approx(0.5)
    for key in ('mIoU', 'aAcc'):
        assert metrics['channel'][key] == metrics['weight'][key] == \
            metrics['none'][key]


# --------------------------------------------------------------------------
# Mismatches stop the run, naming the problem and the fix
# --------------------------------------------------------------------------
def test_granularity_mismatch_stops_training(slim_run, tiny_cfg, tmp_path,
                                             helpers):
    runner = Runner.from_cfg(
        tiny_cfg({'load_from': slim_run['ckpt']}, max_iters=1))
    with pytest.raises(ValueError) as info:
        runner.train()
    assert "granularity: checkpoint 'channel' vs config 'weight'" in str(
        info.value)
    assert 'default_hooks.pruning.granularity=' in str(info.value)
    assert helpers.checkpoints(str(tmp_path)) == []

    # a weight-masked checkpoint of the dense model, meta as epsd_mm < 0.3
    # wrote it (no granularity recorded): the masks say what it is
    state = slim_run['dense'].state_dict()
    name = 'backbone.layer1.0.conv1.weight'
    state[name + '_epsd_mask'] = torch.rand(state[name].shape) > 0.5
    state[name] = state[name] * state[name + '_epsd_mask']
    meta = dict(epsd_pruning=dict(EarlyPruningHook=dict(
        config=dict(sparsity=0.5), progress=dict(rounds_done=1))))
    path = tmp_path / 'weight.pth'
    torch.save(dict(state_dict=state, meta=meta), path)
    runner = Runner.from_cfg(
        tiny_cfg({**CHANNEL, 'load_from': str(path)},
                 work_dir=tmp_path / 'channel',
                 max_iters=1))
    with pytest.raises(ValueError, match="granularity: checkpoint 'weight' "
                       "vs config 'channel'"):
        runner.train()


def test_slim_checkpoint_without_spec_is_refused(slim_run, tiny_cfg,
                                                 tmp_path):
    """MMEngine alone would skip the unfitting tensors with a warning and
    evaluate random layers."""
    checkpoint = torch.load(slim_run['ckpt'], weights_only=False)
    checkpoint['meta']['epsd_pruning']['slim_spec'] = None
    path = tmp_path / 'no_spec.pth'
    torch.save(checkpoint, path)
    cfg = _without_pruning(tiny_cfg({'load_from': str(path)}, max_iters=1))
    runner = Runner.from_cfg(cfg)
    runner.register_hook(PruningCheckpointHook())
    with pytest.raises(ValueError) as info:
        runner.test()
    message = str(info.value)
    conv = slim_run['channels']['backbone.layer1.0.conv1']
    assert (f'backbone.layer1.0.conv1.weight: checkpoint ({conv[1]}, 8, 3, '
            '3), model (8, 8, 3, 3)') in message
    assert 'records no slim spec' in message and 'SlimModel' in message


@pytest.mark.parametrize('kwargs, match', [
    (dict(granularity='filter'), 'granularity must be one of'),
    (dict(criterion='grasp'), "'grasp' scores weights only"),
    (dict(criterion='snip', criterion_cfg=dict(num_steps=1)),
     r"'snip' takes no option\(s\) \['num_steps'\]"),
    (dict(rounds=2, iters_between_rounds=5),
     'rounds during training .* not supported'),
])
def test_invalid_channel_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HOOKS.build(
            dict(type='epsd_mm.EarlyPruningHook',
                 **{'granularity': 'channel', **kwargs}))


def test_ema_hook_is_refused(tiny_cfg, tmp_path, helpers):
    cfg = tiny_cfg(CHANNEL, max_iters=1)
    cfg.custom_hooks = [dict(type='EMAHook')]
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match='EMAHook keeps a copy of the model'):
        runner.train()
    assert helpers.checkpoints(str(tmp_path)) == []


# --------------------------------------------------------------------------
# EPSD-It rounds and SD methods with state
# --------------------------------------------------------------------------
def test_rounds_compose_one_spec_and_pskd_sees_the_slim_network(
        tiny_cfg, helpers, tmp_path):
    """EPSD-It rounds back to back; PS-KD's teacher (taken by
    SelfDistillHook after the pruning hook) is the slim network."""
    cfg = tiny_cfg({**CHANNEL, 'default_hooks.pruning.rounds': 2,
                    'default_hooks.pruning.criterion': 'magnitude'},
                   max_iters=1)
    cfg.model.sd = dict(type='PSKD')
    runner = _train(cfg)
    model = runner.model
    spec = get_slim_spec(model)
    assert spec['channels'] == dict(total=NUM_CHANNELS, kept=NUM_CHANNELS // 2)
    log = helpers.read_logs(str(tmp_path))
    kept_after_1 = round(0.5**0.5 * NUM_CHANNELS)
    assert (f'round 1/2: channel sparsity {1 - kept_after_1 / NUM_CHANNELS:.4f}'
            in log)
    assert f'{kept_after_1} of {NUM_CHANNELS} channels kept' in log
    assert (f'round 2/2: channel sparsity 0.5000 (target 0.5000): '
            f'{NUM_CHANNELS // 2} of {NUM_CHANNELS} channels kept' in log)
    assert layer_channels(model.sd.teacher) == layer_channels(model)
    # the composed spec rebuilds the final network from the dense one
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        fresh = MODELS.build(cfg.model)
    rebuild_slim(
        fresh,
        PruningRecord.from_checkpoint(torch.load(str(tmp_path /
                                                     'iter_1.pth'))).slim_spec)
    fresh.load_state_dict(model.state_dict())
    assert layer_channels(fresh) == layer_channels(model)


def test_hook_default_is_weight_and_recorded():
    hook = EarlyPruningHook()
    assert hook.pruner.granularity == 'weight'
    assert hook.pruning_config()['granularity'] == 'weight'


def test_whole_model_slim_round_trip(tiny_cfg, tmp_path):
    """Heads in scope: their channels are cut, class channels never; the
    slim checkpoint tests (rebuilt from the record) and exports to an ONNX
    file that onnxruntime runs like PyTorch."""
    from epsd_mm.deploy import export_pruned_checkpoint
    scopes = ('backbone', 'decode_head', 'auxiliary_head')
    cfg = tiny_cfg({**CHANNEL, 'default_hooks.pruning.scopes': scopes},
                   work_dir=tmp_path / 'train', max_iters=2)
    runner = _train(cfg)
    channels = layer_channels(runner.model)
    for head in ('decode_head', 'auxiliary_head'):
        assert channels[f'{head}.conv_seg'][1] == 21  # the VOC classes
    assert any(name.startswith('decode_head.aspp_modules')
               for name in get_slim_spec(runner.model)['layers'])
    assert ('output channels kept whole (no layer reads them, e.g. class '
            'channels): decode_head.conv_seg, auxiliary_head.conv_seg'
            in _run_log(runner))
    ckpt = str(tmp_path / 'train' / 'iter_2.pth')

    tester = Runner.from_cfg(
        tiny_cfg({**CHANNEL, 'default_hooks.pruning.scopes': scopes,
                  'load_from': ckpt}, work_dir=tmp_path / 'test'))
    metrics = tester.test()
    assert layer_channels(tester.model) == channels
    assert metrics['channel_sparsity'] == pytest.approx(0.5, abs=0.01)

    result = export_pruned_checkpoint(
        cfg, ckpt, str(tmp_path / 'export'), onnx=True, log=lambda _: None)
    assert result.onnx_diff <= 1e-4
