"""Export: file sizes of the deployed demo model and its CPU latency, dense
vs folded at 50/80/90/95% backbone sparsity (eager PyTorch and
onnxruntime)."""
import copy
import os
import os.path as osp
import statistics
import time
from functools import partial
from typing import Callable, Dict, List

import torch

from .common import ROOT, SEG_DEMO, WORK_ROOT

SECTION = 'export'


def add_arguments(parser) -> None:
    parser.add_argument(
        '--export-sparsities',
        nargs='+',
        type=float,
        default=[0.5, 0.8, 0.9, 0.95],
        help='backbone sparsities of the export section')


def _demo_model(size: int):
    """The deployed (plain) demo DeepLabV3 and an input of ``size``."""
    from mmengine.config import Config

    from epsd_mm.deploy import build_model, deploy_config
    cfg, _ = deploy_config(Config.fromfile(osp.join(ROOT, SEG_DEMO)))
    return build_model(cfg), torch.randn(1, 3, size, size)


def _prune_and_fold(model, sparsity: float):
    """A folded copy of ``model`` pruned by random masks, and the masks."""
    from epsd_mm.deploy import fold_masks
    from epsd_mm.pruning import (apply_masks, prunable_parameters,
                                 random_scores, remove_masks, select_masks)
    net = copy.deepcopy(model)
    apply_masks(
        net,
        select_masks(
            random_scores(prunable_parameters(net, ('backbone', ))), sparsity))
    folded, masks = fold_masks(net.state_dict())
    remove_masks(net)
    net.load_state_dict(folded)
    return net, folded, masks


def _write(name: str, model, state_dict, masks, inputs, out_dir: str) -> Dict:
    """Folded, sparse and ONNX files of one model; their sizes in bytes."""
    from epsd_mm.deploy import (export_onnx, onnx_max_abs_diff,
                                save_sparse_checkpoint)
    paths = {
        kind: osp.join(out_dir, f'{name}.{kind}')
        for kind in ('pth', 'sparse.pth', 'onnx')
    }
    torch.save(dict(meta={}, state_dict=state_dict), paths['pth'])
    summary = save_sparse_checkpoint(paths['sparse.pth'], state_dict, masks)
    export_onnx(model, inputs, paths['onnx'])
    diff = onnx_max_abs_diff(paths['onnx'], model, inputs)
    if diff > 1e-4:
        raise RuntimeError(f'{name}: onnxruntime differs by {diff:.2e}')
    sizes = {kind: osp.getsize(path) for kind, path in paths.items()}
    sizes['pruned_ratio'] = summary.ratio if summary.num_sparse else None
    sizes['onnx_path'] = paths['onnx']
    return sizes


def _eager(network, inputs) -> Callable[[], object]:

    def run():
        with torch.no_grad():
            return network(inputs)

    return run


def _latencies(runners: Dict[str, Callable[[], object]],
               repeats: int) -> Dict[str, float]:
    """Median seconds per call, timed round-robin so that load drift on
    the machine hits every runner alike."""
    for run in runners.values():
        run()  # warm-up
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_export(size: int, threads: int, sparsities: List[float],
                 repeats: int) -> List[tuple]:
    import onnxruntime as ort

    from epsd_mm.deploy import TensorModeModel
    torch.set_num_threads(threads)
    out_dir = osp.join(WORK_ROOT, 'export')
    os.makedirs(out_dir, exist_ok=True)
    dense, inputs = _demo_model(size)
    models = {'dense': (dense, dense.state_dict(), {})}
    for sparsity in sparsities:
        models[f'{sparsity:.0%}'] = _prune_and_fold(dense, sparsity)
    files = {
        name: _write(name.rstrip('%'), *spec, inputs, out_dir)
        for name, spec in models.items()
    }
    print(f'[export] files: {files}', flush=True)

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Idle onnxruntime threads would spin and slow down the eager runs
    # timed next to them.
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    runners = {}
    for name, (model, _, _) in models.items():
        network = TensorModeModel(model).eval()
        session = ort.InferenceSession(
            files[name]['onnx_path'],
            options,
            providers=['CPUExecutionProvider'])
        feed = {session.get_inputs()[0].name: inputs.numpy()}
        runners[(name, 'eager')] = _eager(network, inputs)
        runners[(name, 'ort')] = partial(session.run, None, feed)
    seconds = _latencies(runners, repeats)
    print(f'[export] latency: {seconds}', flush=True)

    base = files['dense']['pth']
    size_lines = [
        f'Demo DeepLabV3 (ResNetV1c-18, width 16), backbone pruned with '
        'random masks (sizes depend only on the density), then folded. '
        '*folded*: plain checkpoint (`state_dict` + `meta`); *sparse*: '
        'pruned tensors as bitmask + kept float32 values, the rest dense; '
        f'*ONNX*: `mode=\'tensor\'` network at {size}x{size}, one file. '
        'Ratios are to the dense checkpoint; the decode and auxiliary heads '
        'are not pruned and stay dense.', '',
        '| backbone sparsity | folded (KB) | folded vs dense | sparse (KB) | '
        'sparse vs dense | pruned tensors, sparse vs dense | ONNX (KB) | '
        'ONNX vs dense |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: '
        '| ---: |'
    ]
    for name, f in files.items():
        pruned = (f'{f["pruned_ratio"]:.3f}x'
                  if f['pruned_ratio'] is not None else '-')
        size_lines.append(
            f'| {"0% (dense)" if name == "dense" else name} | '
            f'{f["pth"] / 1024:,.0f} | {f["pth"] / base:.3f}x | '
            f'{f["sparse.pth"] / 1024:,.0f} | {f["sparse.pth"] / base:.3f}x | '
            f'{pruned} | {f["onnx"] / 1024:,.0f} | {f["onnx"] / base:.3f}x |')

    eager, ort_dense = seconds[('dense', 'eager')], seconds[('dense', 'ort')]
    latency_lines = [
        f'The same models, batch 1, input {size}x{size}, {threads} threads '
        f'(torch and onnxruntime), median of {repeats} round-robin runs. '
        'Folded weights are dense tensors with zeros: unstructured sparsity '
        'does not make dense kernels faster, so ~1.0x is the expected, '
        'honest result (structured pruning is what removes compute).', '',
        '| model | PyTorch eager (ms) | vs dense | onnxruntime (ms) | '
        'vs dense |', '| --- | ---: | ---: | ---: | ---: |'
    ]
    for name in models:
        e, o = seconds[(name, 'eager')], seconds[(name, 'ort')]
        label = 'dense' if name == 'dense' else f'folded, {name} sparse'
        latency_lines.append(
            f'| {label} | {e * 1e3:.1f} | {e / eager:.2f}x | {o * 1e3:.1f} '
            f'| {o / ort_dense:.2f}x |')
    return [('Export: file sizes at 50-95% backbone sparsity', size_lines),
            ('Export: CPU latency of the folded model', latency_lines)]


def run(args) -> list:
    return bench_export(args.size, args.threads, args.export_sparsities,
                        args.latency_repeats)
