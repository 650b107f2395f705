"""Every shell command, config and Python snippet of README.md and docs/*.md
runs, at tiny size, so the docs cannot rot.

* ```python blocks holding ``_base_`` are configs: loaded with
  ``Config.fromfile`` (after ``import epsd_mm``), their model and hooks built
  in the config's scope (as tests/test_configs.py does).
* Other ```python blocks are executed: in-process when they are
  self-contained, or in the page's sandbox (below) when they read files that
  earlier commands of the page wrote (``work_dirs/``, ``data/``).
* ```bash / ```shell blocks: every command must have an entry in
  :data:`COMMANDS`, which says how it is shrunk (cfg-options appended, smaller
  demo data, a checkpoint path of the shrunk run, ...). A command with no
  entry fails the test: add it to the table. The commands of a page run in
  order in one sandbox: a temporary directory with the repository's
  ``.venv``, ``configs``, ``tools``, ... linked in, so that ``data/`` and
  ``work_dirs/`` land there; ``python`` is the venv's.

``make demo`` and ``make test`` are too long for the suite: the Makefile's
recipes are read with ``make -n`` and their lines run through the same
table (the demo at 2 iterations, which must still print the README's
sparsity and effective parameter count).
"""
import glob
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VENV_BIN = osp.join(REPO_ROOT, '.venv', 'bin')
DOCS = ['README.md'] + sorted(
    osp.relpath(p, REPO_ROOT)
    for p in glob.glob(osp.join(REPO_ROOT, 'docs', '*.md')))
# What a sandbox links from the repository.
LINKED = ('.venv', 'configs', 'tools', 'epsd_mm', 'tests', 'benchmarks',
          'docs', 'README.md', 'Makefile', 'requirements.txt', 'setup.py')
TIMEOUT = 300

# --------------------------------------------------------------------------
# The shrink table
# --------------------------------------------------------------------------
# Demo DeepLabV3 / SegFormer at 2 iterations, a 1-step ProsPr on 2 batches.
VOC_TINY = ('--cfg-options train_cfg.max_iters=2 train_cfg.val_interval=2 '
            'default_hooks.checkpoint.interval=2 default_hooks.logger.interval=1 '
            'default_hooks.pruning.num_batches=2 '
            'default_hooks.pruning.criterion_cfg.num_steps=1 '
            'train_dataloader.num_workers=0 val_dataloader.num_workers=0 '
            'test_dataloader.num_workers=0 env_cfg.torch_num_threads=1')
# Epoch-based demos: one epoch of small batches.
EPOCH_TINY = ('--cfg-options train_cfg.max_epochs=1 train_cfg.val_interval=1 '
              'default_hooks.checkpoint.interval=1 default_hooks.logger.interval=1 '
              'default_hooks.pruning.num_batches=1 '
              'default_hooks.pruning.criterion_cfg.num_steps=1 '
              'train_dataloader.batch_size=4 train_dataloader.num_workers=0 '
              'val_dataloader.num_workers=0 test_dataloader.num_workers=0 '
              'env_cfg.torch_num_threads=1')
VOC_DATA_TINY = '--num-train 8 --num-val 4 --image-size 64'


@dataclass
class Shrink:
    """How a documented command runs in the test.

    Attributes:
        append (str): Arguments appended.
        replace (tuple): ``(old, new)`` substitutions, applied first.
        command (str, optional): A whole replacement command.
        env (dict): Extra environment (``{port}`` is a free port).
        expect (tuple): Substrings the output must contain.
        needs (tuple): Sandbox set-up: ``'voc_demo'`` (the demo VOC data at
            ``data/voc_demo``), ``'demo_run'`` (that and the checkpoint of the
            shrunk ``make demo`` at ``work_dirs/demo/iter_300.pth``).
        fake_srun (bool): Run with a ``srun`` on PATH that prints its
            arguments (no SLURM here); ``expect`` checks them.
        kind (str): ``'run'``; ``'make'`` (tested by the Makefile tests);
            ``'parse'`` (a ``tools/benchmark.py`` command: its arguments are
            parsed, the hours-long run is not started).
        once (bool): Skip the command in a page when it already succeeded
            in another one and nothing later in the page reads what it wrote
            (the demo-data writers of the datasets page).
        known_bug (str): A reported bug of the code that makes the command
            fail: its page test xfails with this reason while it does (and
            passes once it is fixed).
    """
    append: str = ''
    replace: Tuple[Tuple[str, str], ...] = ()
    command: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)
    expect: Tuple[str, ...] = ()
    needs: Tuple[str, ...] = ()
    fake_srun: bool = False
    kind: str = 'run'
    known_bug: str = ''
    once: bool = False


TINY_CFG = '{tiny_cfg}'  # the conftest tiny EPSD DeepLabV3, 2 iterations
FULL_CFG = 'configs/epsd_deeplab_voc.py'
FULL_CKPT = 'work_dirs/epsd_deeplab_voc/iter_20000.pth'

COMMANDS: Dict[str, Shrink] = {
    # README / get started
    'make demo': Shrink(kind='make'),
    'make test': Shrink(kind='make'),
    # the Makefile's recipe lines (make -n)
    '.venv/bin/python tools/train.py configs/demo/epsd_deeplab_voc_demo.py '
    '--work-dir work_dirs/demo':
        Shrink(append=VOC_TINY,
               expect=('sparsity: 0.9000', 'effective_params: 247907')),
    '.venv/bin/python -m pytest -n 2 --dist loadfile tests':
        Shrink(command='.venv/bin/python -m pytest -q -p no:cacheprovider '
               'tests/test_docs.py::test_readme_is_short_and_links_every_page',
               expect=('1 passed', )),
    # demo data
    '.venv/bin/python tools/make_demo_data.py voc --out data/voc_demo':
        Shrink(append=VOC_DATA_TINY, expect=('wrote the voc demo', ),
               once=True),
    '.venv/bin/python tools/make_demo_data.py cub --out data/cub_demo':
        Shrink(append='--num-classes 4 --images-per-class 12 --image-size 64',
               once=True),
    '.venv/bin/python tools/make_demo_data.py cifar --out data/cifar_demo':
        Shrink(append='--num-train 40 --num-test 20', once=True),
    # other demos
    '.venv/bin/python tools/train.py configs/demo/epsd_cam_cub_demo.py':
        Shrink(append=EPOCH_TINY, expect=('sparsity',)),
    '.venv/bin/python tools/analysis/visualize_cam.py '
    'configs/demo/epsd_cam_cub_demo.py work_dirs/epsd_cam_cub_demo/epoch_20.pth '
    '--out-dir work_dirs/cams --num 8':
        Shrink(replace=(('epoch_20.pth', 'epoch_1.pth'), ('--num 8',
                                                          '--num 2')),
               append='--cfg-options test_dataloader.num_workers=0'),
    '.venv/bin/python tools/train.py configs/demo/epsd_resnet_cifar_demo.py':
        Shrink(append=EPOCH_TINY, expect=('accuracy', 'sparsity')),
    # structured
    '.venv/bin/python tools/train.py '
    'configs/demo/epsd_channel_deeplab_voc_demo.py':
        Shrink(append=VOC_TINY, needs=('voc_demo', ),
               expect=('channel_sparsity', )),
    # training, testing, distributed: the full-size config is replaced by
    # the tiny one (test_configs.py builds the full one)
    f'python tools/train.py {FULL_CFG} --work-dir work_dirs/epsd_deeplab_voc':
        Shrink(replace=((FULL_CFG, TINY_CFG), ), expect=('sparsity',)),
    f'python tools/test.py {FULL_CFG} {FULL_CKPT}':
        Shrink(replace=((FULL_CFG, TINY_CFG), ('iter_20000', 'iter_2')),
               expect=('sparsity: 0.9000', 'effective_params')),
    # 2 CPU ranks (torchrun, gloo): the distributed smoke test of the suite
    f'tools/dist_train.sh {FULL_CFG} 8':
        Shrink(command=f'tools/dist_train.sh {TINY_CFG} 2 --work-dir '
               'work_dirs/dist', env={'PORT': '{port}'},
               expect=('Distributed launcher: pytorch',
                       'Distributed training: True', 'GPU number: 2',
                       'weight sparsity 0.9000 (target 0.9000)',
                       'Iter(val)', 'sparsity: 0.9000')),
    f'GPUS=16 tools/slurm_train.sh PARTITION JOB {FULL_CFG}':
        Shrink(fake_srun=True,
               expect=('srun -p PARTITION --job-name=JOB', '--ntasks=16',
                       f'tools/train.py {FULL_CFG} --launcher=slurm')),
    # deliverables, on the checkpoint of the shrunk `make demo`
    'python tools/deploy/export.py configs/demo/epsd_deeplab_voc_demo.py '
    'work_dirs/demo/iter_300.pth --out-dir work_dirs/demo/export --onnx':
        Shrink(needs=('demo_run', ),
               expect=('sparse.pth', 'pruned by EarlyPruningHook: prospr',
                       'ONNX input size 128x128: what `test_dataloader` '
                       'gives')),
    # the shrunk demo's val split has 4 images: calibration uses them all
    'python tools/deploy/export.py configs/demo/epsd_deeplab_voc_demo.py '
    'work_dirs/demo/iter_300.pth --out-dir work_dirs/demo/export_int8 --int8':
        Shrink(needs=('demo_run', ),
               expect=('model_int8.onnx', 'QLinearConv x29',
                       'ReduceMean x1, Resize x1 stay fp32')),
    # needs the --onnx export above (same page, same sandbox)
    'python tools/deploy/test_onnx.py configs/demo/epsd_deeplab_voc_demo.py '
    'work_dirs/demo/export/model.onnx':
        Shrink(needs=('demo_run', ), append='--threads 1 --cfg-options '
               'test_dataloader.num_workers=0',
               expect=('aAcc:', 'mIoU:', 'mAcc:')),
    'python tools/analysis/get_flops.py configs/demo/epsd_deeplab_voc_demo.py '
    'work_dirs/demo/iter_300.pth':
        Shrink(needs=('demo_run', ), expect=('247,907', )),
    'python tools/analysis/sparsity_report.py work_dirs/demo/iter_300.pth '
    '--out work_dirs/demo/density.png':
        Shrink(needs=('demo_run', ), expect=('90.00%', )),
    # the task-loss twin of the demo, and its masks compared with EPSD's
    'python tools/train.py configs/demo/epsd_deeplab_voc_demo.py --work-dir '
    'work_dirs/demo_task --cfg-options default_hooks.pruning.loss=task':
        Shrink(append=VOC_TINY, needs=('demo_run', ),
               expect=('sparsity: 0.9000', )),
    'python tools/analysis/compare_masks.py work_dirs/demo/iter_300.pth '
    'work_dirs/demo_task/iter_300.pth --labels EPSD task '
    '--out work_dirs/demo/compare.png':
        Shrink(replace=(('demo_task/iter_300', 'demo_task/iter_2'), ),
               needs=('demo_run', ),
               expect=('IoU task vs EPSD', 'effective FLOPs',
                       'density plot written')),
    # benchmark harness: hours of training; the arguments are checked
    'python tools/benchmark.py --sections sweep --sweep-tasks seg --seeds 0 1 '
    '2 3 4 --jobs 2 --quality-max-iters 100': Shrink(kind='parse'),
    'python tools/benchmark.py --sections sweep --sweep-tasks cls --seeds 0 1 '
    '2 3 4 --jobs 2': Shrink(kind='parse'),
}

# --------------------------------------------------------------------------
# Reading the docs
# --------------------------------------------------------------------------
FENCE = re.compile(r'^```(\w*)\s*\n(.*?)^```\s*$', re.S | re.M)


@dataclass
class Block:
    path: str
    line: int
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f'{self.path}:{self.line}'

    @property
    def is_config(self) -> bool:
        return self.lang == 'python' and '_base_' in self.text

    @property
    def needs_sandbox(self) -> bool:
        return self.lang == 'python' and not self.is_config and bool(
            re.search(r"['\"](work_dirs|data)/", self.text))


def read_blocks(path: str) -> List[Block]:
    with open(osp.join(REPO_ROOT, path), encoding='utf-8') as f:
        text = f.read()
    return [
        Block(path, text[:m.start()].count('\n') + 1, m.group(1), m.group(2))
        for m in FENCE.finditer(text)
    ]


def shell_commands(text: str) -> List[str]:
    """The commands of a shell block: continuation lines joined, comments
    and blank lines dropped, whitespace collapsed."""
    commands = []
    for line in text.replace('\\\n', ' ').splitlines():
        line = re.sub(r'(^|\s)#.*$', '', line).strip()
        if line:
            commands.append(' '.join(line.split()))
    return commands


ALL_BLOCKS = [b for path in DOCS for b in read_blocks(path)]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ('bash', 'shell', 'sh')]
CONFIG_BLOCKS = [b for b in ALL_BLOCKS if b.is_config]
PYTHON_BLOCKS = [
    b for b in ALL_BLOCKS
    if b.lang == 'python' and not b.is_config and not b.needs_sandbox
]
# Pages whose commands (and file-reading snippets) run in a sandbox.
def _runs(block: Block) -> int:
    """How many subprocesses a block starts in its page's sandbox."""
    if block.needs_sandbox:
        return 1
    if block not in SHELL_BLOCKS:
        return 0
    return sum(COMMANDS.get(c, Shrink()).kind == 'run'
               for c in shell_commands(block.text))


# Longest first, so that two at a time finish together.
SCENARIO_PAGES = sorted(
    {b.path for b in ALL_BLOCKS if _runs(b)},
    key=lambda path: -sum(_runs(b) for b in ALL_BLOCKS if b.path == path))


def test_docs_found():
    assert 'docs/get_started.md' in DOCS and 'docs/troubleshooting.md' in DOCS
    assert len(SHELL_BLOCKS) >= 5 and len(CONFIG_BLOCKS) >= 5
    assert len(PYTHON_BLOCKS) >= 3


def test_readme_is_short_and_links_every_page():
    path = osp.join(REPO_ROOT, 'README.md')
    assert osp.getsize(path) <= 8 * 1024
    with open(path, encoding='utf-8') as f:
        readme = f.read()
    for page in ('get_started', 'configs_and_hooks', 'sd_methods',
                 'structured_and_deployment', 'datasets', 'troubleshooting',
                 'benchmarks'):
        assert f'(docs/{page}.md)' in readme, page
    # the demo's expected lines, as `make demo` prints them
    for expected in ('mIoU: 69.8500', 'sparsity: 0.9000',
                     'effective_params: 247907'):
        assert expected in readme


def test_relative_links_resolve():
    for block_path in DOCS:
        with open(osp.join(REPO_ROOT, block_path), encoding='utf-8') as f:
            text = f.read()
        for target in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', text):
            if '://' in target:
                continue
            full = osp.join(REPO_ROOT, osp.dirname(block_path), target)
            assert osp.exists(full), f'{block_path}: broken link {target}'


@pytest.mark.parametrize('block', SHELL_BLOCKS, ids=lambda b: b.where)
def test_every_command_is_in_the_table(block):
    missing = [c for c in shell_commands(block.text) if c not in COMMANDS]
    assert not missing, (
        f'{block.where}: command(s) {missing} have no entry in '
        'tests/test_docs.py COMMANDS; add it to the table (how it is shrunk)')


# --------------------------------------------------------------------------
# Configs and self-contained snippets (in-process)
# --------------------------------------------------------------------------
MMENGINE_DEFAULT_HOOKS = ('runtime_info', 'timer', 'logger', 'param_scheduler',
                          'checkpoint', 'sampler_seed', 'visualization')


@pytest.mark.parametrize('block', CONFIG_BLOCKS, ids=lambda b: b.where)
def test_config_snippet_builds(block, tmp_path):
    from mmengine.config import Config
    from mmengine.registry import HOOKS, MODELS, DefaultScope

    import epsd_mm  # noqa: F401
    from epsd_mm.engine import EarlyPruningHook, GradualPruningHook

    path = tmp_path / 'doc_config.py'
    path.write_text(block.text)
    cfg = Config.fromfile(str(path))
    scope = cfg.get('default_scope', 'epsd_mm')
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
        # ours (MMEngine's default hooks need a Runner's visualizer)
        hooks = [
            HOOKS.build(h)
            for name, h in cfg.get('default_hooks', {}).items()
            if h is not None and name not in MMENGINE_DEFAULT_HOOKS
        ]
    pruning = [
        h for h in hooks if isinstance(h, (EarlyPruningHook,
                                           GradualPruningHook))
    ]
    assert pruning, f'{block.where}: the config has no pruning hook'
    for hook in pruning:
        hook.pruner.check_model(model)  # scopes match, floors fit


@pytest.mark.parametrize('block', PYTHON_BLOCKS, ids=lambda b: b.where)
def test_python_snippet_runs(block):
    import torch
    torch.manual_seed(0)
    exec(compile(block.text, block.where, 'exec'), {'__name__': 'doc'})


def test_quoted_collapse_error_is_the_codes():
    """get_started.md quotes the error the core example meets without a
    floor at sparsity 0.9; it must be the one the pruner raises."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from epsd_mm.pruning import WeightPruner
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8, )))
               for _ in range(4)]
    pruner = WeightPruner(sparsity=0.9, criterion='prospr', scopes='*')
    with pytest.raises(ValueError) as error:
        pruner.prune(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]),
                     batches)
    with open(osp.join(REPO_ROOT, 'docs', 'get_started.md'),
              encoding='utf-8') as f:
        doc = ' '.join(f.read().split())
    assert str(error.value) in doc, str(error.value)


def test_benchmark_commands_parse():
    """The sweep commands' arguments are valid (the runs take hours)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'doc_benchmark', osp.join(REPO_ROOT, 'tools', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, REPO_ROOT)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(REPO_ROOT)
    parsed = [c for c, s in COMMANDS.items() if s.kind == 'parse']
    assert parsed
    for command in parsed:
        argv = shlex.split(command)[2:]
        args = module.parse_args(argv)
        assert args.sections == ['sweep']


# --------------------------------------------------------------------------
# Commands (subprocesses in sandboxes)
# --------------------------------------------------------------------------
def _free_port() -> int:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env(sandbox: str) -> dict:
    env = dict(os.environ)
    env['PATH'] = VENV_BIN + os.pathsep + env.get('PATH', '')
    env['OMP_NUM_THREADS'] = '1'
    env['MKL_NUM_THREADS'] = '1'
    env['PYTHONWARNINGS'] = 'ignore'
    env.pop('PYTHONPATH', None)
    return env


def make_sandbox(root: str) -> str:
    os.makedirs(root, exist_ok=True)
    for name in LINKED:
        src = osp.join(REPO_ROOT, name)
        if osp.exists(src) and not osp.lexists(osp.join(root, name)):
            os.symlink(src, osp.join(root, name))
    return root


def run_shell(command: str, cwd: str, env: Optional[dict] = None,
              timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    full_env = _env(cwd)
    full_env.update(env or {})
    return subprocess.run(['bash', '-c', command],
                          cwd=cwd,
                          env=full_env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=timeout)


def tail(proc: subprocess.CompletedProcess, n: int = 60) -> str:
    lines = proc.stdout.splitlines()
    errors = [line for line in lines if 'Error' in line or 'error' in line]
    return '\n'.join(errors[-15:] + ['...'] + lines[-n:])


class Context:
    """What the sandboxes share: the tiny config, the demo data and the
    checkpoint of the shrunk `make demo`."""

    def __init__(self, root: str, voc_root: str, make_tiny_cfg) -> None:
        self.root = root
        self.voc_root = voc_root  # .../VOCdevkit/VOC2012
        cfg = make_tiny_cfg(voc_root, osp.join(root, 'unused'), max_iters=2)
        self.tiny_cfg = osp.join(root, 'tiny_epsd.py')
        cfg.dump(self.tiny_cfg)
        self._demo = None
        self._lock = threading.Lock()
        self.timings: List[Tuple[float, str, str]] = []
        self.known_bugs: List[str] = []
        self.succeeded: set = set()

    def demo_run(self) -> Tuple[str, str]:
        """Run the `make demo` recipe, shrunk, once: (sandbox, output)."""
        with self._lock:
            return self._demo_run()

    def _demo_run(self) -> Tuple[str, str]:
        if self._demo is None:
            sandbox = make_sandbox(osp.join(self.root, 'make_demo'))
            outputs = []
            for line in make_recipe('demo'):
                if line == 'bash tools/setup_env.sh':
                    continue
                outputs.append(run_command(line, sandbox, self, 'Makefile'))
            self._demo = (sandbox, '\n'.join(outputs))
        return self._demo

    def setup(self, sandbox: str, needs: Sequence[str]) -> None:
        def link(src: str, dst: str) -> None:
            dst = osp.join(sandbox, dst)
            if not osp.lexists(dst):
                os.makedirs(osp.dirname(dst), exist_ok=True)
                os.symlink(src, dst)

        if 'voc_demo' in needs:
            # data/voc_demo/VOCdevkit/VOC2012, as the demo writer lays it out
            link(osp.dirname(osp.dirname(self.voc_root)), 'data/voc_demo')
        if 'demo_run' in needs:
            demo, _ = self.demo_run()
            link(osp.join(demo, 'data', 'voc_demo'), 'data/voc_demo')
            link(osp.join(demo, 'work_dirs', 'demo', 'iter_2.pth'),
                 'work_dirs/demo/iter_300.pth')


def shrunk(command: str, ctx: Context) -> Tuple[str, Dict[str, str]]:
    shrink = COMMANDS[command]
    new = shrink.command or command
    for old, repl in shrink.replace:
        new = new.replace(old, repl)
    if shrink.append:
        new = f'{new} {shrink.append}'
    port = str(_free_port())
    fill = lambda s: s.replace('{tiny_cfg}', ctx.tiny_cfg).replace(  # noqa
        '{port}', port)
    return fill(new), {k: fill(v) for k, v in shrink.env.items()}


def run_command(command: str,
                sandbox: str,
                ctx: Context,
                where: str,
                last_in_page: bool = False) -> str:
    """Run one documented command, shrunk, in ``sandbox``; its output."""
    assert command in COMMANDS, (
        f'{where}: {command!r} has no entry in COMMANDS; add it to the table')
    shrink = COMMANDS[command]
    if shrink.once and command in ctx.succeeded and last_in_page:
        return ''
    ctx.setup(sandbox, shrink.needs)
    line, env = shrunk(command, ctx)
    if shrink.fake_srun:
        bin_dir = osp.join(sandbox, 'fake_bin')
        os.makedirs(bin_dir, exist_ok=True)
        srun = osp.join(bin_dir, 'srun')
        with open(srun, 'w') as f:
            f.write('#!/bin/sh\necho "srun $*"\n')
        os.chmod(srun, 0o755)
        line = f'PATH={shlex.quote(bin_dir)}:$PATH {line}'
    start = time.perf_counter()
    proc = run_shell(line, sandbox, env)
    ctx.timings.append((time.perf_counter() - start, where, command))
    if proc.returncode and shrink.known_bug:
        ctx.known_bugs.append(f'{where}: {shrink.known_bug}')
        return proc.stdout
    assert proc.returncode == 0, f'{where}: `{line}` failed:\n{tail(proc)}'
    output = ' '.join(proc.stdout.split())
    for expected in shrink.expect:
        assert ' '.join(expected.split()) in output, (
            f'{where}: `{line}` did not print {expected!r}:\n{tail(proc)}')
    ctx.succeeded.add(command)
    return proc.stdout


def make_recipe(target: str) -> List[str]:
    """The lines `make -n TARGET` would run (its prerequisites included)."""
    # run inside `make test` (CI), make would print "Entering directory"
    # lines and see the outer command line's variables (PYTEST_ARGS=...)
    env = {k: v for k, v in os.environ.items()
           if k not in ('MAKELEVEL', 'MAKEFLAGS', 'MFLAGS', 'PYTEST_ARGS',
                        'DEMO_CONFIG')}
    proc = subprocess.run(['make', '-n', '-B', '--no-print-directory', target],
                          cwd=REPO_ROOT,
                          env=env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True)
    assert proc.returncode == 0, proc.stdout
    return [' '.join(line.split()) for line in proc.stdout.splitlines()
            if line.strip()]


def run_page(path: str, ctx: Context) -> List[str]:
    """Every command and file-reading snippet of a page, in order, in one
    sandbox; the known bugs met."""
    sandbox = make_sandbox(
        osp.join(ctx.root, 'page_' + re.sub(r'\W', '_', path)))
    blocks = read_blocks(path)
    for index, block in enumerate(blocks):
        if block.lang in ('bash', 'shell', 'sh'):
            # whether later blocks of the page may read what this one writes
            last = not any(_runs(b) for b in blocks[index + 1:])
            for command in shell_commands(block.text):
                if COMMANDS.get(command, Shrink()).kind == 'run':
                    run_command(command, sandbox, ctx, block.where, last)
        elif block.needs_sandbox:
            script = osp.join(sandbox, f'snippet_{block.line}.py')
            with open(script, 'w') as f:
                f.write(block.text)
            start = time.perf_counter()
            proc = run_shell(f'python {shlex.quote(script)}', sandbox)
            ctx.timings.append((time.perf_counter() - start, block.where,
                                'python snippet'))
            assert proc.returncode == 0, (
                f'{block.where}: the snippet failed:\n{tail(proc)}')
    return [b for b in ctx.known_bugs if b.startswith(path + ':')]


@pytest.fixture(scope='module')
def ctx(tmp_path_factory, voc_root, helpers) -> Context:
    return Context(
        str(tmp_path_factory.mktemp('docs')), voc_root, helpers.make_tiny_cfg)


@pytest.fixture(scope='module')
def pages(ctx):
    """The shrunk `make demo` (several pages use its checkpoint) and the
    page scenarios, two at a time (2 cores), started once."""
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {'make demo': pool.submit(ctx.demo_run)}
    futures.update(
        (path, pool.submit(run_page, path, ctx)) for path in SCENARIO_PAGES)
    futures['make test'] = pool.submit(run_make_test, ctx)
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)
    for seconds, where, command in sorted(ctx.timings, reverse=True):
        print(f'{seconds:6.1f}s  {where}  {command}')


@pytest.mark.e2e
def test_makefile_targets():
    """`make demo` and `make test` set up the venv, then run what the
    table shrinks."""
    demo = make_recipe('demo')
    assert demo[0] == 'bash tools/setup_env.sh'
    test = make_recipe('test')
    assert test[0] == 'bash tools/setup_env.sh'
    for line in demo[1:] + test[1:]:
        assert line in COMMANDS, (
            f'Makefile recipe line {line!r} has no entry in COMMANDS')


def expected_demo_lines(path: str = 'README.md') -> List[str]:
    """The lines the docs say `make demo` prints (the plain ``` block)."""
    blocks = [b for b in read_blocks(path)
              if b.lang == '' and 'effective_params' in b.text]
    assert blocks, f'{path} shows no expected output of make demo'
    return [line for line in blocks[0].text.splitlines() if line.strip()]


@pytest.mark.e2e
def test_make_demo_shrunk(ctx, pages):
    """The demo's recipe at 2 iterations prints the docs' expected lines,
    except the metrics training changes: the pruning tables, the sparsity
    and the effective parameter count are fixed by the pruning alone."""
    _, output = ctx.demo_run()
    output = ' '.join(output.split())
    for path in ('README.md', 'docs/get_started.md'):
        for line in expected_demo_lines(path):
            if line.startswith('Iter(val)'):
                # mIoU 69.85 needs the 300 iterations
                parts = [line[line.index('sparsity:'):]]
            else:
                parts = line.split(' ... ')
            for part in parts:
                assert ' '.join(part.split()) in output, (path, part)


def run_make_test(ctx: Context) -> None:
    sandbox = make_sandbox(osp.join(ctx.root, 'make_test'))
    for line in make_recipe('test')[1:]:
        run_command(line, sandbox, ctx, 'Makefile')


@pytest.mark.e2e
def test_make_test_shrunk(pages):
    pages['make test'].result()


@pytest.mark.e2e
@pytest.mark.parametrize('path', SCENARIO_PAGES)
def test_page_commands_run(path, pages):
    known_bugs = pages[path].result()
    if known_bugs:
        pytest.xfail('; '.join(known_bugs))
