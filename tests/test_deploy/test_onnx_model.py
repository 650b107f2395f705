"""An exported ONNX file evaluated in its model's place
(epsd_mm.deploy.onnx_model, tools/deploy/test_onnx.py)."""
import copy
import importlib.util
import os.path as osp
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import onnxruntime as ort
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmseg.apis import init_model
from mmseg.structures import SegDataSample

from epsd_mm.datasets.demo_cifar import write_cifar_demo
from epsd_mm.datasets.demo_cub import write_cub_demo
from epsd_mm.deploy import export_onnx, export_pruned_checkpoint
from epsd_mm.deploy.checkpoint import build_model
from epsd_mm.deploy.onnx_model import OnnxEvalError, attach_onnx_network
from epsd_mm.registry import MODELS
from .conftest import randomise_batch_norms

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CIFAR_DEMO = osp.join(REPO_ROOT, 'configs', 'demo',
                      'epsd_resnet_cifar_demo.py')


def _quiet(_):
    pass


def _session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(path,
                                options,
                                providers=['CPUExecutionProvider'])


def _tool(repo_root: str, name: str = 'deploy/test_onnx.py'):
    """A script of tools/ as a module (its main() runs in-process)."""
    path = osp.join(repo_root, 'tools', name)
    spec = importlib.util.spec_from_file_location(
        'tool_' + re.sub(r'\W', '_', name), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def exported(tool_run, tmp_path_factory):
    """The shared tools/train.py run's checkpoint exported with ONNX
    (64x64, the tiny config's crop and test size)."""
    out_dir = str(tmp_path_factory.mktemp('onnx_eval') / 'deploy')
    export_pruned_checkpoint(Config.fromfile(tool_run.cfg_path),
                             tool_run.checkpoint,
                             out_dir,
                             onnx=True,
                             log=_quiet)
    return SimpleNamespace(cfg_path=tool_run.cfg_path,
                           checkpoint=tool_run.checkpoint,
                           deploy_cfg=osp.join(out_dir, 'deploy_config.py'),
                           folded=osp.join(out_dir, 'folded.pth'),
                           onnx=osp.join(out_dir, 'model.onnx'))


# --------------------------------------------------------------------------
# The adapter, at tensor level
# --------------------------------------------------------------------------
def test_segmentor_predicts_as_pytorch_in_chunks(exported):
    """A batch of 3 through a batch-1 graph: the logits and the predicted
    segmentation equal the PyTorch model's."""
    model = init_model(exported.deploy_cfg, exported.folded, device='cpu')
    onnx_model = copy.deepcopy(model)
    attach_onnx_network(onnx_model, _session(exported.onnx), exported.onnx)
    inputs = torch.randn(3,
                         3,
                         64,
                         64,
                         generator=torch.Generator().manual_seed(0))
    meta = dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64))
    with torch.no_grad():
        torch.testing.assert_close(onnx_model(inputs, mode='tensor'),
                                   model(inputs, mode='tensor'),
                                   rtol=0,
                                   atol=1e-4)
        got = onnx_model.predict(inputs, [SegDataSample(metainfo=meta)] * 3)
        want = model.predict(inputs, [SegDataSample(metainfo=meta)] * 3)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.seg_logits.data,
                                   w.seg_logits.data,
                                   rtol=0,
                                   atol=1e-4)


def test_refuses_another_input_size_naming_both_and_the_fix(exported):
    model = build_model(Config.fromfile(exported.deploy_cfg))
    attach_onnx_network(model, _session(exported.onnx), exported.onnx)
    with pytest.raises(
            OnnxEvalError,
            match=r'\(3, 96, 80\) from the test pipeline, but .*model.onnx '
            r'was exported for \(3, 64, 64\)\. Export with --shape 96 80.*'
            r'slide inference'):
        model(torch.randn(1, 3, 96, 80), mode='tensor')


def test_refuses_another_class_count(exported):
    cfg = Config.fromfile(exported.deploy_cfg)
    cfg.model.decode_head.num_classes = 5
    cfg.model.auxiliary_head.num_classes = 5
    with pytest.raises(
            OnnxEvalError,
            match=r'model.onnx outputs 21 channels .* but the config.s '
            r'model has 5 classes \(model.decode_head.num_classes\)'):
        attach_onnx_network(build_model(cfg), _session(exported.onnx),
                            exported.onnx)


def test_refuses_an_unsupported_model(exported):
    with pytest.raises(OnnxEvalError,
                       match='for a Conv2d model; supported: CAMLocalizer, '
                       'EncoderDecoder, ImageClassifier'):
        attach_onnx_network(torch.nn.Conv2d(3, 21, 1), _session(exported.onnx))


def test_cam_localizer_predicts_as_pytorch(tmp_path):
    """The CAM strategy: boxes, labels, scores and CAMs of a batch of 2 (a
    batch-1 graph) equal the model's own predict."""
    torch.manual_seed(0)
    model = MODELS.build(
        dict(type='epsd_mm.CAMLocalizer',
             data_preprocessor=dict(type='mmdet.DetDataPreprocessor'),
             backbone=dict(type='mmdet.ResNet',
                           depth=18,
                           base_channels=8,
                           strides=(1, 2, 1, 1),
                           out_indices=(3, )),
             head=dict(type='epsd_mm.CAMHead', num_classes=4,
                       in_channels=64))).eval()
    randomise_batch_norms(model)
    path = str(tmp_path / 'cam.onnx')
    export_onnx(model, torch.randn(1, 3, 64, 64), path)
    onnx_model = copy.deepcopy(model)
    attach_onnx_network(onnx_model, _session(path), path)
    inputs = torch.randn(2, 3, 64, 64)
    meta = dict(img_shape=(64, 64), ori_shape=(80, 96))
    with torch.no_grad():
        got = onnx_model.predict(inputs, [DetDataSample(metainfo=meta)] * 2)
        want = model.predict(inputs, [DetDataSample(metainfo=meta)] * 2)
    for g, w in zip(got, want):
        assert torch.equal(g.pred_instances.labels, w.pred_instances.labels)
        torch.testing.assert_close(g.pred_instances.scores,
                                   w.pred_instances.scores,
                                   atol=1e-5,
                                   rtol=0)
        torch.testing.assert_close(g.pred_cam.data,
                                   w.pred_cam.data,
                                   atol=1e-4,
                                   rtol=0)
        torch.testing.assert_close(g.pred_instances.bboxes,
                                   w.pred_instances.bboxes,
                                   atol=1,
                                   rtol=0)


# --------------------------------------------------------------------------
# The tool, against tools/test.py
# --------------------------------------------------------------------------
#: Keys of the metrics line that are no metric of the predictions: the
#: checkpoint's sparsity (tools/test.py only) and the loop's timings.
NOT_METRICS = {'sparsity', 'effective_params', 'data_time', 'time'}


def _metrics(line: str) -> dict:
    """The metrics of a Runner's ``Epoch(test)`` / ``Iter(test)`` line, as
    printed."""
    line = line.split('(test)', 1)[-1]
    return {
        key: float(value)
        for key, value in re.findall(r'([\w/@.]+): (-?[\d.]+)', line)
        if key not in NOT_METRICS
    }


def _test_py_metrics(run: SimpleNamespace, repo_root: str, work_dir: str,
                     capsys, monkeypatch) -> dict:
    """tools/test.py in-process on ``run``'s checkpoint: the metrics it
    printed."""
    monkeypatch.setattr(sys, 'argv', [
        'tools/test.py', run.cfg_path, run.checkpoint, '--work-dir', work_dir
    ])
    _tool(repo_root, 'test.py').main()
    lines = [l for l in capsys.readouterr().out.splitlines() if '(test)' in l]
    return _metrics(lines[-1])


def _check_onnx_tool_prints(expected: dict, run: SimpleNamespace,
                            repo_root: str, work_dir: str, capsys) -> None:
    """test_onnx.py on ``run``'s ONNX file, with the training config and
    with the export's deploy_config.py, returns and prints ``expected``
    (to the printed rounding, 4 decimals: 0.01 is far below one image of
    the tiny test sets)."""
    tool = _tool(repo_root)
    for config in (run.cfg_path, run.deploy_cfg):
        metrics = tool.main(
            [config, run.onnx, '--threads', '1', '--work-dir', work_dir])
        assert set(metrics) == set(expected), config
        for key, value in expected.items():
            assert metrics[key] == pytest.approx(value,
                                                 abs=0.01), (config, key)
        printed = [
            l for l in capsys.readouterr().out.splitlines() if '(test)' in l
        ]
        assert printed and _metrics(printed[-1]) == pytest.approx(
            expected, abs=0.01), config


@pytest.mark.e2e
def test_tool_gives_the_metrics_of_test_py(exported, helpers, tmp_path, capsys,
                                           monkeypatch):
    """The issue's acceptance test: the ONNX file through the config's test
    data and evaluator gives tools/test.py's mIoU on the checkpoint, with
    the training config and with the export's deploy_config.py."""
    expected = _test_py_metrics(exported, helpers.repo_root,
                                str(tmp_path / 'test_py'), capsys, monkeypatch)
    assert set(expected) == {'aAcc', 'mIoU', 'mAcc'}
    _check_onnx_tool_prints(expected, exported, helpers.repo_root,
                            str(tmp_path / 'onnx'), capsys)


@pytest.mark.e2e
def test_tool_refuses_another_size_before_evaluating(exported, helpers,
                                                     tmp_path, capsys):
    tool = _tool(helpers.repo_root)
    with pytest.raises(SystemExit,
                       match=r'test_onnx.py: error: .*\(3, 96, 96\) from the '
                       r'test pipeline.*exported for \(3, 64, 64\)'):
        tool.main([
            exported.cfg_path, exported.onnx, '--work-dir',
            str(tmp_path), '--cfg-options',
            'test_dataloader.dataset.pipeline.1.scale=(96,96)'
        ])
    assert 'mIoU:' not in capsys.readouterr().out  # no metrics line


def test_image_classifier_predicts_as_pytorch(tmp_path):
    """The mmpretrain strategy: scores and labels of a batch of 3 (a
    batch-2 graph, so the last chunk is padded) equal the model's own."""
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    from mmpretrain.structures import DataSample
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MMPRETRAIN_MODELS.build(
            dict(type='ImageClassifier',
                 backbone=dict(type='ResNet',
                               depth=18,
                               stem_channels=8,
                               base_channels=8),
                 neck=dict(type='GlobalAveragePooling'),
                 head=dict(type='LinearClsHead',
                           num_classes=10,
                           in_channels=64))).eval()
    randomise_batch_norms(model)
    path = str(tmp_path / 'cls.onnx')
    export_onnx(model, torch.randn(2, 3, 32, 32), path)
    onnx_model = copy.deepcopy(model)
    attach_onnx_network(onnx_model, _session(path), path)
    inputs = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        got = onnx_model.predict(inputs, [DataSample() for _ in range(3)])
        want = model.predict(inputs, [DataSample() for _ in range(3)])
    for g, w in zip(got, want):
        torch.testing.assert_close(g.pred_score,
                                   w.pred_score,
                                   atol=1e-5,
                                   rtol=0)
        assert torch.equal(g.pred_label, w.pred_label)


# --------------------------------------------------------------------------
# The tool against tools/test.py: the CAM localiser and the classifier
# --------------------------------------------------------------------------


def _train_and_export(cfg: Config, tmp: Path,
                      checkpoint: str) -> SimpleNamespace:
    """Train ``cfg`` (with its pruning hook) with a Runner, dump it and
    export the pruned checkpoint with ONNX (at the size its test pipeline
    gives, export's default)."""
    Runner.from_cfg(copy.deepcopy(cfg)).train()
    cfg_path = str(tmp / 'config.py')
    cfg.dump(cfg_path)
    out_dir = str(tmp / 'deploy')
    checkpoint = osp.join(cfg.work_dir, checkpoint)
    export_pruned_checkpoint(cfg, checkpoint, out_dir, onnx=True, log=_quiet)
    return SimpleNamespace(cfg_path=cfg_path,
                           checkpoint=checkpoint,
                           deploy_cfg=osp.join(out_dir, 'deploy_config.py'),
                           onnx=osp.join(out_dir, 'model.onnx'))


@pytest.fixture(scope='module')
def cam_run(tmp_path_factory, helpers) -> SimpleNamespace:
    """The CUB CAM demo (EPSD + CS-KD) at test size
    (``helpers.make_tiny_cam_cfg``): 3 classes of 4 images of 64 px (3 test
    images, 3 held out for the CAM threshold), one epoch at 90% sparsity,
    exported at the 64x64 of its test Resize."""
    tmp = tmp_path_factory.mktemp('onnx_cam')
    data_root = str(tmp / 'cub')
    write_cub_demo(data_root, num_classes=3, images_per_class=4, image_size=64)
    cfg = helpers.make_tiny_cam_cfg(data_root, str(tmp / 'work'))
    return _train_and_export(cfg, tmp, 'epoch_1.pth')


@pytest.mark.e2e
def test_tool_gives_the_wsol_metrics_of_test_py(cam_run, tmp_path, capsys,
                                                monkeypatch):
    """The CAM localiser: every WSOL and calibration metric tools/test.py
    prints, with the training config and with deploy_config.py (whose
    localiser takes the predicted class's CAM; the tool evaluates with the
    trained ground-truth protocol)."""
    expected = _test_py_metrics(cam_run, REPO_ROOT, str(tmp_path / 'test_py'),
                                capsys, monkeypatch)
    assert {
        'wsol/top1_cls', 'wsol/top1_loc@best', 'wsol/gt_known_loc@best',
        'wsol/maxboxacc_v2', 'calibration/ece'
    } <= set(expected)
    _check_onnx_tool_prints(expected, cam_run, REPO_ROOT,
                            str(tmp_path / 'onnx'), capsys)
    # On 3 test images both protocols can print the same numbers: check
    # that deploy_config.py ('pred') is evaluated with the trained 'gt'.
    deployed = Config.fromfile(cam_run.deploy_cfg)
    assert deployed.model.test_cfg.cam_class == 'pred'
    assert _tool(REPO_ROOT).onnx_test_config(
        deployed).model.test_cfg.cam_class == 'gt'


@pytest.fixture(scope='module')
def cls_run(tmp_path_factory) -> SimpleNamespace:
    """The CIFAR classifier demo (EPSD + DLB, ProsPr at 90%) at test size:
    one epoch of 3 iterations on 20 images, 10 test images of 32 px (no
    Resize in its test pipeline: export takes 32x32 from the test data)."""
    tmp = tmp_path_factory.mktemp('onnx_cls')
    data_root = write_cifar_demo(str(tmp / 'cifar'), num_train=20, num_test=10)
    cfg = Config.fromfile(CIFAR_DEMO)
    cfg.merge_from_dict({
        'work_dir': str(tmp / 'work'),
        'train_dataloader.dataset.data_root': data_root,
        'train_dataloader.batch_size': 8,
        'train_dataloader.num_workers': 0,
        'val_dataloader.dataset.data_root': data_root,
        'val_dataloader.batch_size': 10,
        'val_dataloader.num_workers': 0,
        'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 1,
        'default_hooks.checkpoint.interval': 1,
        'default_hooks.pruning.num_batches': 1,
        'default_hooks.pruning.criterion_cfg': dict(num_steps=1),
    })
    cfg.env_cfg.torch_num_threads = 1  # see conftest.make_tiny_cfg
    cfg.test_dataloader = cfg.val_dataloader
    return _train_and_export(cfg, tmp, 'epoch_1.pth')


@pytest.mark.e2e
def test_tool_gives_the_accuracy_and_calibration_of_test_py(
        cls_run, tmp_path, capsys, monkeypatch):
    """The image classifier: accuracy and calibration as tools/test.py
    prints them, with the training config and with deploy_config.py."""
    expected = _test_py_metrics(cls_run, REPO_ROOT, str(tmp_path / 'test_py'),
                                capsys, monkeypatch)
    assert {'accuracy/top1', 'calibration/ece',
            'calibration/aurc'} <= set(expected)
    _check_onnx_tool_prints(expected, cls_run, REPO_ROOT,
                            str(tmp_path / 'onnx'), capsys)
