import os.path as osp

import pytest
from mmengine.config import Config

from epsd_mm.datasets.config_datasets import (leaf_dataset_cfgs,
                                              loader_dataset_cfgs,
                                              set_data_root)

CONFIGS = osp.join(osp.dirname(__file__), '../../configs')
VOC_KEYS = [
    'train_dataloader.dataset.datasets.0',
    'train_dataloader.dataset.datasets.1',
    'val_dataloader.dataset',
    'test_dataloader.dataset',
]


def test_leaf_datasets_through_wrappers():
    cfg = dict(
        type='RepeatDataset',
        times=2,
        dataset=dict(
            type='ConcatDataset',
            datasets=[dict(type='A'), dict(type='B')]))
    assert [(w, d['type']) for w, d in leaf_dataset_cfgs(cfg, 'x')] == [
        ('x.dataset.datasets.0', 'A'), ('x.dataset.datasets.1', 'B')
    ]


@pytest.mark.parametrize('name', ['epsd_deeplab_voc.py',
                                  'demo/epsd_deeplab_voc_demo.py'])
def test_set_data_root_moves_every_voc_dataset(name):
    """The README's data-root override: one option moves train datasets 0
    and 1, val and test."""
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    assert [w for w, _ in loader_dataset_cfgs(cfg)] == VOC_KEYS
    set_data_root(cfg, '/data/VOC2012')
    roots = {w: d['data_root'] for w, d in loader_dataset_cfgs(cfg)}
    assert roots == {key: '/data/VOC2012' for key in VOC_KEYS}
    # ... and what the dumped config of a run carries
    dumped = Config.fromstring(cfg.pretty_text, '.py')
    assert dumped.train_dataloader.dataset.datasets[1].data_root == \
        '/data/VOC2012'


def test_set_data_root_refuses_different_roots():
    cfg = Config.fromfile(osp.join(CONFIGS, 'demo/epsd_deeplab_voc_demo.py'))
    cfg.val_dataloader.dataset.data_root = '/elsewhere'
    with pytest.raises(ValueError) as err:
        set_data_root(cfg, '/data/VOC2012')
    for key in VOC_KEYS:
        assert f'{key}.data_root=...' in str(err.value)
    with pytest.raises(ValueError, match='Unknown dataloader'):
        list(loader_dataset_cfgs(cfg, ['train']))
