"""Train a model from an MMEngine config (follows mmseg's tools/train.py).

Example:
    python tools/train.py configs/epsd_deeplab_voc.py --work-dir work_dirs/epsd
"""
import argparse
import logging
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

import epsd_mm  # noqa: F401  epsd_mm:: configs; components register lazily
from epsd_mm.datasets.checks import check_datasets
from epsd_mm.datasets.config_datasets import set_data_root
from epsd_mm.engine import SlimCheckpointHook
from epsd_mm.evaluation.config_checks import check_cam_threshold
from epsd_mm.registry import RUNNERS
from epsd_mm.utils import (close_distributed,
                           register_checkpoint_safe_globals,
                           setup_cpu_distributed)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model (EPSD)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        action='store_true',
        default=False,
        help='resume from the latest checkpoint in the work_dir '
        'automatically (masks are restored, never re-scored)')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file, e.g. '
        'default_hooks.pruning.sparsity=0.8')
    parser.add_argument(
        '--data-root',
        help='the data_root of every dataset of the config (train, val and '
        'test); the same as setting each dataset\'s data_root key with '
        '--cfg-options')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torchrun passes LOCAL_RANK through the environment; the argument is
    # kept for launchers that still pass it on the command line.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if args.cfg_options and 'data_root' in args.cfg_options:
        # The config copied its data_root variable into every dataset when
        # it was read; a top-level data_root would reach none of them.
        parser.error(
            '--cfg-options data_root=... does not reach the datasets (the '
            'config copied data_root into each of them when it was read). '
            'Use --data-root DIR, or set each dataset\'s key, e.g. '
            'val_dataloader.dataset.data_root=DIR.')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main() -> None:
    args = parse_args()
    # --resume / load_from read MMEngine checkpoints with torch's
    # weights_only loader (see epsd_mm.utils.checkpoint)
    register_checkpoint_safe_globals()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

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

    if args.data_root is not None:
        set_data_root(cfg, args.data_root)
    # only the data this run reads (not the test set)
    check_datasets(cfg, ('train_dataloader', 'val_dataloader'))
    check_cam_threshold(cfg, ('val_evaluator', ))
    # torchrun on CPU-only machines (gloo): MMEngine would ask for CUDA
    setup_cpu_distributed(cfg)
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    # channel-pruned checkpoints load under any config; unfitting ones stop
    runner.register_hook(SlimCheckpointHook())
    runner.train()
    close_distributed()


if __name__ == '__main__':
    main()
