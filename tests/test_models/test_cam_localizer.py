import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.dataset import pseudo_collate
from mmengine.runner import Runner

from epsd_mm.datasets.cub import CUB200Dataset
from epsd_mm.datasets.demo_cub import write_cub_demo
from epsd_mm.evaluation import cam_to_bbox
from epsd_mm.models.cam_localizer import CAMLocalizer
from epsd_mm.registry import MODELS

# Register the modules the configs name (until the package __init__s do).
import epsd_mm.datasets.samplers  # noqa: F401,E402,I001
import epsd_mm.models.cam_head  # noqa: F401,E402
import epsd_mm.visualization  # noqa: F401,E402

META_KEYS = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
             'flip', 'flip_direction', 'gt_label')
NUM_CLASSES = 3


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('cub_demo'))
    write_cub_demo(
        root, num_classes=NUM_CLASSES, images_per_class=4, image_size=64)
    return root


def tiny_model(**kwargs):
    cfg = dict(
        type='CAMLocalizer',
        data_preprocessor=dict(
            type='mmdet.DetDataPreprocessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True),
        backbone=dict(
            type='mmdet.ResNet',
            depth=18,
            base_channels=8,
            strides=(1, 2, 1, 1),
            out_indices=(3, )),
        head=dict(type='CAMHead', num_classes=NUM_CLASSES, in_channels=64))
    cfg.update(kwargs)
    model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()


def test_loss_without_sd(data_root):
    model = tiny_model().train()
    dataset = CUB200Dataset(
        data_root=data_root,
        split='train',
        pipeline=[
            dict(type='mmdet.LoadImageFromFile'),
            dict(type='mmdet.Resize', scale=(48, 48), keep_ratio=False),
            dict(type='mmdet.PackDetInputs', meta_keys=META_KEYS)
        ])
    data = model.data_preprocessor(
        pseudo_collate([dataset[i] for i in range(4)]), training=True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_cls'}
    losses['loss_cls'].backward()
    assert model.backbone.conv1.weight.grad is not None


@pytest.mark.parametrize('cam_class', ['pred', 'gt'])
def test_predict_boxes_in_original_image(data_root, cam_class):
    model = tiny_model(test_cfg=dict(cam_threshold=0.3, cam_class=cam_class))
    # keep_ratio gives different input sizes, hence a padded batch.
    dataset = CUB200Dataset(
        data_root=data_root,
        split='train',
        pipeline=[
            dict(type='mmdet.LoadImageFromFile'),
            dict(type='mmdet.Resize', scale=(56, 40), keep_ratio=True),
            dict(type='mmdet.RandomFlip', prob=1.0),
            dict(type='mmdet.LoadAnnotations', with_bbox=True),
            dict(type='mmdet.PackDetInputs', meta_keys=META_KEYS)
        ])
    batch = pseudo_collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        results = model.test_step(batch)
        cams = model._forward(model.data_preprocessor(batch)['inputs'])
    assert len({r.img_shape for r in results}) > 1  # padding happened
    for i, result in enumerate(results):
        height, width = result.ori_shape
        pred = result.pred_instances
        assert pred.bboxes.shape == (1, 4) and pred.labels.shape == (1, )
        x1, y1, x2, y2 = pred.bboxes[0].tolist()
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert 0 < float(pred.scores[0]) <= 1
        cam = result.pred_cam.data
        assert cam.shape == (1, height, width)
        assert cam.min() == 0 and cam.max() == 1
        # The box is the thresholded CAM's, of the requested class.
        np.testing.assert_array_equal(
            pred.bboxes[0].numpy(), cam_to_bbox(cam[0].numpy(), 0.3))
        cam_class_idx = (
            pred.labels[0] if cam_class == 'pred' else result.gt_label)
        expected = CAMLocalizer._cam_to_image(cams[i, cam_class_idx],
                                              result.batch_input_shape,
                                              result.metainfo, True)
        assert torch.allclose(cam[0], expected)


def test_cam_to_image_crops_flips_and_rescales():
    cam = torch.arange(32, dtype=torch.float).reshape(4, 8)
    meta = dict(img_shape=(4, 6), ori_shape=(4, 6), flip=True,
                flip_direction='horizontal')
    # The CAM has the batch size already: crop the padding, flip, normalise.
    out = CAMLocalizer._cam_to_image(cam, (4, 8), meta, rescale=True)
    expected = cam[:, :6].flip(-1)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert torch.allclose(out, expected)
    meta.update(ori_shape=(8, 12), flip=False)
    out = CAMLocalizer._cam_to_image(cam, (4, 8), meta, rescale=True)
    assert out.shape == (8, 12)
    assert out[0, 0] == 0 and out[-1, -1] == 1  # not flipped: same corners
    assert CAMLocalizer._cam_to_image(cam, (4, 8), meta,
                                      rescale=False).shape == (4, 6)


def test_invalid_test_cfg_and_missing_label():
    with pytest.raises(ValueError, match='Unknown test_cfg keys'):
        tiny_model(test_cfg=dict(score_thr=0.3))
    with pytest.raises(ValueError, match='cam_threshold'):
        tiny_model(test_cfg=dict(cam_threshold=1.5))
    with pytest.raises(ValueError, match='cam_class'):
        tiny_model(test_cfg=dict(cam_class='top5'))
    model = tiny_model()
    with pytest.raises(KeyError, match='gt_label.*meta_keys'):
        model.sd_labels([DetDataSample()])


# Training through a real MMEngine Runner ------------------------------------
SD_METHODS = dict(
    none=None,
    dlb=dict(type='DLB'),
    pskd=dict(type='PSKD'),
    cskd=dict(type='CSKD', loss=dict(temperature=4.0, loss_weight=3.0)))
SD_LOSS_KEYS = dict(
    none={'loss_cls'},
    dlb={'loss_cls', 'loss_dlb'},
    pskd={'loss_pskd'},
    cskd={'loss_cls', 'loss_cskd'})


def tiny_demo_cfg(helpers, data_root, work_dir, sd_method, pruning):
    """The demo config at test size (``helpers.make_tiny_cam_cfg``).

    Args:
        sd_method (str): Key of ``SD_METHODS``.
        pruning (bool): Keep the config's ``EarlyPruningHook`` (EPSD) or
            drop it (dense training).
    """
    cfg = helpers.make_tiny_cam_cfg(data_root, work_dir, NUM_CLASSES)
    cfg.model.sd = SD_METHODS[sd_method]
    if sd_method != 'cskd':
        cfg.train_dataloader.sampler = dict(
            type='DefaultSampler', shuffle=True)
    if not pruning:
        cfg.default_hooks.pop('pruning')
    return cfg


@pytest.mark.e2e
@pytest.mark.parametrize('sd_method,pruning', [('none', False),
                                               ('dlb', False),
                                               ('pskd', False),
                                               ('cskd', True)])
def test_train_with_runner(data_root, tmp_path, sd_method, pruning, helpers):
    cfg = tiny_demo_cfg(helpers, data_root, tmp_path, sd_method, pruning)
    runner = Runner.from_cfg(cfg)
    runner.train()
    logged = {
        key[len('train/'):]
        for key in runner.message_hub.log_scalars if key.startswith('train/')
    }
    assert SD_LOSS_KEYS[sd_method] <= logged
    assert not logged & (set().union(*SD_LOSS_KEYS.values()) -
                         SD_LOSS_KEYS[sd_method])
    metrics = runner.test()
    for key in ('top1_cls', 'top1_loc@0.20', 'gt_known_loc@0.20',
                'top1_loc@best', 'gt_known_loc@best', 'maxboxacc_v2'):
        assert 0 <= metrics[f'wsol/{key}'] <= 100
    # the class predictions' calibration, from the same evaluator
    for key in ('ece', 'aurc', 'eaurc'):
        assert 0 <= metrics[f'calibration/{key}'] <= 100
    weights = [
        m.weight for m in runner.model.backbone.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    zeros = sum(int((w == 0).sum()) for w in weights)
    sparsity = zeros / sum(w.numel() for w in weights)
    if pruning:
        assert sparsity == pytest.approx(0.9, abs=0.01)
    else:
        assert sparsity < 0.01


@pytest.mark.e2e
def test_test_tool_prints_wsol_metrics_and_sparsity(data_root, tmp_path,
                                                    helpers):
    """tools/test.py on a pruned demo checkpoint: WSOL metrics + sparsity."""
    cfg = tiny_demo_cfg(helpers, data_root, tmp_path / 'train', 'cskd', True)
    Runner.from_cfg(cfg).train()
    cfg_file = tmp_path / 'cub_tiny.py'
    cfg.dump(str(cfg_file))
    repo = osp.join(osp.dirname(__file__), '../..')
    result = subprocess.run([
        sys.executable, 'tools/test.py',
        str(cfg_file),
        str(tmp_path / 'train' / 'epoch_1.pth'), '--work-dir',
        str(tmp_path / 'test')
    ],
                            cwd=repo,
                            capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [
        line for line in (result.stdout + result.stderr).splitlines()
        if 'wsol/top1_loc' in line
    ]
    assert lines, result.stdout[-3000:]
    for key in ('wsol/top1_cls', 'wsol/gt_known_loc@0.20',
                'wsol/top1_loc@best', 'wsol/best_cam_threshold',
                'wsol/maxboxacc_v2', 'calibration/ece', 'calibration/aurc',
                'sparsity: 0.9'):
        assert key in lines[-1]
