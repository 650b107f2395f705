"""Structured pruning: FLOPs, CPU latency and training step, slim vs dense.

For the demo DeepLabV3 and the real-size DeepLabV3 R50-D8, each at several
channel sparsities: the backbone's channels are removed with
:func:`epsd_mm.pruning.slimming.slim_channels` (random scores, layer-wise
selection, so every channel group keeps the same fraction: the latency
depends on the architecture, not on which channels were kept), the heads
adapt their input channels. Measured per model in one fresh process, the
variants round-robin so load drift hits all alike: FLOPs and parameters
(``mmengine.analysis``), inference latency at batch 1 in PyTorch eager and
in onnxruntime (``torch.onnx.export``, its output checked against
PyTorch's), and one training step (forward, backward, SGD).
"""
import copy
import os.path as osp
import statistics
import tempfile
import time
from typing import Callable, Dict, List

import torch

from .common import SEG_DEMO, in_fresh_process, plain_segmentor

SECTION = 'structured'

#: Model name -> config; the R50 one is the real VOC model.
CONFIGS = {
    'demo DeepLabV3 (ResNetV1c-18, width 16)': SEG_DEMO,
    'DeepLabV3 R50-D8': 'configs/epsd_deeplab_voc.py',
}
NUM_CLASSES = 21


def add_arguments(parser) -> None:
    group = parser.add_argument_group('structured')
    group.add_argument(
        '--channel-sparsities',
        nargs='+',
        type=float,
        default=[0.3, 0.5, 0.7],
        help='fractions of backbone channels removed')
    group.add_argument(
        '--latency-size',
        type=int,
        default=512,
        help='input size of the inference latency (batch 1)')
    group.add_argument(
        '--structured-models',
        nargs='+',
        choices=['demo', 'r50'],
        default=['demo', 'r50'])


def seg_forward(model, inputs):
    """Traced forward reaching the decode and the auxiliary head."""
    feats = model.extract_feat(inputs)
    heads = [model.decode_head]
    if model.with_auxiliary_head:
        aux = model.auxiliary_head
        heads += list(aux) if isinstance(aux, torch.nn.ModuleList) else [aux]
    return [head(feats) for head in heads]


def slim_copy(model, sparsity: float, seed: int = 0):
    """A copy of ``model`` with a fraction ``sparsity`` of every backbone
    channel group removed (random channels)."""
    from epsd_mm.pruning import (ChannelGraph, compute_channel_scores,
                                 select_channels, slim_channels)
    slim = copy.deepcopy(model)
    graph = ChannelGraph(slim, torch.randn(1, 3, 64, 64), seg_forward)
    scores = compute_channel_scores(
        graph,
        criterion='random',
        generator=torch.Generator().manual_seed(seed))
    slim_channels(graph, select_channels(scores, sparsity, 'layerwise'))
    return slim


def complexity(model, image: torch.Tensor) -> Dict[str, float]:
    """FLOPs (total, backbone, decode head) and parameters, by mmengine."""
    from mmengine.analysis import FlopAnalyzer, parameter_count
    analyzer = FlopAnalyzer(model, (image, ))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    by_module = analyzer.by_module()
    params = parameter_count(model)
    return dict(
        flops=analyzer.total(),
        backbone_flops=by_module['backbone'],
        params=params[''],
        backbone_params=params['backbone'])


def round_robin(fns: Dict[str, Callable[[], object]],
                repeats: int) -> Dict[str, float]:
    """Median wall time per function, timed in turns after a warm-up."""
    for fn in fns.values():
        fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def onnx_runner(model, image: torch.Tensor, path: str, threads: int):
    """Export ``model`` to ONNX and return (run function, max |ORT - torch|
    relative to max |torch|)."""
    import onnxruntime as ort
    torch.onnx.export(
        model, (image, ), path, external_data=False, verbose=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        path, options, providers=['CPUExecutionProvider'])
    feed = {session.get_inputs()[0].name: image.numpy()}
    with torch.no_grad():
        expected = model(image)
    got = torch.from_numpy(session.run(None, feed)[0])
    error = float((got - expected).abs().max() / expected.abs().max())
    return (lambda: session.run(None, feed)), error


def train_step_fn(model, size: int, batch: int):
    """One training step (forward loss, backward, SGD) on random data."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, 3, size, size, generator=gen)
    samples = []
    for _ in range(batch):
        sample = SegDataSample(
            metainfo=dict(
                img_shape=(size, size),
                pad_shape=(size, size),
                ori_shape=(size, size)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, NUM_CLASSES, (1, size, size), generator=gen))
        samples.append(sample)
    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        loss, _ = model.parse_losses(model(inputs, samples, mode='loss'))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def _model_worker(config: str, args: dict) -> Dict[str, dict]:
    torch.set_num_threads(args['threads'])
    import logging

    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    torch.manual_seed(0)
    dense = plain_segmentor(config)
    variants = {'dense': dense}
    for sparsity in args['sparsities']:
        variants[f'{sparsity:.0%}'] = slim_copy(dense, sparsity)
    image = torch.randn(1, 3, args['latency_size'], args['latency_size'])
    results = {name: {} for name in variants}
    for name, model in variants.items():
        model.eval()
        results[name].update(complexity(model, image))

    def eager(model):
        def run():
            with torch.no_grad():
                model(image)
        return run

    for name, seconds in round_robin(
        {name: eager(m)
         for name, m in variants.items()}, args['latency_repeats']).items():
        results[name]['eager'] = seconds
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in variants.items():
            run, error = onnx_runner(model, image,
                                     osp.join(tmp, f'{len(sessions)}.onnx'),
                                     args['threads'])
            sessions[name] = run
            results[name]['ort_error'] = error
        for name, seconds in round_robin(sessions,
                                         args['latency_repeats']).items():
            results[name]['ort'] = seconds
    del sessions
    steps = {
        name: train_step_fn(model, args['size'], args['batch'])
        for name, model in variants.items()
    }
    for name, seconds in round_robin(steps, args['repeats']).items():
        results[name]['step'] = seconds
    return results


def chosen_configs(models: List[str]) -> Dict[str, str]:
    """The entries of :data:`CONFIGS` picked by ``--*-models`` names
    (``demo``, ``r50``)."""
    return {
        name: config
        for name, config in CONFIGS.items()
        if ('r50' if 'R50' in name else 'demo') in models
    }


def bench_structured(args: dict) -> List[tuple]:
    chosen = chosen_configs(args['models'])
    measured = {}
    for name, config in chosen.items():
        measured[name] = in_fresh_process(_model_worker, config, args)
        print(f'[structured] {name}: {measured[name]}', flush=True)

    size = args['latency_size']
    latency = [
        f'Backbone channels removed with `slim_channels` (torch-pruning '
        'surgery) at the given fraction of every channel group (random '
        'channels, layer-wise: the architecture, not the choice of channels, '
        'sets the speed); the heads are outside the scope and only adapt '
        f'their input channels. Inference at {size}x{size}, batch 1, '
        '`mode=\'tensor\'` (decode head only), median of '
        f'{args["latency_repeats"]} round-robin runs after a warm-up; ORT = '
        'onnxruntime on the `torch.onnx.export` graph (its output matches '
        'PyTorch to the relative error shown). FLOPs and params by '
        '`mmengine.analysis` (`FlopAnalyzer` counts a multiply-add as one '
        'FLOP); "heads" is the share of the FLOPs outside the backbone, '
        'which channel pruning of the backbone only thins through the heads\' '
        'input channels. Goal: speed-up >= 0.8 x FLOP reduction.', '',
        '| model | channels removed | params (M) | GFLOPs | heads | FLOP '
        'reduction | eager ms | eager speed-up | ORT ms | ORT speed-up | '
        'speed-up / FLOP red. (eager, ORT) | ORT rel. error |',
        '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | '
        '---: | ---: | ---: |'
    ]
    step = [
        'Same slim networks; one training step (forward with both heads and '
        'their losses, backward, SGD momentum step) on random '
        f'{args["size"]}x{args["size"]} images, batch {args["batch"]}, median '
        f'of {args["repeats"]} round-robin repeats.', '',
        '| model | channels removed | step (s) | speed-up vs dense | FLOP '
        'reduction (inference) |', '| --- | ---: | ---: | ---: | ---: |'
    ]
    for name, results in measured.items():
        dense = results['dense']
        for variant, r in results.items():
            reduction = dense['flops'] / r['flops']
            eager_up = dense['eager'] / r['eager']
            ort_up = dense['ort'] / r['ort']
            heads = 1 - r['backbone_flops'] / r['flops']
            latency.append(
                f'| {name} | {variant} | {r["params"] / 1e6:.2f} | '
                f'{r["flops"] / 1e9:.1f} | {heads:.0%} | {reduction:.2f}x | '
                f'{r["eager"] * 1e3:.0f} | {eager_up:.2f}x | '
                f'{r["ort"] * 1e3:.0f} | {ort_up:.2f}x | '
                f'{eager_up / reduction:.2f}, {ort_up / reduction:.2f} | '
                f'{r["ort_error"]:.1e} |')
            step.append(f'| {name} | {variant} | {r["step"]:.3f} | '
                        f'{dense["step"] / r["step"]:.2f}x | '
                        f'{reduction:.2f}x |')
    return [('Structured pruning: inference speed-up vs FLOP reduction',
             latency),
            ('Structured pruning: training step, slim vs dense', step)]


def run(args) -> list:
    return bench_structured(
        dict(
            models=args.structured_models,
            sparsities=args.channel_sparsities,
            latency_size=args.latency_size,
            latency_repeats=args.latency_repeats,
            size=args.size,
            batch=args.batch,
            repeats=args.repeats,
            threads=args.threads))
