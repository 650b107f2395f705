"""The sparsity-sweep benchmark section: planning, cached runs, report."""
import os
import os.path as osp
import sys
from argparse import Namespace

import pytest

ROOT = (osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
sys.path.insert(0, ROOT)
from benchmarks import SECTIONS, sweep  # noqa: E402


def sweep_args(tmp_path, **kwargs):
    args = dict(
        sweep_tasks=['seg'],
        sweep_sparsities=[0.99, 0.9, 0.95],
        sweep_cfg_options={},
        sweep_methods=[m.key for m in sweep.METHODS],
        quality_max_iters=None,
        sweep_work_dir=str(tmp_path / 'runs'),
        seeds=[0, 1],
        jobs=1,
        threads=1,
        out=str(tmp_path / 'docs' / 'benchmarks.md'))
    args.update(kwargs)
    return Namespace(**args)


def by_method(runs):
    grouped = {}
    for run in runs:
        grouped.setdefault(run.method.name, []).append(run)
    return grouped


def test_plan_covers_the_family(tmp_path):
    assert SECTIONS['sweep'] is sweep
    runs = by_method(sweep._plan(sweep.TASKS['seg'], sweep_args(tmp_path)))
    assert list(runs) == [m.name for m in sweep.METHODS]
    dense = runs['dense + SD']
    assert [(r.sparsity, r.seed) for r in dense] == [(None, 0), (None, 1)]
    assert 'pruning' not in dense[0].cfg.default_hooks
    pruning = {
        name: [r.cfg.default_hooks.pruning for r in group]
        for name, group in runs.items() if name != 'dense + SD'
    }
    for name in ('random + SD', 'SNIP + SD',
                 'simple combination (prospr, task loss) + SD',
                 'EPSD (prospr, SD loss) + SD'):
        assert [(r.sparsity, r.seed) for r in runs[name]] == [
            (s, seed) for s in (0.9, 0.95, 0.99) for seed in (0, 1)
        ]
        assert [p.sparsity for p in pruning[name]] == [0.9, 0.9, 0.95, 0.95,
                                                       0.99, 0.99]
    assert pruning['random + SD'][0].criterion == 'random'
    assert (pruning['SNIP + SD'][0].criterion,
            pruning['SNIP + SD'][0].loss) == ('snip', 'task')
    simple = pruning['simple combination (prospr, task loss) + SD'][0]
    assert (simple.get('criterion', 'prospr'), simple.loss) == ('prospr',
                                                                 'task')
    assert pruning['EPSD (prospr, SD loss) + SD'][0].get('loss', 'sd') == 'sd'
    # EPSD-It only at the two highest sparsities
    iterative = runs['EPSD-It (3 rounds) + SD']
    assert [r.sparsity for r in iterative] == [0.95, 0.95, 0.99, 0.99]
    assert all(r.cfg.default_hooks.pruning.rounds == 3 for r in iterative)
    # The later pruning-at-initialisation methods, as their authors run them
    assert (pruning['FORCE (task loss) + SD'][0].criterion,
            pruning['FORCE (task loss) + SD'][0].loss) == ('force', 'task')
    for name, criterion in (('NTK-SAP + SD', 'ntk_sap'),
                            ('PHEW + SD', 'phew')):
        assert pruning[name][0].criterion == criterion
        assert 'loss' not in pruning[name][0]
    work_dirs = [r.work_dir for group in runs.values() for r in group]
    assert len(set(work_dirs)) == len(work_dirs)


def test_a_subset_of_methods_is_planned_and_reported(tmp_path):
    args = sweep_args(tmp_path, seeds=[0], sweep_methods=['phew', 'dense'])
    runs = sweep._plan(sweep.TASKS['seg'], args)
    assert list(by_method(runs)) == ['dense + SD', 'PHEW + SD']
    rows = [line.split(' | ')[0][2:] for line in sweep._table(
        sweep.TASKS['seg'], 'mIoU', True, synthetic_summary(), args, '')
        if line.startswith('| ')]
    assert rows == ['method', '---', 'dense + SD', 'PHEW + SD']


def test_cls_task_plans_the_classification_demo(tmp_path):
    """The classification demo: accuracy first, then calibration (lower is
    better); every method's edit builds a hook, a short schedule by epochs
    reaches every run."""
    task = sweep.TASKS['cls']
    assert task.config == 'configs/demo/epsd_resnet_cifar_demo.py'
    assert task.metrics == (('accuracy/top1', True),
                            ('calibration/ece', False), ('calibration/aurc',
                                                         False))
    args = sweep_args(
        tmp_path,
        sweep_tasks=['cls'],
        seeds=[0],
        sweep_cfg_options={
            'train_cfg.max_epochs': 1,
            'train_cfg.val_interval': 1
        })
    runs = by_method(sweep._plan(task, args))
    assert list(runs) == [m.name for m in sweep.METHODS]
    for group in runs.values():
        for run in group:
            assert run.cfg.train_cfg.max_epochs == 1
            assert run.cfg.model.type == 'epsd_mm.SelfDistillClassifier'
            assert '/epsd_resnet_cifar_demo/' in run.work_dir
    assert 'pruning' not in runs['dense + SD'][0].cfg.default_hooks
    assert [r.cfg.default_hooks.pruning.sparsity
            for r in runs['EPSD (prospr, SD loss) + SD']] == [0.9, 0.95, 0.99]


def test_shorter_schedule_scales_the_schedulers_of_every_run(tmp_path):
    args = sweep_args(tmp_path, seeds=[0], quality_max_iters=30)
    runs = sweep._plan(sweep.TASKS['seg'], args)
    for run in runs:
        assert run.cfg.train_cfg.max_iters == 30
        assert run.cfg.train_cfg.val_interval == 30
        # the demo's PolyLR ends at 300 of 300 iterations: now 30 of 30
        assert run.cfg.param_scheduler[0].end == 30
    lines = sweep._table(sweep.TASKS['seg'], 'mIoU', True, {}, args, '')
    assert 'stopped after 30 iterations' in lines[0]
    # the classification demo trains by epochs: told how to shorten it
    with pytest.raises(ValueError, match='train_cfg.max_epochs'):
        sweep._plan(sweep.TASKS['cls'], args)


def test_options_apply_to_every_run_and_bad_ones_fail_before_training(
        tmp_path):
    args = sweep_args(
        tmp_path,
        seeds=[0],
        sweep_cfg_options={
            'train_cfg.max_iters': 7,
            'default_hooks.pruning.min_density': 0.01
        })
    runs = by_method(sweep._plan(sweep.TASKS['seg'], args))
    assert runs['dense + SD'][0].cfg.train_cfg.max_iters == 7
    assert 'pruning' not in runs['dense + SD'][0].cfg.default_hooks
    random_run = runs['random + SD'][0].cfg
    assert random_run.train_cfg.max_iters == 7
    assert random_run.default_hooks.pruning.min_density == 0.01
    args.sweep_cfg_options = {'default_hooks.pruning.loss': 'bogus'}
    with pytest.raises(ValueError, match="rejects the config of 'random"):
        sweep._plan(sweep.TASKS['seg'], args)
    assert not osp.exists(args.sweep_work_dir)
    with pytest.raises(ValueError, match='in \\(0, 1\\)'):
        sweep._check_args(sweep_args(tmp_path, sweep_sparsities=[0.9, 1.0]))


def synthetic_summary():
    """Two seeds; SNIP collapses at 99% on both, random on one seed."""
    summary = {}

    def cell(name, sparsity, values, collapsed=0):
        summary[(name, sparsity)] = sweep.Cell(
            values={
                'mIoU': values,
                **({
                    'sparsity': [sparsity] * len(values)
                } if sparsity else {})
            },
            collapsed=collapsed)

    cell('dense + SD', None, [80.0, 82.0])
    cell('random + SD', 0.9, [50.0, 54.0])
    cell('random + SD', 0.99, [20.0], collapsed=1)
    cell('SNIP + SD', 0.9, [60.0, 60.0])
    cell('SNIP + SD', 0.99, [], collapsed=2)
    cell('EPSD (prospr, SD loss) + SD', 0.9, [58.0, 61.0])
    cell('EPSD (prospr, SD loss) + SD', 0.99, [30.0, 34.0])
    return summary


def test_table_marks_best_collapse_and_missing_cells(tmp_path):
    args = sweep_args(tmp_path, sweep_sparsities=[0.99, 0.9], seeds=[0, 1])
    lines = sweep._table(sweep.TASKS['seg'], 'mIoU', True,
                         synthetic_summary(), args, 'sweep_seg.png')
    rows = {line.split(' | ')[0][2:]: line for line in lines
            if line.startswith('| ')}
    assert rows['method'] == '| method | 90% | 99% |'
    assert rows['dense + SD'] == (
        '| dense + SD | 81.00 ± 1.41 | 81.00 ± 1.41 |')
    # The best pruned method per column is bold (dense is a reference).
    assert rows['SNIP + SD'] == '| SNIP + SD | **60.00 ± 0.00** | collapse |'
    assert rows['EPSD (prospr, SD loss) + SD'] == (
        '| EPSD (prospr, SD loss) + SD | 59.50 ± 2.12 | **32.00 ± 2.83** |')
    assert rows['random + SD'] == (
        '| random + SD | 52.00 ± 2.83 | 20.00 ± 0.00 (1 collapsed) |')
    # A higher mean over the seeds that survived a collapse is not bold.
    survivor = synthetic_summary()
    survivor[('random + SD', 0.99)] = sweep.Cell(
        values={'mIoU': [40.0], 'sparsity': [0.99]}, collapsed=1)
    survivor_rows = sweep._table(sweep.TASKS['seg'], 'mIoU', True, survivor,
                                 args, '')
    assert '| random + SD | 52.00 ± 2.83 | 40.00 ± 0.00 (1 collapsed) |' \
        in survivor_rows
    assert ('| EPSD (prospr, SD loss) + SD | 59.50 ± 2.12 | '
            '**32.00 ± 2.83** |') in survivor_rows
    assert rows['simple combination (prospr, task loss) + SD'].endswith(
        '| – | – |')
    assert '![Demo segmentation (DeepLabV3, VOC layout) vs sparsity]' \
        '(sweep_seg.png)' in lines
    # A dense reference equal to the best pruned mean stays plain.
    tied = synthetic_summary()
    tied[('dense + SD', None)] = sweep.Cell(values={'mIoU': [60.0, 60.0]})
    tied_rows = sweep._table(sweep.TASKS['seg'], 'mIoU', True, tied, args,
                             '')
    assert '| dense + SD | 60.00 ± 0.00 | 60.00 ± 0.00 |' in tied_rows
    assert '| SNIP + SD | **60.00 ± 0.00** | collapse |' in tied_rows
    lower = sweep._table(sweep.TASKS['seg'], 'mIoU', False,
                         synthetic_summary(), args, '')
    assert '| SNIP + SD | 60.00 ± 0.00 | collapse |' in lower
    assert not any(line.startswith('![') for line in lower)


def test_plot_is_written(tmp_path):
    path = str(tmp_path / 'docs' / 'sweep_seg.png')
    task = sweep.SweepTask('demo', 'x.py', (('mIoU', True), ('aAcc', True)))
    sweep.plot_sweep(task, sweep.METHODS, synthetic_summary(), [0.9, 0.99],
                     path)
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert os.path.getsize(path) > 10_000
