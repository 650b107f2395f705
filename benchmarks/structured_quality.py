"""Demo quality of structured (channel) pruning over seeds, with the
parameters and FLOPs each method leaves.

Structured EPSD (ProsPr on the SD loss), structured simple combination
(ProsPr on the task loss), L1-norm and random channel pruning at the same
channel sparsity, all trained with DLB on the demo segmentation data, plus
dense + DLB for reference. Each run is ``tools/train.py`` in a fresh
process; the slim architecture of its final checkpoint is rebuilt from the
spec it records and measured with ``mmengine.analysis``.
"""
import os.path as osp
import statistics
from typing import Callable, Dict, List, Sequence

import torch
from mmengine.config import Config

from .common import (ROOT, plan_runs, section_ledger, shorten_schedule,
                     train_all)

SECTION = 'structured_quality'
CONFIG = 'configs/demo/epsd_channel_deeplab_voc_demo.py'
METRICS = ('mIoU', 'aAcc')


def add_arguments(parser) -> None:
    group = parser.add_argument_group('structured_quality')
    group.add_argument(
        '--quality-channel-sparsity',
        type=float,
        default=0.5,
        help='fraction of backbone channels removed by every method')
    group.add_argument(
        '--complexity-size',
        type=int,
        default=512,
        help='input size (batch 1) of the reported FLOPs')


def _dense(cfg) -> None:
    cfg.default_hooks.pop('pruning')


#: Method name -> config edit; they differ only in the pruning criterion
#: and scoring loss (the keys the configs/deeplab_voc/*_channel.py change).
FAMILY: Dict[str, Callable] = {
    'dense + DLB': _dense,
    'random channels + DLB':
    lambda cfg: cfg.default_hooks.pruning.update(criterion='random'),
    'L1 channels (magnitude) + DLB':
    lambda cfg: cfg.default_hooks.pruning.update(criterion='magnitude'),
    'structured simple combination (prospr, task loss) + DLB':
    lambda cfg: cfg.default_hooks.pruning.update(loss='task'),
    'structured EPSD (prospr, SD loss) + DLB': lambda cfg: None,
}


def slim_complexity(work_dir: str, size: int) -> Dict[str, int]:
    """Params and FLOPs of the network a run's last checkpoint holds."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from epsd_mm.deploy import model_complexity
    from epsd_mm.pruning import PruningRecord, rebuild_slim
    from epsd_mm.registry import MODELS
    from epsd_mm.utils import register_checkpoint_safe_globals
    register_checkpoint_safe_globals()
    cfg = Config.fromfile(osp.join(work_dir, 'config.py'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = torch.load(f.read().strip(), map_location='cpu')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    spec = PruningRecord.from_checkpoint(checkpoint).slim_spec
    if spec is not None:
        rebuild_slim(model, spec)
    total = model_complexity(model.eval(), torch.randn(1, 3, size, size))[-1]
    return dict(params=total.params, flops=total.flops)


def _mean_std(values: Sequence[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):.2f} ± {std:.2f}'


def bench_structured_quality(args) -> List[str]:
    """Train every method of :data:`FAMILY` for each of ``args.seeds``
    (``args.jobs`` runs at a time, cached) and tabulate quality, params and
    FLOPs."""
    seeds, sparsity = args.seeds, args.quality_channel_sparsity
    max_iters, size = args.quality_max_iters, args.complexity_size
    base = Config.fromfile(osp.join(ROOT, CONFIG))
    base.default_hooks.pruning.sparsity = sparsity
    shorten_schedule(base, max_iters)
    planned = plan_runs(base, FAMILY, seeds, 'structured_quality')
    outcomes = iter(
        train_all(planned, args.jobs, args.threads, 'structured_quality',
                  section_ledger(args, 'structured_quality')))
    work_dirs = iter(run[3] for run in planned)
    rows = {}
    for method in FAMILY:
        runs = [next(outcomes).metrics for _ in seeds]
        rows[method] = (runs, [
            slim_complexity(next(work_dirs), size) for _ in seeds
        ])
    dense_flops = statistics.mean(c['flops']
                                  for c in rows['dense + DLB'][1])
    schedule = (f'{max_iters} iterations' if max_iters is not None else
                "the config's schedule")
    lines = [
        f'`{CONFIG}` ({schedule}), {sparsity:.0%} of the backbone\'s '
        f'channels removed before training (global selection, 5% floor '
        f'per channel group), seeds {list(seeds)}; mean ± std over seeds. '
        'Params and FLOPs (`mmengine.analysis`, a multiply-add = one FLOP, '
        f'inference at {size}x{size}, batch 1) of the slim network each '
        'run trained, mean over seeds: the criteria allocate the removed '
        'channels differently, so the same channel sparsity leaves '
        'different FLOPs.', '',
        '| method | ' + ' | '.join(METRICS) +
        ' | channel sparsity | params (M) | GFLOPs | FLOP reduction |',
        '| --- |' + ' ---: |' * (len(METRICS) + 4)
    ]
    for method, (runs, complexity) in rows.items():
        cells = [
            _mean_std([float(r.get(key, 'nan')) for r in runs])
            for key in METRICS
        ]
        removed = [float(r.get('channel_sparsity', 0.0)) for r in runs]
        cells.append(f'{statistics.mean(removed):.3f}')
        params = statistics.mean(c['params'] for c in complexity)
        flops = statistics.mean(c['flops'] for c in complexity)
        cells += [
            f'{params / 1e6:.3f}', f'{flops / 1e9:.2f}',
            f'{dense_flops / flops:.2f}x'
        ]
        lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
    return lines


def run(args) -> list:
    return [('Structured pruning: demo segmentation quality vs FLOPs',
             bench_structured_quality(args))]
