import logging
import re

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from mmengine.logging import MMLogger

from epsd_mm.evaluation import (WSOLMetric, cam_to_bbox, cam_to_bboxes,
                                normalize_cam)

SIZE = 20


def box_map(*regions):
    """A (SIZE, SIZE) map: each (value, x1, y1, x2, y2) region filled in
    order (later regions overwrite earlier ones), zero elsewhere."""
    cam = np.zeros((SIZE, SIZE), np.float32)
    for value, x1, y1, x2, y2 in regions:
        cam[y1:y2, x1:x2] = value
    return cam


def sample(cam, gt_bbox, gt_label, pred_label, split=None,
           cam_threshold=0.2):
    """What the evaluator gives ``process``: ``DetDataSample.to_dict()`` of
    a CAMLocalizer prediction (box = CAM box at ``cam_threshold``)."""
    pred_bbox = cam_to_bbox(cam, cam_threshold)
    out = dict(
        gt_label=gt_label,
        img_path=f'img_{gt_label}.jpg',
        gt_instances=dict(bboxes=torch.tensor([gt_bbox], dtype=torch.float)),
        pred_instances=dict(
            bboxes=torch.from_numpy(pred_bbox)[None],
            labels=torch.tensor([pred_label]),
            scores=torch.tensor([0.9])),
        pred_cam=dict(data=torch.from_numpy(cam)[None]))
    if split is not None:
        out['split'] = split
    return out


@pytest.fixture
def logged():
    """The text logged through ``print_log(..., logger='current')``."""
    logger = MMLogger.get_current_instance()
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger.addHandler(handler)
    yield lambda: '\n'.join(lines)
    logger.removeHandler(handler)


def test_normalize_cam():
    cam = torch.tensor([[[1., 3.], [5., 2.]], [[4., 4.], [4., 4.]]])
    out = normalize_cam(cam)
    assert torch.allclose(out[0], torch.tensor([[0., .5], [1., .25]]))
    assert torch.equal(out[1], torch.zeros(2, 2))  # constant map


def test_cam_to_bbox_takes_largest_region():
    # A 2x2 strong blob and a weaker 3x5 region, not connected.
    cam = box_map((0.5, 10, 10, 15, 13), (1.0, 1, 1, 3, 3))
    np.testing.assert_array_equal(cam_to_bbox(cam, 0.4), [10, 10, 15, 13])
    np.testing.assert_array_equal(cam_to_bbox(cam, 0.6), [1, 1, 3, 3])
    np.testing.assert_array_equal(cam_to_bbox(cam, 0.0), [0, 0, SIZE, SIZE])
    np.testing.assert_array_equal(cam_to_bbox(cam, 1.1), [0, 0, 0, 0])
    # Diagonal neighbours are connected (8-connectivity).
    diagonal = box_map((1.0, 2, 2, 3, 3), (1.0, 3, 3, 4, 4))
    np.testing.assert_array_equal(cam_to_bbox(diagonal, 0.5), [2, 2, 4, 4])
    assert cam_to_bboxes(cam, [0.4, 0.6]).shape == (2, 4)


def image_a(**kwargs):
    """Object at 0.22, a small distractor at 1.0. IoU with the object:
    0.25 at t=0, 1 for t in (0, 0.22], 0 above."""
    return sample(
        box_map((0.22, 0, 0, 10, 10), (1.0, 14, 14, 16, 16)),
        gt_bbox=[0, 0, 10, 10], **kwargs)


def image_c(**kwargs):
    """Object region at 1.0 inside a GT box covering the image, 0.52
    around. IoU 1 for t <= 0.52, 0.25 above."""
    return sample(
        box_map((0.52, 0, 0, 20, 20), (1.0, 0, 0, 10, 10)),
        gt_bbox=[0, 0, 20, 20], **kwargs)


def image_d(**kwargs):
    """GT core at 1.0 inside a ring at 0.82. IoU 0.25 at t=0, 100/196 for
    t in (0, 0.82], 1 above."""
    return sample(
        box_map((0.82, 3, 3, 17, 17), (1.0, 5, 5, 15, 15)),
        gt_bbox=[5, 5, 15, 15], **kwargs)


def diffuse(x1, y1, **kwargs):
    """A diffuse CAM: 0.5 over the whole image, 1.0 on a 5x5 object. The
    box covers the image for t <= 0.5 (IoU 25/400), the object above."""
    return sample(
        box_map((0.5, 0, 0, SIZE, SIZE), (1.0, x1, y1, x1 + 5, y1 + 5)),
        gt_bbox=[x1, y1, x1 + 5, y1 + 5], **kwargs)


def hand_made_samples():
    return [
        image_a(gt_label=0, pred_label=0),  # right class, IoU@0.2 1
        image_c(gt_label=1, pred_label=1),  # right class, IoU@0.2 1
        image_d(gt_label=2, pred_label=0),  # wrong class, IoU@0.2 0.51
    ]


def evaluate(metric, samples):
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)


def test_metric_on_hand_made_cases(logged):
    metrics = evaluate(WSOLMetric(), hand_made_samples())
    expected = {
        'top1_cls': 200 / 3,  # A, C
        'top1_loc@0.20': 200 / 3,  # A, C (D's class is wrong)
        'gt_known_loc@0.20': 100.0,
        # Best thresholds t in [0.05, 0.2]: A 1, C 1, D 0.51.
        'maxboxacc_v2@30': 100.0,
        'maxboxacc_v2@50': 100.0,
        # No threshold suits all three: at best two of them (t <= 0.2).
        'maxboxacc_v2@70': 200 / 3,
    }
    expected['maxboxacc_v2'] = (100 + 100 + 200 / 3) / 3
    assert metrics == pytest.approx(expected)
    out = logged()
    assert 'gt_known_loc@0.20 use the fixed CAM threshold 0.20' in out
    assert 'no held-out images' in out and "'split'" in out
    assert 'diffuse' not in out  # boxes cover 25%, 100%, 49%


def test_best_threshold_is_chosen_on_heldout_images(logged):
    """The issue's case: diffuse CAMs read 0 at the fixed threshold; the
    threshold chosen on held-out images localises them."""
    test = [
        diffuse(2, 3, gt_label=0, pred_label=0, split='test'),
        diffuse(12, 10, gt_label=1, pred_label=0, split='test'),
    ]
    heldout = [  # wrong classes: must not count in top1_cls
        diffuse(4, 4, gt_label=0, pred_label=1, split='heldout'),
        diffuse(9, 1, gt_label=1, pred_label=0, split='heldout'),
        # prefers t <= 0.22, outvoted by the two diffuse ones
        image_a(gt_label=0, pred_label=1, split='heldout'),
    ]
    metric = WSOLMetric(iou_thrs=(0.5, ))
    metrics = evaluate(metric, heldout[:1] + test + heldout[1:])
    assert metrics == pytest.approx({
        'top1_cls': 50.0,
        'top1_loc@0.20': 0.0,
        'gt_known_loc@0.20': 0.0,
        'top1_loc@best': 50.0,
        'gt_known_loc@best': 100.0,
        'best_cam_threshold': 0.55,  # the first sweep step above 0.5
        # on the two test images only (image A would make it 2/3)
        'maxboxacc_v2@50': 100.0,
        'maxboxacc_v2': 100.0,
    })
    out = logged()
    assert re.search(
        r'WSOLMetric on 2 images: .* fixed CAM threshold 0\.20 .*'
        r'top1_loc@best and gt_known_loc@best the CAM threshold 0\.55, best '
        r'GT-known Loc \(66\.67\) on 3 held-out training images', out)
    assert 'boxes cover 100% of their image on average (more than 80%)' \
        in out
    assert 'Read top1_loc@best / gt_known_loc@best instead' in out


def test_threshold_names_and_ties():
    # 0.125 keeps its digits; ties pick the lowest threshold (A: IoU 1 on
    # (0, 0.22], so 0.05 on a 0.05 grid).
    metric = WSOLMetric(cam_threshold=0.125)
    metrics = evaluate(metric, [
        image_a(gt_label=0, pred_label=0, cam_threshold=0.125),
        image_a(gt_label=0, pred_label=0, cam_threshold=0.125,
                split='heldout')
    ])
    assert metrics['top1_loc@0.125'] == 100.0
    assert metrics['best_cam_threshold'] == pytest.approx(0.05)


def test_metric_threshold_grid():
    # With only the thresholds 0 and 0.5, A is found at neither (IoU 0.25
    # at 0, a distractor at 0.5), C at both, D's ring at 0.5 (IoU 0.51).
    metric = WSOLMetric(cam_curve_interval=0.5, iou_thrs=(0.5, ))
    metrics = evaluate(metric, hand_made_samples())
    assert metrics['maxboxacc_v2@50'] == pytest.approx(200 / 3)
    assert metrics['maxboxacc_v2'] == pytest.approx(200 / 3)


def test_metric_errors():
    good = hand_made_samples()[0]
    no_label = {k: v for k, v in good.items() if k != 'gt_label'}
    with pytest.raises(KeyError, match="'gt_label'.*meta_keys"):
        WSOLMetric().process({}, [no_label])
    no_box = dict(good, gt_instances=dict(bboxes=torch.zeros(0, 4)))
    with pytest.raises(ValueError, match='LoadAnnotations'):
        WSOLMetric().process({}, [no_box])
    # the model thresholds at 0.2, the metric was told 0.5
    with pytest.raises(ValueError,
                       match=r'img_0\.jpg is not its CAM box at '
                       r'cam_threshold=0\.5 .*test_cfg\.cam_threshold'):
        WSOLMetric(cam_threshold=0.5).process({}, [good])
    metric = WSOLMetric()
    metric.process({}, [image_a(gt_label=0, pred_label=0, split='heldout')])
    with pytest.raises(ValueError, match='All 1 evaluated images are held'):
        metric.compute_metrics(metric.results)
    with pytest.raises(ValueError, match='cam_curve_interval'):
        WSOLMetric(cam_curve_interval=0)
    with pytest.raises(ValueError, match='IoU thresholds'):
        WSOLMetric(iou_thrs=(0.5, 1.5))
    with pytest.raises(ValueError, match='cam_threshold'):
        WSOLMetric(cam_threshold=1.2)
    with pytest.raises(ValueError, match='diffuse_box_ratio'):
        WSOLMetric(diffuse_box_ratio=0)


def _dist_samples():
    return [
        diffuse(4, 4, gt_label=0, pred_label=1, split='heldout'),
        image_a(gt_label=0, pred_label=1, split='heldout'),
        diffuse(2, 3, gt_label=0, pred_label=0, split='test'),
        image_c(gt_label=1, pred_label=1, split='test'),
        image_d(gt_label=2, pred_label=0, split='test'),
    ]


def _dist_worker(rank, world_size, port, queue):
    import torch.distributed as dist
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
        world_size=world_size)
    try:
        samples = _dist_samples()
        metric = WSOLMetric()
        # DefaultSampler(shuffle=False) deals sample i to rank i % world
        metric.process({}, samples[rank::world_size])
        queue.put((rank, metric.evaluate(len(samples))))
    finally:
        dist.destroy_process_group()


def test_distributed_evaluation_matches_single_process(helpers):
    """One pass under 2 gloo ranks: the threshold is chosen after the
    results of both ranks are collected (held-out images on both)."""
    single = WSOLMetric()
    single.process({}, _dist_samples())
    expected = single.evaluate(len(_dist_samples()))
    ctx = mp.get_context('spawn')
    queue = ctx.SimpleQueue()
    mp.spawn(
        _dist_worker,
        args=(2, helpers.free_port(), queue),
        nprocs=2,
        join=True)
    results = dict(queue.get() for _ in range(2))
    for rank in (0, 1):
        assert results[rank] == pytest.approx(expected)
    assert 'wsol/gt_known_loc@best' in expected
