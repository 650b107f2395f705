"""tools/train.py, tools/test.py and tools/make_demo_data.py as a user runs
them (subprocesses on a dumped tiny config)."""
import filecmp
import importlib.util
import os
import os.path as osp
import pickle
import re
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

from epsd_mm.datasets.demo_voc import write_voc_demo

# Runners, subprocesses or torchrun: the integrations, run end to end
pytestmark = pytest.mark.e2e

TIMEOUT = 300


def _run(helpers, *args, cwd):
    return helpers.run_python(*args, cwd=cwd, timeout=TIMEOUT)


@pytest.fixture
def trained(tool_run):
    """(config path, work_dir, stdout) of the shared tools/train.py run."""
    return tool_run.cfg_path, tool_run.work_dir, tool_run.stdout


def test_train_tool(trained):
    _, work_dir, stdout = trained
    ckpt = torch.load(osp.join(work_dir, 'iter_2.pth'))
    masks = [v for k, v in ckpt['state_dict'].items()
             if k.endswith('.weight_epsd_mask')]
    assert len(masks) == 22
    total = sum(m.numel() for m in masks)
    assert sum(int(m.sum()) for m in masks) == round(0.2 * total)
    assert 'EarlyPruningHook: pruning weights of backbone with ProsPr(' in stdout
    assert 'sparsity: 0.8000' in stdout  # validation at the end
    # the run's config was dumped next to the checkpoints with the override
    dumped = open(osp.join(work_dir, 'tiny_epsd.py')).read()
    assert re.search(r'sparsity=0\.8', dumped)


def test_test_tool_prints_miou_and_sparsity(trained, helpers, tmp_path):
    """tools/test.py reads the test data only: the training data may be
    absent."""
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
        '--cfg-options',
        'train_dataloader.dataset.datasets.0.data_root=/nowhere',
        'train_dataloader.dataset.datasets.1.data_root=/nowhere',
        cwd=str(tmp_path))
    assert proc.returncode == 0, helpers.failure_text(proc)
    lines = [l for l in proc.stdout.splitlines()
             if 'mIoU' in l and 'sparsity' in l]
    assert len(lines) == 1, helpers.failure_text(proc)
    miou = float(re.search(r'mIoU: ([\d.]+)', lines[0]).group(1))
    sparsity = float(re.search(r'sparsity: ([\d.]+)', lines[0]).group(1))
    assert 0 <= miou <= 100
    assert sparsity == pytest.approx(0.8, abs=1e-4)
    assert 'EarlyPruningHook: scoring' not in proc.stdout
    assert 'Data check: 4 samples of 1 datasets (test_dataloader)' in \
        proc.stdout
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 4  # the demo val split
    assert preds[0]['pred_sem_seg']['data'].shape[-2:] == (64, 64)


def _script_env(helpers, **extra):
    """A user's shell without an activated venv: no `python` with torch on
    PATH."""
    env = helpers.subprocess_env()
    env.pop('PYTHON', None)
    env.update(PATH='/usr/bin:/bin', **extra)
    return env


@pytest.mark.skipif(
    not osp.isfile(osp.join(osp.dirname(__file__), '../../.venv/bin/python')),
    reason='needs the repository venv (tools/setup_env.sh)')
def test_dist_test_script_uses_the_venv(trained, helpers, voc_root,
                                        tmp_path):
    """tools/dist_test.sh runs the repository's .venv Python without an
    activated venv, and --data-root moves the test data."""
    cfg_path, work_dir, _ = trained
    proc = subprocess.run([
        'bash',
        osp.join(helpers.repo_root, 'tools', 'dist_test.sh'), cfg_path,
        osp.join(work_dir, 'iter_2.pth'), '1', '--work-dir',
        str(tmp_path / 'work'), '--data-root', voc_root
    ],
                          cwd=str(tmp_path),
                          env=_script_env(
                              helpers, PORT=str(helpers.free_port())),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, helpers.failure_text(proc)
    assert 'No module named' not in proc.stdout
    assert re.search(r'mIoU: [\d.]+', proc.stdout), helpers.failure_text(proc)


@pytest.mark.parametrize('script', ['dist_train.sh', 'dist_test.sh',
                                    'slurm_train.sh', 'slurm_test.sh'])
def test_launch_scripts_name_the_fix_for_a_python_without_torch(
        script, helpers, tmp_path):
    proc = subprocess.run(
        ['bash', osp.join(helpers.repo_root, 'tools', script)] +
        ['a'] * 5,
        cwd=str(tmp_path),
        env=_script_env(helpers, PYTHON='/usr/bin/env'),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60)
    assert proc.returncode == 1
    assert "'/usr/bin/env' cannot import torch and mmengine" in proc.stdout
    assert 'tools/setup_env.sh' in proc.stdout and 'PYTHON=' in proc.stdout


def test_train_tool_resume(trained, helpers, tmp_path):
    cfg_path, shared_work_dir, _ = trained
    work_dir = str(tmp_path / 'work')  # the shared run stays as it is
    shutil.copytree(shared_work_dir, work_dir)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(work_dir, 'iter_2.pth'))  # what --resume reads
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
    assert proc.returncode == 0, helpers.failure_text(proc)
    assert 'pruning restored from the checkpoint; not re-scoring' in proc.stdout
    assert 'Iter(train) [3/3]' in proc.stdout
    assert 'Iter(train) [1/3]' not in proc.stdout
    before = torch.load(osp.join(work_dir, 'iter_2.pth'))['state_dict']
    after = torch.load(osp.join(work_dir, 'iter_3.pth'))['state_dict']
    for key in before:
        if key.endswith('.weight_epsd_mask'):
            assert torch.equal(before[key], after[key])


def _small_val_label(voc):
    name = open(osp.join(voc, 'ImageSets/Segmentation/val.txt')).readline()
    path = osp.join(voc, 'SegmentationClass', f'{name.strip()}.png')
    Image.open(path).resize((20, 16), Image.NEAREST).save(path)
    return 'val_dataloader.dataset.ann_file', f'{path} is 20x16'


@pytest.mark.parametrize('broken', ['missing_root', 'label_size'])
def test_train_tool_bad_data_fails_early(broken, tmp_path, helpers,
                                         monkeypatch):
    """Bad data stops tools/train.py before a model is built, with the key,
    the file and the fix (every check: tests/test_datasets/test_checks.py).
    The tool's main() runs in-process: a subprocess would spend its time
    importing what the test process already has."""
    voc = write_voc_demo(
        str(tmp_path / 'voc'), num_train=2, num_val=2, image_size=32)
    cfg = helpers.make_tiny_cfg(voc, str(tmp_path / 'unused'))
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)
    work_dir = tmp_path / 'work'
    options = []
    if broken == 'missing_root':
        missing = str(tmp_path / 'nowhere')
        options = [f'val_dataloader.dataset.data_root={missing}']
        error, expected = FileNotFoundError, (missing, '--data-root DIR')
    else:
        error = ValueError
        expected = (*_small_val_label(voc), 'Re-export the label maps')
    monkeypatch.setattr(sys, 'argv', [
        'train.py', cfg_path, '--work-dir',
        str(work_dir), *(['--cfg-options', *options] if options else [])
    ])
    with pytest.raises(error) as raised:
        _load_tool(helpers, 'train').main()
    for text in expected:
        assert text in str(raised.value)
    # raised by the data check, before the Runner (and any work_dir)
    frames = [str(entry.path) for entry in raised.traceback]
    assert any(f.endswith(osp.join('datasets', 'checks.py')) for f in frames)
    assert not any(osp.join('mmengine', 'runner') in f for f in frames)
    assert not work_dir.exists()


def _load_tool(helpers, name):
    spec = importlib.util.spec_from_file_location(
        f'tool_{name}', osp.join(helpers.repo_root, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('tool, args', [('train', ['cfg.py']),
                                        ('test', ['cfg.py', 'ckpt.pth'])])
def test_tools_refuse_top_level_data_root(tool, args, helpers, monkeypatch,
                                          capsys):
    """--cfg-options data_root=... would change nothing (the config copied
    it into each dataset): the tools say so and name --data-root."""
    module = _load_tool(helpers, tool)
    monkeypatch.setattr(
        sys, 'argv',
        [tool, *args, '--cfg-options', 'data_root=/data/VOC2012'])
    with pytest.raises(SystemExit) as exit_:
        module.parse_args()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert 'does not reach the datasets' in err and '--data-root DIR' in err


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
    assert proc.returncode == 0, helpers.failure_text(proc)
    cli = osp.join(out, 'VOCdevkit', 'VOC2012')
    assert cli in proc.stdout
    api = write_voc_demo(
        str(tmp_path / 'api'), num_train=3, num_val=2, image_size=48)
    files = []
    for dirpath, _, names in os.walk(api):
        files += [osp.relpath(osp.join(dirpath, n), api) for n in names]
    _, mismatch, errors = filecmp.cmpfiles(api, cli, files, shallow=False)
    assert len(files) == 5 * 3 + 4 and not mismatch and not errors
