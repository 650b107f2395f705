"""Draw the CAMs and boxes of a trained CAM localiser on test images.

Each PNG shows the image and its CAM heat map side by side, with the
ground-truth boxes (green) and the predicted box (magenta). Box and CAM are
those of the class chosen by ``model.test_cfg.cam_class`` (the CUB configs use
the ground-truth class; pass ``--cfg-options model.test_cfg.cam_class=pred``
for the top-1 class).

Example:
    python tools/analysis/visualize_cam.py configs/demo/epsd_cam_cub_demo.py \
        work_dirs/epsd_cam_cub_demo/epoch_20.pth --out-dir work_dirs/cams
"""
import argparse
import os
import os.path as osp

import mmcv
import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import epsd_mm  # noqa: F401  registers the epsd_mm scope
from epsd_mm.utils.checkpoint import check_checkpoint_file
from epsd_mm.visualization import CAMVisualizer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file of the model')
    parser.add_argument('checkpoint', help='checkpoint to load')
    parser.add_argument('--out-dir', required=True, help='where to put PNGs')
    parser.add_argument(
        '--num', type=int, default=20, help='number of test images to draw')
    parser.add_argument(
        '--work-dir',
        help='runner work dir (logs); defaults to work_dirs/<config name>')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. model.test_cfg.cam_threshold=0.3')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or osp.join(
        './work_dirs',
        osp.splitext(osp.basename(args.config))[0])
    # The first --num test images; a Runner so that hooks (e.g. pruning
    # masks) take part in loading the checkpoint.
    cfg.test_dataloader.dataset.indices = args.num
    check_checkpoint_file(args.checkpoint)
    runner = Runner.from_cfg(cfg)
    runner.load_checkpoint(args.checkpoint, map_location='cpu')
    dataloader = runner.build_dataloader(cfg.test_dataloader)
    visualizer = CAMVisualizer.get_instance('visualize_cam')
    visualizer.dataset_meta = dataloader.dataset.metainfo

    os.makedirs(args.out_dir, exist_ok=True)
    runner.model.eval()
    for data_batch in dataloader:
        with torch.no_grad():
            samples = runner.model.test_step(data_batch)
        for sample in samples:
            image = mmcv.imread(sample.img_path, channel_order='rgb')
            name = osp.splitext(osp.basename(sample.img_path))[0]
            out_file = osp.join(args.out_dir, f'{name}.png')
            visualizer.add_datasample(name, image, sample, out_file=out_file)
            print(f'wrote {out_file}')


if __name__ == '__main__':
    main()
