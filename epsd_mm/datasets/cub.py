"""CUB-200-2011 for weakly supervised object localisation (WSOL)."""
import math
import re
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from mmdet.datasets import BaseDetDataset
from mmengine.fileio import LocalBackend, exists, get_file_backend, get_text
from mmengine.fileio import join_path
from mmengine.logging import print_log

from epsd_mm.registry import DATASETS
from .checks import read_image_size

#: One parsed line: its converted columns (without the id) and line number.
Row = Tuple[tuple, int]
#: The box annotation file.
BOXES = 'bounding_boxes.txt'


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

    **Held-out training images** (the WSOL protocol of Choe et al., CVPR
    2020: choose the CAM threshold on annotated images that are not test
    images): with ``heldout_per_class=k`` the official training images of
    every class are split into ``k`` held-out images (split ``'heldout'``,
    with boxes) and the rest (split ``'train'``), deterministically: the
    held-out ones are spread evenly over each class's training images in
    image-id order. Every sample records its split in ``split``; add
    ``'split'`` to the ``meta_keys`` so :class:`~epsd_mm.evaluation.WSOLMetric`
    can tell held-out from test images. Use the same ``heldout_per_class``
    in the training and the evaluation dataset (``tools/train.py`` checks
    that training sees no held-out image).

    Inconsistent annotation files raise a ``ValueError`` (or
    ``FileNotFoundError``) naming the file and line, among them boxes with a
    non-finite coordinate or reaching outside their image (by more than
    :attr:`BOX_TOLERANCE` pixels; image sizes are read from the file headers
    of the loaded splits, local files only).

    Args:
        data_root (str): The ``CUB_200_2011`` folder.
        split (str | Sequence[str]): ``'train'``, ``'heldout'`` or
            ``'test'``, or several of them, e.g. ``('test', 'heldout')`` to
            evaluate with the threshold protocol; the samples are listed
            split by split in this order. Defaults to ``'train'``.
        heldout_per_class (int): Training images per class held out of
            ``'train'`` into ``'heldout'``. Defaults to 0 (the official
            splits).
        data_prefix (dict): Folder of the images, relative to ``data_root``.
            Defaults to ``dict(img_path='images')``.
        **kwargs: Other arguments of ``mmdet.datasets.BaseDetDataset``
            (``pipeline``, ``test_mode``, ``backend_args``, ...).
    """

    METAINFO = dict(classes=())
    SPLITS = ('train', 'heldout', 'test')
    #: How far (pixels) a box may reach past the image border (rounding).
    BOX_TOLERANCE = 1.0

    def __init__(self,
                 data_root: str,
                 split: Union[str, Sequence[str]] = 'train',
                 heldout_per_class: int = 0,
                 data_prefix: dict = dict(img_path='images'),
                 **kwargs) -> None:
        splits = (split, ) if isinstance(split, str) else tuple(split)
        unknown = [s for s in splits if s not in self.SPLITS]
        if unknown or not splits:
            raise ValueError(
                f'split must be one or several of {self.SPLITS}, got '
                f'{split!r}.')
        if not isinstance(heldout_per_class, int) or heldout_per_class < 0:
            raise ValueError('heldout_per_class must be an integer >= 0, '
                             f'got {heldout_per_class!r}.')
        if 'heldout' in splits and heldout_per_class == 0:
            raise ValueError(
                "split 'heldout' is empty with heldout_per_class=0: set "
                'heldout_per_class (e.g. 5) here and in the training '
                'dataset.')
        self.splits = splits
        self.heldout_per_class = heldout_per_class
        super().__init__(
            data_root=data_root, data_prefix=data_prefix, **kwargs)

    def _where(self, filename: str, lineno: int) -> str:
        """``'<data_root>/<filename>, line <lineno>'`` for error messages
        (only built for an error: it resolves a file backend)."""
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
            if len(fields) != len(converters) + 1:
                raise ValueError(
                    f'{self._where(filename, lineno)}: expected '
                    f'{len(converters) + 1} whitespace-separated columns, '
                    f'got {len(fields)} ({line!r}). Fix or remove the line.')
            try:
                key = int(fields[0])
                values = tuple(
                    convert(field)
                    for convert, field in zip(converters, fields[1:]))
            except ValueError:
                raise ValueError(
                    f'{self._where(filename, lineno)}: cannot parse '
                    f'{line!r}; the columns must be an integer id followed by '
                    f'{", ".join(c.__name__ for c in converters)}.') from None
            if key in rows:
                raise ValueError(
                    f'{self._where(filename, lineno)}: id {key} already '
                    f'appears on line {rows[key][1]}. Remove the duplicate.')
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

    def _heldout_ids(self, training: Dict[int, List[int]],
                     classes: List[str]) -> set:
        """Image ids held out of each class's training images.

        Args:
            training (dict): Class index to its training image ids.
            classes (list[str]): Class names, for the error message.
        """
        k = self.heldout_per_class
        heldout = set()
        for label, ids in sorted(training.items()):
            if len(ids) <= k:
                raise ValueError(
                    f'Class {label + 1} ({classes[label]}) has {len(ids)} '
                    f'training images, too few to hold out '
                    f'heldout_per_class={k} and train on the rest. Lower '
                    'heldout_per_class.')
            ids = sorted(ids)
            heldout.update(ids[(2 * i + 1) * len(ids) // (2 * k)]
                           for i in range(k))
        return heldout

    def _image_size(self, img_path: str) -> Optional[Tuple[int, int]]:
        """``(width, height)`` from the file header; None for remote
        storage (not read whole just to check boxes)."""
        backend = get_file_backend(img_path, backend_args=self.backend_args)
        if isinstance(backend, LocalBackend):
            return read_image_size(img_path)
        if not exists(img_path, backend_args=self.backend_args):
            raise FileNotFoundError(img_path)
        return None

    def _box_error(self, box: Tuple[float, ...], lineno: int,
                   problem: str) -> ValueError:
        x, y, w, h = box
        return ValueError(
            f'{self._where(BOXES, lineno)}: box (x={x}, y={y}, width={w}, '
            f'height={h}) {problem}')

    def _check_box(self, box: Tuple[float, ...], lineno: int) -> None:
        """Finite, non-negative origin and positive size."""
        x, y, w, h = box
        if not all(math.isfinite(v) for v in box):
            raise self._box_error(box, lineno,
                                  'has a non-finite value. Fix the box.')
        if x < 0 or y < 0 or w <= 0 or h <= 0:
            raise self._box_error(
                box, lineno, 'must have x, y >= 0 and width, height > 0. '
                'Fix the box.')

    def _check_box_in_image(self, box: Tuple[float, ...], lineno: int,
                            img_path: str, size: Tuple[int, int]) -> None:
        """The box ends at most :attr:`BOX_TOLERANCE` past the image."""
        x, y, w, h = box
        width, height = size
        if (x + w > width + self.BOX_TOLERANCE
                or y + h > height + self.BOX_TOLERANCE):
            raise self._box_error(
                box, lineno,
                f'reaches ({x + w}, {y + h}), outside the {width}x{height} '
                f'image {img_path}. Fix the box (or the image).')

    def load_data_list(self) -> List[dict]:
        """Parse and cross-check the annotation files.

        Every line of every file is checked; image files only for the
        loaded splits.

        Returns:
            list[dict]: One data info per image of the splits (split by
            split in the order of ``split``, by image id within a split),
            with ``img_id``, ``img_path``, ``gt_label``, ``split`` and
            ``instances``.
        """
        classes = self._load_classes()
        self._metainfo['classes'] = tuple(classes)
        images = self._read_table('images.txt', (str, ))
        labels = self._read_table('image_class_labels.txt', (int, ))
        splits = self._read_table('train_test_split.txt', (int, ))
        boxes = self._read_table(BOXES, (float, float, float, float))
        for table, filename in ((labels, 'image_class_labels.txt'),
                                (splits, 'train_test_split.txt'),
                                (boxes, BOXES)):
            self._check_same_ids(images, table, filename)

        training = defaultdict(list)
        for image_id in images:
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
            box, box_line = boxes[image_id]
            self._check_box(box, box_line)
            if is_training:
                training[class_id - 1].append(image_id)
        heldout = self._heldout_ids(training, classes) \
            if self.heldout_per_class else set()

        data_list, remote = [], False
        for image_id, ((rel_path, ), image_line) in images.items():
            if image_id in heldout:
                split = 'heldout'
            else:
                split = 'train' if splits[image_id][0][0] else 'test'
            if split not in self.splits:
                continue
            img_path = join_path(self.data_prefix['img_path'], rel_path)
            try:
                size = self._image_size(img_path)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f'{img_path} (images.txt, line {image_line}) not found. '
                    'Restore the image or remove it from every annotation '
                    'file.') from None
            box, box_line = boxes[image_id]
            if size is None:
                remote = True
            else:
                self._check_box_in_image(box, box_line, img_path, size)
            x, y, w, h = box
            label = labels[image_id][0][0] - 1
            data_list.append(
                dict(
                    img_id=image_id,
                    img_path=img_path,
                    gt_label=label,
                    split=split,
                    instances=[
                        dict(
                            bbox=[x, y, x + w, y + h],
                            bbox_label=label,
                            ignore_flag=0)
                    ]))
        # split by split, in the order asked for (stable: image-id order)
        data_list.sort(key=lambda info: self.splits.index(info['split']))
        if not data_list:
            raise ValueError(
                f'{join_path(self.data_root, "train_test_split.txt")}: no '
                f'image in split {self.splits}. Mark images with 1 '
                '(training) or 0 (test) there.')
        if remote:
            print_log(
                f'CUB200Dataset: images of {self.splits} are on remote '
                'storage; boxes were not checked against the image sizes.',
                logger='current')
        return data_list

    def get_cat_ids(self, idx: int) -> List[int]:
        """The class of sample ``idx``, as a one-element list.

        Args:
            idx (int): Index of the sample.

        Returns:
            list[int]: ``[gt_label]``.
        """
        return [self.get_data_info(idx)['gt_label']]
