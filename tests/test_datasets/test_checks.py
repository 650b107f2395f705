import pytest
from mmengine.config import Config

from epsd_mm.datasets.checks import check_dataset_paths


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
