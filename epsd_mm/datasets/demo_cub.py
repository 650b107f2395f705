"""Write a small procedurally drawn dataset in the CUB-200-2011 layout.

Layout (exactly what :class:`~epsd_mm.datasets.CUB200Dataset` reads, and what
the real ``CUB_200_2011`` archive unpacks to)::

    ROOT/
        images/001.Red_Plain_Bird/Red_Plain_Bird_0001.jpg
        images.txt              <image_id> <path relative to images/>
        image_class_labels.txt  <image_id> <class_id, 1-based>
        train_test_split.txt    <image_id> <is_training 1/0>
        bounding_boxes.txt      <image_id> <x> <y> <width> <height>
        classes.txt             <class_id> <class folder name>

Every image shows one "bird" (body, head, tail and beak) on a grey textured
background. A class is a body colour combined with a plumage pattern, so the
classes are learnable from the object only, while the background carries no
class information (it is desaturated, the birds are saturated). The bird has a
random position, size and heading, and its box is the exact bounding box of
the drawn pixels.

``python tools/make_demo_data.py cub --out data/cub_demo`` writes the data the
demo config ``configs/demo/epsd_cam_cub_demo.py`` expects.
"""
import os
import os.path as osp
from typing import Tuple

import cv2
import numpy as np

#: Saturated BGR body colours, with the name used in the class names.
BIRD_COLOURS = (('Red', (40, 40, 220)), ('Green', (40, 190, 40)),
                ('Blue', (220, 70, 30)), ('Yellow', (30, 210, 230)),
                ('Magenta', (200, 40, 200)), ('Cyan', (210, 200, 30)),
                ('Orange', (20, 130, 240)))
#: Plumage patterns, drawn in a second saturated colour.
BIRD_PATTERNS = ('Plain', 'Striped', 'Spotted', 'Winged')
#: A box ``(x, y, width, height)`` in pixels.
Box = Tuple[int, int, int, int]
#: Largest number of classes with a distinct colour and pattern combination.
MAX_DEMO_CLASSES = len(BIRD_COLOURS) * len(BIRD_PATTERNS)


def demo_class_name(class_idx: int) -> str:
    """Name of a demo class, e.g. ``'Red_Plain_Bird'``.

    Colours and patterns cycle with coprime periods (7 and 4), so the first
    :data:`MAX_DEMO_CLASSES` classes all differ in colour or pattern, and
    neighbouring classes differ in both.

    Args:
        class_idx (int): 0-based class index.

    Returns:
        str: The class name.
    """
    colour = BIRD_COLOURS[class_idx % len(BIRD_COLOURS)][0]
    pattern = BIRD_PATTERNS[class_idx % len(BIRD_PATTERNS)]
    return f'{colour}_{pattern}_Bird'


def _background(rng: np.random.Generator, height: int,
                width: int) -> np.ndarray:
    """Grey texture: blurred noise plus fine grain, with a faint colour tint
    proportional to the brightness so the saturation stays low."""
    coarse = rng.normal(0, 25, (max(height // 8, 2), max(width // 8, 2)))
    coarse = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 6, (height, width))
    luminance = np.clip(rng.uniform(90, 170) + coarse + grain, 40, 230)
    tint = 1 + rng.uniform(-0.04, 0.04, 3)
    return luminance[..., None] * tint


def _bird_mask(height: int, width: int, cx: float, cy: float, scale: float,
               heading: int) -> Tuple[np.ndarray, np.ndarray]:
    """Silhouette of a bird facing ``heading`` (+1 right, -1 left).

    Returns:
        tuple: ``(mask, body)`` uint8 masks of the whole bird and its body.
    """
    mask = np.zeros((height, width), np.uint8)
    body = np.zeros_like(mask)
    s = scale
    centre = (int(round(cx)), int(round(cy)))
    cv2.ellipse(body, centre, (int(s), int(0.6 * s)), 0, 0, 360, 1, -1)
    mask |= body
    head = (int(round(cx + 0.95 * s * heading)), int(round(cy - 0.45 * s)))
    cv2.circle(mask, head, int(0.35 * s), 1, -1)
    tail = np.array([[cx - 0.7 * s * heading, cy],
                     [cx - 1.4 * s * heading, cy - 0.55 * s],
                     [cx - 1.4 * s * heading, cy + 0.25 * s]])
    beak = np.array([[head[0] + 0.3 * s * heading, head[1] - 0.1 * s],
                     [head[0] + 0.6 * s * heading, head[1] + 0.05 * s],
                     [head[0] + 0.3 * s * heading, head[1] + 0.15 * s]])
    cv2.fillPoly(mask, [np.round(tail).astype(np.int32)], 1)
    cv2.fillPoly(mask, [np.round(beak).astype(np.int32)], 1)
    return mask, body


def _pattern_mask(pattern: str, body: np.ndarray, scale: float, cx: float,
                  cy: float) -> np.ndarray:
    """Pixels of the body drawn in the pattern colour."""
    height, width = body.shape
    yy, xx = np.mgrid[:height, :width]
    period = max(scale / 2.5, 3.0)
    if pattern == 'Plain':
        marks = np.zeros_like(body, dtype=bool)
    elif pattern == 'Striped':
        marks = ((xx - cx) % period) < period / 2
    elif pattern == 'Spotted':
        marks = (((xx - cx) % period - period / 2)**2 +
                 ((yy - cy) % period - period / 2)**2) < (period / 4)**2
    elif pattern == 'Winged':
        marks = (((xx - cx) / (0.6 * scale))**2 +
                 ((yy - cy) / (0.3 * scale))**2) < 1
    else:
        raise ValueError(f'Unknown pattern {pattern!r}; '
                         f'use one of {BIRD_PATTERNS}.')
    return marks & (body > 0)


def draw_bird(rng: np.random.Generator, class_idx: int,
              image_size: int) -> Tuple[np.ndarray, Box]:
    """Draw one image of a demo class.

    Args:
        rng (np.random.Generator): Source of randomness.
        class_idx (int): 0-based class index, below :data:`MAX_DEMO_CLASSES`.
        image_size (int): Image width; the height is drawn from
            ``[0.75, 1.0] * image_size`` so images differ in aspect ratio.

    Returns:
        tuple: ``(image, box)`` -- a BGR uint8 image and the bird's exact box
        ``(x, y, width, height)`` in pixels (CUB's ``bounding_boxes.txt``
        convention).
    """
    width = image_size
    height = int(round(image_size * rng.uniform(0.75, 1.0)))
    # The bird spans about 3.2 * scale horizontally and 1.9 * scale
    # vertically: keep it inside the image.
    scale = rng.uniform(0.16, 0.29) * min(width, height)
    heading = int(rng.choice((-1, 1)))
    cx = rng.uniform(1.6 * scale, width - 1.6 * scale)
    cy = rng.uniform(0.9 * scale, height - 0.7 * scale)
    mask, body = _bird_mask(height, width, cx, cy, scale, heading)
    pattern = BIRD_PATTERNS[class_idx % len(BIRD_PATTERNS)]
    marks = _pattern_mask(pattern, body, scale, cx, cy)

    image = _background(rng, height, width)
    colour = np.array(BIRD_COLOURS[class_idx % len(BIRD_COLOURS)][1], float)
    mark_colour = np.array(
        BIRD_COLOURS[(class_idx + 3) % len(BIRD_COLOURS)][1], float)
    shade = rng.normal(0, 8, (height, width, 1))
    image[mask > 0] = (colour + shade)[mask > 0]
    image[marks] = (mark_colour + shade)[marks]

    ys, xs = np.nonzero(mask)
    x1, y1 = int(xs.min()), int(ys.min())
    box = (x1, y1, int(xs.max()) + 1 - x1, int(ys.max()) + 1 - y1)
    return np.clip(image, 0, 255).astype(np.uint8), box


def write_cub_demo(root: str,
                   num_classes: int = 4,
                   images_per_class: int = 40,
                   image_size: int = 96,
                   test_fraction: float = 0.25,
                   seed: int = 0) -> None:
    """Write a demo dataset in the official CUB-200-2011 layout.

    The output is fully determined by the arguments. Writing again into the
    same ``root`` overwrites the annotation files and images (files of a
    previous run with more classes or images stay on disk but are no longer
    listed).

    Args:
        root (str): Output folder (the equivalent of ``CUB_200_2011/``).
        num_classes (int): Number of classes, at most
            :data:`MAX_DEMO_CLASSES`. Defaults to 4.
        images_per_class (int): Images per class. Defaults to 40.
        image_size (int): Image width in pixels. Defaults to 96.
        test_fraction (float): Fraction of each class in the test split
            (at least one image per split). Defaults to 0.25.
        seed (int): Random seed. Defaults to 0.
    """
    if not 1 <= num_classes <= MAX_DEMO_CLASSES:
        raise ValueError(
            f'num_classes must be in [1, {MAX_DEMO_CLASSES}] (distinct '
            f'colour/pattern pairs), got {num_classes}.')
    if images_per_class < 2:
        raise ValueError('images_per_class must be >= 2 (one train and one '
                         f'test image per class), got {images_per_class}.')
    if not 0 < test_fraction < 1:
        raise ValueError(
            f'test_fraction must be in (0, 1), got {test_fraction}.')
    if image_size < 32:
        raise ValueError(f'image_size must be >= 32, got {image_size}.')
    rng = np.random.default_rng(seed)
    num_test = min(max(int(round(images_per_class * test_fraction)), 1),
                   images_per_class - 1)
    images, labels, splits, boxes, classes = [], [], [], [], []
    for class_idx in range(num_classes):
        name = demo_class_name(class_idx)
        folder = f'{class_idx + 1:03d}.{name}'
        classes.append(f'{class_idx + 1} {folder}')
        os.makedirs(osp.join(root, 'images', folder), exist_ok=True)
        test_ids = set(
            rng.choice(images_per_class, num_test, replace=False).tolist())
        for k in range(images_per_class):
            image, (x, y, w, h) = draw_bird(rng, class_idx, image_size)
            rel_path = f'{folder}/{name}_{k + 1:04d}.jpg'
            cv2.imwrite(
                osp.join(root, 'images', rel_path), image,
                [cv2.IMWRITE_JPEG_QUALITY, 95])
            image_id = len(images) + 1
            images.append(f'{image_id} {rel_path}')
            labels.append(f'{image_id} {class_idx + 1}')
            splits.append(f'{image_id} {int(k not in test_ids)}')
            boxes.append(f'{image_id} {x:.1f} {y:.1f} {w:.1f} {h:.1f}')
    for filename, lines in (('images.txt', images),
                            ('image_class_labels.txt', labels),
                            ('train_test_split.txt', splits),
                            ('bounding_boxes.txt', boxes), ('classes.txt',
                                                            classes)):
        with open(osp.join(root, filename), 'w', encoding='utf-8') as f:
            f.write('\n'.join(lines) + '\n')

