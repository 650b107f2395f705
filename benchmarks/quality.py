"""Demo quality of the baseline family at 90% sparsity, over seeds."""
import os.path as osp
import statistics
from typing import Callable, Dict, List, Optional, Sequence

from mmengine.config import Config

from .common import (CUB_DEMO, ROOT, SEG_DEMO, SEGFORMER_DEMO, plan_runs,
                     section_ledger, shorten_schedule, train_all)

SECTION = 'quality'


def _no_pruning(cfg) -> None:
    cfg.default_hooks.pop('pruning')


def _dense(cfg) -> None:
    _no_pruning(cfg)
    cfg.model.sd = None
    if 'ClassPairSampler' in cfg.train_dataloader.sampler.type:
        # CS-KD's pairs would feed duplicates to plain training.
        cfg.train_dataloader.sampler = dict(
            type='DefaultSampler', shuffle=True)


# The baseline family as edits of the demo EPSD configs: the same keys the
# configs in configs/deeplab_voc and configs/cam_cub change.
FAMILY = {
    'dense': _dense,
    'dense + SD': _no_pruning,
    'random + SD': lambda cfg: cfg.default_hooks.pruning.update(
        criterion='random'),
    'simple combination (prospr, task loss) + SD':
    lambda cfg: cfg.default_hooks.pruning.update(loss='task'),
    'EPSD (prospr, SD loss) + SD': lambda cfg: None,
}


#: Self-distilled pruning (O'Neill et al.) on the demo schedule: 15
#: magnitude cuts over the first two thirds of training, the
#: cross-correlation term to the unpruned self on the backbone's last stage
#: (as configs/deeplab_voc/sdp_xcorr_segformer_mit-b0.py).
XCORR = dict(
    type='CrossCorrelation',
    loss=dict(
        type='CrossCorrelationLoss', lambda_offdiag=5e-3, loss_weight=1e-2))


def _sdp(cfg, initial_sparsity: float = 0.0) -> None:
    cfg.model.sd = XCORR
    interval = max(1, cfg.train_cfg.max_iters // 15)
    cfg.default_hooks.pruning = dict(
        type='epsd_mm.GradualPruningHook',
        sparsity=0.9,
        start=0,
        end=10 * interval,
        interval=interval,
        initial_sparsity=initial_sparsity,
        # by global magnitude, the small attention output projections of
        # the randomly initialised demo MiT would be cut entirely
        min_density=0.02)


def _epsd_then_sdp(cfg) -> None:
    """EPSD to 50% at initialisation (ProsPr on CE + cross-correlation),
    then gradual to 90% (as configs/deeplab_voc/epsd_then_sdp.py)."""
    _sdp(cfg, initial_sparsity=0.5)
    cfg.default_hooks.epsd = dict(
        type='epsd_mm.EarlyPruningHook', sparsity=0.5, num_batches=4)


#: The SegFormer comparison of the generality issue: EPSD next to
#: self-distilled pruning and their combination.
SEGFORMER_FAMILY = {
    'dense': _dense,
    'simple combination (prospr, task loss) + SD':
    FAMILY['simple combination (prospr, task loss) + SD'],
    'EPSD (prospr, SD loss) + SD': FAMILY['EPSD (prospr, SD loss) + SD'],
    'SDP (gradual magnitude + cross-correlation)': _sdp,
    'EPSD 50% -> SDP 90%': _epsd_then_sdp,
}


def bench_quality(config: str,
                  metric_keys: Sequence[str],
                  tag: str,
                  args,
                  family: Dict[str, Callable] = FAMILY,
                  max_iters: Optional[int] = None) -> List[str]:
    """Train every method of ``family`` on ``config`` for each of
    ``args.seeds`` (``args.jobs`` runs at a time, cached under
    ``WORK_ROOT/<tag>``) and tabulate mean ± std of ``metric_keys``."""
    base = Config.fromfile(osp.join(ROOT, config))
    shorten_schedule(base, max_iters)
    planned = plan_runs(base, family, args.seeds, tag)
    outcomes = train_all(planned, args.jobs, args.threads, tag,
                         section_ledger(args, tag))
    collapsed = [(run[0], o.collapsed) for run, o in zip(planned, outcomes)
                 if o.collapsed]
    if collapsed:
        raise RuntimeError(f'{tag}: runs stopped by a layer collapse, not '
                           f'comparable at this sparsity: {collapsed}')
    schedule = (f'{max_iters} iterations instead of the config\'s'
                if max_iters else 'the config\'s schedule')
    lines = [
        f'`{config}` at 90% backbone sparsity (dense rows: 0%), '
        f'{schedule} for every method, seeds {list(args.seeds)}; mean ± std '
        'over seeds.', '',
        '| method | ' + ' | '.join(metric_keys) + ' | sparsity |',
        '| --- |' + ' ---: |' * (len(metric_keys) + 1)
    ]
    results = iter(o.metrics for o in outcomes)
    for method in family:
        runs = [next(results) for _ in args.seeds]
        cells = []
        for key in list(metric_keys) + ['sparsity']:
            # No pruning hook, no sparsity entry: the model is dense.
            values = [float(r.get(key, 0.0 if key == 'sparsity' else 'nan'))
                      for r in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f'{statistics.mean(values):.2f} ± {std:.2f}'
                         if key != 'sparsity' else
                         f'{statistics.mean(values):.3f}')
        lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
    return lines


TASKS = ('seg', 'cub', 'segformer')


def add_arguments(parser) -> None:
    group = parser.add_argument_group('quality, structured_quality, sweep')
    group.add_argument(
        '--quality-tasks', nargs='+', default=list(TASKS), choices=TASKS)
    group.add_argument(
        '--quality-max-iters',
        type=int,
        default=None,
        help='every training run of the quality, structured_quality and '
        'sweep sections stops after this many iterations, its schedulers '
        'scaled to fit (iteration-based configs only)')


def run(args) -> list:
    tables = []
    if 'seg' in args.quality_tasks:
        tables.append(
            ('Demo segmentation quality (DeepLabV3, VOC layout)',
             bench_quality(SEG_DEMO, ['mIoU', 'aAcc'], 'seg', args,
                           max_iters=args.quality_max_iters)))
    if 'cub' in args.quality_tasks:
        tables.append(('Demo WSOL quality (CAM, CUB layout)',
                       bench_quality(CUB_DEMO, [
                           'wsol/top1_cls', 'wsol/top1_loc@0.20',
                           'wsol/top1_loc@best', 'wsol/gt_known_loc@best',
                           'wsol/maxboxacc_v2'
                       ], 'cub', args)))
    if 'segformer' in args.quality_tasks:
        tables.append(
            ('Demo SegFormer quality: EPSD, self-distilled pruning and both',
             bench_quality(SEGFORMER_DEMO, ['mIoU', 'aAcc'], 'segformer',
                           args, SEGFORMER_FAMILY, args.quality_max_iters)))
    return tables
