"""MMEngine checkpoints load under torch's ``weights_only`` default, and only
the globals they need were allow-listed (safety is not switched off)."""
import argparse
import glob
import io
import os
import os.path as osp
import pickle
import pickletools
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner, load_checkpoint

from epsd_mm.utils.checkpoint import (NUMPY_MULTIARRAY_MODULES,
                                      checkpoint_safe_globals)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class NotAllowed:
    """A class no allow-list contains."""

    def __init__(self, value):
        self.value = value


def _run_log(runner) -> str:
    path, = glob.glob(osp.join(runner.log_dir, '*.log'))
    with open(path, encoding='utf-8') as f:
        return f.read()


@pytest.fixture(scope='module')
def trained(tmp_path_factory, voc_root, helpers):
    """A 2-iteration run with a checkpoint at iteration 2."""
    work_dir = str(tmp_path_factory.mktemp('ckpt_run'))
    cfg = helpers.make_tiny_cfg(
        voc_root,
        work_dir, {'default_hooks.pruning.criterion': 'magnitude'},
        max_iters=2)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return work_dir, osp.join(work_dir, 'iter_2.pth')


def test_weights_only_is_the_default(tmp_path):
    """The environment the allow-list is for: torch >= 2.6 loads with
    weights_only=True unless told otherwise (and nobody forced it off)."""
    import os
    assert tuple(int(v) for v in torch.__version__.split('.')[:2]) >= (2, 6)
    for var in ('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD',
                'TORCH_FORCE_WEIGHTS_ONLY_LOAD'):
        assert os.environ.get(var) in (None, '', '0'), var
    path = str(tmp_path / 'obj.pth')
    torch.save({'obj': NotAllowed(1)}, path)
    with pytest.raises(pickle.UnpicklingError, match='weights_only'):
        torch.load(path)


def _python(script: str) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter, as a user's own script."""
    return subprocess.run([sys.executable, '-c', script],
                          capture_output=True,
                          text=True,
                          cwd=REPO_ROOT,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT,
                                   OMP_NUM_THREADS='1',
                                   PYTHONWARNINGS='ignore'),
                          timeout=600)


@pytest.mark.parametrize('order', ['epsd_mm first', 'torch first'])
def test_safe_globals_registered_by_import_epsd_mm(order):
    """``import epsd_mm`` registers exactly the list, whether torch is
    imported before or after it, and imports neither torch (it waits for
    it), mmseg nor mmdet."""
    first = ('import epsd_mm, sys\n'
             "assert 'torch' not in sys.modules\n"
             'import torch\n' if order == 'epsd_mm first' else
             'import torch, epsd_mm, sys\n')
    script = first + (
        "assert not {'mmseg', 'mmdet', 'mmpretrain'} & set(sys.modules)\n"
        'from epsd_mm.utils.checkpoint import checkpoint_safe_globals\n'
        'safe = torch.serialization.get_safe_globals()\n'
        'assert all(o in safe for o in checkpoint_safe_globals())\n'
        'import builtins, os\n'
        'for bad in (builtins.eval, builtins.exec, os.system, '
        'builtins.__import__):\n'
        '    assert bad not in safe\n'
        "print('ok')\n")
    out = _python(script)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == 'ok'


@pytest.mark.e2e
def test_mmseg_init_model_after_import_epsd_mm(trained, voc_root, helpers,
                                               tmp_path):
    """The README's flow: ``import epsd_mm``, then mmseg's own APIs on a
    training checkpoint (HistoryBuffer message hub, numpy values)."""
    work_dir, ckpt_path = trained
    cfg = helpers.make_tiny_cfg(
        voc_root,
        work_dir, {'default_hooks.pruning.criterion': 'magnitude'},
        max_iters=2)
    cfg.test_pipeline = helpers.test_pipeline  # what inference_model reads
    cfg_path = str(tmp_path / 'tiny_epsd.py')
    cfg.dump(cfg_path)
    image, = glob.glob(osp.join(voc_root, '**', 'JPEGImages', '*.jpg'),
                       recursive=True)[:1]
    out = _python(
        'import epsd_mm\n'
        'from mmseg.apis import init_model, inference_model\n'
        f'model = init_model({cfg_path!r}, {ckpt_path!r}, device="cpu")\n'
        f'result = inference_model(model, {image!r})\n'
        'print(tuple(result.pred_sem_seg.data.shape))\n')
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1].startswith('(1, ')


def _runner_like_checkpoint(model: torch.nn.Module, path: str) -> None:
    """What an MMEngine Runner writes besides the weights: a message hub of
    HistoryBuffers holding numpy arrays, numpy scalars in meta."""
    loss = HistoryBuffer()
    for value in (1.5, 1.25):
        loss.update(np.float64(value))
    torch.save(
        dict(
            meta=dict(epoch=np.int64(1), iter=np.int64(13),
                      seed=np.int64(0), lr=np.float32(0.05)),
            state_dict=model.state_dict(),
            message_hub=dict(
                log_scalars={'train/loss': loss},
                runtime_info=dict(iter=np.int64(13)),
                resumed_keys={})), path)


@pytest.mark.e2e
def test_mmdet_init_detector_after_import_epsd_mm(tmp_path):
    """mmdet's init_detector on a checkpoint of the CUB demo config with a
    Runner's meta types."""
    from mmengine.config import Config
    from epsd_mm.deploy.checkpoint import build_model
    demo = osp.join(REPO_ROOT, 'configs', 'demo', 'epsd_cam_cub_demo.py')
    torch.manual_seed(0)
    model = build_model(Config.fromfile(demo))
    ckpt_path = str(tmp_path / 'epoch_1.pth')
    _runner_like_checkpoint(model, ckpt_path)
    name, weight = next(iter(model.state_dict().items()))
    reference = str(tmp_path / 'weight.pth')
    torch.save(weight, reference)
    out = _python(
        'import epsd_mm, torch\n'
        'from mmdet.apis import init_detector\n'
        f'model = init_detector({demo!r}, {ckpt_path!r}, device="cpu")\n'
        f'expected = torch.load({reference!r})\n'
        f'assert torch.equal(model.state_dict()[{name!r}], expected)\n'
        'out = model(torch.randn(1, 3, 96, 96), mode="tensor")\n'
        "print('ok')\n")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == 'ok'


def test_checkpoint_loads_with_default_torch_load(trained):
    _, ckpt_path = trained
    ckpt = torch.load(ckpt_path)  # weights_only=True by default
    assert ckpt['meta']['iter'] == 2
    assert 'optimizer' in ckpt and 'param_schedulers' in ckpt
    log_scalars = ckpt['message_hub']['log_scalars']
    assert isinstance(log_scalars['train/loss'], HistoryBuffer)
    losses = log_scalars['train/loss'].data[0]
    assert isinstance(losses, np.ndarray) and losses.shape == (2, )
    assert np.isfinite(losses).all()
    # masks of the pruned backbone travel in the state dict
    masks = [k for k in ckpt['state_dict'] if k.endswith('.weight_epsd_mask')]
    assert masks and all(k.startswith('backbone.') for k in masks)


def test_mmengine_load_checkpoint(trained, tiny_cfg):
    from mmengine.registry import DefaultScope
    from epsd_mm.pruning import attach_mask_buffers, masked_param_names
    from epsd_mm.registry import MODELS
    _, ckpt_path = trained
    cfg = tiny_cfg()
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        model = MODELS.build(cfg.model)
    state = torch.load(ckpt_path)['state_dict']
    attach_mask_buffers(model, masked_param_names(state))
    ckpt = load_checkpoint(model, ckpt_path, strict=True)
    assert ckpt['meta']['iter'] == 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.e2e
def test_resume_continues_iterations(trained, tiny_cfg):
    work_dir, ckpt_path = trained
    cfg = tiny_cfg(
        {
            'default_hooks.pruning.criterion': 'magnitude',
            'train_cfg.val_interval': 100,
        },
        work_dir=work_dir,
        max_iters=4)
    cfg.resume = True
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 4
    log = _run_log(runner)
    assert f'Auto resumed from the latest checkpoint {ckpt_path}' in log
    assert 'resumed epoch: 0, iter: 2' in log
    # training continued at iteration 3; iterations 1-2 were not repeated
    assert 'Iter(train) [3/4]' in log and 'Iter(train) [4/4]' in log
    assert 'Iter(train) [1/4]' not in log
    assert 'Iter(train) [2/4]' not in log
    ckpt = torch.load(osp.join(work_dir, 'iter_4.pth'))
    assert ckpt['meta']['iter'] == 4
    # the loss history carried over: 2 old + 2 new entries
    assert ckpt['message_hub']['log_scalars']['train/loss'].data[0].shape \
        == (4, )


def test_non_allowed_class_still_refused(tmp_path, trained):
    """Loading stays weights_only: a checkpoint holding any other object
    fails, by default and through mmengine's loader."""
    _, ckpt_path = trained
    ckpt = torch.load(ckpt_path)
    for evil in (NotAllowed(1), argparse.Namespace(a=1)):
        ckpt['meta']['evil'] = evil
        path = str(tmp_path / f'{type(evil).__name__}.pth')
        torch.save(ckpt, path)
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path)
        with pytest.raises(pickle.UnpicklingError):
            load_checkpoint(torch.nn.Linear(1, 1), path)
        # explicitly opting out still works, so the file itself is fine
        assert type(torch.load(path, weights_only=False)['meta']['evil']) \
            is type(evil)


def _pickle_naming(module: str, obj, tmp_path) -> str:
    """``torch.save(obj)`` with its pickle rewritten to name numpy's
    ``multiarray`` as ``module`` (what numpy 1.x or 2.x writes)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    written = np.ndarray.__reduce__(np.zeros(1))[0].__module__
    path = str(tmp_path / f'{module}.pth')
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, \
            zipfile.ZipFile(path, 'w') as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith('/data.pkl'):
                data = data.replace(f'{written}\n'.encode(),
                                    f'{module}\n'.encode())
                globals_ = {
                    arg.split()[0]
                    for op, arg, _ in pickletools.genops(data)
                    if op.name == 'GLOBAL'
                }
                assert {'numpy.core.multiarray',
                        'numpy._core.multiarray'} & globals_ == {module}
            dst.writestr(info, data)
    return path


@pytest.mark.parametrize('module', NUMPY_MULTIARRAY_MODULES)
def test_numpy_1_and_2_pickles_load(module, tmp_path):
    """A checkpoint written under numpy 1.26 names numpy.core.multiarray,
    one written under numpy 2 numpy._core.multiarray: both load."""
    buffer = HistoryBuffer()
    buffer.update(np.float64(0.5))
    obj = dict(
        array=np.arange(6, dtype=np.float32).reshape(2, 3),
        scalar=np.float64(1.5),
        count=np.int64(7),
        tensor=torch.ones(2),
        buffer=buffer)
    path = _pickle_naming(module, obj, tmp_path)
    loaded = torch.load(path)  # weights_only=True
    np.testing.assert_array_equal(loaded['array'], obj['array'])
    assert loaded['array'].dtype == np.float32
    assert loaded['scalar'] == 1.5 and type(loaded['scalar']) is np.float64
    assert loaded['count'] == 7 and type(loaded['count']) is np.int64
    assert torch.equal(loaded['tensor'], obj['tensor'])
    assert loaded['buffer'].current() == 0.5


def test_other_numpy_core_globals_still_refused(tmp_path):
    """Allowing both module paths allows exactly the two functions numpy
    pickles name, nothing else of the module."""
    from numpy._core import multiarray
    for module in NUMPY_MULTIARRAY_MODULES:
        data = (b'\x80\x02c' + module.encode() + b'\nfrombuffer\n'
                b'q\x00.')
        assert pickletools.dis(data, out=io.StringIO()) is None  # valid
        path = str(tmp_path / f'{module}_frombuffer.pth')
        buf = io.BytesIO()
        torch.save(0, buf)
        with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, \
                zipfile.ZipFile(path, 'w') as dst:
            for info in src.infolist():
                dst.writestr(
                    info, data if info.filename.endswith('/data.pkl') else
                    src.read(info))
        with pytest.raises(pickle.UnpicklingError, match='frombuffer'):
            torch.load(path)
    assert multiarray.frombuffer not in torch.serialization.get_safe_globals()


# ---- truncated or foreign files: one clear message naming the file --------


def _damaged_copy(source: str, path: str, damage: str) -> str:
    raw = open(source, 'rb').read()
    content = dict(
        truncated=raw[:len(raw) // 2],
        empty=b'',
        text=b'<html>403 Forbidden</html>\n',
        random=np.random.default_rng(0).bytes(4096))[damage]
    with open(path, 'wb') as f:
        f.write(content)
    return path


@pytest.mark.parametrize('damage', ['truncated', 'empty', 'text', 'random'])
def test_load_checkpoint_file_refuses_unreadable_files(
        trained, tmp_path, damage):
    from epsd_mm.utils.checkpoint import load_checkpoint_file
    _, ckpt_path = trained
    path = _damaged_copy(ckpt_path, str(tmp_path / 'iter_2.pth'), damage)
    with pytest.raises(ValueError) as info:
        load_checkpoint_file(path)
    message = str(info.value)
    assert message.startswith(
        f'{path} is not a readable checkpoint (truncated or not a torch '
        'file: ')
    assert 'earlier iter_*.pth' in message  # the fix
    assert load_checkpoint_file(ckpt_path)['meta']['iter'] == 2


def test_load_checkpoint_file_reads_legacy_and_refuses_missing(tmp_path):
    from epsd_mm.utils.checkpoint import load_checkpoint_file
    path = str(tmp_path / 'legacy.pth')
    torch.save({'w': torch.ones(2)}, path,
               _use_new_zipfile_serialization=False)
    assert torch.equal(load_checkpoint_file(path)['w'], torch.ones(2))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_checkpoint_file(str(tmp_path / 'missing.pth'))


def test_unsupported_global_is_not_called_truncated(tmp_path):
    """A readable file holding a class outside the allow-list keeps
    torch's own message (the file is fine; the class is not allowed)."""
    from epsd_mm.utils.checkpoint import load_checkpoint_file
    path = str(tmp_path / 'obj.pth')
    torch.save({'obj': NotAllowed(1)}, path)
    with pytest.raises(pickle.UnpicklingError, match='Unsupported global'):
        load_checkpoint_file(path)


def test_run_refuses_truncated_load_from_before_building(
        trained, tiny_cfg, tmp_path):
    """tools/test.py (cfg.load_from) and --resume (the work dir's
    last_checkpoint) check the file before the Runner is built."""
    from epsd_mm.utils.launch import run
    _, ckpt_path = trained
    path = _damaged_copy(ckpt_path, str(tmp_path / 'iter_2.pth'),
                         'truncated')
    built = []
    cfg = tiny_cfg(work_dir=str(tmp_path / 'test'))
    cfg.load_from = path
    with pytest.raises(ValueError, match=f'{path} is not a readable '
                       'checkpoint.*complete checkpoint'):
        run(cfg, ('test_dataloader', ), built.append)
    assert not built
    work_dir = str(tmp_path / 'resume')
    os.makedirs(work_dir)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(path)
    cfg = tiny_cfg(work_dir=work_dir)
    cfg.resume = True
    with pytest.raises(ValueError, match=f'{path} is not a readable '
                       'checkpoint.*last_checkpoint'):
        run(cfg, ('train_dataloader', ), built.append)
    assert not built
