"""mIoU of every deliverable, measured on the file a user ships.

For the demo DeepLabV3 (issue 19, item 4): dense, backbone-only and
whole-model structured EPSD at each ``--channel-sparsities``, trained with
the demo schedule for each of ``--seeds`` (``tools/train.py``, cached as the
other quality sections), then exported as a user would
(``tools/deploy/export.py --int8``: ``model.onnx`` and ``model_int8.onnx``)
and both files evaluated with ``tools/deploy/test_onnx.py`` on the
``deploy_config.py`` export wrote. The training's own last validation
(PyTorch) is reported beside them as the check that the fp32 file predicts
as the checkpoint does.
"""
import json
import os
import os.path as osp
import statistics
from typing import Callable, Dict, List, Optional, Sequence

from mmengine.config import Config

from .common import (ROOT, Ledger, plan_runs, run_config, run_tool,
                     section_ledger, shorten_schedule, train_all,
                     train_cached)

SECTION = 'deliverables_quality'
CONFIG = 'configs/demo/epsd_channel_deeplab_voc_demo.py'
#: Scopes of the whole-model family (those of
#: configs/demo/epsd_channel_full_deeplab_voc_demo.py).
WHOLE = ('backbone', 'decode_head', 'auxiliary_head')
#: Goal of issue 19: int8 costs at most this many mIoU points against the
#: same slim fp32 model.
INT8_GOAL = 1.0
METRIC = 'mIoU'


#: Slim family -> channel-pruning scopes (None: the config's, backbone).
FAMILIES = {'whole-model': WHOLE, 'backbone-only': None}


def add_arguments(parser) -> None:
    group = parser.add_argument_group('deliverables_quality')
    group.add_argument(
        '--quality-families',
        nargs='+',
        choices=list(FAMILIES),
        default=list(FAMILIES),
        help='slim families trained and reported (with dense)')


def family(sparsities: Sequence[float],
           families: Sequence[str] = tuple(FAMILIES)) -> Dict[str, Callable]:
    """Deliverable name -> edit of the backbone-only channel demo config."""

    def dense(cfg) -> None:
        cfg.default_hooks.pop('pruning')

    def slim(sparsity: float, scopes: Optional[tuple]) -> Callable:

        def edit(cfg) -> None:
            cfg.default_hooks.pruning.sparsity = sparsity
            if scopes is not None:
                cfg.default_hooks.pruning.scopes = scopes

        return edit

    edits = {'dense': dense}
    for name in families:
        for sparsity in sparsities:
            scopes = FAMILIES[name]
            edits[f'{name} slim {sparsity:.0%}'] = slim(sparsity, scopes)
    return edits


def _tool(args: List[str], log_file: str, threads: int) -> None:
    if run_tool(args, log_file, threads):
        with open(log_file) as f:
            tail = f.readlines()[-20:]
        raise RuntimeError(f'{args[0]} failed ({log_file}):\n' +
                           ''.join(tail))


def _test_metrics(work_dir: str) -> Dict[str, float]:
    """The metrics MMEngine's LoggerHook dumped for the newest test run in
    ``work_dir`` (``<timestamp>/<timestamp>.json``)."""
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, f'{d}.json')))
    if not runs:
        raise RuntimeError(f'{work_dir}: the test run logged no metrics')
    with open(osp.join(work_dir, runs[-1], f'{runs[-1]}.json')) as f:
        record = json.loads(f.readlines()[-1])
    return {
        k: v
        for k, v in record.items() if k not in ('step', 'time', 'data_time')
    }


def evaluate_deliverables(work_dir: str, threads: int) -> Dict[str, dict]:
    """Export a run's last checkpoint with ``--int8`` and evaluate both ONNX
    files with ``test_onnx.py``.

    Returns:
        dict: ``{'fp32': metrics, 'int8': metrics}``.
    """
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    out_dir = osp.join(work_dir, 'deploy')
    _tool([
        'tools/deploy/export.py',
        osp.join(work_dir, 'config.py'), checkpoint, '--out-dir', out_dir,
        '--int8', '--force'
    ], osp.join(work_dir, 'export.log'), threads)
    result = {}
    for precision, name in (('fp32', 'model.onnx'),
                            ('int8', 'model_int8.onnx')):
        test_dir = osp.join(work_dir, f'test_onnx_{precision}')
        _tool([
            'tools/deploy/test_onnx.py',
            osp.join(out_dir, 'deploy_config.py'),
            osp.join(out_dir, name), '--threads',
            str(threads), '--work-dir', test_dir
        ], osp.join(work_dir, f'test_onnx_{precision}.log'), threads)
        result[precision] = _test_metrics(test_dir)
    return result


def deliverable_metrics(cfg: Config, seed: int, work_dir: str, threads: int,
                        ledger: Ledger) -> Dict[str, dict]:
    """The fp32 and int8 ONNX metrics of a trained run: from the ledger,
    else :func:`evaluate_deliverables` (recorded in the ledger). A run
    whose outcome came from the ledger has no checkpoint on this machine:
    it is trained again first."""
    _, digest = run_config(cfg, seed, work_dir)
    onnx = (ledger.get(digest) or {}).get('onnx')
    if onnx is not None:
        return onnx
    if not osp.exists(osp.join(work_dir, 'last_checkpoint')):
        train_cached(cfg, seed, work_dir, threads)
    onnx = evaluate_deliverables(work_dir, threads)
    ledger.record(digest, onnx=onnx)
    return onnx


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return '—'
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):.2f} ± {std:.2f}'


def bench_deliverables_quality(args) -> List[str]:
    seeds, sparsities = args.seeds, args.channel_sparsities
    base = Config.fromfile(osp.join(ROOT, CONFIG))
    shorten_schedule(base, args.quality_max_iters)
    edits = family(sparsities, args.quality_families)
    planned = plan_runs(base, edits, seeds, SECTION)
    ledger = section_ledger(args, SECTION)
    outcomes = train_all(planned, args.jobs, args.threads, SECTION, ledger)
    per_run = max(1, args.threads // args.jobs)
    rows = {name: [] for name in edits}
    for (name, cfg, seed, work_dir), outcome in zip(planned, outcomes):
        if outcome.collapsed:
            print(f'[{SECTION}] {name}: collapsed, no deliverable',
                  flush=True)
            continue
        onnx = deliverable_metrics(cfg, seed, work_dir, per_run, ledger)
        print(f'[{SECTION}] {name}: PyTorch {outcome.metrics[METRIC]:.2f}, '
              f'fp32 ORT {onnx["fp32"][METRIC]:.2f}, int8 ORT '
              f'{onnx["int8"][METRIC]:.2f}', flush=True)
        rows[name.rsplit(' seed ', 1)[0]].append(
            dict(pytorch=outcome.metrics, **onnx))
    schedule = (f'{args.quality_max_iters} iterations'
                if args.quality_max_iters is not None else
                "the config's schedule")
    whole = (f'in the whole model (scopes {WHOLE}, as '
             '`configs/demo/epsd_channel_full_deeplab_voc_demo.py`)')
    where = ' or '.join(
        {'whole-model': whole, 'backbone-only': 'in the backbone only'}[f]
        for f in args.quality_families)
    lines = [
        f'The demo DeepLabV3 of `{CONFIG}` ({schedule}), trained with '
        'structured EPSD (ProsPr on the SD loss, global selection, 5% floor '
        f'per channel group) at each channel sparsity, {where}; dense: '
        f'the same config without pruning. Seeds {list(seeds)}; mean ± std '
        'over the seeds that trained. Each run\'s last checkpoint exported '
        'with `tools/deploy/export.py CONFIG CKPT --out-dir DIR --int8` '
        '(int8: static QDQ, per-channel, calibrated on the val set) and '
        'both files evaluated with `tools/deploy/test_onnx.py '
        'DIR/deploy_config.py DIR/model[_int8].onnx`; PyTorch: the '
        'training\'s last validation (the same images). The demo val set '
        'has 4 images, so one image moves mIoU by points.', '',
        f'| deliverable | seeds trained | {METRIC} PyTorch | {METRIC} fp32 '
        f'ORT | {METRIC} int8 ORT | int8 − fp32 ({METRIC}) | aAcc fp32 ORT '
        '| aAcc int8 ORT |', '| --- |' + ' ---: |' * 7
    ]
    deltas = {}
    for name, runs in rows.items():
        fp32 = [r['fp32'][METRIC] for r in runs]
        int8 = [r['int8'][METRIC] for r in runs]
        deltas[name] = [b - a for a, b in zip(fp32, int8)]
        lines.append(
            f'| {name} | {len(runs)} of {len(seeds)} | ' + ' | '.join([
                _mean_std([r['pytorch'][METRIC] for r in runs]),
                _mean_std(fp32),
                _mean_std(int8),
                _mean_std(deltas[name]),
                _mean_std([r['fp32']['aAcc'] for r in runs]),
                _mean_std([r['int8']['aAcc'] for r in runs])
            ]) + ' |')
    means = {
        name: statistics.mean(d)
        for name, d in deltas.items() if d
    }
    worst = min(means, key=means.get)
    met = all(v >= -INT8_GOAL for v in means.values())
    lines += [
        '', f'**Goal** (issue 19): int8 costs <= {INT8_GOAL:g} mIoU point '
        'against the same fp32 model: '
        f'**{"met" if met else "not met"}** (mean int8 − fp32 per '
        f'deliverable; the worst: {means[worst]:+.2f} for {worst}).'
    ]
    return lines


def run(args) -> list:
    return [('Deliverables: demo mIoU of the shipped files, fp32 and int8',
             bench_deliverables_quality(args))]
