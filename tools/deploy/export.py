"""Export a pruned checkpoint: folded and sparse checkpoints, deploy config,
optionally ONNX (fp32 and int8).

Writes to ``--out-dir``:

    folded.pth         plain MMEngine checkpoint, masks multiplied in
    deploy_config.py   the network's config without epsd_mm hooks/wrappers
    sparse.pth         pruned tensors as bitmask + kept values
                       (epsd_mm.deploy.load_sparse_checkpoint)
    model.onnx         with --onnx: model(inputs, mode='tensor'), checked
                       against PyTorch with onnxruntime
    model_int8.onnx    with --int8: model.onnx statically quantized by
                       onnxruntime (QDQ, per-channel int8 weights, uint8
                       activations), calibrated on --calib-num images drawn
                       through the config's val (or test) dataloader and the
                       model's data_preprocessor; images whose preprocessed
                       size differs from the graph's fixed input size
                       (--shape) are resized (bilinear) to it

Example:
    python tools/deploy/export.py configs/epsd_deeplab_voc.py \
        work_dirs/epsd/iter_20000.pth --out-dir work_dirs/epsd/deploy --onnx \
        --int8
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import Config, DictAction
from prettytable import PrettyTable

from epsd_mm.deploy import export_pruned_checkpoint
from epsd_mm.utils import register_checkpoint_safe_globals


def positive_int(text: str) -> int:
    """An ``int`` of at least 1 (argparse type)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(
            f'{value} is not a number of images; pass 1 or more')
    return value


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'config', help='the config the checkpoint was '
        'trained with')
    parser.add_argument('checkpoint', help='pruned training checkpoint')
    parser.add_argument(
        '--out-dir', required=True, help='directory to write the files to')
    parser.add_argument(
        '--onnx', action='store_true', help='also export model.onnx')
    parser.add_argument(
        '--int8',
        action='store_true',
        help='also export model_int8.onnx, quantized statically with '
        'onnxruntime (implies --onnx); lists the ops left in fp32')
    parser.add_argument(
        '--calib-num',
        type=positive_int,
        default=32,
        help='with --int8: number of calibration images (default 32)')
    parser.add_argument(
        '--calib-split',
        choices=('val', 'test'),
        default='val',
        help='with --int8: calibrate on the config\'s val_dataloader '
        '(default) or test_dataloader')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='input size of the checks and of the ONNX graph (default: '
        'with --onnx, the size the test pipeline gives when its first '
        "images share one, else the config's crop size or fixed test "
        'Resize)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='overwrite files in an --out-dir that is not empty')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, e.g. the ones the run was '
        'trained with on the command line')
    args = parser.parse_args(argv)
    args.onnx = args.onnx or args.int8
    return args


def size_table(files, source: str, dense_bytes: int) -> str:
    """File, size and ratio to the dense folded checkpoint."""
    table = PrettyTable(['file', 'size (KB)', 'ratio to dense'])
    rows = [('dense network (folded.pth of it)', dense_bytes),
            (source + ' (training)', osp.getsize(source))
            ] + [(osp.basename(path), size)
                 for path, size in files if not path.endswith('.py')]
    for name, size in rows:
        table.add_row(
            [name, f'{size / 1024:,.1f}', f'{size / dense_bytes:.3f}'])
    table.align = 'r'
    table.align['file'] = 'l'
    return table.get_string()


def main() -> None:
    args = parse_args()
    register_checkpoint_safe_globals()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        result = export_pruned_checkpoint(
            cfg,
            args.checkpoint,
            args.out_dir,
            shape=args.shape,
            onnx=args.onnx,
            force=args.force,
            int8=args.int8,
            calib_num=args.calib_num,
            calib_split=args.calib_split)
    except (FileExistsError, FileNotFoundError, ImportError,
            NotADirectoryError, ValueError) as error:
        # bad input, refused before anything is written
        sys.exit(f'export.py: error: {error}')
    for change in result.changes:
        print(f'deploy config: {change}')
    pruning = result.meta
    what = []
    if pruning['channels']:
        kept, total = pruning['channels']['kept'], pruning['channels']['total']
        what.append(f'channel sparsity {1 - kept / total:.4f} ({kept:,} of '
                    f'{total:,} channels in scope kept)')
    if pruning['prunable']:
        what.append(f'sparsity {pruning["sparsity"]:.4f} of '
                    f'{pruning["prunable"]:,} prunable weights in '
                    f'{pruning["masked_tensors"]} tensors')
    stages = ', '.join(f'{hook}: {criterion or "criterion not recorded"}'
                       for hook, criterion in pruning['criteria'].items())
    print(f'{", ".join(what) or "not pruned"} (pruned by '
          f'{stages or "no recorded pruning hook"})')
    print(size_table(result.files, args.checkpoint, result.dense_bytes))
    if result.sparse.num_sparse:
        print(f'pruned tensors: {result.sparse.dense_bytes / 1024:,.1f} KB '
              f'dense -> {result.sparse.sparse_bytes / 1024:,.1f} KB in '
              f'sparse.pth ({result.sparse.ratio:.3f}x)')
    print(f'written to {args.out_dir}')


if __name__ == '__main__':
    main()
