"""Channel-pruned checkpoints with the test tools a user runs: ours under a
config without pruning hook, and mmseg's own with the run's dumped config."""
import glob
import os.path as osp
import re
import subprocess
import sys

import mmseg
import pytest
from mmengine.runner import Runner

# Runners, subprocesses or torchrun: the integrations, run end to end
pytestmark = pytest.mark.e2e

TIMEOUT = 300
MMSEG_TEST = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'test.py')


def _run(helpers, *args, cwd):
    return subprocess.run([sys.executable, *args],
                          cwd=cwd,
                          env=helpers.subprocess_env(),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=TIMEOUT)


def _failure(proc) -> str:
    lines = proc.stdout.splitlines()
    errors = [l for l in lines if 'Error' in l or 'error:' in l]
    return '\n'.join(errors[-20:] + ['...'] + lines[-40:])


def _metrics(stdout: str) -> str:
    lines = [
        l for l in stdout.splitlines() if 'Iter(test)' in l and 'mIoU' in l
    ]
    assert len(lines) == 1, stdout[-3000:]
    return lines[0]


@pytest.fixture(scope='module')
def slim_run(tmp_path_factory, voc_root, helpers):
    """A structured EPSD run (50% channels, 1 iteration); returns the run's
    dumped config, its checkpoint and a config without pruning hook."""
    tmp = tmp_path_factory.mktemp('slim_tools')
    cfg = helpers.make_tiny_cfg(
        voc_root,
        str(tmp / 'work'), {
            'default_hooks.pruning.granularity': 'channel',
            'default_hooks.pruning.sparsity': 0.5,
            'default_hooks.pruning.criterion': 'random',
        },
        max_iters=1)
    Runner.from_cfg(cfg).train()
    dense = cfg.copy()
    dense.default_hooks.pop('pruning')
    dense_path = str(tmp / 'dense.py')
    dense.dump(dense_path)
    dumped, = glob.glob(str(tmp / 'work' / '*.py'))
    return dumped, str(tmp / 'work' / 'iter_1.pth'), dense_path


def test_test_tool_rebuilds_slim_under_a_dense_config(slim_run, helpers,
                                                     tmp_path):
    _, ckpt, dense_path = slim_run
    proc = _run(
        helpers,
        osp.join(helpers.repo_root, 'tools', 'test.py'),
        dense_path,
        ckpt,
        '--work-dir',
        str(tmp_path),
        cwd=str(tmp_path))
    assert proc.returncode == 0, _failure(proc)
    assert 'PruningCheckpointHook: rebuilt the slim architecture' in proc.stdout
    assert 0 <= float(re.search(r'mIoU: ([\d.]+)',
                                _metrics(proc.stdout)).group(1)) <= 100


@pytest.mark.skipif(not osp.isfile(MMSEG_TEST),
                    reason="mmseg's tools are not installed with mmseg")
def test_mmseg_test_tool_with_the_runs_config(slim_run, helpers, tmp_path):
    """mmseg's own tools/test.py: the dumped config carries the pruning hook,
    which rebuilds the slim network before the weights load."""
    dumped, ckpt, _ = slim_run
    proc = _run(
        helpers,
        MMSEG_TEST,
        dumped,
        ckpt,
        '--work-dir',
        str(tmp_path),
        cwd=helpers.repo_root)
    assert proc.returncode == 0, _failure(proc)
    assert 'EarlyPruningHook: rebuilt the slim architecture' in proc.stdout
    assert 'channel_sparsity: 0.5000' in _metrics(proc.stdout)
