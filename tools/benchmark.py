"""Measure epsd_mm side by side and write ``docs/benchmarks.md``.

Every number in one table comes from the same run, model, input size and
batch, so the ratios are comparable; absolute times depend on the machine.

Sections:
    scoring   wall time and peak memory of prospr (full / first-order,
              M=1..3) relative to snip, each in a fresh process
    step      a masked training step relative to a dense one, and the step
              of every SD method relative to plain cross-entropy
    seg       demo segmentation quality at 90% sparsity (mIoU, mean +- std
              over seeds): dense, dense+SD, random+SD, simple combination,
              EPSD
    cub       the same for the demo WSOL task (Top-1 Cls/Loc, GT-known Loc,
              MaxBoxAccV2)

Example:
    python tools/benchmark.py --sections scoring step seg cub --seeds 0 1 2
"""
import argparse
import copy
import json
import multiprocessing as mp
import os
import os.path as osp
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SEG_DEMO = 'configs/demo/epsd_deeplab_voc_demo.py'
CUB_DEMO = 'configs/demo/epsd_cam_cub_demo.py'



def _no_pruning(cfg) -> None:
    cfg.default_hooks.pop('pruning')


def _dense(cfg) -> None:
    _no_pruning(cfg)
    cfg.model.sd_loss = None
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


# Shared set-up ---------------------------------------------------------
def build_demo(config: str, batch_size: int, image_size: int):
    """Model, optimizer-wrapper config, one raw and one preprocessed batch of
    a demo config."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    import epsd_mm  # noqa: F401
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.work_dir = '/tmp/epsd_benchmark'
    cfg.default_hooks.pop('pruning', None)
    cfg.train_dataloader.batch_size = batch_size
    cfg.train_dataloader.num_workers = 0
    cfg.model.data_preprocessor.size = (image_size, image_size)
    runner = Runner.from_cfg(cfg)
    model = runner.model
    data = next(iter(runner.train_dataloader))
    batch = model.data_preprocessor(data, training=True)
    return model, cfg.optim_wrapper, data, batch


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Scoring cost ------------------------------------------------------------
def _scoring_worker(kwargs: dict, args: dict, queue: mp.Queue) -> None:
    torch.set_num_threads(args['threads'])
    from epsd_mm.engine.hooks.early_pruning_hook import model_loss
    from epsd_mm.pruning import compute_scores, prunable_parameters
    model, _, _, batch = build_demo(SEG_DEMO, args['batch'], args['size'])
    params = prunable_parameters(model, ('backbone', ))
    batches = [batch] * 4
    base = peak_rss_mb()
    seconds = timed(
        lambda: compute_scores(
            model, model_loss, batches, params=params, **kwargs),
        args['repeats'])
    queue.put(dict(seconds=seconds, extra_mb=peak_rss_mb() - base))


def bench_scoring(args: dict) -> List[str]:
    variants = [('snip', dict(criterion='snip'))]
    for first_order in (False, True):
        for steps in (1, 2, 3):
            name = (f'prospr M={steps} '
                    f'{"first-order" if first_order else "full"}')
            variants.append((name,
                             dict(
                                 criterion='prospr',
                                 num_steps=steps,
                                 lr=0.1,
                                 first_order=first_order)))
    ctx = mp.get_context('spawn')
    results = {}
    for name, kwargs in variants:
        queue = ctx.Queue()
        proc = ctx.Process(target=_scoring_worker, args=(kwargs, args, queue))
        proc.start()
        results[name] = queue.get()
        proc.join()
        print(f'[scoring] {name}: {results[name]}', flush=True)
    snip = results['snip']
    lines = [
        f'Model: demo DeepLabV3 (ResNetV1c-18, width 16), input '
        f'{args["size"]}x{args["size"]}, batch {args["batch"]}; prospr takes '
        'one inner step per batch (M steps + the final loss = M+1 loss '
        'evaluations), snip sums its gradient over all 4 batches (4 '
        'evaluations). Peak memory is the growth of the process\'s max RSS '
        'during scoring.', '',
        '| criterion | wall time (s) | time vs snip | extra peak RSS (MB) | '
        'memory vs snip |', '| --- | ---: | ---: | ---: | ---: |'
    ]
    for name, r in results.items():
        lines.append(
            f'| {name} | {r["seconds"]:.2f} | '
            f'{r["seconds"] / snip["seconds"]:.2f}x | {r["extra_mb"]:.0f} | '
            f'{r["extra_mb"] / max(snip["extra_mb"], 1e-9):.2f}x |')
    return lines


# Training step cost ------------------------------------------------------
def bench_step(args: dict) -> List[str]:
    torch.set_num_threads(args['threads'])
    from mmengine.optim import build_optim_wrapper

    from epsd_mm.pruning import (apply_masks, prunable_parameters,
                                 random_scores, register_mask_enforcement,
                                 select_masks)
    from epsd_mm.registry import MODELS
    model, optim_cfg, data, _ = build_demo(SEG_DEMO, args['batch'],
                                           args['size'])
    masks = select_masks(
        random_scores(prunable_parameters(model, ('backbone', ))), 0.9)

    def variant(masked: bool, sd_loss: Optional[dict]):
        net = copy.deepcopy(model)
        net.sd_loss = (
            MODELS.build(dict(sd_loss, _scope_='epsd_mm'))
            if sd_loss else None)
        net.sd_enabled = sd_loss is not None
        optim_wrapper = build_optim_wrapper(net, copy.deepcopy(optim_cfg))
        if masked:
            apply_masks(net, masks)
            register_mask_enforcement(optim_wrapper.optimizer, net)
        net.set_sd_teacher(net.sd_snapshot())
        return lambda: net.train_step(data, optim_wrapper)

    steps = {
        'dense, cross-entropy': variant(False, None),
        'masked 90%, cross-entropy': variant(True, None),
        'masked 90%, DLB': variant(True, dict(type='DLBLoss')),
        'masked 90%, PS-KD': variant(True, dict(type='PSKDLoss')),
        'masked 90%, CS-KD': variant(True, dict(type='CSKDLoss')),
    }
    # Round-robin, so that load drift on the machine hits every row alike.
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm-up (DLB: fills its previous batch)
    for _ in range(args['repeats']):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    rows = {name: statistics.median(t) for name, t in times.items()}
    dense = rows['dense, cross-entropy']
    masked = rows['masked 90%, cross-entropy']
    lines = [
        f'Same demo DeepLabV3, input {args["size"]}x{args["size"]}, batch '
        f'{args["batch"]}, one `train_step` (forward, backward, SGD '
        'momentum step, mask enforcement where masked), median of '
        f'{args["repeats"]} round-robin repeats. DLB forwards the new batch '
        'plus the previous one; PS-KD adds a no-grad teacher forward; CS-KD '
        'forwards the anchor half with gradient and the partner half '
        'without.', '', '| step | seconds | vs dense CE | vs masked CE |',
        '| --- | ---: | ---: | ---: |'
    ]
    for name, seconds in rows.items():
        lines.append(f'| {name} | {seconds:.3f} | {seconds / dense:.2f}x | '
                     f'{seconds / masked:.2f}x |')
    return lines


# Quality tables ----------------------------------------------------------
def train_and_eval(config: str, edit: Callable, seed: int,
                   work_dir: str) -> Dict[str, float]:
    """Run tools/train.py in a fresh process; return the final val metrics."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, config))
    edit(cfg)
    cfg.randomness = dict(seed=seed)
    os.makedirs(work_dir, exist_ok=True)
    cfg_file = osp.join(work_dir, 'config.py')
    cfg.dump(cfg_file)
    cmd = [
        sys.executable,
        osp.join(ROOT, 'tools/train.py'), cfg_file, '--work-dir', work_dir
    ]
    subprocess.run(
        cmd,
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    scalars = sorted(
        osp.join(dp, f) for dp, _, fs in os.walk(work_dir) for f in fs
        if f == 'scalars.json')
    metrics = {}
    with open(scalars[-1]) as f:
        for line in f:
            record = json.loads(line)
            if 'step' in record and not any(k.startswith('loss')
                                            for k in record):
                metrics = record
    return metrics


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
            work_dir = osp.join('/tmp/epsd_benchmark', tag, slug, str(seed))
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


def versions() -> str:
    import mmcv
    import mmdet
    import mmengine
    import mmseg
    return (f'torch {torch.__version__}, mmengine {mmengine.__version__}, '
            f'mmcv {mmcv.__version__}, mmseg {mmseg.__version__}, mmdet '
            f'{mmdet.__version__}, Python {platform.python_version()}')


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--sections',
        nargs='+',
        default=['scoring', 'step', 'seg', 'cub'],
        choices=['scoring', 'step', 'seg', 'cub'])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', default=osp.join(ROOT, 'docs/benchmarks.md'))
    args = parser.parse_args(argv)
    common = dict(
        size=args.size,
        batch=args.batch,
        repeats=args.repeats,
        threads=args.threads)
    sections = []
    if 'scoring' in args.sections:
        sections.append(('Scoring cost: EPSD (prospr) vs SNIP',
                         bench_scoring(common)))
    if 'step' in args.sections:
        sections.append(('Training step cost: masked vs dense, SD vs CE',
                         bench_step(common)))
    if 'seg' in args.sections:
        sections.append(('Demo segmentation quality (DeepLabV3, VOC layout)',
                         bench_quality(SEG_DEMO, ['mIoU', 'aAcc'], args.seeds,
                                       'seg')))
    if 'cub' in args.sections:
        sections.append(
            ('Demo WSOL quality (CAM, CUB layout)',
             bench_quality(CUB_DEMO, [
                 'wsol/top1_cls', 'wsol/top1_loc', 'wsol/gt_known_loc',
                 'wsol/maxboxacc_v2'
             ], args.seeds, 'cub')))
    command = 'python tools/benchmark.py ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    machine = (f'{platform.machine()}, {os.cpu_count()} cores, CPU only, '
               f'{args.threads} torch threads; {versions()}')
    write_report(args.out, sections, command, machine)
    print(f'wrote {args.out}')


def write_report(path: str, sections: List[tuple], command: str,
                 machine: str) -> None:
    """Replace the given sections of the report, keep the others.

    Each section records the command and machine that produced it, so a
    report assembled from several runs still says where every table came
    from (all ratios inside one table come from one run).
    """
    blocks: Dict[str, str] = {}
    if osp.exists(path):
        with open(path) as f:
            for block in f.read().split('\n## ')[1:]:
                title, _, body = block.partition('\n')
                blocks[title.strip()] = body.strip('\n')
    for title, lines in sections:
        blocks[title] = '\n'.join(
            [f'Measured by `{command}` on {machine}.', ''] + lines)
    text = [
        '# Benchmarks', '',
        'Written by `tools/benchmark.py` (after `make setup`, '
        '`python tools/make_demo_data.py voc` and `... cub`). Absolute '
        'times depend on the machine; compare the ratios within a table.', ''
    ]
    for title, body in blocks.items():
        text += [f'## {title}', '', body, '']
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join(text))


if __name__ == '__main__':
    main()
