"""Demo quality of the baseline family at 90% sparsity, over seeds."""
import os.path as osp
import statistics
from typing import List, Sequence

from .common import CUB_DEMO, SEG_DEMO, WORK_ROOT, train_and_eval

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


def bench_quality(config: str, metric_keys: Sequence[str], seeds: Sequence[int],
                  tag: str) -> List[str]:
    lines = [
        f'`{config}` at 90% backbone sparsity (dense rows: 0%), same '
        f'schedule, seeds {list(seeds)}; mean ± std over seeds.', '',
        '| method | ' + ' | '.join(metric_keys) + ' | sparsity |',
        '| --- |' + ' ---: |' * (len(metric_keys) + 1)
    ]
    for method, edit in FAMILY.items():
        runs = []
        for seed in seeds:
            slug = ''.join(c if c.isalnum() else '_' for c in method)
            work_dir = osp.join(WORK_ROOT, tag, slug, str(seed))
            runs.append(train_and_eval(config, edit, seed, work_dir))
            print(f'[{tag}] {method} seed {seed}: {runs[-1]}', flush=True)
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



def run(args) -> list:
    return [
        ('Demo segmentation quality (DeepLabV3, VOC layout)',
         bench_quality(SEG_DEMO, ['mIoU', 'aAcc'], args.seeds, 'seg')),
        ('Demo WSOL quality (CAM, CUB layout)',
         bench_quality(CUB_DEMO, [
             'wsol/top1_cls', 'wsol/top1_loc@0.20', 'wsol/top1_loc@best',
             'wsol/gt_known_loc@best', 'wsol/maxboxacc_v2'
         ], args.seeds, 'cub')),
    ]
