"""int8 ONNX export: onnxruntime static quantization calibrated through the
config's own dataloader, and the inputs it refuses before writing."""
import copy
import importlib.util
import os.path as osp
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from epsd_mm.deploy import (calibration_batches, export_pruned_checkpoint,
                            quantize_int8)
from epsd_mm.deploy.checkpoint import build_model
from epsd_mm.deploy.config import deploy_config


def _quiet(_):
    pass


@pytest.fixture(scope='module')
def int8_export(pruned, tmp_path_factory):
    """The tiny pruned checkpoint exported with ONNX and int8, calibrated
    on the 4 images of its val split."""
    out_dir = str(tmp_path_factory.mktemp('int8') / 'deploy')
    result = export_pruned_checkpoint(
        pruned.cfg,
        pruned.checkpoint,
        out_dir,
        onnx=True,
        int8=True,
        calib_num=4,
        log=_quiet)
    return out_dir, result


@pytest.fixture(scope='module')
def plain_model(pruned):
    return build_model(deploy_config(pruned.cfg)[0])


def _run(path: str, inputs: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]


def test_int8_export_writes_a_quantized_model_close_to_fp32(
        int8_export, pruned, plain_model):
    out_dir, result = int8_export
    path = osp.join(out_dir, 'model_int8.onnx')
    assert path in [p for p, _ in result.files]
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear', 'Conv'} <= ops
    assert osp.getsize(path) < 0.5 * osp.getsize(
        osp.join(out_dir, 'model.onnx'))
    report = result.int8
    assert report.num_batches == 4
    assert report.int8_ops['QLinearConv'] >= 20  # the convs run in int8
    assert 'Conv' not in report.fp32_ops
    assert np.isfinite(report.max_abs_diff)

    batches = calibration_batches(pruned.cfg, plain_model, 2, 'val', (64, 64))
    for batch in batches:
        fp32 = _run(osp.join(out_dir, 'model.onnx'), batch)
        int8 = _run(path, batch)
        assert int8.shape == fp32.shape and np.isfinite(int8).all()
        agreement = (int8.argmax(1) == fp32.argmax(1)).mean()
        assert agreement >= 0.8, agreement


def test_report_lists_the_ops_left_in_fp32(int8_export):
    _, result = int8_export
    summary = result.int8.summary()
    # the ASPP's image pooling and its upsampling have no int8 kernel
    assert result.int8.fp32_ops == {'ReduceMean': 1, 'Resize': 1}
    assert 'ReduceMean x1, Resize x1 stay fp32' in summary
    assert 'argmax agrees on' in summary


def test_calibration_images_go_through_the_pipeline_and_are_resized(
        pruned, plain_model):
    native = calibration_batches(pruned.cfg, plain_model, 2, 'val')
    resized = calibration_batches(pruned.cfg, plain_model, 2, 'val', (40, 48))
    assert [b.shape for b in native] == [(1, 3, 64, 64)] * 2
    assert [b.shape for b in resized] == [(1, 3, 40, 48)] * 2
    # normalised by the data preprocessor (mmseg's ImageNet mean/std)
    assert -3 < native[0].mean() < 3 and native[0].std() > 0.1
    expected = F.interpolate(
        torch.from_numpy(native[1]), (40, 48),
        mode='bilinear',
        align_corners=False)
    np.testing.assert_allclose(resized[1], expected.numpy(), atol=1e-6)


def test_quantize_int8_alone(int8_export, pruned, plain_model, tmp_path):
    out_dir, _ = int8_export
    batches = calibration_batches(pruned.cfg, plain_model, 1, 'val', (64, 64))
    report = quantize_int8(
        osp.join(out_dir, 'model.onnx'), str(tmp_path / 'q.onnx'), batches,
        preprocess=False)
    assert report.num_batches == 1 and report.not_quantized == {}


# --------------------------------------------------------------------------
# Bad input: refused before anything is written
# --------------------------------------------------------------------------
def _export_tool(helpers):
    spec = importlib.util.spec_from_file_location(
        'tool_deploy_export',
        osp.join(helpers.repo_root, 'tools', 'deploy', 'export.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_int8_implies_onnx_and_refuses_no_images(helpers, capsys):
    tool = _export_tool(helpers)
    args = tool.parse_args(['cfg.py', 'ckpt.pth', '--out-dir', 'd', '--int8'])
    assert args.onnx and args.int8 and args.calib_num == 32
    assert args.calib_split == 'val'
    for num in ('0', '-3'):
        with pytest.raises(SystemExit):
            tool.parse_args(['cfg.py', 'ckpt.pth', '--out-dir', 'd', '--int8',
                             '--calib-num', num])
        assert 'pass 1 or more' in capsys.readouterr().err


def _voc_with_broken_image(voc_root: str, tmp_path) -> str:
    """A copy of the demo data whose first val image is not an image."""
    root = str(tmp_path / 'VOC2012')
    shutil.copytree(voc_root, root)
    with open(osp.join(root, 'ImageSets', 'Segmentation', 'val.txt')) as f:
        first = f.read().split()[0]
    broken = osp.join(root, 'JPEGImages', f'{first}.jpg')
    with open(broken, 'wb') as f:
        f.write(b'not a jpeg')
    return broken


@pytest.mark.parametrize('case', [
    'without_onnx', 'calib_num_0', 'no_val_dataloader', 'no_test_dataset',
    'missing_data_root', 'broken_image'
])
def test_bad_int8_input_is_refused_before_writing(case, pruned, voc_root,
                                                  tmp_path):
    cfg = copy.deepcopy(pruned.cfg)
    kwargs = dict(onnx=True, int8=True, calib_num=2)
    if case == 'without_onnx':
        kwargs['onnx'] = False
        match = 'pass onnx=True too'
    elif case == 'calib_num_0':
        kwargs['calib_num'] = 0
        match = r'--calib-num 0 \(calib_num\): .* at least one image'
    elif case == 'no_val_dataloader':
        cfg.val_dataloader = None
        match = ('config has no `val_dataloader`; pass --calib-split test '
                 '.* or add a `val_dataloader`')
    elif case == 'no_test_dataset':
        cfg.test_dataloader = dict(batch_size=1)
        kwargs['calib_split'] = 'test'
        match = ('dataset-less `test_dataloader`.dataset; pass --calib-split '
                 'val')
    elif case == 'missing_data_root':
        cfg.val_dataloader.dataset.data_root = str(tmp_path / 'nowhere')
        match = (r'dataset of `val_dataloader` could not be built .* check '
                 r'`val_dataloader.dataset` \(data_root=.*nowhere')
    else:
        broken = _voc_with_broken_image(voc_root, tmp_path)
        cfg.val_dataloader.dataset.data_root = osp.dirname(
            osp.dirname(broken))
        match = (r'transform 0 `LoadImageFromFile` of '
                 r'`val_dataloader.dataset.pipeline` raised .* on sample 0 '
                 rf'\(img_path={broken}')
    out = str(tmp_path / 'out')
    with pytest.raises(ValueError, match=match):
        export_pruned_checkpoint(
            cfg, pruned.checkpoint, out, log=_quiet, **kwargs)
    assert not osp.exists(out)
