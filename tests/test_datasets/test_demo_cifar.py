"""mmpretrain's CIFAR loader and pipeline read the CIFAR-10-layout demo."""
import os
import os.path as osp
import pickle
import runpy
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope
from mmpretrain.datasets import CIFAR10

from epsd_mm.datasets.demo_cifar import (DEMO_CIFAR_CLASSES, META_FILE,
                                         TEST_FILES, TRAIN_FILES, DemoCIFAR10,
                                         draw_shape_image, write_cifar_demo)
from epsd_mm.registry import DATASETS, MODELS

NUM_TRAIN, NUM_TEST = 50, 20


@pytest.fixture(scope='module')
def cifar_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('cifar_demo'))
    write_cifar_demo(root, num_train=NUM_TRAIN, num_test=NUM_TEST, seed=3)
    return root


def _load(root, name):
    with open(osp.join(root, 'cifar-10-batches-py', name), 'rb') as f:
        return pickle.load(f, encoding='latin1')


def test_files_hold_the_cifar10_python_layout(cifar_root):
    folder = osp.join(cifar_root, 'cifar-10-batches-py')
    assert sorted(os.listdir(folder)) == sorted(
        [*TRAIN_FILES, *TEST_FILES, META_FILE])
    assert TRAIN_FILES == tuple(f'data_batch_{i}' for i in range(1, 6))
    labels = []
    for i, name in enumerate(TRAIN_FILES + TEST_FILES):
        batch = _load(cifar_root, name)
        assert set(batch) == {'batch_label', 'labels', 'data', 'filenames'}
        assert batch['data'].dtype == np.uint8
        count = NUM_TRAIN // 5 if name in TRAIN_FILES else NUM_TEST
        assert batch['data'].shape == (count, 3072)
        assert len(batch['labels']) == len(batch['filenames']) == count
        assert all(type(label) is int for label in batch['labels'])
        labels += batch['labels']
    assert _load(cifar_root, 'data_batch_2')['batch_label'] == \
        'training batch 2 of 5'
    # Balanced classes in every split.
    assert np.bincount(labels[:NUM_TRAIN]).tolist() == [5] * 10
    assert np.bincount(labels[NUM_TRAIN:]).tolist() == [2] * 10
    meta = _load(cifar_root, META_FILE)
    assert meta == dict(
        num_cases_per_batch=NUM_TRAIN // 5,
        label_names=list(DEMO_CIFAR_CLASSES),
        num_vis=3072)


def test_rows_are_channel_major_rgb(cifar_root):
    """Redraw the first training images in the writer's order: the loaded
    HWC image equals the drawn RGB image."""
    rng = np.random.default_rng(3)
    labels = rng.permutation(np.arange(NUM_TRAIN // 5) % 10)
    drawn = [draw_shape_image(rng, int(c)) for c in labels[:3]]
    dataset = DemoCIFAR10(data_root=cifar_root, split='train')
    for i, image in enumerate(drawn):
        info = dataset.get_data_info(i)
        assert info['gt_label'] == labels[i]
        np.testing.assert_array_equal(info['img'], image)


def test_mmpretrain_cifar_loader_and_pipeline(cifar_root, tmp_path):
    """Build the dataset the way a config inheriting mmpretrain's CIFAR-10
    dataset config does, run its train and test pipelines and a real CIFAR
    ResNet on a batch."""
    cfg_file = tmp_path / 'cifar_demo.py'
    cfg_file.write_text(
        "_base_ = ['mmpretrain::_base_/datasets/cifar10_bs16.py']\n")
    base = Config.fromfile(str(cfg_file))
    splits = {}
    for loader in ('train_dataloader', 'test_dataloader'):
        cfg = base[loader].dataset
        cfg.update(type='epsd_mm.DemoCIFAR10', data_root=cifar_root)
        splits[cfg.split] = DATASETS.build(cfg)
    train, test = splits['train'], splits['test']
    assert isinstance(train, CIFAR10)  # mmpretrain's loading code
    assert (len(train), len(test)) == (NUM_TRAIN, NUM_TEST)
    assert tuple(train.metainfo['classes']) == DEMO_CIFAR_CLASSES  # meta
    sample = train[0]
    assert sample['inputs'].shape == (3, 32, 32)
    assert sample['inputs'].dtype == torch.uint8
    assert int(sample['data_samples'].gt_label) in range(10)
    # the head builds its loss in the current default scope: mmpretrain's,
    # whatever an earlier test left behind
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = _cifar_resnet(base)
    batch = model.data_preprocessor(
        pseudo_collate([train[i] for i in range(4)]), training=True)
    losses = model(**batch, mode='loss')
    assert torch.isfinite(losses['loss'])
    with torch.no_grad():
        outputs = model.val_step(pseudo_collate([test[i] for i in range(4)]))
    assert outputs[0].pred_score.shape == (10, )


def _cifar_resnet(base: Config):
    return MODELS.build(
        dict(
            type='mmpretrain.ImageClassifier',
            data_preprocessor=dict(
                base.data_preprocessor, type='mmpretrain.ClsDataPreprocessor'),
            backbone=dict(
                type='mmpretrain.ResNet_CIFAR',
                depth=18,
                stem_channels=8,
                base_channels=8),
            neck=dict(type='mmpretrain.GlobalAveragePooling'),
            head=dict(
                type='mmpretrain.LinearClsHead',
                num_classes=10,
                in_channels=64)))


def test_why_the_real_class_cannot_read_it(cifar_root):
    # mmpretrain's CIFAR10 checks the official release's md5s; no other
    # content matches them, hence DemoCIFAR10.
    with pytest.raises(RuntimeError, match='Cannot find CIFAR10'):
        CIFAR10(data_root=cifar_root, download=False)


def test_errors_name_the_fix(tmp_path, cifar_root):
    with pytest.raises(FileNotFoundError, match='make_demo_data.py cifar'):
        DemoCIFAR10(data_root=str(tmp_path))
    with pytest.raises(ValueError, match='cannot download'):
        DemoCIFAR10(data_root=cifar_root, download=True)
    with pytest.raises(ValueError, match='multiple of 5'):
        write_cifar_demo(str(tmp_path), num_train=12)
    with pytest.raises(ValueError, match='num_test'):
        write_cifar_demo(str(tmp_path), num_train=10, num_test=0)
    assert not os.listdir(tmp_path)  # nothing written


def test_images_are_deterministic_and_varied():
    a = [draw_shape_image(np.random.default_rng(0), c) for c in range(10)]
    b = [draw_shape_image(np.random.default_rng(0), c) for c in range(10)]
    for x, y in zip(a, b):
        assert x.shape == (32, 32, 3) and x.dtype == np.uint8
        np.testing.assert_array_equal(x, y)
    # Draws of one class vary widely in colour (object and background).
    rng = np.random.default_rng(1)
    means = [draw_shape_image(rng, 0).mean((0, 1)) for _ in range(20)]
    assert np.std(means, axis=0).min() > 10


def test_make_demo_data_cli(tmp_path, helpers, monkeypatch, capsys):
    out = str(tmp_path / 'cifar')
    monkeypatch.setattr(sys, 'argv', [
        'make_demo_data.py', 'cifar', '--out', out, '--num-train', '10',
        '--num-test', '2'
    ])
    runpy.run_path(
        osp.join(helpers.repo_root, 'tools/make_demo_data.py'),
        run_name='__main__')
    assert out in capsys.readouterr().out
    assert len(DemoCIFAR10(data_root=out, split='test')) == 2
