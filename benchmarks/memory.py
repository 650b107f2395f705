"""Scoring memory: EPSD's prospr (full, first-order) and SNIP vs a training
step, on the real DeepLabV3 R50-D8 and on the demo model.

Every measurement runs in a fresh (spawned) process: the peak memory it
reports is the growth of the process's max RSS during the measured calls on
CPU, ``torch.cuda.max_memory_allocated`` above what was allocated before on
CUDA. On CPU the workers fix glibc's mmap threshold
(``MALLOC_MMAP_THRESHOLD_``) so that freed tensors go back to the system at
once and RSS follows the live tensors, as ``max_memory_allocated`` does;
with glibc's default (a threshold that grows after each large free) RSS
also holds freed heap blocks, which inflates small models most. Both models
score on the task loss (their self-distillation term off) so that scoring
and the training step see the same batches.
"""
import os.path as osp
from typing import Callable, Dict, List

import torch

from .common import (ROOT, SEG_DEMO, WORK_ROOT, in_fresh_process, peak_rss_mb,
                     plain_segmentor, timed)

SECTION = 'memory'

R50_CONFIG = 'configs/epsd_deeplab_voc.py'
MODELS = {
    'r50': ('DeepLabV3 R50-D8 (`configs/epsd_deeplab_voc.py`, BN instead '
            'of SyncBN, random init)', R50_CONFIG),
    'demo': ('demo DeepLabV3 (`configs/demo/epsd_deeplab_voc_demo.py`, '
             'ResNetV1c-18 width 16, random init)', SEG_DEMO),
}
NUM_STEPS = 3
FULL = dict(criterion='prospr', num_steps=NUM_STEPS, lr=0.1)
TRAIN, SNIP = 'training step (SGD, momentum 0.9)', 'snip'
UNROLLED = f'prospr M={NUM_STEPS} full, unrolled (before)'
AFTER = f'prospr M={NUM_STEPS} full (after)'
#: Row name -> (scoring options or None for the training step, micro-batches
#: per loss evaluation).
VARIANTS = {
    TRAIN: (None, 1),
    SNIP: (dict(criterion='snip'), 1),
    f'prospr M={NUM_STEPS} first-order': (dict(FULL, first_order=True), 1),
    UNROLLED: (dict(FULL, memory_efficient=False), 1),
    AFTER: (FULL, 1),
    f'prospr M={NUM_STEPS} full, 2 micro-batches per evaluation': (FULL, 2),
}
#: Environment of the CPU workers: blocks >= 128 KB (glibc's initial
#: threshold) are mmapped and returned to the system when freed.
WORKER_ENV = {'MALLOC_MMAP_THRESHOLD_': str(128 * 1024)}

def add_arguments(parser) -> None:
    parser.add_argument(
        '--memory-models', nargs='+', default=list(MODELS),
        choices=list(MODELS), help='models of the memory section')
    parser.add_argument(
        '--memory-batch', type=int, default=2,
        help='batch size of the memory section (--size is the input size)')


def build(model_key: str, size: int, batch_size: int, num_batches: int,
          device: torch.device):
    """The model (train mode, on ``device``) and ``num_batches`` demo-data
    batches preprocessed by it at ``size`` x ``size``."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    data_cfg = Config.fromfile(osp.join(ROOT, SEG_DEMO))
    data_cfg.work_dir = WORK_ROOT
    data_cfg.log_level = 'WARNING'
    data_cfg.default_hooks.pop('pruning', None)
    data_cfg.train_dataloader.batch_size = batch_size
    data_cfg.train_dataloader.num_workers = 0
    runner = Runner.from_cfg(data_cfg)  # the demo data, its pipeline
    model = plain_segmentor(MODELS[model_key][1], size).train().to(device)
    stream = iter(runner.train_dataloader)
    batches = [
        model.data_preprocessor(next(stream), training=True)
        for _ in range(num_batches)
    ]
    return model, batches


def _measure(fn: Callable[[], object], repeats: int,
             device: torch.device) -> Dict[str, float]:
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)

        def synced():
            fn()
            torch.cuda.synchronize()

        seconds = timed(synced, repeats)
        peak = torch.cuda.max_memory_allocated(device) - base
        return dict(seconds=seconds, peak_mb=peak / 2**20)
    base = peak_rss_mb()
    seconds = timed(fn, repeats)
    return dict(seconds=seconds, peak_mb=peak_rss_mb() - base)


def _worker(model_key: str, variant: str, args: dict) -> Dict[str, float]:
    torch.set_num_threads(args['threads'])
    from epsd_mm.models import model_loss
    from epsd_mm.pruning import compute_scores, prunable_parameters
    options, micro = VARIANTS[variant]
    num_batches = 1 if options is None else (NUM_STEPS + 1) * micro
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    model, batches = build(model_key, args['size'], args['batch'],
                           num_batches, device)
    if options is None:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

        def fn():
            optimizer.zero_grad(set_to_none=True)
            model_loss(model, batches[0]).backward()
            optimizer.step()
    else:
        params = prunable_parameters(model, ('backbone', ))

        def fn():
            compute_scores(model, model_loss, batches, params=params,
                           **options)

    return _measure(fn, args['repeats'], device)


def bench_model(model_key: str, args: dict) -> List[str]:
    results: Dict[str, Dict[str, float]] = {}
    for variant in VARIANTS:
        results[variant] = in_fresh_process(
            _worker, model_key, variant, args, env=WORKER_ENV)
        print(f'[memory] {model_key} {variant}: {results[variant]}',
              flush=True)
    train, snip = results[TRAIN], results[SNIP]
    unrolled = results[UNROLLED]
    ratio = results[AFTER]['peak_mb'] / train['peak_mb']
    print(f'[memory] {model_key}: prospr full M={NUM_STEPS}: {ratio:.2f}x '
          'train step (target <= 2.0x)', flush=True)
    device = 'CUDA' if torch.cuda.is_available() else 'CPU'
    memory = ('`torch.cuda.max_memory_allocated` above the allocation '
              'before' if device == 'CUDA' else
              'growth of the max RSS (glibc mmap threshold fixed at 128 KB '
              'so that RSS follows the live tensors)')
    lines = [
        f'Model: {MODELS[model_key][0]}, task loss, input '
        f'{args["size"]}x{args["size"]}, batch {args["batch"]}, {device}. '
        f'Each row runs in a fresh process; peak memory is the {memory} '
        'during the measured calls, time the median of '
        f'{args["repeats"]} call(s) after a warm-up. SNIP sums over 4 '
        f'batches; prospr takes M={NUM_STEPS} inner steps (4 loss '
        'evaluations, one batch each, or 2 micro-batches each = scoring '
        f'batch {2 * args["batch"]} in the last row, which holds one more '
        'parameter-sized buffer). "(before)" is the '
        'graph unrolled through all steps (`memory_efficient=False`), '
        '"(after)" the default adjoint sweep with per-step recomputation.',
        '',
        '| measurement | peak memory (MB) | memory vs training step | '
        'time (s) | time vs snip | time vs unrolled |',
        '| --- | ---: | ---: | ---: | ---: | ---: |'
    ]
    for name, r in results.items():
        vs_unrolled = (f'{r["seconds"] / unrolled["seconds"]:.2f}x'
                       if name.startswith(f'prospr M={NUM_STEPS} full') else
                       '')
        lines.append(
            f'| {name} | {r["peak_mb"]:.0f} | '
            f'{r["peak_mb"] / train["peak_mb"]:.2f}x | {r["seconds"]:.2f} | '
            f'{r["seconds"] / snip["seconds"]:.2f}x | {vs_unrolled} |')
    lines += [
        '', f'prospr full M={NUM_STEPS}: {ratio:.2f}x train step '
        '(target <= 2.0x).'
    ]
    return lines


def run(args) -> list:
    common = dict(size=args.size, batch=args.memory_batch,
                  repeats=args.repeats, threads=args.threads)
    titles = {
        'r50': 'Scoring memory: DeepLabV3 R50-D8',
        'demo': 'Scoring memory: demo DeepLabV3',
    }
    return [(titles[key], bench_model(key, common))
            for key in args.memory_models]
