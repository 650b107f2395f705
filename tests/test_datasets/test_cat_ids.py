import numpy as np
from mmengine.dataset import ConcatDataset
from mmseg.datasets import PascalVOCDataset
from PIL import Image

from epsd_mm.datasets.cat_ids import sample_cat_ids
from epsd_mm.datasets.demo_voc import write_voc_demo


def test_seg_cat_ids_match_label_maps(tmp_path):
    voc = write_voc_demo(str(tmp_path), num_train=4, num_val=1, image_size=64)
    datasets = [
        PascalVOCDataset(
            data_root=voc,
            data_prefix=dict(img_path='JPEGImages', seg_map_path=seg),
            ann_file='ImageSets/Segmentation/train.txt',
            pipeline=[]) for seg in ('SegmentationClass',
                                     'SegmentationClassAug')
    ]
    concat = ConcatDataset(datasets)
    for idx in range(len(concat)):
        info = concat.get_data_info(idx)
        labels = np.asarray(Image.open(info['seg_map_path']))
        expected = sorted(int(c) for c in np.unique(labels) if c != 255)
        assert sample_cat_ids(concat, idx) == expected
        assert 0 in expected and len(expected) >= 2  # background + objects


def test_get_cat_ids_is_preferred():

    class WithCatIds:

        def get_cat_ids(self, idx):
            return [idx, 7]

    assert sample_cat_ids(WithCatIds(), 3) == [3, 7]
