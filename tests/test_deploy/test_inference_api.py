"""mmseg's and mmdet's inference APIs on the demo configs and on exported
(pruned, folded) checkpoints."""
import glob
import os.path as osp

import mmcv
import pytest
import torch
from mmengine.config import Config

from epsd_mm.datasets.demo_cub import write_cub_demo
from epsd_mm.deploy import export_pruned_checkpoint

CONFIGS = osp.join(osp.dirname(__file__), '..', '..', 'configs')
VOC_DEMO = osp.join(CONFIGS, 'demo', 'epsd_deeplab_voc_demo.py')
CUB_DEMO = osp.join(CONFIGS, 'demo', 'epsd_cam_cub_demo.py')
MISMATCH = 'do not match exactly'  # mmengine's key-mismatch warning


@pytest.fixture(scope='module')
def voc_image(voc_root) -> str:
    return sorted(glob.glob(osp.join(voc_root, 'JPEGImages', '*.jpg')))[0]


@pytest.fixture(scope='module')
def cub_image(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('cub'))
    write_cub_demo(root, num_classes=2, images_per_class=2, image_size=64)
    return sorted(glob.glob(osp.join(root, 'images', '*', '*.jpg')))[0]


def test_mmseg_inference_on_the_demo_config(voc_image, tmp_path, capsys):
    from mmseg.apis import MMSegInferencer, inference_model, init_model
    from mmseg.datasets import PascalVOCDataset
    checkpoint = str(tmp_path / 'demo.pth')
    torch.save(
        dict(
            meta=dict(dataset_meta=PascalVOCDataset.METAINFO),
            state_dict=init_model(VOC_DEMO, device='cpu').state_dict()),
        checkpoint)
    model = init_model(VOC_DEMO, checkpoint, device='cpu')
    result = inference_model(model, voc_image)
    assert result.pred_sem_seg.shape == mmcv.imread(voc_image).shape[:2]
    batch = inference_model(model, [mmcv.imread(voc_image)] * 2)
    assert len(batch) == 2
    assert torch.equal(batch[0].pred_sem_seg.data, result.pred_sem_seg.data)
    inferencer = MMSegInferencer(VOC_DEMO, checkpoint, device='cpu')
    out = inferencer(voc_image, return_datasamples=True)
    assert torch.equal(out.pred_sem_seg.data, result.pred_sem_seg.data)
    assert MISMATCH not in capsys.readouterr().out


def test_mmseg_inference_on_an_exported_checkpoint(pruned, voc_image, tmp_path,
                                                   capsys):
    from mmseg.apis import MMSegInferencer, inference_model, init_model
    out = str(tmp_path / 'deploy')
    export_pruned_checkpoint(pruned.cfg, pruned.checkpoint, out, log=print)
    capsys.readouterr()
    config = osp.join(out, 'deploy_config.py')
    folded = osp.join(out, 'folded.pth')
    model = init_model(config, folded, device='cpu')
    result = inference_model(model, voc_image)
    inferencer = MMSegInferencer(config, folded, device='cpu')
    again = inferencer(voc_image, return_datasamples=True)
    assert MISMATCH not in capsys.readouterr().out
    assert model.dataset_meta['classes'][0] == 'background'
    assert torch.equal(again.pred_sem_seg.data, result.pred_sem_seg.data)
    # the same prediction as the masked model it was exported from
    pruned.model.cfg = Config.fromfile(config)
    expected = inference_model(pruned.model, voc_image)
    assert torch.equal(expected.pred_sem_seg.data, result.pred_sem_seg.data)


def test_mmseg_inference_on_a_raw_pruned_checkpoint(pruned, voc_image,
                                                    capsys):
    """The training config and checkpoint themselves: the masks load with
    the weights (no unexpected keys) and predictions are the masked
    model's."""
    from mmseg.apis import inference_model, init_model
    from epsd_mm.pruning import get_masks
    cfg = Config.fromfile(pruned.cfg_path)
    cfg.test_pipeline = cfg.test_dataloader.dataset.pipeline  # mmseg reads
    model = init_model(cfg, pruned.checkpoint, device='cpu')
    assert 'unexpected key' not in capsys.readouterr().out
    masks = get_masks(model)
    assert masks.keys() == pruned.masks.keys()
    assert all(torch.equal(masks[k], pruned.masks[k]) for k in masks)
    pruned.model.cfg = cfg
    expected = inference_model(pruned.model, voc_image)
    result = inference_model(model, voc_image)
    assert torch.equal(expected.seg_logits.data, result.seg_logits.data)


def test_mmdet_inference_on_the_cam_demo_config(cub_image):
    from mmdet.apis import inference_detector, init_detector

    # Images to deploy on have no label: take the CAM of the predicted
    # class (the config's 'gt' is the WSOL evaluation protocol).
    model = init_detector(
        CUB_DEMO,
        device='cpu',
        cfg_options={'model.test_cfg.cam_class': 'pred'})
    result = inference_detector(model, cub_image)
    height, width = mmcv.imread(cub_image).shape[:2]
    assert result.pred_instances.bboxes.shape == (1, 4)
    assert result.pred_cam.data.shape == (1, height, width)
    assert 0 <= result.pred_cam.data.min() <= result.pred_cam.data.max() <= 1
    results = inference_detector(model, [mmcv.imread(cub_image)] * 2)
    assert torch.equal(results[0].pred_instances.bboxes,
                       result.pred_instances.bboxes)
