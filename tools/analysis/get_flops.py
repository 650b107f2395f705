"""Params and FLOPs of a network, dense and effective (pruned weights do no
work), per part and in total.

Counts come from mmengine.analysis (one multiply-accumulate = one FLOP) for
one image through ``model(inputs, mode='tensor')``, i.e. the inference
network (an auxiliary head that only trains shows params but no FLOPs).
A pruned checkpoint's masks define what is pruned; a checkpoint without
masks (e.g. ``folded.pth`` from tools/deploy/export.py) counts its
zero-valued convolution/linear weights as pruned. A channel-pruned (slim)
checkpoint is counted on its slim architecture, after the dense one.

Example:
    python tools/analysis/get_flops.py configs/epsd_deeplab_voc.py \
        work_dirs/epsd/iter_20000.pth --shape 512 512
"""
import argparse

import torch
from mmengine.config import Config, DictAction

from epsd_mm.deploy import (format_complexity_table, input_shape_from_cfg,
                            model_complexity, zero_weight_masks)
from epsd_mm.deploy.checkpoint import (build_masked_model, build_model,
                                       load_checkpoint_dict)
from epsd_mm.pruning import PruningRecord, get_masks
from epsd_mm.utils import register_checkpoint_safe_globals


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument(
        'checkpoint',
        nargs='?',
        help='(pruned) checkpoint; without it the '
        'dense network is counted')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help="input size (default: the config's crop size or fixed test "
        'Resize)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    register_checkpoint_safe_globals()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    shape = tuple(args.shape) if args.shape else input_shape_from_cfg(cfg)
    inputs = torch.zeros(1, 3, *shape)
    slim_spec = None
    if args.checkpoint is None:
        model = build_model(cfg)
        source = 'none (no checkpoint: the dense network)'
    else:
        checkpoint = load_checkpoint_dict(args.checkpoint)
        slim_spec = PruningRecord.from_checkpoint(checkpoint).slim_spec
        model = build_masked_model(cfg, checkpoint['state_dict'],
                                   args.checkpoint, slim_spec)
        source = (f'the masks of {args.checkpoint}' if get_masks(model) else
                  f'{args.checkpoint} has no masks: zero-valued '
                  'conv/linear weights count as pruned')
    if slim_spec is not None:
        dense = build_model(cfg)
        print(f'{type(dense).__name__}, dense architecture (before channel '
              f'pruning), input 1x3x{shape[0]}x{shape[1]}')
        print(format_complexity_table(model_complexity(dense, inputs, {})))
        kept, total = (slim_spec['channels']['kept'],
                       slim_spec['channels']['total'])
        print(f'slim architecture of {args.checkpoint}: {kept:,} of '
              f'{total:,} channels in scope kept')
    masks = get_masks(model) or zero_weight_masks(model)
    rows = model_complexity(model, inputs, masks)
    print(f'{type(model).__name__}, input 1x3x{shape[0]}x{shape[1]}; '
          f'pruned weights: {source}')
    print(format_complexity_table(rows))

if __name__ == '__main__':
    main()
