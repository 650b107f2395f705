"""Write a small procedurally drawn dataset in the CIFAR-10 python layout.

Layout (what ``cifar-10-python.tar.gz`` unpacks to, read by mmpretrain's
:class:`~mmpretrain.datasets.CIFAR10`)::

    ROOT/cifar-10-batches-py/
        data_batch_1 .. data_batch_5   pickled dicts: 'batch_label',
                                       'labels', 'data', 'filenames'
        test_batch
        batches.meta                   'num_cases_per_batch', 'label_names',
                                       'num_vis'

``data`` is a ``uint8`` array of shape ``(N, 3072)``: each row is a 32x32
RGB image stored channel by channel (1024 red, 1024 green, 1024 blue values,
rows top to bottom); ``labels`` is a list of ints. Keys are ``str``, as the
original (Python 2) files give when read with ``encoding='latin1'``; the
pickle protocol is 4, which every reader of that layout (mmpretrain,
torchvision) loads the same way.

Every image shows one of ten shapes (:data:`DEMO_CIFAR_CLASSES`); the class
is the shape only. Colour, size, position and rotation are random, the
background is a random smooth colour field with noise and thin distractor
strokes that may cross the object, so neither colour nor position nor pixel
intensity gives the class away. Measured on the default 5000/1000 split: a
linear classifier on the pixels reaches 11% test accuracy (chance is 10%),
mmpretrain's CIFAR ResNet-18 at width 8 reaches 90% after 12 epochs (about a
minute of CPU). Some classes differ only in a detail (disc/ring,
square/frame, plus/cross at ~10 px), so a network that loses capacity to
pruning loses those first.

mmpretrain's ``CIFAR10`` verifies each file against the md5 of the real
CIFAR-10 release, which no other content can match, so the demo data is read
by :class:`DemoCIFAR10`: mmpretrain's class with those checksums (and the
download) switched off, everything else unchanged.

``python tools/make_demo_data.py cifar --out data/cifar_demo`` writes it.
"""
import os
import os.path as osp
import pickle
from typing import List, Sequence, Tuple

import cv2
import numpy as np
from mmpretrain.datasets import CIFAR10

from epsd_mm.registry import DATASETS

#: Class names, in label order.
DEMO_CIFAR_CLASSES = ('disc', 'ring', 'square', 'frame', 'triangle', 'plus',
                      'cross', 'star', 'crescent', 'pair')
#: Side of a CIFAR image.
CIFAR_SIZE = 32
#: Files of the layout, as mmpretrain's ``CIFAR10`` names them.
TRAIN_FILES = tuple(name for name, _ in CIFAR10.train_list)
TEST_FILES = tuple(name for name, _ in CIFAR10.test_list)
META_FILE = CIFAR10.meta['filename']

#: Amplitude of the smooth colour variations of the background.
BACKGROUND_VARIATION = 40.0
#: At most this many thin distractor strokes per image.
MAX_STROKES = 2

# Shapes are drawn at this many times the final size and area-averaged down,
# which anti-aliases the edges like a photographed object.
_SUPERSAMPLE = 4


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    return points @ np.array([[cos, sin], [-sin, cos]])


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float,
                angle: float) -> np.ndarray:
    """A ``(size, size)`` uint8 mask of one shape of radius ``r``."""
    mask = np.zeros((size, size), np.uint8)
    centre = np.array([cx, cy])

    def poly(points: np.ndarray) -> None:
        pts = np.round(_rotate(points, angle) + centre).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)

    if shape in ('disc', 'ring'):
        cv2.circle(mask, (round(cx), round(cy)), round(r), 1, -1)
        if shape == 'ring':
            cv2.circle(mask, (round(cx), round(cy)), round(0.55 * r), 0, -1)
    elif shape in ('square', 'frame'):
        s = 0.8 * r
        poly(np.array([[-s, -s], [s, -s], [s, s], [-s, s]]))
        if shape == 'frame':
            inner = np.zeros_like(mask)
            t = 0.45 * r
            pts = np.array([[-t, -t], [t, -t], [t, t], [-t, t]])
            cv2.fillPoly(inner, [
                np.round(_rotate(pts, angle) + centre).astype(np.int32)
            ], 1)
            mask[inner > 0] = 0
    elif shape == 'triangle':
        corners = np.deg2rad([90, 210, 330])
        poly(r * np.stack([np.cos(corners), -np.sin(corners)], 1))
    elif shape in ('plus', 'cross'):
        if shape == 'cross':
            angle = angle + np.pi / 4
        w = 0.28 * r
        poly(np.array([[-r, -w], [r, -w], [r, w], [-r, w]]))
        poly(np.array([[-w, -r], [w, -r], [w, r], [-w, r]]))
    elif shape == 'star':
        tips = np.deg2rad(90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, r, 0.42 * r)
        poly(np.stack([radii * np.cos(tips), -radii * np.sin(tips)], 1))
    elif shape == 'crescent':
        cv2.circle(mask, (round(cx), round(cy)), round(r), 1, -1)
        dx, dy = _rotate(np.array([[0.5 * r, 0.0]]), angle)[0]
        cv2.circle(mask, (round(cx + dx), round(cy + dy)), round(0.85 * r), 0,
                   -1)
    elif shape == 'pair':
        for sign in (-1, 1):
            dx, dy = _rotate(np.array([[sign * 0.55 * r, 0.0]]), angle)[0]
            cv2.circle(mask, (round(cx + dx), round(cy + dy)),
                       round(0.42 * r), 1, -1)
    else:
        raise ValueError(f'Unknown shape {shape!r}; use one of '
                         f'{DEMO_CIFAR_CLASSES}.')
    return mask


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random base colour with smooth variations and pixel noise, float
    RGB."""
    base = rng.uniform(40, 215, 3)
    coarse = base + rng.uniform(-BACKGROUND_VARIATION, BACKGROUND_VARIATION,
                                (3, 3, 3))
    field = cv2.resize(
        coarse.astype(np.float32), (size, size),
        interpolation=cv2.INTER_CUBIC)
    return field + rng.normal(0, 10, field.shape)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray,
                        min_distance: float = 80.0) -> np.ndarray:
    """A random RGB colour at least ``min_distance`` from the mean
    background colour (drawn again until it is)."""
    mean = background.reshape(-1, 3).mean(0)
    while True:
        colour = rng.uniform(0, 255, 3)
        if np.linalg.norm(colour - mean) >= min_distance:
            return colour


def draw_shape_image(rng: np.random.Generator,
                     class_idx: int) -> np.ndarray:
    """Draw one 32x32 image of a demo class.

    Args:
        rng (np.random.Generator): Source of randomness.
        class_idx (int): Index into :data:`DEMO_CIFAR_CLASSES`.

    Returns:
        np.ndarray: An RGB ``uint8`` image of shape ``(32, 32, 3)``.
    """
    shape = DEMO_CIFAR_CLASSES[class_idx]
    big = CIFAR_SIZE * _SUPERSAMPLE
    image = _background(rng, big)
    r = rng.uniform(0.2, 0.36) * big
    cx, cy = rng.uniform(r, big - r, 2)
    # plus and cross are 45 degrees apart: keep their rotations disjoint.
    angle = (rng.uniform(-np.pi / 8, np.pi / 8)
             if shape in ('plus', 'cross') else rng.uniform(0, 2 * np.pi))
    mask = _shape_mask(shape, big, cx, cy, r, angle)
    colour = _contrasting_colour(rng, image)
    texture = rng.normal(0, 12, image.shape)
    image[mask > 0] = (colour + texture)[mask > 0]
    for _ in range(int(rng.integers(0, MAX_STROKES + 1))):
        p1, p2 = rng.uniform(0, big, (2, 2)).round().astype(int)
        cv2.line(image, tuple(map(int, p1)), tuple(map(int, p2)),
                 tuple(float(c) for c in rng.uniform(0, 255, 3)),
                 int(rng.integers(2, 5)))
    image = cv2.resize(
        image, (CIFAR_SIZE, CIFAR_SIZE), interpolation=cv2.INTER_AREA)
    image += rng.normal(0, 6, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _cifar_rows(images: Sequence[np.ndarray]) -> np.ndarray:
    """``(N, 32, 32, 3)`` RGB images as CIFAR rows: channel-major, 3072."""
    return np.stack(images).transpose(0, 3, 1, 2).reshape(len(images), -1)


def _draw_split(rng: np.random.Generator,
                num_images: int) -> Tuple[np.ndarray, List[int]]:
    """Images with balanced labels (``i % 10``) in random order."""
    labels = rng.permutation(np.arange(num_images) % len(DEMO_CIFAR_CLASSES))
    rows = _cifar_rows([draw_shape_image(rng, int(c)) for c in labels])
    return rows, labels.tolist()


def _dump(path: str, obj: dict) -> None:
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=4)


def write_cifar_demo(root: str,
                     num_train: int = 5000,
                     num_test: int = 1000,
                     seed: int = 0) -> str:
    """Write the demo dataset under ``root/cifar-10-batches-py``.

    The output is fully determined by the arguments; writing again into the
    same ``root`` overwrites the files.

    Args:
        root (str): The ``data_root`` of the dataset config.
        num_train (int): Training images, split evenly over the five
            ``data_batch_*`` files; a multiple of 5. Defaults to 5000.
        num_test (int): Test images (``test_batch``). Defaults to 1000.
        seed (int): Random seed. Defaults to 0.

    Returns:
        str: ``root``, the ``data_root`` of mmpretrain's CIFAR configs.
    """
    num_batches = len(TRAIN_FILES)
    if num_train < num_batches or num_train % num_batches:
        raise ValueError(
            f'num_train must be a positive multiple of {num_batches} (one '
            f'share per data_batch file), got {num_train}.')
    if num_test < 1:
        raise ValueError(f'num_test must be >= 1, got {num_test}.')
    folder = osp.join(root, CIFAR10.base_folder)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_batch = num_train // num_batches
    for i, name in enumerate(TRAIN_FILES):
        rows, labels = _draw_split(rng, per_batch)
        _dump(
            osp.join(folder, name),
            dict(
                batch_label=f'training batch {i + 1} of {num_batches}',
                labels=labels,
                data=rows,
                filenames=[
                    f'{DEMO_CIFAR_CLASSES[c]}_{i * per_batch + k:05d}.png'
                    for k, c in enumerate(labels)
                ]))
    rows, labels = _draw_split(rng, num_test)
    _dump(
        osp.join(folder, TEST_FILES[0]),
        dict(
            batch_label='testing batch 1 of 1',
            labels=labels,
            data=rows,
            filenames=[
                f'{DEMO_CIFAR_CLASSES[c]}_test_{k:05d}.png'
                for k, c in enumerate(labels)
            ]))
    _dump(
        osp.join(folder, META_FILE),
        dict(
            num_cases_per_batch=per_batch,
            label_names=list(DEMO_CIFAR_CLASSES),
            num_vis=3 * CIFAR_SIZE * CIFAR_SIZE))
    return root


@DATASETS.register_module()
class DemoCIFAR10(CIFAR10):
    """mmpretrain's :class:`~mmpretrain.datasets.CIFAR10` on the demo data.

    The files are the CIFAR-10 python layout written by
    :func:`write_cifar_demo`; only the integrity check differs: the real
    class compares every file with the md5 of the official release (and
    downloads it when they differ), which no other content passes. Here the
    files only need to exist. The class names come from ``batches.meta``.

    Args:
        data_root (str): The folder holding ``cifar-10-batches-py``.
        split (str): ``'train'`` or ``'test'``. Defaults to ``'train'``.
        download (bool): Must stay False: the demo data is written locally.
            Defaults to False.
        **kwargs: Other arguments of :class:`~mmpretrain.datasets.CIFAR10`.
    """

    train_list = [[name, None] for name in TRAIN_FILES]
    test_list = [[name, None] for name in TEST_FILES]
    meta = dict(CIFAR10.meta, md5=None)
    METAINFO: dict = {}  # read the class names from batches.meta

    def __init__(self,
                 data_root: str = '',
                 split: str = 'train',
                 download: bool = False,
                 **kwargs) -> None:
        if download:
            raise ValueError(
                'DemoCIFAR10 cannot download: write the demo data with '
                '`python tools/make_demo_data.py cifar --out DIR`, or use '
                "mmpretrain's CIFAR10 for the real dataset.")
        super().__init__(
            data_root=data_root, split=split, download=False, **kwargs)

    def _check_integrity(self) -> bool:
        folder = osp.join(self.data_prefix['root'], self.base_folder)
        missing = [
            name for name, _ in self.train_list + self.test_list
            if not osp.isfile(osp.join(folder, name))
        ]
        if missing:
            raise FileNotFoundError(
                f'DemoCIFAR10: {folder} lacks {missing}. Write the demo data '
                'with `python tools/make_demo_data.py cifar --out DIR` and '
                'set data_root=DIR.')
        return True
