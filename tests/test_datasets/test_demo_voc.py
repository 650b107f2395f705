"""The VOC-layout demo data is read by mmseg's own dataset and transforms."""
import filecmp
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from mmseg.datasets import PascalVOCDataset
from PIL import Image

from epsd_mm.datasets.demo_voc import (DEMO_CLASSES, _with_void_border,
                                       draw_sample, voc_palette,
                                       write_voc_demo)

NUM_TRAIN, NUM_VAL, SIZE = 8, 4, 64
CLASS_IDS = {c for c, _, _ in DEMO_CLASSES}


def _dataset(voc, seg_folder, split, pipeline=()):
    return PascalVOCDataset(
        data_root=voc,
        data_prefix=dict(img_path='JPEGImages', seg_map_path=seg_folder),
        ann_file=f'ImageSets/Segmentation/{split}.txt',
        pipeline=list(pipeline))


def _drawn(seed=0, count=NUM_TRAIN + NUM_VAL):
    """Redraw the samples in the order write_voc_demo draws them."""
    rng = np.random.default_rng(seed)
    return [draw_sample(rng, SIZE) for _ in range(count)]


def test_layout_and_splits(voc_root):
    assert voc_root.endswith(osp.join('VOCdevkit', 'VOC2012'))
    for folder in ('JPEGImages', 'SegmentationClass', 'SegmentationClassAug'):
        assert len(os.listdir(osp.join(voc_root, folder))) == \
            NUM_TRAIN + NUM_VAL
    splits = {}
    for split in ('train', 'aug', 'val', 'trainval'):
        with open(osp.join(voc_root, 'ImageSets', 'Segmentation',
                           f'{split}.txt')) as f:
            splits[split] = f.read().split()
    assert len(splits['train']) == NUM_TRAIN
    assert splits['aug'] == splits['train']
    assert len(splits['val']) == NUM_VAL
    assert not set(splits['train']) & set(splits['val'])
    assert splits['trainval'] == splits['train'] + splits['val']


@pytest.mark.parametrize('seg_folder, split, size', [
    ('SegmentationClass', 'train', NUM_TRAIN),
    ('SegmentationClassAug', 'aug', NUM_TRAIN),
    ('SegmentationClass', 'val', NUM_VAL),
])
def test_mmseg_dataset_reads_demo(voc_root, seg_folder, split, size):
    dataset = _dataset(voc_root, seg_folder, split)
    assert len(dataset) == size
    assert dataset.metainfo['classes'][0] == 'background'
    assert len(dataset.metainfo['classes']) == 21
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        assert osp.isfile(info['img_path'])
        assert osp.isfile(info['seg_map_path'])
        assert osp.dirname(info['seg_map_path']).endswith(seg_folder)
        image = cv2.imread(info['img_path'])
        assert image.shape == (SIZE, SIZE, 3)
        label = np.asarray(Image.open(info['seg_map_path']))
        assert label.shape == (SIZE, SIZE)
        values = set(np.unique(label).tolist())
        assert values <= {0, 255} | CLASS_IDS
        assert 0 in values and values & CLASS_IDS  # background + object
        if seg_folder == 'SegmentationClassAug':
            assert 255 not in values  # SBD-style labels have no void border
        else:
            assert 255 in values  # VOC marks object borders as void


def test_png_modes_and_palette(voc_root):
    name = '2007_000000'
    voc_png = Image.open(
        osp.join(voc_root, 'SegmentationClass', f'{name}.png'))
    assert voc_png.mode == 'P'
    palette = np.asarray(voc_png.getpalette()[:256 * 3]).reshape(-1, 3)
    # the official VOC colour map: background black, aeroplane dark red,
    # bird (3) olive, person (15) (192, 128, 128), void (255) light beige
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]
    assert palette[3].tolist() == [128, 128, 0]
    assert palette[15].tolist() == [192, 128, 128]
    assert palette[255].tolist() == [224, 224, 192]
    assert np.array_equal(palette.reshape(-1), voc_palette())
    aug_png = Image.open(
        osp.join(voc_root, 'SegmentationClassAug', f'{name}.png'))
    assert aug_png.mode == 'L'


def test_labels_match_drawing_and_load_annotations(voc_root):
    """mmseg's LoadAnnotations gives back exactly the drawn masks."""
    drawn = _drawn()
    pipeline = [dict(type='mmseg.LoadImageFromFile'),
                dict(type='mmseg.LoadAnnotations')]
    for seg_folder, split, offset in (('SegmentationClassAug', 'aug', 0),
                                      ('SegmentationClass', 'train', 0),
                                      ('SegmentationClass', 'val',
                                       NUM_TRAIN)):
        dataset = _dataset(voc_root, seg_folder, split, pipeline)
        for idx in range(len(dataset)):
            results = dataset[idx]
            image, label = drawn[offset + idx]
            expected = (label if seg_folder == 'SegmentationClassAug' else
                        _with_void_border(label))
            assert results['gt_seg_map'].dtype == np.uint8
            np.testing.assert_array_equal(results['gt_seg_map'], expected)
            # the JPEG is the drawn image up to compression (which mostly
            # removes the pixel noise: compare blurred images)
            diff = np.abs(_blur(results['img']) - _blur(image))
            assert diff.mean() < 3


def _blur(image):
    return cv2.GaussianBlur(image.astype(float), (0, 0), 1.5)


def test_objects_have_their_class_colour():
    """Every object is filled with its class colour (jittered by at most
    70 per channel) plus zero-mean texture."""
    colours = {c: np.asarray(bgr, float) for c, _, bgr in DEMO_CLASSES}
    checked = 0
    for image, label in _drawn():
        for cls in set(np.unique(label).tolist()) & CLASS_IDS:
            inner = cv2.erode((label == cls).astype(np.uint8),
                              np.ones((3, 3), np.uint8)) > 0
            if inner.sum() < 20:
                continue  # mostly covered by another object
            mean = image[inner].astype(float).mean(0)
            assert np.abs(mean - colours[cls]).max() < 70 + 12, (cls, mean)
            checked += 1
    assert checked >= NUM_TRAIN


def test_same_seed_same_files(tmp_path):
    a = write_voc_demo(str(tmp_path / 'a'), 3, 2, SIZE, seed=5)
    b = write_voc_demo(str(tmp_path / 'b'), 3, 2, SIZE, seed=5)
    c = write_voc_demo(str(tmp_path / 'c'), 3, 2, SIZE, seed=6)
    files = []
    for dirpath, _, names in os.walk(a):
        files += [osp.relpath(osp.join(dirpath, n), a) for n in names]
    assert len(files) == (3 + 2) * 3 + 4  # 3 files per image + 4 lists
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert sorted(match) == sorted(files) and not mismatch and not errors
    _, mismatch, _ = filecmp.cmpfiles(a, c, files, shallow=False)
    labels = [f for f in mismatch if f.startswith('SegmentationClassAug')]
    assert len(labels) >= 4  # another seed draws other scenes


@pytest.mark.parametrize('kwargs', [
    dict(num_train=0),
    dict(num_val=0),
    dict(image_size=16),
])
def test_invalid_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        write_voc_demo(str(tmp_path), **kwargs)
    assert not osp.exists(tmp_path / 'VOCdevkit')
