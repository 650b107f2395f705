"""Shared fixtures: the VOC-layout demo data and a tiny runnable config.

The tiny config is ``configs/demo/epsd_deeplab_voc_demo.py`` (itself EPSD on
``mmseg::`` DeepLabV3) shrunk to CPU-test size: ResNetV1c-18 with 8 base
channels, 64 px crops, batch 2, no dataloader workers, a handful of
iterations and a 1-step ProsPr on 2 batches.
"""
import copy
import functools
import glob
import itertools
import os
import os.path as osp
import socket
import subprocess
import sys
from types import SimpleNamespace
from typing import Callable, Dict, Optional

import pytest
import torch
from filelock import FileLock
from mmengine.config import Config
from mmengine.registry import DefaultScope

from epsd_mm.datasets.demo_voc import write_voc_demo
from epsd_mm.utils import register_checkpoint_safe_globals
from epsd_mm.utils.config_cache import cache_config_handling

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO_ROOT, 'configs', 'demo',
                       'epsd_deeplab_voc_demo.py')
PYTHON = osp.join(REPO_ROOT, '.venv', 'bin', 'python')
CROP = (64, 64)


_counter = itertools.count()

# Tests read MMEngine checkpoints with torch.load (weights_only) outside a
# Runner, as a user's own script would; a Runner with our hooks registers
# these itself.
register_checkpoint_safe_globals()

# What tools/train.py does too: remember yapf's formatting of a config text
# and mmengine's look-up of `mmseg::` configs (pure; ~6 s per Runner test).
cache_config_handling()

# Shared 2-core machine: with other processes running, intra-op threads
# oversubscribe the cores and make tiny convolutions 10-50x slower.
torch.set_num_threads(1)


def pytest_configure(config) -> None:
    config.addinivalue_line(
        'markers', 'e2e: end-to-end runs (a Runner, a subprocess or torchrun) '
        'that prove an integration; `pytest -m "not e2e"` runs the unit tests')


#: The longest test files (subprocesses, torchrun), started first so that
#: `make test`'s two workers (xdist, whole files) finish together instead of
#: one running a long file alone at the end.
LONG_FILES = ('test_docs.py', 'test_tools/test_train_test_tools.py',
              'test_engine/test_dist.py',
              'test_tools/test_benchmark_common.py',
              'test_engine/test_early_pruning_hook.py',
              'test_models/test_classifiers.py',
              'test_engine/test_channel_pruning.py')


def pytest_collection_modifyitems(config, items) -> None:
    def rank(item) -> int:
        path = item.nodeid.split('::')[0]
        for index, name in enumerate(LONG_FILES):
            if path.endswith(name):
                return index
        return len(LONG_FILES)

    items.sort(key=rank)  # stable: a file's tests stay together, in order


def _forget_new_default_scopes(before: set) -> None:
    # mmengine's current default scope is the DefaultScope created last,
    # process-wide: Runners and builds leave theirs behind, and a later
    # test's registry builds would resolve in it
    for name in list(DefaultScope._instance_dict):
        if name not in before:
            del DefaultScope._instance_dict[name]


@pytest.fixture(autouse=True, scope='module')
def _module_leaves_default_scope():
    """Each test file (its module fixtures included) leaves the default
    scope as it found it, so no test depends on the files run before."""
    before = set(DefaultScope._instance_dict)
    yield
    _forget_new_default_scopes(before)


@pytest.fixture(autouse=True)
def _test_leaves_default_scope():
    before = set(DefaultScope._instance_dict)
    yield
    _forget_new_default_scopes(before)


def train_pipeline(random_aug: bool = True) -> list:
    """The demo's train pipeline at 64 px; ``random_aug=False`` keeps only
    deterministic transforms (every pass over a sample is identical).
    Transforms are built in mmseg's scope, as in the demo configs."""
    pipeline = [
        dict(type='LoadImageFromFile', _scope_='mmseg'),
        dict(type='LoadAnnotations', _scope_='mmseg')
    ]
    if random_aug:
        pipeline += [
            dict(
                type='RandomResize',
                scale=CROP,
                ratio_range=(0.75, 1.5),
                keep_ratio=True,
                _scope_='mmseg'),
            dict(
                type='RandomCrop',
                crop_size=CROP,
                cat_max_ratio=0.75,
                _scope_='mmseg'),
            dict(type='RandomFlip', prob=0.5, _scope_='mmseg'),
            dict(type='PhotoMetricDistortion', _scope_='mmseg'),
        ]
    else:
        pipeline.append(
            dict(type='Resize', scale=CROP, keep_ratio=True, _scope_='mmseg'))
    pipeline += [
        dict(type='Pad', size=CROP, _scope_='mmseg'),
        dict(type='PackSegInputs', _scope_='mmseg')
    ]
    return pipeline


UNUSED_TOP_LEVEL = ('dataset_train', 'dataset_aug', 'voc_train', 'voc_aug',
                    'train_pipeline', 'test_pipeline', 'tta_pipeline',
                    'tta_model', 'img_ratios', 'crop_size', 'data_root',
                    'dataset_type', 'max_iters', 'norm_cfg',
                    'data_preprocessor', 'vis_backends')

TEST_PIPELINE = [
    dict(type='LoadImageFromFile', _scope_='mmseg'),
    dict(type='Resize', scale=CROP, keep_ratio=True, _scope_='mmseg'),
    dict(type='LoadAnnotations', _scope_='mmseg'),
    dict(type='PackSegInputs', _scope_='mmseg')
]


@functools.lru_cache(maxsize=None)
def demo_config() -> Config:
    """``configs/demo/epsd_deeplab_voc_demo.py``, read once (copy it)."""
    return Config.fromfile(DEMO_CONFIG)


def make_tiny_cfg(data_root: str,
                  work_dir: str,
                  overrides: Optional[Dict] = None,
                  max_iters: int = 3,
                  random_aug: bool = True) -> Config:
    """A tiny runnable EPSD DeepLabV3 config derived from the demo config.

    Args:
        data_root (str): The demo ``VOC2012`` folder.
        work_dir (str): The run's work_dir.
        overrides (dict, optional): Applied last with
            ``Config.merge_from_dict`` (dotted keys; lists replaced whole).
            Switching ``default_hooks.pruning.criterion`` away from prospr
            drops the ProsPr ``criterion_cfg`` unless one is given.
        max_iters (int): Training iterations; also the val and checkpoint
            interval.
        random_aug (bool): Random geometric/photometric augmentation in the
            train pipeline.
    """
    cfg = copy.deepcopy(demo_config())
    # Top-level helper variables of the config files that no component
    # reads; dropping them keeps Config.pretty_text (formatted with yapf up
    # to 5 times per run: log, dump, visualizer, checkpoint meta) cheap.
    for key in UNUSED_TOP_LEVEL:
        cfg.pop(key, None)
    pipeline = train_pipeline(random_aug)
    for dataset in cfg.train_dataloader.dataset.datasets:
        dataset.data_root = data_root
        dataset.pipeline = pipeline
        # mmengine pickles the few samples' infos (and runs gc) otherwise
        dataset.serialize_data = False
    name = f'tiny{next(_counter)}_{os.getpid()}'
    cfg.merge_from_dict({
        'work_dir': work_dir,
        'experiment_name': name,
        'visualizer.name': name,
        'model.data_preprocessor.size': CROP,
        'model.backbone.stem_channels': 8,
        'model.backbone.base_channels': 8,
        'model.decode_head.in_channels': 64,
        'model.decode_head.channels': 16,
        'model.auxiliary_head.in_channels': 32,
        'model.auxiliary_head.channels': 8,
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'val_dataloader.batch_size': 2,
        'val_dataloader.num_workers': 0,
        'val_dataloader.dataset.data_root': data_root,
        'val_dataloader.dataset.pipeline': TEST_PIPELINE,
        'val_dataloader.dataset.serialize_data': False,
        'train_cfg.max_iters': max_iters,
        'train_cfg.val_interval': max_iters,
        'param_scheduler': [
            dict(
                type='PolyLR',
                eta_min=1e-4,
                power=0.9,
                begin=0,
                end=max_iters,
                by_epoch=False)
        ],
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': max_iters,
        'default_hooks.pruning.num_batches': 2,
        'default_hooks.pruning.criterion_cfg': dict(
            num_steps=1, lr=0.1, first_order=False),
        # one torch thread per process: the demo's 2 would oversubscribe
        # the 2 cores the xdist workers and the subprocesses share
        'env_cfg.torch_num_threads': 1,
    })
    cfg.test_dataloader = cfg.val_dataloader
    if overrides:
        cfg.merge_from_dict(overrides)
        pruning = cfg.default_hooks.get('pruning')
        if (pruning is not None
                and pruning.get('criterion', 'prospr') != 'prospr'
                and not any(k.startswith('default_hooks.pruning.criterion_cfg')
                            for k in overrides)):
            # the fast ProsPr options do not apply to another criterion
            pruning.criterion_cfg = None
    return cfg


CAM_DEMO_CONFIG = osp.join(REPO_ROOT, 'configs', 'demo',
                           'epsd_cam_cub_demo.py')


def make_tiny_cam_cfg(data_root: str, work_dir: str,
                      num_classes: int = 3) -> Config:
    """``configs/demo/epsd_cam_cub_demo.py`` (EPSD + CS-KD) shrunk to test
    size: a width-8 ResNet-18 on 64 px images (72 px resize, 64 px crops),
    batches of 4, one held-out training image per class, one epoch,
    ProsPr on 2 batches, one torch thread.

    Args:
        data_root (str): Demo CUB data (``write_cub_demo``).
        work_dir (str): The run's work_dir.
        num_classes (int): Classes of the demo data. Defaults to 3.
    """
    cfg = Config.fromfile(CAM_DEMO_CONFIG)
    cfg.work_dir = str(work_dir)
    cfg.model.backbone.base_channels = 8
    cfg.model.head.update(num_classes=num_classes, in_channels=64)
    train_pipeline = cfg.train_dataloader.dataset.pipeline
    train_pipeline[1].scale = (72, 72)
    train_pipeline[2].crop_size = (64, 64)
    cfg.test_dataloader.dataset.pipeline[1].scale = (64, 64)
    for loader in (cfg.train_dataloader, cfg.val_dataloader,
                   cfg.test_dataloader):
        loader.update(batch_size=4, num_workers=0)
        loader.dataset.data_root = data_root
        loader.dataset.heldout_per_class = 1  # of 3 training images
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    cfg.param_scheduler[0].T_max = 1
    cfg.default_hooks.pruning.num_batches = 2
    cfg.default_hooks.checkpoint.interval = 1
    cfg.env_cfg.torch_num_threads = 1  # see make_tiny_cfg
    return cfg


@pytest.fixture(scope='session')
def voc_root(tmp_path_factory) -> str:
    """Demo VOC data (8 train, 4 val images of 64 px), written once."""
    root = tmp_path_factory.mktemp('voc_demo')
    return write_voc_demo(str(root), num_train=8, num_val=4, image_size=64)


@pytest.fixture
def tiny_cfg(voc_root, tmp_path) -> Callable[..., Config]:
    """Factory of tiny configs: ``tiny_cfg(overrides=None, work_dir=None,
    max_iters=3, random_aug=True)``; work_dir defaults to ``tmp_path``."""

    def make(overrides: Optional[Dict] = None,
             work_dir: Optional[str] = None,
             max_iters: int = 3,
             random_aug: bool = True) -> Config:
        return make_tiny_cfg(voc_root, str(work_dir or tmp_path), overrides,
                             max_iters, random_aug)

    return make


def read_logs(work_dir: str) -> str:
    """All text logged by the runners of ``work_dir``."""
    text = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', '*.log'))):
        with open(path, encoding='utf-8') as f:
            text.append(f.read())
    return '\n'.join(text)


def checkpoints(work_dir: str) -> list:
    return sorted(glob.glob(osp.join(work_dir, '**', '*.pth'),
                            recursive=True))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def subprocess_env() -> dict:
    """Environment of child processes: repo importable, few threads."""
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO_ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env['OMP_NUM_THREADS'] = '1'
    env['MKL_NUM_THREADS'] = '1'
    env['PYTHONWARNINGS'] = 'ignore'
    return env


def run_python(*args: str, cwd: str,
               timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python *args`` as a user would (stdout and stderr merged)."""
    return subprocess.run([sys.executable, *args],
                          cwd=cwd,
                          env=subprocess_env(),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=timeout)


def failure_text(proc: subprocess.CompletedProcess) -> str:
    """The error lines and the tail of a failed subprocess' output."""
    lines = proc.stdout.splitlines()
    errors = [line for line in lines if 'Error' in line or 'error:' in line]
    return '\n'.join(errors[-20:] + ['...'] + lines[-40:])


@pytest.fixture(scope='session')
def tool_run(tmp_path_factory, worker_id, voc_root) -> SimpleNamespace:
    """``tools/train.py`` on the dumped tiny config, sparsity changed on the
    command line (0.8), 2 iterations: the config path, work_dir,
    checkpoint and stdout, shared by the tests of every tool. Under xdist
    the first worker that asks trains and the others read its run (tests
    must not write into its work_dir)."""
    shared = tmp_path_factory.getbasetemp()
    if worker_id != 'master':
        shared = shared.parent  # this session's folder of all workers
    tmp = shared / 'tool_run'
    with FileLock(str(shared / 'tool_run.lock')):
        if not (tmp / 'stdout.txt').is_file():
            tmp.mkdir(exist_ok=True)
            cfg = make_tiny_cfg(voc_root, str(tmp / 'unused'), max_iters=2)
            cfg.dump(str(tmp / 'tiny_epsd.py'))
            proc = run_python(
                osp.join(REPO_ROOT, 'tools', 'train.py'),
                str(tmp / 'tiny_epsd.py'),
                '--work-dir',
                str(tmp / 'work'),
                '--cfg-options',
                'default_hooks.pruning.sparsity=0.8',
                cwd=str(tmp))
            assert proc.returncode == 0, failure_text(proc)
            (tmp / 'stdout.txt').write_text(proc.stdout)
    work_dir = str(tmp / 'work')
    return SimpleNamespace(
        cfg_path=str(tmp / 'tiny_epsd.py'),
        work_dir=work_dir,
        checkpoint=osp.join(work_dir, 'iter_2.pth'),
        stdout=(tmp / 'stdout.txt').read_text())


@pytest.fixture(scope='session')
def helpers() -> SimpleNamespace:
    """Helper functions for tests (test files cannot import conftest)."""
    return SimpleNamespace(
        read_logs=read_logs,
        checkpoints=checkpoints,
        free_port=free_port,
        subprocess_env=subprocess_env,
        run_python=run_python,
        failure_text=failure_text,
        make_tiny_cfg=make_tiny_cfg,
        make_tiny_cam_cfg=make_tiny_cam_cfg,
        train_pipeline=train_pipeline,
        test_pipeline=TEST_PIPELINE,
        repo_root=REPO_ROOT,
        python=PYTHON,
        demo_config=DEMO_CONFIG)
