"""Distributed pruning: 2 CPU processes, gloo, launched by torchrun."""
import pytest
import os
import os.path as osp
import subprocess
import sys

import torch

# Runners, subprocesses or torchrun: the integrations, run end to end
pytestmark = pytest.mark.e2e

HERE = osp.dirname(osp.abspath(__file__))
TIMEOUT = 300


def _env(helpers) -> dict:
    env = helpers.subprocess_env()
    # as with an activated venv: tools/*.sh call plain `python`
    env['PATH'] = osp.dirname(sys.executable) + os.pathsep + env['PATH']
    return env


def _failure(proc) -> str:
    """The error lines and the tail of a failed subprocess' output."""
    lines = proc.stdout.splitlines()
    errors = [l for l in lines if 'Error' in l or 'error:' in l]
    return '\n'.join(errors[-20:] + ['...'] + lines[-40:])


def _run(cmd, helpers, cwd, **env_extra):
    env = _env(helpers)
    env.update(env_extra)
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT)
    return proc


@pytest.fixture(scope='module')
def dist_runs(voc_root, tmp_path_factory, helpers) -> str:
    """_dist_worker.py on 2 ranks with torchrun (a weight-pruned and a
    channel-pruned run, one launch); the folder of their work_dirs."""
    work_dir = str(tmp_path_factory.mktemp('dist'))
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
        '--nnodes=1', f'--master_port={helpers.free_port()}',
        osp.join(HERE, '_dist_worker.py'), voc_root, work_dir
    ]
    proc = _run(cmd, helpers, cwd=helpers.repo_root)
    assert proc.returncode == 0, _failure(proc)
    return work_dir


def _records(work_dir: str):
    return (torch.load(osp.join(work_dir, 'rank0.pt')),
            torch.load(osp.join(work_dir, 'rank1.pt')))


def test_ranks_hold_identical_masks(dist_runs, helpers):
    work_dir = osp.join(dist_runs, 'weight')
    rank0, rank1 = _records(work_dir)
    assert rank0['world_size'] == rank1['world_size'] == 2
    assert rank0['wrapper'] == 'MMDistributedDataParallel'
    # the ranks drew different data, so their local scores differed ...
    assert rank0['indices'] != rank1['indices']
    # ... yet they hold the same masks, zero patterns and weights
    assert len(rank0['masks']) == 22
    for key in ('masks', 'zeros', 'weights'):
        assert rank0[key].keys() == rank1[key].keys()
        for name in rank0[key]:
            assert torch.equal(rank0[key][name], rank1[key][name]), \
                (key, name)
    total = sum(m.numel() for m in rank0['masks'].values())
    kept = sum(int(m.sum()) for m in rank0['masks'].values())
    assert kept == round(0.1 * total)
    for name, mask in rank0['masks'].items():
        assert torch.equal(rank0['zeros'][name], ~mask | rank0['zeros'][name])
        assert rank0['zeros'][name][~mask].all()
    log = helpers.read_logs(work_dir)
    assert 'EarlyPruningHook: pruning weights of backbone with ProsPr(' in log
    assert 'EarlyPruningHook: weight sparsity 0.9000 (target 0.9000)' in log
    assert 'Iter(train) [2/2]' in log


def test_ranks_hold_identical_slim_networks(dist_runs, helpers):
    """Channel pruning under DDP: every rank trains the same slim network,
    although each rank's own selection differed (see the worker)."""
    work_dir = osp.join(dist_runs, 'channel')
    rank0, rank1 = _records(work_dir)
    assert rank0['world_size'] == rank1['world_size'] == 2
    # DDP re-wrapped the slim model
    assert rank0['wrapper'] == 'MMDistributedDataParallel'
    assert rank0['wrapped_is_model'] and rank1['wrapped_is_model']
    # the ranks' own selections differed ...
    assert any(not torch.equal(rank0['local_keep'][name],
                               rank1['local_keep'][name])
               for name in rank0['local_keep'])
    # ... yet rank 0's was applied everywhere: same architecture, weights
    assert rank0['spec'] == rank1['spec']
    assert rank0['spec']['channels']['kept'] == 184  # floors in the budget
    assert rank0['channels'] == rank1['channels']
    assert rank0['weights'].keys() == rank1['weights'].keys()
    for name, value in rank0['weights'].items():
        assert torch.equal(value, rank1['weights'][name]), name
    log = helpers.read_logs(work_dir)
    assert 'pruning channels of backbone with SNIP()' in log
    assert 'Iter(train) [2/2]' in log
