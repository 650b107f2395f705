"""Write a small procedurally drawn dataset in the Pascal VOC 2012 (+SBD aug)
layout read by mmseg's ``PascalVOCDataset``.

Layout (what mmseg's ``pascal_voc12_aug`` configs expect)::

    ROOT/VOCdevkit/VOC2012/
        JPEGImages/<id>.jpg
        SegmentationClass/<id>.png        palette PNG, 255 on object borders
        SegmentationClassAug/<id>.png     grey-level class indices (SBD style)
        ImageSets/Segmentation/{train,val,trainval,aug}.txt

Each foreground class is a shape with a typical colour; the colour of every
object is jittered strongly (``colour_jitter``), so colour alone does not
separate the classes and the network has to learn the shapes. Objects sit on
a noisy background at random positions and scales, so the masks are known
exactly.
"""
import os
import os.path as osp
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

# (class index in VOC, shape, BGR colour). Indices are real VOC classes
# (1 aeroplane, 3 bird, 8 cat, 12 dog, 15 person) so the metric's class table
# stays meaningful.
DEMO_CLASSES = ((1, 'circle', (40, 40, 220)), (3, 'square', (40, 200, 40)),
                (8, 'triangle', (220, 60, 40)), (12, 'ellipse', (30, 200,
                                                               220)),
                (15, 'cross', (200, 40, 200)))


def voc_palette() -> np.ndarray:
    """The standard 256-entry Pascal VOC colour map, flattened RGB."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        c, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[index] = (r, g, b)
    return palette.reshape(-1)


def _draw_shape(mask: np.ndarray, shape: str, cx: int, cy: int,
                r: int) -> None:
    if shape == 'circle':
        cv2.circle(mask, (cx, cy), r, 1, -1)
    elif shape == 'square':
        cv2.rectangle(mask, (cx - r, cy - r), (cx + r, cy + r), 1, -1)
    elif shape == 'triangle':
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]])
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
    elif shape == 'ellipse':
        cv2.ellipse(mask, (cx, cy), (r, max(r // 2, 2)), 30, 0, 360, 1, -1)
    elif shape == 'cross':
        w = max(r // 3, 2)
        cv2.rectangle(mask, (cx - r, cy - w), (cx + r, cy + w), 1, -1)
        cv2.rectangle(mask, (cx - w, cy - r), (cx + w, cy + r), 1, -1)
    else:
        raise ValueError(f'unknown shape {shape!r}')


def draw_sample(rng: np.random.Generator,
                image_size: int,
                max_objects: int = 2,
                colour_jitter: float = 70.0) -> tuple:
    """Draw one image and its label map.

    Args:
        rng (np.random.Generator): Source of randomness.
        image_size (int): Side of the square image.
        max_objects (int): At most this many objects (of distinct classes).
            Defaults to 2.
        colour_jitter (float): Uniform per-channel offset range (+-) of an
            object's colour around its class colour. Defaults to 70.

    Returns:
        tuple: ``(image BGR uint8 (H, W, 3), label uint8 (H, W))`` where the
        label holds VOC class indices (0 background).
    """
    size = image_size
    image = rng.integers(60, 140, (size, size, 3)).astype(np.float32)
    image = cv2.GaussianBlur(image, (0, 0), 3) + rng.normal(0, 8, image.shape)
    label = np.zeros((size, size), np.uint8)
    num_objects = int(rng.integers(1, max_objects + 1))
    picks = rng.choice(len(DEMO_CLASSES), num_objects, replace=False)
    for pick in picks:
        cls_index, shape, colour = DEMO_CLASSES[pick]
        r = int(rng.integers(size // 8, size // 4))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        mask = np.zeros_like(label)
        _draw_shape(mask, shape, cx, cy, r)
        texture = rng.normal(0, 12, image.shape)
        jitter = rng.uniform(-colour_jitter, colour_jitter, 3)
        fill = np.asarray(colour, np.float32) + jitter + texture
        image[mask > 0] = fill[mask > 0]
        label[mask > 0] = cls_index
    return np.clip(image, 0, 255).astype(np.uint8), label


def _with_void_border(label: np.ndarray) -> np.ndarray:
    """VOC marks object borders as 255 ("void") in SegmentationClass."""
    edges = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, np.ones((3, 3),
                                                                np.uint8))
    out = label.copy()
    out[edges > 0] = 255
    return out


def write_voc_demo(root: str,
                   num_train: int = 64,
                   num_val: int = 16,
                   image_size: int = 128,
                   seed: int = 0) -> str:
    """Write the demo dataset under ``root/VOCdevkit/VOC2012``.

    Args:
        root (str): Folder that receives ``VOCdevkit``.
        num_train (int): Training images (listed in ``train.txt`` and
            ``aug.txt``). Defaults to 64.
        num_val (int): Validation images. Defaults to 16.
        image_size (int): Side of the square images. Defaults to 128.
        seed (int): Seed of the drawing. Defaults to 0.

    Returns:
        str: The ``VOC2012`` folder, i.e. the ``data_root`` for mmseg configs.
    """
    if num_train < 1 or num_val < 1 or image_size < 32:
        raise ValueError('need num_train >= 1, num_val >= 1 and image_size '
                         f'>= 32; got {num_train}, {num_val}, {image_size}')
    voc = osp.join(root, 'VOCdevkit', 'VOC2012')
    folders = ('JPEGImages', 'SegmentationClass', 'SegmentationClassAug',
               osp.join('ImageSets', 'Segmentation'))
    for folder in folders:
        os.makedirs(osp.join(voc, folder), exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = voc_palette()
    names = [f'2007_{i:06d}' for i in range(num_train + num_val)]
    for name in names:
        image, label = draw_sample(rng, image_size)
        cv2.imwrite(osp.join(voc, 'JPEGImages', f'{name}.jpg'), image,
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        voc_png = Image.fromarray(_with_void_border(label), mode='P')
        voc_png.putpalette(palette.tolist())
        voc_png.save(osp.join(voc, 'SegmentationClass', f'{name}.png'))
        Image.fromarray(label, mode='L').save(
            osp.join(voc, 'SegmentationClassAug', f'{name}.png'))
    splits = dict(
        train=names[:num_train],
        aug=names[:num_train],
        val=names[num_train:],
        trainval=names)
    for split, split_names in splits.items():
        _write_lines(
            osp.join(voc, 'ImageSets', 'Segmentation', f'{split}.txt'),
            split_names)
    return voc


def _write_lines(path: str, lines: Sequence[str]) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
