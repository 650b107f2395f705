"""Class indices of a sample, for class-aware samplers (CS-KD pairs)."""
from typing import List

import numpy as np


def sample_cat_ids(dataset, idx: int, ignore_index: int = 255) -> List[int]:
    """The classes present in sample ``idx`` of ``dataset``.

    Uses ``dataset.get_cat_ids`` when the dataset implements it (mmdet and
    epsd_mm datasets). Segmentation datasets of mmseg -- also inside
    MMEngine's ``ConcatDataset``, which has no ``get_cat_ids`` -- are read
    through their data info: the segmentation map is loaded with mmseg's own
    ``LoadAnnotations`` (so ``reduce_zero_label`` and ``label_map`` apply) and
    its labels other than ``ignore_index`` are returned.

    Args:
        dataset: An MMEngine-style dataset.
        idx (int): Sample index.
        ignore_index (int): Label that is not a class. Defaults to 255.

    Returns:
        list[int]: Class indices, possibly empty.
    """
    try:
        return [int(c) for c in dataset.get_cat_ids(idx)]
    except (AttributeError, NotImplementedError):
        pass
    info = dataset.get_data_info(idx)
    if 'seg_map_path' not in info:
        raise TypeError(
            f'{type(dataset).__name__} neither implements get_cat_ids(idx) '
            'nor provides `seg_map_path` in its data info, so the classes of '
            'a sample are unknown. Implement get_cat_ids for the dataset.')
    from mmseg.datasets.transforms import LoadAnnotations
    results = LoadAnnotations()(dict(info, seg_fields=[]))
    labels = np.unique(results['gt_seg_map'])
    return [int(c) for c in labels if c != ignore_index]
