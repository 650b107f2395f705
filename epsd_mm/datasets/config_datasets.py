"""Find (and re-root) the dataset configs of a runner config."""
from typing import Iterator, Sequence, Tuple

from mmengine.config import Config

#: The dataloaders of a runner config, in the order the runner uses them.
DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def leaf_dataset_cfgs(cfg: dict, where: str) -> Iterator[Tuple[str, dict]]:
    """Leaf dataset configs, looking through Concat/Repeat/ClassBalanced.

    Args:
        cfg (dict): A dataset config.
        where (str): Its dotted key in the runner config, e.g.
            ``'train_dataloader.dataset'``.

    Yields:
        tuple[str, dict]: The dotted key of each leaf dataset (e.g.
        ``'train_dataloader.dataset.datasets.1'``) and its config.
    """
    if not isinstance(cfg, dict):
        return
    if 'datasets' in cfg:
        for i, sub in enumerate(cfg['datasets']):
            yield from leaf_dataset_cfgs(sub, f'{where}.datasets.{i}')
    elif 'dataset' in cfg:
        yield from leaf_dataset_cfgs(cfg['dataset'], f'{where}.dataset')
    else:
        yield where, cfg


def loader_dataset_cfgs(
        cfg: Config,
        loaders: Sequence[str] = DATALOADERS) -> Iterator[Tuple[str, dict]]:
    """Leaf dataset configs of the given dataloaders that are set.

    Args:
        cfg (Config): A runner config.
        loaders (Sequence[str]): Dataloader keys. Defaults to
            :data:`DATALOADERS`.

    Yields:
        tuple[str, dict]: Dotted key and config of each leaf dataset.
    """
    for loader in loaders:
        if loader not in DATALOADERS:
            raise ValueError(
                f'Unknown dataloader {loader!r}; use some of {DATALOADERS}.')
        if cfg.get(loader):
            yield from leaf_dataset_cfgs(cfg[loader].get('dataset'),
                                         f'{loader}.dataset')


def set_data_root(cfg: Config,
                  data_root: str,
                  loaders: Sequence[str] = DATALOADERS) -> None:
    """Point every dataset of the given dataloaders to ``data_root``.

    A config's ``data_root`` variable is copied into each dataset when the
    config is read, so ``--cfg-options data_root=...`` changes nothing; this
    sets the ``data_root`` key of every leaf dataset (e.g. both VOC training
    datasets, the val and the test dataset) instead.

    Args:
        cfg (Config): A runner config, modified in place.
        data_root (str): The new data root.
        loaders (Sequence[str]): Dataloaders whose datasets move. Defaults
            to :data:`DATALOADERS`.

    Raises:
        ValueError: If the datasets do not share one data root today (the
            new root would be wrong for some of them).
    """
    datasets = list(loader_dataset_cfgs(cfg, loaders))
    roots = {dataset.get('data_root') for _, dataset in datasets}
    if len(roots) > 1:
        keys = ' '.join(f'{where}.data_root=...' for where, _ in datasets)
        raise ValueError(
            'The datasets have different data roots '
            f'({sorted(map(str, roots))}), so one --data-root cannot move '
            f'them all. Set each one instead: --cfg-options {keys}')
    for _, dataset in datasets:
        dataset['data_root'] = data_root
