"""Compare the pruning of two or more checkpoints: per-layer density, IoU of
the kept sets, collapsed layers, effective params and FLOPs, and a plot.

Weight-pruned checkpoints are compared on their masks, channel-pruned
(slim) ones on the kept channels of each group. Per layer, every checkpoint
is compared with the first; the overall IoU is given for every pair.
Effective params and FLOPs need the model: from ``--config``, else from the
config MMEngine stored in the first checkpoint.

Example:
    python tools/analysis/compare_masks.py work_dirs/epsd/iter_20000.pth \
        work_dirs/task/iter_20000.pth --labels EPSD task --out compare.png
"""
import argparse

from mmengine.config import Config

from epsd_mm.analysis import (compare_masks, format_comparison,
                              load_pruned_checkpoint, plot_densities)
from epsd_mm.utils import register_checkpoint_safe_globals


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'checkpoints',
        nargs='+',
        metavar='CHECKPOINT',
        help='pruned checkpoints (.pth) of one model; the first is the '
        'reference of the per-layer IoU')
    parser.add_argument('--labels',
                        nargs='+',
                        help='their names in the tables and the plot '
                        '(default: the paths)')
    parser.add_argument('--out', help='PNG of the per-layer densities')
    parser.add_argument(
        '--config',
        help='training config, to count effective params and '
        'FLOPs (default: the config stored in the first checkpoint; '
        'without one they are not counted)')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help="input size of the FLOP count (default: the config's crop "
        'size or fixed test Resize)')
    args = parser.parse_args()
    if len(args.checkpoints) < 2:
        parser.error('give at least two checkpoints to compare')
    if args.labels and len(args.labels) != len(args.checkpoints):
        parser.error(f'--labels gives {len(args.labels)} names for '
                     f'{len(args.checkpoints)} checkpoints; give one each')
    return args


def stored_config(checkpoint: dict):
    """The config text MMEngine stores in a checkpoint's meta, or None."""
    text = (checkpoint.get('meta') or {}).get('cfg')
    return Config.fromstring(text, '.py') if text else None


def main() -> None:
    args = parse_args()
    register_checkpoint_safe_globals()
    labels = args.labels or args.checkpoints
    pruned = [
        load_pruned_checkpoint(path, label)
        for path, label in zip(args.checkpoints, labels)
    ]
    cfg = (Config.fromfile(args.config)
           if args.config else stored_config(pruned[0].checkpoint))
    comparison = compare_masks(pruned, cfg,
                               tuple(args.shape) if args.shape else None)
    print(format_comparison(comparison))
    if cfg is None:
        print('effective params and FLOPs: not counted (pass --config, the '
              'config the checkpoints were trained with)')
    else:
        print('(model built from ' + (args.config or 'the config stored in '
                                      f'{args.checkpoints[0]}') + ')')
    if args.out:
        plot_densities(comparison, args.out)
        print(f'density plot written to {args.out}')


if __name__ == '__main__':
    main()
