"""Train a model from an MMEngine config (follows mmseg's tools/train.py).

Example:
    python tools/train.py configs/epsd_deeplab_voc.py --work-dir work_dirs/epsd
"""
import argparse
import logging

from mmengine.logging import print_log

import epsd_mm  # noqa: F401  epsd_mm:: configs; components register lazily
from epsd_mm.utils.launch import (add_common_args, load_config,
                                  parse_common_args, run)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model (EPSD)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume',
        action='store_true',
        default=False,
        help='resume from the latest checkpoint in the work_dir '
        'automatically (pruning is restored, never redone)')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    add_common_args(parser)
    return parse_common_args(parser)


def main() -> None:
    args = parse_args()
    cfg = load_config(args)
    if args.amp:
        if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
            print_log(
                'AMP training is already enabled in your config.',
                logger='current',
                level=logging.WARNING)
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.resume = args.resume
    # only the data this run reads (not the test set)
    run(cfg, ('train_dataloader', 'val_dataloader'), lambda r: r.train())


if __name__ == '__main__':
    main()
