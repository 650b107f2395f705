"""Fail early, and say how to fix it, when a config's data is not there."""
import os.path as osp
from typing import Iterator, Tuple

from mmengine.config import Config

DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _dataset_cfgs(cfg: dict, where: str) -> Iterator[Tuple[str, dict]]:
    """Leaf dataset configs, looking through Concat/Repeat/ClassBalanced."""
    if not isinstance(cfg, dict):
        return
    if 'datasets' in cfg:
        for i, sub in enumerate(cfg['datasets']):
            yield from _dataset_cfgs(sub, f'{where}.datasets.{i}')
    elif 'dataset' in cfg:
        yield from _dataset_cfgs(cfg['dataset'], f'{where}.dataset')
    else:
        yield where, cfg


def _paths(dataset: dict) -> Iterator[Tuple[str, str]]:
    root = dataset.get('data_root') or ''
    if root:
        yield 'data_root', root
    ann_file = dataset.get('ann_file')
    if ann_file:
        yield 'ann_file', osp.join(root, ann_file)
    for key, prefix in (dataset.get('data_prefix') or {}).items():
        if prefix:
            yield f'data_prefix.{key}', osp.join(root, prefix)


def check_dataset_paths(cfg: Config) -> None:
    """Raise ``FileNotFoundError`` for the first dataset path that is missing.

    Checks ``data_root``, ``ann_file`` and every ``data_prefix`` entry of the
    train/val/test datasets of ``cfg`` (local paths only), so a wrong data
    location stops the run before a model is built or a checkpoint written.

    Args:
        cfg (Config): A training or testing config.
    """
    for loader in DATALOADERS:
        if not cfg.get(loader):
            continue
        for where, dataset in _dataset_cfgs(cfg[loader].get('dataset'),
                                            f'{loader}.dataset'):
            for key, path in _paths(dataset):
                if '://' in path or osp.exists(path):
                    continue
                raise FileNotFoundError(
                    f'{where}.{key}: "{path}" does not exist '
                    f'({dataset.get("type")}). Put the dataset there (see the '
                    'README, "Real datasets"), write the demo data with '
                    '`python tools/make_demo_data.py voc|cub --out DIR`, or '
                    f'point the config elsewhere, e.g. --cfg-options '
                    f'{where}.data_root=/path/to/data')
