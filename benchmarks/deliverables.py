"""The speed table of deliverables: what a user can ship and how fast it is.

For the demo DeepLabV3 and DeepLabV3 R50-D8 (issue 19, item 4), in one
fresh process per model: the dense model, its backbone-only slim copies and
its whole-model slim copies (backbone, decode and auxiliary heads; the class
channels of ``conv_seg`` are kept whole by ``ChannelGraph``) at each channel
sparsity, every one exported with :func:`epsd_mm.deploy.export_onnx` (what
``tools/deploy/export.py --onnx`` ships) and quantized with
:func:`epsd_mm.deploy.quantize_int8` (what ``--int8`` ships), calibrated on
images of the demo VOC val set drawn by
:func:`epsd_mm.deploy.calibration_batches`. Slim copies use random channel
scores with layer-wise selection, as ``structured.slim_copy`` does, so the
architecture, not the choice of channels, sets the speed. Latency: batch 1,
onnxruntime at 1 and at ``--threads`` intra-op threads (inter-op 1), all
files of a thread count timed round-robin so load drift hits all alike; the
dense model's PyTorch eager latency is timed alongside for reference.

Uses ``--latency-size`` and ``--channel-sparsities`` of the ``structured``
section (one option each for both tables).
"""
import copy
import os.path as osp
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .common import ROOT, SEG_DEMO, in_fresh_process, plain_segmentor, timed
from .structured import (CONFIGS, NUM_CLASSES, chosen_configs, complexity,
                         round_robin, seg_forward)

SECTION = 'deliverables'

WHOLE = ('backbone', 'decode_head', 'auxiliary_head')
#: Slim family -> (channel-pruning scopes, whether kept channel counts are
#: rounded to ``--round-to``).
FAMILIES = {
    'backbone': (('backbone', ), False),
    'whole': (WHOLE, False),
    'rounded': (WHOLE, True),
}
#: Goal of issue 19: R50-D8 whole-model 50% slim int8 vs dense fp32 ORT.
SPEED_GOAL = 5.0
#: Goal of issue 19: whole-model slim fp32 speed-up / FLOP reduction.
RATIO_GOAL = 0.8
#: Floor per channel group of the slim copies (one channel, or one block).
MIN_DENSITY = 0.05
DEMO_VOC_ROOT = 'data/voc_demo/VOCdevkit/VOC2012'


def add_arguments(parser) -> None:
    group = parser.add_argument_group('deliverables')
    group.add_argument(
        '--deliverable-models',
        nargs='+',
        choices=['demo', 'r50'],
        default=['demo', 'r50'])
    group.add_argument(
        '--calib-num',
        type=int,
        default=8,
        help='demo VOC val images calibrating each int8 model')
    group.add_argument(
        '--round-to',
        type=int,
        default=16,
        help='channel multiple of the rounded whole-model slim family '
        '(EarlyPruningHook round_to; onnxruntime computes channels in '
        'blocks of 16 on AVX-512)')


def slim_copy(model,
              sparsity: float,
              scopes: Sequence[str],
              seed: int = 0,
              round_to: int = 1):
    """A copy of ``model`` with a fraction ``sparsity`` of every channel
    group inside ``scopes`` removed (random channels, layer-wise, at least
    one block of ``round_to`` channels per group)."""
    from epsd_mm.pruning import (ChannelGraph, compute_channel_scores,
                                 select_channels, slim_channels)
    slim = copy.deepcopy(model)
    graph = ChannelGraph(
        slim, torch.randn(1, 3, 64, 64), seg_forward, scopes=scopes)
    scores = compute_channel_scores(
        graph,
        criterion='random',
        generator=torch.Generator().manual_seed(seed))
    slim_channels(
        graph,
        select_channels(
            scores,
            sparsity,
            'layerwise',
            min_density=MIN_DENSITY,
            round_to=round_to))
    return slim


def calibration_inputs(model, num: int, size: int,
                       tmp: str) -> List[np.ndarray]:
    """``num`` images of the demo VOC val set through its test pipeline and
    ``model``'s data preprocessor, resized to ``size`` (the demo data is
    written into ``tmp`` when ``data/voc_demo`` is absent)."""
    from mmengine.config import Config

    from epsd_mm.datasets import write_voc_demo
    from epsd_mm.deploy import calibration_batches
    cfg = Config.fromfile(osp.join(ROOT, SEG_DEMO))
    data_root = osp.join(ROOT, DEMO_VOC_ROOT)
    if not osp.isdir(data_root):
        data_root = write_voc_demo(osp.join(tmp, 'voc_demo'))
    cfg.val_dataloader.dataset.data_root = data_root
    return calibration_batches(
        cfg, model, num=num, split='val', shape=(size, size), log=print)


def ort_session(path: str, threads: int):
    """An onnxruntime CPU session with ``threads`` intra-op threads.

    Its worker threads block instead of spinning when idle: timed
    round-robin, the idle workers of the other sessions otherwise spin on
    the cores the running one needs (measured on 2 loaded cores, demo model
    at 256x256, 2 threads: 28 ms alone, 71 ms among 4 sessions with
    spinning; 14 ms both ways without).
    """
    from epsd_mm.deploy import ort_session as deploy_session
    return deploy_session(path, threads, spinning=False)


def export_checked(model, image: torch.Tensor, path: str) -> float:
    """Export ``model`` with ``export_onnx``; its ORT vs PyTorch max abs
    difference relative to the largest PyTorch output. Raises when the file
    no longer outputs the class channels."""
    from epsd_mm.deploy import export_onnx, onnx_max_abs_diff
    export_onnx(model, image, path)
    session = ort_session(path, 0)
    out = session.run(None, {session.get_inputs()[0].name: image.numpy()})[0]
    if out.shape[1] != NUM_CLASSES:
        raise RuntimeError(
            f'{path} outputs {out.shape[1]} channels, not the {NUM_CLASSES} '
            'classes: channel pruning cut the class channels of conv_seg; '
            'check ChannelGraph.output_groups for the scopes used')
    with torch.no_grad():
        largest = float(model(image, mode='tensor').abs().max())
    return onnx_max_abs_diff(path, model, image) / largest


def build_variants(config: str, sparsities: Sequence[float],
                   round_to: int) -> Dict:
    """Name -> model: dense, then the slim copies of every family of
    :data:`FAMILIES` at every sparsity."""
    torch.manual_seed(0)
    dense = plain_segmentor(config)
    variants = {'dense': dense}
    for family, (scopes, rounded) in FAMILIES.items():
        for sparsity in sparsities:
            variants[f'{family} {sparsity:.0%}'] = slim_copy(
                dense, sparsity, scopes, round_to=round_to if rounded else 1)
    for model in variants.values():
        model.eval()
    return variants


def _model_worker(config: str, args: dict) -> Dict[str, dict]:
    import logging

    from mmengine.logging import MMLogger

    from epsd_mm.deploy import quantize_int8
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    torch.set_num_threads(args['threads'])
    variants = build_variants(config, args['sparsities'], args['round_to'])
    size = args['latency_size']
    image = torch.randn(1, 3, size, size)
    rows: Dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        batches = calibration_inputs(variants['dense'], args['calib_num'],
                                     size, tmp)
        files = {}
        for i, (name, model) in enumerate(variants.items()):
            stats = complexity(model, image)
            fp32 = osp.join(tmp, f'{i}.onnx')
            int8 = osp.join(tmp, f'{i}_int8.onnx')
            error = export_checked(model, image, fp32)
            report = quantize_int8(fp32, int8, batches)
            rows[f'{name} fp32'] = dict(
                stats, mb=osp.getsize(fp32) / 2**20, ort_error=error)
            rows[f'{name} int8'] = dict(
                stats,
                mb=osp.getsize(int8) / 2**20,
                agreement=report.argmax_agreement)
            files[f'{name} fp32'], files[f'{name} int8'] = fp32, int8
            print(f'[deliverables] exported {name}: {report.summary()}',
                  flush=True)
        rows['dense fp32 eager'] = dict(rows['dense fp32'], mb=None,
                                   ort_error=None)
        for threads in args['thread_counts']:
            torch.set_num_threads(threads)
            dense = variants['dense']

            def eager():
                with torch.no_grad():
                    dense(image, mode='tensor')

            rows['dense fp32 eager'][threads] = timed(eager,
                                                 args['latency_repeats'])
            sessions = {name: ort_session(path, threads)
                        for name, path in files.items()}
            feeds = {name: {s.get_inputs()[0].name: image.numpy()}
                     for name, s in sessions.items()}
            runs = {name: (lambda s=s, f=feeds[name]: s.run(None, f))
                    for name, s in sessions.items()}
            for name, seconds in round_robin(
                    runs, args['latency_repeats']).items():
                rows[name][threads] = seconds
            del sessions, runs
    return rows


def label(variant: str, round_to: int) -> str:
    """The table's name of a row key ('whole 50% int8' -> 'whole-model slim
    50% int8 ORT')."""
    family, _, rest = variant.partition(' ')
    name = {
        'dense': 'dense',
        'backbone': 'backbone-only slim',
        'whole': 'whole-model slim',
        'rounded': f'whole-model slim (round_to={round_to})'
    }[family]
    return f'{name} {rest}' + ('' if rest.endswith('eager') else ' ORT')


def _cell(value: Optional[float], fmt: str) -> str:
    return '—' if value is None else format(value, fmt)


def goal_lines(measured: Dict[str, Dict[str, dict]], threads: int,
               sparsities: Sequence[float], round_to: int) -> List[str]:
    """The goals of issue 19 with met / not met read from the table."""
    r50 = next((rows for name, rows in measured.items() if 'R50' in name),
               None)
    key = 'whole 50% int8'
    if r50 is None or key not in r50:
        speed = ('not measured (needs `--deliverable-models r50` and 0.5 in '
                 '`--channel-sparsities`)')
    else:
        ups = {t: r50['dense fp32'][t] / r50[key][t] for t in r50[key]
               if isinstance(t, int)}
        status = 'met' if ups[threads] >= SPEED_GOAL else 'not met'
        speed = (f'**{status}**: ' + ', '.join(
            f'{up:.2f}x at {t} thread{"s" * (t > 1)}'
            for t, up in sorted(ups.items())))
    ratio_lines = []
    for family, what in (('whole', 'whole-model slim'),
                         ('rounded', f'with round_to={round_to}')):
        ratios = {}
        for name, rows in measured.items():
            dense = rows['dense fp32']
            ratios[name] = min(
                (dense[threads] / r[threads]) / (dense['flops'] / r['flops'])
                for variant, r in rows.items()
                if variant.startswith(f'{family} ')
                and variant.endswith('fp32'))
        if len(ratios) < len(CONFIGS):
            status = 'not measured on both models (needs ' \
                '`--deliverable-models demo r50`); '
        else:
            met = all(v >= RATIO_GOAL for v in ratios.values())
            status = f'**{"met" if met else "not met"}**: '
        ratio_lines.append(f'{what}: {status}lowest ' + ', '.join(
            f'{v:.2f} ({name})' for name, v in ratios.items()))
    ratio = '; '.join(ratio_lines)
    return [
        '', f'**Goals** (issue 19, at {threads} threads): R50-D8 512x512 '
        'whole-model 50% slim int8 >= 5x faster than dense fp32 ORT; '
        'whole-model slim fp32 speed-up / FLOP reduction >= 0.8 on both '
        'models; int8 costs <= 1 mIoU point against the same slim fp32 '
        'model on the demo task.', '',
        f'- R50-D8 whole-model 50% slim int8 >= {SPEED_GOAL:g}x: {speed}.',
        f'- whole-model slim fp32 speed-up / FLOP reduction >= '
        f'{RATIO_GOAL:g} (over {", ".join(f"{s:.0%}" for s in sparsities)}): '
        f'{ratio}.',
        '- int8 <= 1 mIoU point below slim fp32 on the demo task: '
        'measured on trained models in "Deliverables: demo mIoU of the '
        'shipped files, fp32 and int8" (`--sections deliverables_quality`); '
        'the argmax agreement above is int8 vs fp32 on the calibration '
        'images.'
    ]


def table(measured: Dict[str, Dict[str, dict]],
          args: dict) -> Tuple[str, List[str]]:
    threads = args['thread_counts']
    size = args['latency_size']
    lines = [
        f'What `tools/deploy/export.py --onnx [--int8]` ships, at '
        f'{size}x{size}, batch 1. Slim: a fraction of every channel group '
        'removed with `slim_channels` (random channels, layer-wise, at '
        'least one channel per group), either in the backbone only or in '
        'the whole model (backbone, decode and auxiliary heads; the class '
        'channels of `conv_seg` are never cut); the round_to rows keep a '
        f'multiple of {args["round_to"]} channels per group (`select_channels'
        f'(..., round_to={args["round_to"]})`, as `EarlyPruningHook(round_to'
        f'={args["round_to"]})` does), so their FLOP reduction differs. '
        'fp32 = `epsd_mm.deploy.export_onnx` (decode head output, '
        "`mode='tensor'`), int8 = `epsd_mm.deploy.quantize_int8` (static "
        f'QDQ, per-channel) calibrated on {args["calib_num"]} demo VOC val '
        'images. Latency: onnxruntime CPU, `intra_op_num_threads` = 1 and '
        f'{threads[-1]}, `inter_op_num_threads` = 1, idle workers do not '
        'spin (`session.intra_op.allow_spinning` = 0: the other sessions\' '
        'spinning would slow the timed one), median of '
        f'{args["latency_repeats"]} round-robin runs of all files after a '
        'warm-up (the eager row: PyTorch, no_grad, same thread counts). '
        'Speed-up is against dense fp32 ORT at the same thread count. GFLOPs '
        'and params by `mmengine.analysis` (a multiply-add is one FLOP). '
        'ORT rel. error: max |ORT - PyTorch| / max |PyTorch| of the fp32 '
        'file; int8 argmax: share of output positions whose class agrees '
        'with the fp32 file on the calibration images.', '',
        '| model | deliverable | params (M) | GFLOPs | file (MB) | ' +
        ' | '.join(f'ORT ms {t}T' for t in threads) + ' | ' +
        ' | '.join(f'speed-up {t}T' for t in threads) +
        f' | FLOP reduction | speed-up / FLOP red. ({threads[-1]}T) | '
        'ORT rel. error | int8 argmax agreement |',
        '| --- | --- |' + ' ---: |' * (7 + 2 * len(threads))
    ]
    for name, rows in measured.items():
        dense = rows['dense fp32']
        for variant, r in rows.items():
            reduction = dense['flops'] / r['flops']
            ups = [dense[t] / r[t] for t in threads]
            ratio = (f'{ups[-1] / reduction:.2f}'
                     if variant.endswith('fp32') else '—')
            lines.append(
                f'| {name} | {label(variant, args["round_to"])} | '
                f'{r["params"] / 1e6:.2f} | {r["flops"] / 1e9:.2f} | {_cell(r.get("mb"), ".1f")} | ' +
                ' | '.join(f'{r[t] * 1e3:.1f}' for t in threads) + ' | ' +
                ' | '.join(f'{up:.2f}x' for up in ups) +
                f' | {reduction:.2f}x | {ratio} | '
                f'{_cell(r.get("ort_error"), ".1e")} | '
                f'{_cell(r.get("agreement"), ".2%")} |')
    lines += goal_lines(measured, threads[-1], args['sparsities'],
                        args['round_to'])
    return 'Deliverables: speed of what can be shipped', lines


def _ordered(rows: Dict[str, dict]) -> Dict[str, dict]:
    """Dense eager, dense fp32/int8, then the slim rows as built."""
    first = ['dense fp32 eager', 'dense fp32', 'dense int8']
    return {
        **{k: rows[k]
           for k in first},
        **{k: v
           for k, v in rows.items() if k not in first}
    }


def bench_deliverables(args: dict) -> List[tuple]:
    chosen = chosen_configs(args['models'])
    measured = {}
    for name, config in chosen.items():
        rows = in_fresh_process(_model_worker, config, args)
        measured[name] = _ordered(rows)
        print(f'[deliverables] {name}: {measured[name]}', flush=True)
    return [table(measured, args)]


def run(args) -> list:
    if args.calib_num < 1:
        raise ValueError(f'--calib-num must be >= 1, got {args.calib_num}')
    return bench_deliverables(
        dict(
            models=args.deliverable_models,
            sparsities=args.channel_sparsities,
            latency_size=args.latency_size,
            latency_repeats=args.latency_repeats,
            calib_num=args.calib_num,
            round_to=args.round_to,
            threads=args.threads,
            thread_counts=sorted({1, args.threads})))
