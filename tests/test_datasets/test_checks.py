import os
import os.path as osp

import pytest
from mmengine.config import Config
from PIL import Image

from epsd_mm.datasets.checks import (check_dataset_paths, check_datasets,
                                     read_image_size)
from epsd_mm.datasets.config_datasets import set_data_root
from epsd_mm.datasets.demo_cub import write_cub_demo
from epsd_mm.datasets.demo_voc import write_voc_demo


def _cfg(tmp_path, **dataset):
    return Config(
        dict(
            train_dataloader=dict(
                dataset=dict(
                    type='ConcatDataset',
                    datasets=[dict(type='PascalVOCDataset', **dataset)])),
            val_dataloader=None))


def test_existing_paths_pass(tmp_path):
    (tmp_path / 'JPEGImages').mkdir()
    (tmp_path / 'train.txt').write_text('a\n')
    check_dataset_paths(
        _cfg(
            tmp_path,
            data_root=str(tmp_path),
            ann_file='train.txt',
            data_prefix=dict(img_path='JPEGImages')))


@pytest.mark.parametrize('missing', ['root', 'ann_file', 'prefix'])
def test_missing_path_names_key_and_fix(tmp_path, missing):
    (tmp_path / 'JPEGImages').mkdir()
    (tmp_path / 'train.txt').write_text('a\n')
    dataset = dict(
        data_root=str(tmp_path),
        ann_file='train.txt',
        data_prefix=dict(img_path='JPEGImages'))
    if missing == 'root':
        dataset['data_root'] = str(tmp_path / 'nope')
        key = 'datasets.0.data_root'
    elif missing == 'ann_file':
        dataset['ann_file'] = 'val.txt'
        key = 'datasets.0.ann_file'
    else:
        dataset['data_prefix'] = dict(img_path='Images')
        key = 'datasets.0.data_prefix.img_path'
    with pytest.raises(FileNotFoundError, match=key) as err:
        check_dataset_paths(_cfg(tmp_path, **dataset))
    assert 'make_demo_data.py' in str(err.value)
    assert '--cfg-options' in str(err.value)


# check_dataset_samples / check_datasets on the real demo VOC config ---------
DEMO_VOC_CONFIG = osp.join(
    osp.dirname(__file__), '../../configs/demo/epsd_deeplab_voc_demo.py')
SPLITS = 'ImageSets/Segmentation'


@pytest.fixture
def voc(tmp_path):
    """A private demo VOC2012 folder (3 train, 2 val images of 32 px)."""
    return write_voc_demo(
        str(tmp_path / 'voc'), num_train=3, num_val=2, image_size=32)


def demo_cfg(voc):
    cfg = Config.fromfile(DEMO_VOC_CONFIG)
    set_data_root(cfg, voc)
    return cfg


def test_demo_config_passes_and_counts_samples(voc):
    # train.txt (3) + aug.txt (3) + val.txt (2); test = val, checked once
    assert check_datasets(demo_cfg(voc)) == 8


@pytest.mark.parametrize('split, key', [
    ('train.txt', 'train_dataloader.dataset.datasets.0.ann_file'),
    ('aug.txt', 'train_dataloader.dataset.datasets.1.ann_file'),
    ('val.txt', 'val_dataloader.dataset.ann_file'),
])
@pytest.mark.parametrize('content', ['', '\n \n'])
def test_empty_split_names_the_file(voc, split, key, content):
    open(osp.join(voc, SPLITS, split), 'w').write(content)
    with pytest.raises(ValueError) as err:
        check_datasets(demo_cfg(voc))
    message = str(err.value)
    assert key in message and osp.join(voc, SPLITS, split) in message
    assert 'lists no sample' in message and 'one image name per line' in \
        message
    assert 'concatenate' not in message


def test_blank_line_in_split(voc):
    path = osp.join(voc, SPLITS, 'train.txt')
    names = open(path).read().split()
    open(path, 'w').write('\n'.join(names[:1] + [''] + names[1:]) + '\n\n')
    with pytest.raises(ValueError, match=r'train\.txt.*: line\(s\) \[2, 5\] '
                       'are blank.*Remove the blank lines'):
        check_datasets(demo_cfg(voc))


def _resize_label(voc, folder, name, size):
    path = osp.join(voc, folder, f'{name}.png')
    label = Image.open(path)
    label.resize(size, Image.NEAREST).save(path)
    return path


@pytest.mark.parametrize('folder, split, key', [
    ('SegmentationClass', 'val.txt', 'val_dataloader.dataset'),
    ('SegmentationClassAug', 'aug.txt',
     'train_dataloader.dataset.datasets.1'),
])
def test_wrong_size_label_names_file_and_fix(voc, folder, split, key):
    name = open(osp.join(voc, SPLITS, split)).read().split()[0]
    path = _resize_label(voc, folder, name, (40, 24))
    with pytest.raises(ValueError) as err:
        check_datasets(demo_cfg(voc))
    message = str(err.value)
    assert f'{key}.ann_file' in message
    assert '1 of ' in message
    assert f'{path} is 40x24 but ' in message
    assert osp.join(voc, 'JPEGImages', f'{name}.jpg') + ' is 32x32' in \
        message
    assert 'Re-export the label maps at the image size' in message


def test_missing_label_file(voc):
    name = open(osp.join(voc, SPLITS, 'train.txt')).read().split()[1]
    path = osp.join(voc, 'SegmentationClass', f'{name}.png')
    os.remove(path)
    with pytest.raises(FileNotFoundError) as err:
        check_datasets(demo_cfg(voc))
    assert 'train_dataloader.dataset.datasets.0.ann_file' in str(err.value)
    assert path in str(err.value)


def test_only_the_named_loaders_are_checked(voc):
    """tools/test.py checks the test data only: broken training data does
    not stop it."""
    cfg = demo_cfg(voc)
    open(osp.join(voc, SPLITS, 'aug.txt'), 'w').write('')
    cfg.train_dataloader.dataset.datasets[0].data_root = '/nowhere'
    check_datasets(cfg, ('test_dataloader', ))
    with pytest.raises(FileNotFoundError, match='datasets.0.data_root'):
        check_datasets(cfg, ('train_dataloader', ))


def test_read_image_size(tmp_path, voc):
    assert read_image_size(osp.join(voc, 'JPEGImages',
                                    '2007_000000.jpg')) == (32, 32)
    bad = tmp_path / 'bad.png'
    bad.write_text('not an image')
    with pytest.raises(ValueError, match='bad.png is not an image'):
        read_image_size(str(bad))
    with pytest.raises(FileNotFoundError):
        read_image_size(str(tmp_path / 'missing.png'))


# CUB: training must not see the images that choose the CAM threshold -------
DEMO_CUB_CONFIG = osp.join(
    osp.dirname(__file__), '../../configs/demo/epsd_cam_cub_demo.py')


@pytest.fixture(scope='module')
def cub_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('cub'))
    write_cub_demo(root, num_classes=2, images_per_class=8, image_size=40)
    return root


def test_cub_config_holds_out_training_images(cub_root):
    cfg = Config.fromfile(DEMO_CUB_CONFIG)
    set_data_root(cfg, cub_root)
    assert 'split' in cfg.val_dataloader.dataset.pipeline[-1].meta_keys
    check_datasets(cfg, ('train_dataloader', 'val_dataloader'))
    cfg.train_dataloader.dataset.heldout_per_class = 0
    with pytest.raises(ValueError) as err:
        check_datasets(cfg, ('train_dataloader', 'val_dataloader'))
    # 5 per class of the 2 classes
    assert 'val_dataloader.dataset: 10 of its 10 held-out images are also ' \
        'training images' in str(err.value)
    assert 'same heldout_per_class' in str(err.value)
    check_datasets(cfg, ('test_dataloader', ))  # nothing to compare
