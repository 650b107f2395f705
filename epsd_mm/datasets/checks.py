"""Fail early, and say how to fix it, when a config's data is not there or
is not usable.

``tools/train.py`` and ``tools/test.py`` call :func:`check_datasets` on the
dataloaders they use before a model is built or a checkpoint written.
"""
import os.path as osp
import time
from typing import Iterator, List, Sequence, Tuple

from mmengine.config import Config
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log
from mmengine.registry import DATASETS, DefaultScope
from PIL import Image

from .config_datasets import DATALOADERS, loader_dataset_cfgs

#: How many offending samples an error message lists.
MAX_EXAMPLES = 5


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


def _is_remote(path: str) -> bool:
    return '://' in path


def check_dataset_paths(cfg: Config,
                        loaders: Sequence[str] = DATALOADERS) -> None:
    """Raise ``FileNotFoundError`` for the first dataset path that is missing.

    Checks ``data_root``, ``ann_file`` and every ``data_prefix`` entry of the
    datasets of ``loaders`` (local paths only), so a wrong data location
    stops the run before a model is built or a checkpoint written.

    Args:
        cfg (Config): A training or testing config.
        loaders (Sequence[str]): The dataloaders to check (those not set in
            ``cfg`` are skipped). Defaults to all three.
    """
    for where, dataset in loader_dataset_cfgs(cfg, loaders):
        for key, path in _paths(dataset):
            if _is_remote(path) or osp.exists(path):
                continue
            raise FileNotFoundError(
                f'{where}.{key}: "{path}" does not exist '
                f'({dataset.get("type")}). Put the dataset there (see the '
                'README, "Real datasets"), write the demo data with '
                '`python tools/make_demo_data.py voc|cub --out DIR`, or '
                'point the config elsewhere, e.g. --data-root DIR (every '
                f'dataset) or --cfg-options {where}.data_root=DIR')


def read_image_size(path: str) -> Tuple[int, int]:
    """``(width, height)`` of a local image file, from its header only.

    Args:
        path (str): Path of a JPEG/PNG/... file.

    Returns:
        tuple[int, int]: Width and height in pixels.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If PIL cannot identify the file as an image.
    """
    try:
        with Image.open(path) as image:
            return image.size
    except Image.UnidentifiedImageError as err:
        raise ValueError(f'{path} is not an image file PIL can read: {err}. '
                         'Replace the file.') from None


def _build_unloaded(dataset_cfg: dict, scope: str) -> BaseDataset:
    """Build a dataset without loading its data list or its pipeline."""
    dataset_cfg = dict(dataset_cfg, lazy_init=True, pipeline=[])
    with DefaultScope.overwrite_default_scope(scope):
        return DATASETS.build(dataset_cfg)


def _sample_list_source(where: str, dataset: BaseDataset) -> str:
    if getattr(dataset, 'ann_file', ''):
        return f'{where}.ann_file "{dataset.ann_file}"'
    return f'{where} ({type(dataset).__name__}, data_root "' \
        f'{getattr(dataset, "data_root", "")}")'


def _check_label_sizes(where: str, dataset: BaseDataset,
                       data_list: List[dict]) -> None:
    """Every segmentation map has the size of its image (headers only)."""
    missing, mismatched = [], []
    for info in data_list:
        img_path, seg_path = info.get('img_path'), info.get('seg_map_path')
        if not img_path or not seg_path or _is_remote(img_path) \
                or _is_remote(seg_path):
            continue
        try:
            img_size = read_image_size(img_path)
            seg_size = read_image_size(seg_path)
        except FileNotFoundError as err:
            missing.append(err.filename)
            continue
        if img_size != seg_size:
            mismatched.append(
                f'{seg_path} is {seg_size[0]}x{seg_size[1]} but '
                f'{img_path} is {img_size[0]}x{img_size[1]}')
    source = _sample_list_source(where, dataset)
    if missing:
        raise FileNotFoundError(
            f'{source}: {len(missing)} of {len(data_list)} samples have no '
            f'image or label file, e.g. {missing[:MAX_EXAMPLES]}. Restore the '
            'files or remove their names from the sample list.')
    if mismatched:
        examples = '\n  '.join(mismatched[:MAX_EXAMPLES])
        raise ValueError(
            f'{source}: {len(mismatched)} of {len(data_list)} label maps do '
            f'not have the size of their image (width x height):\n  '
            f'{examples}\nA label map must be pixel-aligned with its image '
            '(training would rescale and pad it with the image without '
            'complaint, validation fails with an IndexError). Re-export the '
            'label maps at the image size, or remove those samples from the '
            'sample list.')


def _empty_list_error(where: str, dataset: BaseDataset) -> ValueError:
    return ValueError(
        f'{_sample_list_source(where, dataset)} lists no sample. Fill it '
        '(mmseg VOC splits: one image name per line, e.g. 2007_000032) or '
        'remove this dataset from the config.')


def _check_split_list(where: str, dataset: BaseDataset) -> None:
    """A ``.txt`` sample list (mmseg's split files) names at least one
    sample and has no blank line: mmseg reads every line as a sample name,
    a blank one too."""
    ann_file = getattr(dataset, 'ann_file', '') or ''
    if not ann_file.endswith('.txt') or _is_remote(ann_file):
        return
    with open(ann_file, encoding='utf-8') as f:
        lines = f.read().splitlines()
    blank = [i for i, line in enumerate(lines, 1) if not line.strip()]
    if len(blank) == len(lines):
        raise _empty_list_error(where, dataset)
    if blank:
        raise ValueError(
            f'{_sample_list_source(where, dataset)}: line(s) '
            f'{blank[:MAX_EXAMPLES]} are blank, and every line is read as a '
            'sample name. Remove the blank lines.')


def _check_heldout_unseen(train_paths: set, heldout: dict) -> None:
    """Held-out samples (``split == 'heldout'`` in the data info, e.g. of
    :class:`~epsd_mm.datasets.CUB200Dataset`) are not training samples."""
    for where, paths in heldout.items():
        seen = sorted(paths & train_paths)
        if seen:
            raise ValueError(
                f'{where}: {len(seen)} of its {len(paths)} held-out images '
                f'are also training images of train_dataloader, e.g. '
                f'{seen[:MAX_EXAMPLES]}. Their scores would choose the CAM '
                'threshold on images the model was trained on: give the '
                'training dataset the same heldout_per_class.')


def check_dataset_samples(cfg: Config,
                          loaders: Sequence[str] = DATALOADERS) -> int:
    """Check the samples of every dataset, cheaply, before a run.

    Each leaf dataset is built without its pipeline and its data list is
    loaded once (``load_data_list``), so the dataset's own parsing runs (for
    :class:`~epsd_mm.datasets.CUB200Dataset` that includes its annotation
    checks). Then:

    * an empty data list (e.g. an empty ``ImageSets/Segmentation/train.txt``)
      raises a ``ValueError`` naming the dataset key and its sample list,
      instead of MMEngine's "need at least one array to concatenate"; so do
      blank lines in a ``.txt`` sample list (mmseg takes them for samples);
    * for segmentation samples (``img_path`` and ``seg_map_path``, local
      files) every label map must exist and have its image's size, read from
      the file headers only (about 45 us per file with a warm file cache:
      the 10.5k-image VOC aug set costs about a second);
    * samples that val/test datasets hold out of training (``split ==
      'heldout'`` in their data info) must not be training samples.

    Args:
        cfg (Config): A training or testing config whose paths exist
            (:func:`check_dataset_paths`).
        loaders (Sequence[str]): The dataloaders to check (those not set in
            ``cfg`` are skipped). Defaults to all three.

    Returns:
        int: The number of samples checked.
    """
    start, seen, num_samples = time.perf_counter(), set(), 0
    train_paths, heldout = set(), {}
    for where, dataset_cfg in loader_dataset_cfgs(cfg, loaders):
        key = repr({k: v for k, v in dataset_cfg.items() if k != 'pipeline'})
        if key in seen:  # e.g. test_dataloader = val_dataloader
            continue
        seen.add(key)
        dataset = _build_unloaded(dataset_cfg, cfg.get('default_scope'))
        if not isinstance(dataset, BaseDataset):
            continue
        _check_split_list(where, dataset)
        data_list = dataset.load_data_list()
        if not data_list:
            raise _empty_list_error(where, dataset)
        _check_label_sizes(where, dataset, data_list)
        num_samples += len(data_list)
        if where.startswith('train_dataloader'):
            train_paths.update(info.get('img_path') for info in data_list)
        else:
            heldout[where] = {
                info.get('img_path')
                for info in data_list if info.get('split') == 'heldout'
            }
    _check_heldout_unseen(train_paths, heldout)
    print_log(
        f'Data check: {num_samples} samples of {len(seen)} datasets '
        f'({", ".join(loaders)}) in {time.perf_counter() - start:.1f} s',
        logger='current')
    return num_samples


def check_datasets(cfg: Config, loaders: Sequence[str] = DATALOADERS) -> int:
    """:func:`check_dataset_paths`, then :func:`check_dataset_samples`.

    Args:
        cfg (Config): A training or testing config.
        loaders (Sequence[str]): The dataloaders the run uses. Defaults to
            all three.

    Returns:
        int: The number of samples checked (datasets shared by loaders
        counted once).
    """
    check_dataset_paths(cfg, loaders)
    return check_dataset_samples(cfg, loaders)
