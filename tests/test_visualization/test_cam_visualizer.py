import os.path as osp
import runpy
import sys

import cv2
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.runner import save_checkpoint
from mmengine.structures import InstanceData, PixelData

from epsd_mm.datasets.demo_cub import write_cub_demo
from epsd_mm.registry import MODELS
from epsd_mm.visualization import CAMVisualizer

# Register the modules the configs name (until the package __init__s do).
import epsd_mm.datasets.cub  # noqa: F401,E402,I001
import epsd_mm.datasets.samplers  # noqa: F401,E402
import epsd_mm.evaluation  # noqa: F401,E402
import epsd_mm.models.cam_head  # noqa: F401,E402
import epsd_mm.models.cam_localizer  # noqa: F401,E402

ROOT = osp.join(osp.dirname(__file__), '../..')
GT_BOX = [5., 4., 30., 20.]
PRED_BOX = [20., 10., 50., 36.]


def prediction(height=40, width=60):
    cam = torch.zeros(1, height, width)
    cam[0, 10:36, 20:50] = 1
    sample = DetDataSample(metainfo=dict(gt_label=1))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([GT_BOX]))
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([PRED_BOX]),
        labels=torch.tensor([0]),
        scores=torch.tensor([0.8]))
    sample.pred_cam = PixelData(data=cam)
    return sample


def near(pixel, color, tol=60):
    return np.abs(pixel.astype(int) - np.array(color)).max() <= tol


def test_draws_two_panels_with_both_boxes(tmp_path):
    visualizer = CAMVisualizer.get_instance('test_cam_visualizer')
    visualizer.dataset_meta = dict(classes=('Sparrow', 'Gull'))
    image = np.full((40, 60, 3), 128, np.uint8)
    out_file = str(tmp_path / 'cam.png')
    visualizer.add_datasample('cam', image, prediction(), out_file=out_file)

    drawn = cv2.imread(out_file)[..., ::-1]  # RGB
    scale = 7  # ceil(256 / 40): small images are enlarged
    assert drawn.shape == (40 * scale, 2 * 60 * scale, 3)
    for offset in (0, 60 * scale):  # image panel, heat-map panel
        for box, color in ((GT_BOX, visualizer.gt_color),
                           (PRED_BOX, visualizer.pred_color)):
            x1, y1, x2, y2 = (int(v * scale) for v in box)
            # Bottom edge, middle: clear of the text in the top-left corner.
            assert near(drawn[y2, offset + (x1 + x2) // 2], color)
    # The heat map is hot (red) inside the CAM and cold (blue) outside.
    hot = drawn[23 * scale, 60 * scale + 35 * scale]
    cold = drawn[2 * scale, 60 * scale + 55 * scale]
    assert hot[0] > hot[2] and cold[2] > cold[0]


def test_rejects_a_cam_of_another_size():
    visualizer = CAMVisualizer.get_instance('test_cam_visualizer')
    with pytest.raises(ValueError, match='rescale=True'):
        visualizer.draw_cam(np.zeros((20, 30, 3), np.uint8), prediction())


def test_visualize_cam_tool(tmp_path, monkeypatch):
    data_root = str(tmp_path / 'data')
    write_cub_demo(data_root, num_classes=3, images_per_class=8, image_size=64)
    config = osp.join(ROOT, 'configs/demo/epsd_cam_cub_demo.py')
    tiny = {
        'model.backbone.base_channels': 8,
        'model.head.num_classes': 3,
        'model.head.in_channels': 64
    }
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(tiny)
    checkpoint = str(tmp_path / 'model.pth')
    save_checkpoint({'state_dict': MODELS.build(cfg.model).state_dict()},
                    checkpoint)

    out_dir = tmp_path / 'cams'
    options = [f'{k}={v}' for k, v in tiny.items()] + [
        f'test_dataloader.dataset.data_root={data_root}',
        'test_dataloader.num_workers=0'
    ]
    monkeypatch.setattr(sys, 'argv', [
        'visualize_cam.py', config, checkpoint, '--out-dir',
        str(out_dir), '--num', '2', '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', *options
    ])
    runpy.run_path(
        osp.join(ROOT, 'tools/analysis/visualize_cam.py'), run_name='__main__')
    pngs = sorted(out_dir.glob('*.png'))
    assert len(pngs) == 2
    # Two panels of the enlarged 64 px wide image, at least 256 px high.
    drawn = cv2.imread(str(pngs[0]))
    assert drawn.shape[0] >= 256 and drawn.shape[1] % (2 * 64) == 0
