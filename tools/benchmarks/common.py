"""What the benchmark sections share: demo models, timers, training runs."""
import json
import os
import os.path as osp
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, Optional

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SEG_DEMO = 'configs/demo/epsd_deeplab_voc_demo.py'
CUB_DEMO = 'configs/demo/epsd_cam_cub_demo.py'
SEGFORMER_DEMO = 'configs/demo/epsd_segformer_voc_demo.py'
CLS_DEMO = 'configs/demo/epsd_resnet_cifar_demo.py'
WORK_ROOT = '/tmp/epsd_benchmark'


def build_demo(config: str, batch_size: int, image_size: int):
    """Model, optimizer-wrapper config, one raw and one preprocessed batch of
    a demo config (its pruning hook removed)."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    import epsd_mm  # noqa: F401
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.work_dir = WORK_ROOT
    cfg.default_hooks.pop('pruning', None)
    cfg.train_dataloader.batch_size = batch_size
    cfg.train_dataloader.num_workers = 0
    cfg.model.data_preprocessor.size = (image_size, image_size)
    runner = Runner.from_cfg(cfg)
    model = runner.model
    data = next(iter(runner.train_dataloader))
    batch = model.data_preprocessor(data, training=True)
    return model, cfg.optim_wrapper, data, batch


def plain_segmentor(config: str, size: Optional[int] = None):
    """The config's segmentor as a plain mmseg model: no SD method (a
    benchmark measures the network), BN instead of SyncBN (CPU), nothing
    pretrained loaded; ``size`` sets the data preprocessor's crop size."""
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope

    from epsd_mm.deploy import plain_model_cfg
    from epsd_mm.registry import MODELS
    cfg = plain_model_cfg(Config.fromfile(osp.join(ROOT, config)).model)
    cfg.pretrained = None
    if size is not None:
        cfg.data_preprocessor.size = (size, size)
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        return revert_sync_batchnorm(MODELS.build(cfg))


def shorten_schedule(cfg, max_iters: Optional[int]) -> None:
    """Train for ``max_iters`` instead of the config's iterations: the
    schedulers' begin/end scale with it, validation and the checkpoint come
    at the end. None keeps the config's schedule."""
    if max_iters is None:
        return
    scale = max_iters / cfg.train_cfg.max_iters
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters
    cfg.default_hooks.checkpoint.interval = max_iters
    for scheduler in cfg.param_scheduler:
        for key in ('begin', 'end'):
            if key in scheduler:
                scheduler[key] = int(round(scheduler[key] * scale))


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Max resident set size of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_and_eval(config: str, edit: Callable, seed: int,
                   work_dir: str) -> Dict[str, float]:
    """Run tools/train.py in a fresh process; return the final val metrics."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, config))
    edit(cfg)
    cfg.randomness = dict(seed=seed)
    os.makedirs(work_dir, exist_ok=True)
    cfg_file = osp.join(work_dir, 'config.py')
    cfg.dump(cfg_file)
    cmd = [
        sys.executable,
        osp.join(ROOT, 'tools/train.py'), cfg_file, '--work-dir', work_dir
    ]
    subprocess.run(
        cmd,
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    scalars = sorted(
        osp.join(dp, f) for dp, _, fs in os.walk(work_dir) for f in fs
        if f == 'scalars.json')
    metrics = {}
    with open(scalars[-1]) as f:
        for line in f:
            record = json.loads(line)
            if 'step' in record and not any(k.startswith('loss')
                                            for k in record):
                metrics = record
    return metrics


def versions() -> str:
    """Versions of the stack, for the report."""
    import mmcv
    import mmdet
    import mmengine
    import mmseg
    return (f'torch {torch.__version__}, mmengine {mmengine.__version__}, '
            f'mmcv {mmcv.__version__}, mmseg {mmseg.__version__}, mmdet '
            f'{mmdet.__version__}, Python {platform.python_version()}')
