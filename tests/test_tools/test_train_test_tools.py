"""tools/train.py, tools/test.py and tools/make_demo_data.py as a user runs
them (subprocesses on a dumped tiny config)."""
import filecmp
import os
import os.path as osp
import pickle
import re
import subprocess
import sys

import pytest
import torch

TIMEOUT = 300


def _failure(proc) -> str:
    """The error lines and the tail of a failed subprocess' output."""
    lines = proc.stdout.splitlines()
    errors = [l for l in lines if 'Error' in l or 'error:' in l]
    return '\n'.join(errors[-20:] + ['...'] + lines[-40:])


def _run(helpers, *args, cwd):
    proc = subprocess.run([sys.executable, *args],
                          cwd=cwd,
                          env=helpers.subprocess_env(),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=TIMEOUT)
    return proc


@pytest.fixture(scope='module')
def trained(tmp_path_factory, voc_root, helpers):
    """tools/train.py on the tiny config, sparsity changed on the command
    line; returns (config path, work_dir, stdout)."""
    tmp = tmp_path_factory.mktemp('tools')
    cfg = helpers.make_tiny_cfg(voc_root, str(tmp / 'unused'), max_iters=2)
    cfg_path = str(tmp / 'tiny_epsd.py')
    cfg.dump(cfg_path)
    work_dir = str(tmp / 'work')
    proc = _run(
        helpers,
        osp.join(helpers.repo_root, 'tools', 'train.py'),
        cfg_path,
        '--work-dir',
        work_dir,
        '--cfg-options',
        'default_hooks.pruning.sparsity=0.8',
        cwd=str(tmp))
    assert proc.returncode == 0, _failure(proc)
    return cfg_path, work_dir, proc.stdout


def test_train_tool(trained):
    _, work_dir, stdout = trained
    ckpt = torch.load(osp.join(work_dir, 'iter_2.pth'))
    masks = [v for k, v in ckpt['state_dict'].items()
             if k.endswith('.weight_epsd_mask')]
    assert len(masks) == 22
    total = sum(m.numel() for m in masks)
    assert sum(int(m.sum()) for m in masks) == round(0.2 * total)
    assert 'EarlyPruningHook: scoring 22 layers with prospr' in stdout
    assert 'sparsity: 0.8000' in stdout  # validation at the end
    # the run's config was dumped next to the checkpoints with the override
    dumped = open(osp.join(work_dir, 'tiny_epsd.py')).read()
    assert re.search(r'sparsity=0\.8', dumped)


def test_test_tool_prints_miou_and_sparsity(trained, helpers, tmp_path):
    cfg_path, work_dir, _ = trained
    out = str(tmp_path / 'preds.pkl')
    proc = _run(
        helpers,
        osp.join(helpers.repo_root, 'tools', 'test.py'),
        cfg_path,
        osp.join(work_dir, 'iter_2.pth'),
        '--work-dir',
        str(tmp_path / 'test_work'),
        '--out',
        out,
        cwd=str(tmp_path))
    assert proc.returncode == 0, _failure(proc)
    lines = [l for l in proc.stdout.splitlines()
             if 'mIoU' in l and 'sparsity' in l]
    assert len(lines) == 1, _failure(proc)
    miou = float(re.search(r'mIoU: ([\d.]+)', lines[0]).group(1))
    sparsity = float(re.search(r'sparsity: ([\d.]+)', lines[0]).group(1))
    assert 0 <= miou <= 100
    assert sparsity == pytest.approx(0.8, abs=1e-4)
    assert 'EarlyPruningHook: scoring' not in proc.stdout
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 4  # the demo val split
    assert preds[0]['pred_sem_seg']['data'].shape[-2:] == (64, 64)


def test_train_tool_resume(trained, helpers, tmp_path):
    cfg_path, work_dir, _ = trained
    proc = _run(
        helpers,
        osp.join(helpers.repo_root, 'tools', 'train.py'),
        cfg_path,
        '--work-dir',
        work_dir,
        '--resume',
        '--cfg-options',
        'default_hooks.pruning.sparsity=0.8',  # as the run was started
        'train_cfg.max_iters=3',
        'train_cfg.val_interval=100',
        cwd=str(tmp_path))
    assert proc.returncode == 0, _failure(proc)
    assert 'masks restored from the checkpoint; not re-scoring' in proc.stdout
    assert 'Iter(train) [3/3]' in proc.stdout
    assert 'Iter(train) [1/3]' not in proc.stdout
    before = torch.load(osp.join(work_dir, 'iter_2.pth'))['state_dict']
    after = torch.load(osp.join(work_dir, 'iter_3.pth'))['state_dict']
    for key in before:
        if key.endswith('.weight_epsd_mask'):
            assert torch.equal(before[key], after[key])


def test_train_tool_missing_data_fails_early(tmp_path, helpers, voc_root):
    cfg = helpers.make_tiny_cfg(voc_root, str(tmp_path / 'unused'))
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)
    work_dir = tmp_path / 'work'
    missing = str(tmp_path / 'nowhere')
    proc = _run(
        helpers,
        osp.join(helpers.repo_root, 'tools', 'train.py'),
        cfg_path,
        '--work-dir',
        str(work_dir),
        '--cfg-options',
        f'val_dataloader.dataset.data_root={missing}',
        cwd=str(tmp_path))
    assert proc.returncode != 0
    assert 'FileNotFoundError' in proc.stdout and missing in proc.stdout
    assert not work_dir.exists() or helpers.checkpoints(str(work_dir)) == []


def test_make_demo_data_voc(tmp_path, helpers):
    from epsd_mm.datasets.demo_voc import write_voc_demo
    out = str(tmp_path / 'cli')
    proc = _run(
        helpers,
        osp.join(helpers.repo_root, 'tools', 'make_demo_data.py'),
        'voc',
        '--out',
        out,
        '--num-train',
        '3',
        '--num-val',
        '2',
        '--image-size',
        '48',
        cwd=str(tmp_path))
    assert proc.returncode == 0, _failure(proc)
    cli = osp.join(out, 'VOCdevkit', 'VOC2012')
    assert cli in proc.stdout
    api = write_voc_demo(
        str(tmp_path / 'api'), num_train=3, num_val=2, image_size=48)
    files = []
    for dirpath, _, names in os.walk(api):
        files += [osp.relpath(osp.join(dirpath, n), api) for n in names]
    _, mismatch, errors = filecmp.cmpfiles(api, cli, files, shallow=False)
    assert len(files) == 5 * 3 + 4 and not mismatch and not errors
