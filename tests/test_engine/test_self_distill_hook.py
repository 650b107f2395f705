"""SelfDistillHook with a real Runner: PS-KD teacher snapshots, progress,
checkpoints and resume."""
import os.path as osp

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import Runner

from epsd_mm.engine import SelfDistillHook
from epsd_mm.engine.hooks.self_distill_hook import SD_STATE_KEY
from epsd_mm.pruning import get_masks

# Runners, subprocesses or torchrun: the integrations, run end to end
pytestmark = pytest.mark.e2e


def pskd(snapshot_interval=None):
    return {
        'model.sd': dict(
            _delete_=True,
            type='PSKD',
            loss=dict(alpha_T=0.8),
            snapshot_interval=snapshot_interval),
        'default_hooks.pruning.criterion': 'magnitude',
    }


class Recorder(Hook):
    """Records, before every iteration (after SelfDistillHook), the
    model's progress, its teacher and a copy of its weights."""
    priority = 'LOW'

    def __init__(self):
        self.records = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model
        self.records.append(
            dict(
                iter=runner.iter,
                progress=model.sd.progress,
                teacher=model.sd.teacher,
                teacher_state={
                    k: v.clone()
                    for k, v in model.sd.teacher.state_dict().items()
                },
                state={k: v.clone()
                       for k, v in model.state_dict().items()}))


def _states_equal(a, b):
    assert a.keys() == b.keys()
    return all(torch.equal(a[k], b[k]) for k in a)


def _train(cfg):
    runner = Runner.from_cfg(cfg)
    recorder = Recorder()
    runner.register_hook(recorder)
    runner.train()
    return runner, recorder.records


def test_build():
    hook = HOOKS.build(dict(type='epsd_mm.SelfDistillHook'))
    assert isinstance(hook, SelfDistillHook)


def test_pskd_teacher_progress_checkpoint_and_resume(tiny_cfg, tmp_path):
    work_dir = str(tmp_path)
    cfg = tiny_cfg(pskd(snapshot_interval=2), max_iters=3)
    runner, records = _train(cfg)
    model = runner.model
    assert [r['iter'] for r in records] == [0, 1, 2]
    assert [r['progress'] for r in records] == pytest.approx([0, 1 / 3, 2 / 3])
    # a teacher from the start: the pruned network at iteration 0
    first = records[0]['teacher']
    assert first is not None and first is not model
    assert not first.training
    assert not any(p.requires_grad for p in first.parameters())
    assert _states_equal(records[0]['teacher_state'], records[0]['state'])
    assert get_masks(first).keys() == get_masks(model).keys()
    # kept for snapshot_interval=2 iterations, then refreshed to the model
    # as it is after 2 iterations
    assert records[1]['teacher'] is first
    assert records[2]['teacher'] is not first
    assert _states_equal(records[2]['teacher_state'], records[2]['state'])
    assert not _states_equal(records[2]['teacher_state'],
                             records[0]['teacher_state'])
    assert model.sd.teacher is records[2]['teacher']
    # without snapshot_interval the teacher is refreshed once per epoch of
    # the train loader (8 iterations here)
    assert len(runner.train_dataloader) == 8
    model.sd.snapshot_interval = None
    before = model.sd.teacher
    model.sd.before_train_iter(model, 7, 100, len(runner.train_dataloader))
    assert model.sd.teacher is before
    model.sd.before_train_iter(model, 8, 100, len(runner.train_dataloader))
    assert model.sd.teacher is not before

    # the snapshot travels in the checkpoint ...
    ckpt = torch.load(osp.join(work_dir, 'iter_3.pth'))
    teacher_state = ckpt[SD_STATE_KEY]['teacher']
    assert _states_equal(teacher_state, records[2]['teacher_state'])
    # ... and differs from the model's weights at that point
    assert not _states_equal(teacher_state, ckpt['state_dict'])

    # resume: the teacher is the saved snapshot, not a new one of the
    # resumed weights
    cfg = tiny_cfg({
        **pskd(snapshot_interval=2), 'train_cfg.val_interval': 100
    },
                   work_dir=work_dir,
                   max_iters=4)
    cfg.resume = True
    runner, records = _train(cfg)
    assert [r['iter'] for r in records] == [3]
    assert records[0]['progress'] == pytest.approx(3 / 4)
    assert _states_equal(records[0]['teacher_state'], teacher_state)
    assert _states_equal(records[0]['state'], ckpt['state_dict'])
    assert runner.model.sd.teacher is records[0]['teacher']


def test_needs_a_self_distilling_model(tiny_cfg, tmp_path, helpers):
    cfg = tiny_cfg()
    cfg.default_hooks.pop('pruning')
    cfg.model.pop('sd')
    cfg.model.type = cfg.model.pop('segmentor_type')  # mmseg's plain one
    runner = Runner.from_cfg(cfg)
    with pytest.raises(TypeError, match='SelfDistillHook needs a '
                       'self-distilling model'):
        runner.train()
    assert helpers.checkpoints(str(tmp_path)) == []
