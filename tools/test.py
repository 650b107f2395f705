"""Evaluate a (pruned) checkpoint (follows mmseg's tools/test.py).

The metrics line carries the checkpoint's sparsity next to the task metrics
(mIoU, WSOL accuracies, ...) when the config has an ``EarlyPruningHook``.

Example:
    python tools/test.py configs/epsd_deeplab_voc.py work_dirs/epsd/iter_20000.pth
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
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
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='dump the raw predictions to this pickle file (DumpResults)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file.')
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

    cfg.load_from = args.checkpoint
    if args.out is not None:
        cfg.test_evaluator = cfg.test_evaluator if isinstance(
            cfg.test_evaluator, list) else [cfg.test_evaluator]
        cfg.test_evaluator.append(
            dict(type='DumpResults', out_file_path=args.out))

    if args.data_root is not None:
        set_data_root(cfg, args.data_root)
    # only the data this run reads: no training data needed
    check_datasets(cfg, ('test_dataloader', ))
    check_cam_threshold(cfg, ('test_evaluator', ))
    # torchrun on CPU-only machines (gloo): MMEngine would ask for CUDA
    setup_cpu_distributed(cfg)
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    # channel-pruned checkpoints load under any config; unfitting ones stop
    runner.register_hook(SlimCheckpointHook())
    runner.test()
    close_distributed()


if __name__ == '__main__':
    main()
