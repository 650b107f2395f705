import os
import os.path as osp
import re

import cv2
import numpy as np
import pytest
import torch
from mmdet.structures.bbox import bbox_overlaps
from mmengine.dataset import Compose

from epsd_mm.datasets.checks import read_image_size
from epsd_mm.datasets.cub import CUB200Dataset
from epsd_mm.datasets.demo_cub import demo_class_name, write_cub_demo

NUM_CLASSES, PER_CLASS = 3, 4


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('cub'))
    write_cub_demo(
        root,
        num_classes=NUM_CLASSES,
        images_per_class=PER_CLASS,
        image_size=64,
        test_fraction=0.25)
    return root


@pytest.fixture
def root(demo_root, tmp_path):
    """A private copy of the demo annotations (images are symlinked)."""
    for name in os.listdir(demo_root):
        src = osp.join(demo_root, name)
        if name == 'images':
            os.symlink(src, tmp_path / name)
        else:
            with open(src) as f:
                (tmp_path / name).write_text(f.read())
    return tmp_path


def read_lines(root, filename):
    return (root / filename).read_text().splitlines()


def write_lines(root, filename, lines):
    (root / filename).write_text('\n'.join(lines) + '\n')


def test_parse_splits_labels_boxes(demo_root):
    train = CUB200Dataset(data_root=demo_root, split='train')
    test = CUB200Dataset(data_root=demo_root, split='test')
    assert len(train) == NUM_CLASSES * (PER_CLASS - 1)
    assert len(test) == NUM_CLASSES
    assert train.metainfo['classes'] == tuple(
        demo_class_name(i) for i in range(NUM_CLASSES))

    boxes = {}
    for line in open(osp.join(demo_root, 'bounding_boxes.txt')):
        image_id, x, y, w, h = line.split()
        boxes[int(image_id)] = [
            float(x), float(y),
            float(x) + float(w),
            float(y) + float(h)
        ]
    ids = set()
    for dataset in (train, test):
        for idx in range(len(dataset)):
            info = dataset.get_data_info(idx)
            ids.add(info['img_id'])
            label = (info['img_id'] - 1) // PER_CLASS  # written class by class
            assert info['gt_label'] == label
            assert dataset.get_cat_ids(idx) == [label]
            assert info['instances'] == [
                dict(
                    bbox=boxes[info['img_id']], bbox_label=label,
                    ignore_flag=0)
            ]
            assert osp.isfile(info['img_path'])
    assert ids == set(range(1, NUM_CLASSES * PER_CLASS + 1))


def test_unknown_split(demo_root):
    for split in ('val', ('test', 'val'), ()):
        with pytest.raises(ValueError, match='one or several of'):
            CUB200Dataset(data_root=demo_root, split=split)
    with pytest.raises(ValueError, match='heldout_per_class must be'):
        CUB200Dataset(data_root=demo_root, heldout_per_class=-1)
    with pytest.raises(ValueError, match="'heldout' is empty"):
        CUB200Dataset(data_root=demo_root, split='heldout')


def _ids(dataset):
    return {dataset.get_data_info(i)['img_id'] for i in range(len(dataset))}


def test_heldout_split(demo_root):
    """heldout_per_class moves that many training images per class into
    'heldout' (with boxes); 'train' keeps the rest; nothing else changes."""
    official = CUB200Dataset(data_root=demo_root, split='train')
    train = CUB200Dataset(
        data_root=demo_root, split='train', heldout_per_class=1)
    heldout = CUB200Dataset(
        data_root=demo_root, split='heldout', heldout_per_class=1)
    evaluation = CUB200Dataset(
        data_root=demo_root, split=('heldout', 'test'), heldout_per_class=1)
    test = CUB200Dataset(data_root=demo_root, split='test')
    assert len(heldout) == NUM_CLASSES and len(train) == NUM_CLASSES * (
        PER_CLASS - 2)
    assert not _ids(train) & _ids(heldout)
    assert _ids(train) | _ids(heldout) == _ids(official)
    assert sorted(heldout.get_cat_ids(i)[0]
                  for i in range(len(heldout))) == list(range(NUM_CLASSES))
    assert _ids(evaluation) == _ids(heldout) | _ids(test)
    for dataset, split in ((train, 'train'), (heldout, 'heldout'),
                           (test, 'test')):
        infos = [dataset.get_data_info(i) for i in range(len(dataset))]
        assert {info['split'] for info in infos} == {split}
        assert all(len(info['instances']) == 1 for info in infos)
    tagged = {
        evaluation.get_data_info(i)['img_id']:
        evaluation.get_data_info(i)['split']
        for i in range(len(evaluation))
    }
    assert {i for i, s in tagged.items() if s == 'heldout'} == _ids(heldout)
    # listed split by split, in the order asked for
    assert list(tagged.values()) == ['heldout'] * NUM_CLASSES + [
        'test'
    ] * NUM_CLASSES
    reverse = CUB200Dataset(
        data_root=demo_root, split=('test', 'heldout'), heldout_per_class=1)
    assert [reverse.get_data_info(i)['split'] for i in range(len(reverse))
            ] == ['test'] * NUM_CLASSES + ['heldout'] * NUM_CLASSES
    # deterministic: the middle one of each class's 3 training images
    by_class = {}
    for i in range(len(official)):
        by_class.setdefault(official.get_cat_ids(i)[0], []).append(
            official.get_data_info(i)['img_id'])
    assert _ids(heldout) == {sorted(ids)[1] for ids in by_class.values()}
    with pytest.raises(ValueError,
                       match=r'Class 1 .* has 3 training images.*Lower'):
        CUB200Dataset(data_root=demo_root, heldout_per_class=3)


def test_empty_split(root):
    lines = [line.rsplit(maxsplit=1)[0] + ' 1'
             for line in read_lines(root, 'train_test_split.txt')]
    write_lines(root, 'train_test_split.txt', lines)
    with pytest.raises(ValueError,
                       match=r"train_test_split\.txt: no image in split "
                       r"\('test',\)"):
        CUB200Dataset(data_root=str(root), split='test')


def _drop_file(root):
    os.remove(root / 'classes.txt')


def _edit(filename, lineno, new_line):
    """Replace line ``lineno`` (1-based) of ``filename``; None deletes it."""

    def edit(root):
        lines = read_lines(root, filename)
        if new_line is None:
            del lines[lineno - 1]
        else:
            lines[lineno - 1] = new_line(lines[lineno - 1])
        write_lines(root, filename, lines)

    return edit


def _append(filename, line):

    def edit(root):
        write_lines(root, filename, read_lines(root, filename) + [line])

    return edit


MALFORMED = [
    # (edit, error type, message regex)
    (_drop_file, FileNotFoundError, r'classes\.txt not found.*data_root'),
    (_edit('bounding_boxes.txt', 2, lambda s: s.rsplit(maxsplit=1)[0]),
     ValueError, r'bounding_boxes\.txt, line 2: expected 5 .* got 4'),
    (_edit('images.txt', 1, lambda s: s + ' extra'), ValueError,
     r'images\.txt, line 1: expected 2 .* got 3'),
    (_edit('image_class_labels.txt', 3, None), ValueError,
     r'image_class_labels\.txt: no line for image id 3 \(images\.txt, '
     r'line 3\)'),
    (_append('train_test_split.txt', '999 1'), ValueError,
     r'train_test_split\.txt, line 13: image id 999 is not listed'),
    (_append('image_class_labels.txt', '2 1'), ValueError,
     r'image_class_labels\.txt, line 13: id 2 already appears on line 2'),
    (_edit('bounding_boxes.txt', 1, lambda s: '1 3.0 4.0 0.0 10.0'),
     ValueError, r'bounding_boxes\.txt, line 1: box .*width, height > 0'),
    (_edit('bounding_boxes.txt', 1, lambda s: '1 -3.0 4.0 5.0 10.0'),
     ValueError, r'bounding_boxes\.txt, line 1: box .*x, y >= 0'),
    (_edit('bounding_boxes.txt', 1, lambda s: '1 nan 4.0 5.0 10.0'),
     ValueError, r'bounding_boxes\.txt, line 1: box .*non-finite'),
    (_edit('bounding_boxes.txt', 4, lambda s: '4 3.0 4.0 inf 10.0'),
     ValueError, r'bounding_boxes\.txt, line 4: box .*non-finite'),
    (_edit('bounding_boxes.txt', 2, lambda s: '2 30.0 4.0 500.0 10.0'),
     ValueError, r'bounding_boxes\.txt, line 2: box .* reaches \(530\.0, '
     r'14\.0\), outside the \d+x\d+ image .*_0002\.jpg\. Fix the box'),
    (_edit('bounding_boxes.txt', 2, lambda s: '2 3.0 300.0 6.0 10.0'),
     ValueError, r'bounding_boxes\.txt, line 2: box .*outside the \d+x\d+'),
    (_edit('bounding_boxes.txt', 1, lambda s: '1 a 4.0 5.0 10.0'),
     ValueError, r'bounding_boxes\.txt, line 1: cannot parse'),
    (_edit('image_class_labels.txt', 1, lambda s: '1 7'), ValueError,
     r'image_class_labels\.txt, line 1: class id 7 is not in classes\.txt'),
    (_edit('train_test_split.txt', 1, lambda s: '1 2'), ValueError,
     r'train_test_split\.txt, line 1: is_training must be 0 or 1'),
    (_edit('classes.txt', 2, lambda s: '5 005.Odd'), ValueError,
     r'classes\.txt, line 2: class ids must be 1, 2, \.\.\., K'),
    (_edit('images.txt', 1, lambda s: '1 001.Nowhere/missing.jpg'),
     FileNotFoundError, r'missing\.jpg \(images\.txt, line 1\) not found'),
]


@pytest.mark.parametrize(
    'edit, error, message',
    MALFORMED,
    ids=[re.sub(r'\W+', '_', m[2])[:40] for m in MALFORMED])
def test_malformed_files(root, edit, error, message):
    edit(root)
    # Image 1 may be in either split; image files are only checked for the
    # split being loaded.
    with pytest.raises(error, match=message):
        for split in ('train', 'test'):
            CUB200Dataset(data_root=str(root), split=split)


def test_box_may_touch_the_border(root):
    """Boxes up to BOX_TOLERANCE past the border are rounding, not errors."""
    image = read_lines(root, 'images.txt')[1].split()[1]
    width, height = read_image_size(str(root / 'images' / image))
    box = f'2 0.0 0.0 {width + 0.5} {height + 1.0}'
    _edit('bounding_boxes.txt', 2, lambda s: box)(root)
    dataset = CUB200Dataset(data_root=str(root), split=('train', 'test'))
    assert dataset.get_data_info(1)['img_id'] == 2
    assert dataset.get_data_info(1)['instances'][0]['bbox'] == [
        0.0, 0.0, width + 0.5, height + 1.0
    ]
    _edit('bounding_boxes.txt', 2, lambda s: box + '1')(root)  # +1.01
    with pytest.raises(ValueError, match='outside the'):
        CUB200Dataset(data_root=str(root), split=('train', 'test'))


def _saturated_pixels(image_bgr):
    """The demo birds are saturated, the background is grey."""
    saturation = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV)[..., 1]
    return np.argwhere(saturation > 90)  # (y, x) rows


def test_boxes_follow_resize_and_flip(demo_root):
    pipeline = Compose([
        dict(type='mmdet.LoadImageFromFile'),
        dict(type='mmdet.LoadAnnotations', with_bbox=True),
        dict(type='mmdet.Resize', scale=(80, 56), keep_ratio=False),
        dict(type='mmdet.RandomFlip', prob=1.0, direction='horizontal'),
    ])
    dataset = CUB200Dataset(data_root=demo_root, split='train')
    for idx in range(len(dataset)):
        results = pipeline(dataset.get_data_info(idx))
        assert results['flip'] and results['img_shape'] == (56, 80)
        x1, y1, x2, y2 = results['gt_bboxes'].tensor[0].tolist()
        pixels = _saturated_pixels(results['img'])
        ys, xs = pixels[:, 0] + 0.5, pixels[:, 1] + 0.5  # pixel centres
        inside = (xs >= x1 - 1) & (xs <= x2 + 1) & (ys >= y1 - 1) & (
            ys <= y2 + 1)
        # The box covers the drawn bird ...
        assert inside.mean() > 0.99
        # ... and hugs it (thin tips of the drawing fade in the JPEG).
        object_box = torch.tensor(
            [[xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5]])
        assert bbox_overlaps(results['gt_bboxes'].tensor, object_box) > 0.75


def test_gt_label_survives_packing(demo_root):
    pipeline = [
        dict(type='mmdet.LoadImageFromFile'),
        dict(type='mmdet.Resize', scale=(32, 32), keep_ratio=False),
        dict(
            type='mmdet.PackDetInputs',
            meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                       'scale_factor', 'gt_label')),
    ]
    dataset = CUB200Dataset(
        data_root=demo_root, split='test', pipeline=pipeline)
    for idx in range(len(dataset)):
        assert dataset[idx]['data_samples'].gt_label == dataset.get_cat_ids(
            idx)[0]


def test_demo_writer_is_deterministic(tmp_path):
    for name in ('a', 'b'):
        write_cub_demo(
            str(tmp_path / name),
            num_classes=2,
            images_per_class=3,
            image_size=40,
            seed=3)
    for filename in ('images.txt', 'bounding_boxes.txt',
                     'train_test_split.txt'):
        assert (tmp_path / 'a' / filename).read_text() == (
            tmp_path / 'b' / filename).read_text()
    image = 'images/001.Red_Plain_Bird/Red_Plain_Bird_0002.jpg'
    assert (tmp_path / 'a' / image).read_bytes() == (tmp_path / 'b' /
                                                     image).read_bytes()
    with pytest.raises(ValueError, match='num_classes'):
        write_cub_demo(str(tmp_path / 'c'), num_classes=0)
