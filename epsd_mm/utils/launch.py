"""What ``tools/train.py`` and ``tools/test.py`` share: arguments, config
set-up, checks before anything is built, and the run itself."""
import argparse
import logging
import os
import os.path as osp
from typing import Callable, Optional, Sequence

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from .config_cache import cache_config_handling


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The arguments both tools take (mmseg's names)."""
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file, e.g. '
        'default_hooks.pruning.sparsity=0.8')
    parser.add_argument(
        '--data-root',
        help="the data_root of every dataset of the config (train, val and "
        "test); the same as setting each dataset's data_root key with "
        '--cfg-options')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torchrun passes LOCAL_RANK through the environment; the argument is
    # kept for launchers that still pass it on the command line.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_common_args(parser: argparse.ArgumentParser,
                      argv: Sequence[str] = None) -> argparse.Namespace:
    """Parse, refusing a top-level ``data_root`` override (it would reach no
    dataset) and exporting ``LOCAL_RANK``."""
    args = parser.parse_args(argv)
    if args.cfg_options and 'data_root' in args.cfg_options:
        # The config copied its data_root variable into every dataset when
        # it was read; a top-level data_root would reach none of them.
        parser.error(
            '--cfg-options data_root=... does not reach the datasets (the '
            'config copied data_root into each of them when it was read). '
            "Use --data-root DIR, or set each dataset's key, e.g. "
            'val_dataloader.dataset.data_root=DIR.')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with the command line applied
    (launcher, ``--cfg-options``, ``--work-dir``, ``--data-root``)."""
    from epsd_mm.datasets.config_datasets import set_data_root
    cache_config_handling()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.data_root is not None:
        set_data_root(cfg, args.data_root)
    return cfg


def run(cfg: Config, dataloaders: Sequence[str],
        action: Callable[[Runner], None]) -> None:
    """Check the data the run reads, build the Runner and run ``action``.

    Every run gets a :class:`~epsd_mm.engine.PruningCheckpointHook` unless
    its config has a pruning hook (they derive from it), so pruned
    checkpoints load under any config.

    Args:
        cfg (Config): The config.
        dataloaders (Sequence[str]): The dataloader keys the run reads
            (their datasets are checked first; their evaluators' CAM
            threshold too).
        action (Callable): E.g. ``Runner.train``.
    """
    from epsd_mm.datasets.checks import check_datasets
    from epsd_mm.engine import PruningCheckpointHook
    from epsd_mm.evaluation.config_checks import check_cam_threshold
    from epsd_mm.registry import RUNNERS
    from .checkpoint import register_checkpoint_safe_globals
    from .dist import close_distributed, setup_cpu_distributed

    # resume / load_from read MMEngine checkpoints with torch's weights_only
    # loader (see epsd_mm.utils.checkpoint)
    register_checkpoint_safe_globals()
    set_torch_num_threads(cfg)
    check_checkpoint_to_load(cfg)
    check_datasets(cfg, tuple(dataloaders))
    check_cam_threshold(cfg, tuple(
        key.replace('dataloader', 'evaluator') for key in dataloaders
        if key != 'train_dataloader'))
    # torchrun on CPU-only machines (gloo): MMEngine would ask for CUDA
    setup_cpu_distributed(cfg)
    runner = (Runner.from_cfg(cfg)
              if 'runner_type' not in cfg else RUNNERS.build(cfg))
    if not any(isinstance(h, PruningCheckpointHook) for h in runner.hooks):
        runner.register_hook(PruningCheckpointHook())
    action(runner)
    close_distributed()


def checkpoint_to_load(cfg: Config) -> Optional[str]:
    """The local file the Runner will resume or load from, if any.

    As MMEngine's ``Runner.load_or_resume``: ``cfg.load_from``, or with
    ``cfg.resume`` and no ``load_from`` the file named by the work dir's
    ``last_checkpoint``. URLs and other remote paths give None.

    Args:
        cfg (Config): The run's config.

    Returns:
        str | None: The path, or None when nothing local is loaded.
    """
    path = cfg.get('load_from', None)
    if path is None and cfg.get('resume', False):
        from mmengine.runner import find_latest_checkpoint
        path = find_latest_checkpoint(cfg.work_dir)
    if not path or '://' in str(path):
        return None
    return str(path)


def check_checkpoint_to_load(cfg: Config) -> None:
    """Refuse, before anything is built, a checkpoint the Runner would
    fail to read (missing, truncated, not a torch file).

    Args:
        cfg (Config): The run's config.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: It is truncated or not a torch file.
    """
    from .checkpoint import check_checkpoint_file
    path = checkpoint_to_load(cfg)
    if path is None:
        return
    if cfg.get('resume', False) and cfg.get('load_from', None) is None:
        fix = (f'it is the latest checkpoint of {cfg.work_dir} (named by its '
               'last_checkpoint file), probably cut short when the run '
               'stopped: delete it and write the previous iter_*.pth into '
               'last_checkpoint, or pass --cfg-options load_from=<an earlier '
               'checkpoint> with --resume')
    else:
        fix = ('pass a complete checkpoint written by tools/train.py (an '
               'interrupted copy or download is the usual cause: copy it '
               'again)')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'checkpoint {path} does not exist (cfg.load_from, or the work '
            "dir's last_checkpoint with --resume); pass an existing file")
    check_checkpoint_file(path, fix)


#: Environment variables that ask for a number of intra-op threads.
THREAD_ENV_VARS = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')


def set_torch_num_threads(cfg: Config) -> Optional[int]:
    """Fix torch's intra-op threads at ``cfg.env_cfg.torch_num_threads``.

    The number of threads decides how CPU kernels split their reductions
    (convolutions, BatchNorm statistics, sums), so float results differ
    with it at rounding level, and a long run from random init amplifies
    that: the seeded demo gave mIoU 69.85 on 2 threads and 61.54 on 1. A
    config that promises a number fixes the threads as it fixes the seed
    (``randomness``); the environment (``OMP_NUM_THREADS``) then does not
    change the result, only, on fewer cores, the speed.

    Args:
        cfg (Config): The run's config; nothing happens without the key.

    Returns:
        int | None: The threads set, or None when the config sets none.

    Raises:
        ValueError: The key is not a positive integer.
    """
    import torch
    from mmengine.logging import print_log
    threads = cfg.get('env_cfg', {}).get('torch_num_threads', None)
    if threads is None:
        return None
    if (isinstance(threads, bool) or not isinstance(threads, int)
            or threads < 1):
        raise ValueError(
            f'env_cfg.torch_num_threads={threads!r} is not a positive '
            'integer: set the number of torch intra-op threads (e.g. 2), '
            'or None to use what the environment gives')
    asked = {
        var: os.environ[var]
        for var in THREAD_ENV_VARS
        if os.environ.get(var) not in (None, '', str(threads))
    }
    if asked:
        wanted = ', '.join(f'{k}={v}' for k, v in asked.items())
        print_log(
            f'{wanted} asks for another number of threads, but the config '
            f'fixes torch at {threads} intra-op threads '
            '(env_cfg.torch_num_threads) so that its result does not depend '
            'on the machine; pass --cfg-options '
            'env_cfg.torch_num_threads=None to follow the environment '
            '(results then differ at rounding level and, over a long run, '
            'more)',
            logger='current',
            level=logging.WARNING)
    torch.set_num_threads(threads)
    return threads
