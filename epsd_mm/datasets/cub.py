"""CUB-200-2011 for weakly supervised object localisation (WSOL)."""
import re
from typing import Callable, Dict, List, Sequence, Tuple

from mmdet.datasets import BaseDetDataset
from mmengine.fileio import exists, get_text, join_path

from epsd_mm.registry import DATASETS

#: One parsed line: its converted columns (without the id) and line number.
Row = Tuple[tuple, int]


@DATASETS.register_module()
class CUB200Dataset(BaseDetDataset):
    """CUB-200-2011 in its official layout, as an mmdet detection dataset.

    ``data_root`` is the extracted ``CUB_200_2011`` folder::

        data_root/
            images/<class folder>/<image>.jpg
            images.txt              <image_id> <path relative to images/>
            image_class_labels.txt  <image_id> <class_id, 1-based>
            train_test_split.txt    <image_id> <is_training 1/0>
            bounding_boxes.txt      <image_id> <x> <y> <width> <height>
            classes.txt             <class_id> <class folder name>

    Every sample carries its image-level label twice: as ``gt_label`` (0-based
    class index, add ``'gt_label'`` to the ``meta_keys`` of
    ``mmdet.PackDetInputs`` to make it reach the model) and as the
    ``bbox_label`` of its single instance, whose box (``x1, y1, x2, y2``) is
    only meant for evaluation (``mmdet.LoadAnnotations(with_bbox=True)``). The
    metainfo ``classes`` are read from ``classes.txt`` (without the ``001.``
    prefix).

    Inconsistent annotation files raise a ``ValueError`` (or
    ``FileNotFoundError``) naming the file and line.

    Args:
        data_root (str): The ``CUB_200_2011`` folder.
        split (str): ``'train'`` or ``'test'`` (``train_test_split.txt``).
            Defaults to ``'train'``.
        data_prefix (dict): Folder of the images, relative to ``data_root``.
            Defaults to ``dict(img_path='images')``.
        **kwargs: Other arguments of ``mmdet.datasets.BaseDetDataset``
            (``pipeline``, ``test_mode``, ``backend_args``, ...).
    """

    METAINFO = dict(classes=())
    SPLITS = {'train': 1, 'test': 0}

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 data_prefix: dict = dict(img_path='images'),
                 **kwargs) -> None:
        if split not in self.SPLITS:
            raise ValueError(
                f"split must be 'train' or 'test', got {split!r}.")
        self.split = split
        super().__init__(
            data_root=data_root, data_prefix=data_prefix, **kwargs)

    def _where(self, filename: str, lineno: int) -> str:
        """``'<data_root>/<filename>, line <lineno>'`` for error messages."""
        return f'{join_path(self.data_root, filename)}, line {lineno}'

    def _read_table(self, filename: str,
                    converters: Sequence[Callable]) -> Dict[int, Row]:
        """Parse ``<id> <col> ...`` lines of an annotation file.

        Args:
            filename (str): File name inside ``data_root``.
            converters (Sequence[Callable]): One converter per column after
                the id (e.g. ``int``, ``float``, ``str``).

        Returns:
            dict: Maps each id to its converted columns and line number.
        """
        path = join_path(self.data_root, filename)
        if not exists(path, backend_args=self.backend_args):
            raise FileNotFoundError(
                f'{path} not found. CUB200Dataset expects the official '
                'CUB-200-2011 layout (images/, images.txt, '
                'image_class_labels.txt, train_test_split.txt, '
                'bounding_boxes.txt, classes.txt); set data_root to the '
                'extracted CUB_200_2011 folder.')
        rows: Dict[int, Row] = {}
        text = get_text(path, backend_args=self.backend_args)
        for lineno, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            where = self._where(filename, lineno)
            if len(fields) != len(converters) + 1:
                raise ValueError(
                    f'{where}: expected {len(converters) + 1} '
                    f'whitespace-separated columns, got {len(fields)} '
                    f'({line!r}). Fix or remove the line.')
            try:
                key = int(fields[0])
                values = tuple(
                    convert(field)
                    for convert, field in zip(converters, fields[1:]))
            except ValueError:
                raise ValueError(
                    f'{where}: cannot parse {line!r}; the columns must be '
                    f'an integer id followed by '
                    f'{", ".join(c.__name__ for c in converters)}.') from None
            if key in rows:
                raise ValueError(
                    f'{where}: id {key} already appears on line '
                    f'{rows[key][1]}. Remove the duplicate.')
            rows[key] = (values, lineno)
        return rows

    def _check_same_ids(self, images: Dict[int, Row],
                        table: Dict[int, Row], filename: str) -> None:
        """Every image of ``images.txt`` has exactly one row in ``table``."""
        for image_id, (_, lineno) in table.items():
            if image_id not in images:
                raise ValueError(
                    f'{self._where(filename, lineno)}: image id {image_id} '
                    'is not listed in images.txt. Remove the line or add the '
                    'image.')
        for image_id, (_, lineno) in images.items():
            if image_id not in table:
                raise ValueError(
                    f'{join_path(self.data_root, filename)}: no line for '
                    f'image id {image_id} (images.txt, line {lineno}). Add '
                    'it or remove the image.')

    def _load_classes(self) -> List[str]:
        """Class names from ``classes.txt``, ids required to be 1..K."""
        classes = []
        for class_id, ((name, ), lineno) in self._read_table(
                'classes.txt', (str, )).items():
            if class_id != len(classes) + 1:
                raise ValueError(
                    f'{self._where("classes.txt", lineno)}: class ids must '
                    f'be 1, 2, ..., K in order, expected {len(classes) + 1} '
                    f'but got {class_id}. Renumber the classes.')
            classes.append(re.sub(r'^\d+\.', '', name))
        if not classes:
            raise ValueError(
                f'{join_path(self.data_root, "classes.txt")} lists no class.'
                ' Add one line "<class_id> <name>" per class.')
        return classes

    def load_data_list(self) -> List[dict]:
        """Parse and cross-check the annotation files.

        Every line of every file is checked; image files only for the split.

        Returns:
            list[dict]: One data info per image of the split, with
            ``img_id``, ``img_path``, ``gt_label`` and ``instances``.
        """
        classes = self._load_classes()
        self._metainfo['classes'] = tuple(classes)
        images = self._read_table('images.txt', (str, ))
        labels = self._read_table('image_class_labels.txt', (int, ))
        splits = self._read_table('train_test_split.txt', (int, ))
        boxes = self._read_table('bounding_boxes.txt',
                                 (float, float, float, float))
        for table, filename in ((labels, 'image_class_labels.txt'),
                                (splits, 'train_test_split.txt'),
                                (boxes, 'bounding_boxes.txt')):
            self._check_same_ids(images, table, filename)

        data_list = []
        for image_id, ((rel_path, ), image_line) in images.items():
            (is_training, ), split_line = splits[image_id]
            if is_training not in (0, 1):
                    raise ValueError(
                    f'{self._where("train_test_split.txt", split_line)}: '
                    f'is_training must be 0 or 1, got {is_training}.')
            (class_id, ), label_line = labels[image_id]
            if not 1 <= class_id <= len(classes):
                raise ValueError(
                    f'{self._where("image_class_labels.txt", label_line)}: '
                    f'class id {class_id} is not in classes.txt (ids '
                    f'1..{len(classes)}). Fix the label or add the class.')
            (x, y, w, h), box_line = boxes[image_id]
            if x < 0 or y < 0 or w <= 0 or h <= 0:
                raise ValueError(
                    f'{self._where("bounding_boxes.txt", box_line)}: box '
                    f'(x={x}, y={y}, width={w}, height={h}) must have x, y '
                    '>= 0 and width, height > 0. Fix the box.')
            if is_training != self.SPLITS[self.split]:
                continue
            img_path = join_path(self.data_prefix['img_path'], rel_path)
            if not exists(img_path, backend_args=self.backend_args):
                raise FileNotFoundError(
                    f'{img_path} (images.txt, line {image_line}) not found. '
                    'Restore the image or remove it from every annotation '
                    'file.')
            label = class_id - 1
            data_list.append(
                dict(
                    img_id=image_id,
                    img_path=img_path,
                    gt_label=label,
                    instances=[
                        dict(
                            bbox=[x, y, x + w, y + h],
                            bbox_label=label,
                            ignore_flag=0)
                    ]))
        return data_list

    def get_cat_ids(self, idx: int) -> List[int]:
        """The class of sample ``idx``, as a one-element list.

        Args:
            idx (int): Index of the sample.

        Returns:
            list[int]: ``[gt_label]``.
        """
        return [self.get_data_info(idx)['gt_label']]
