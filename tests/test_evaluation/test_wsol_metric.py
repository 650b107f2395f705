import numpy as np
import pytest
import torch

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


def sample(cam, gt_bbox, gt_label, pred_bbox, pred_label):
    """What the evaluator gives ``process``: ``DetDataSample.to_dict()``."""
    return dict(
        gt_label=gt_label,
        img_path=f'img_{gt_label}.jpg',
        gt_instances=dict(bboxes=torch.tensor([gt_bbox], dtype=torch.float)),
        pred_instances=dict(
            bboxes=torch.tensor([pred_bbox], dtype=torch.float),
            labels=torch.tensor([pred_label]),
            scores=torch.tensor([0.9])),
        pred_cam=dict(data=torch.from_numpy(cam)[None]))


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


def hand_made_samples():
    """Three images whose IoUs per CAM threshold t are known:

    A: object at 0.22, a small distractor at 1.0.
       IoU 0.25 at t=0, 1 for t in (0, 0.22], 0 above.
    C: object region at 1.0 inside a GT box covering the image, 0.52 around.
       IoU 1 for t <= 0.52, 0.25 above.
    D: GT core at 1.0 inside a ring at 0.82.
       IoU 0.25 at t=0, 100/196 for t in (0, 0.82], 1 above.
    """
    a = sample(
        box_map((0.22, 0, 0, 10, 10), (1.0, 14, 14, 16, 16)),
        gt_bbox=[0, 0, 10, 10], gt_label=0,
        pred_bbox=[0, 0, 10, 10], pred_label=0)  # right class, IoU 1
    c = sample(
        box_map((0.52, 0, 0, 20, 20), (1.0, 0, 0, 10, 10)),
        gt_bbox=[0, 0, 20, 20], gt_label=1,
        pred_bbox=[0, 0, 10, 10], pred_label=1)  # right class, IoU 0.25
    d = sample(
        box_map((0.82, 3, 3, 17, 17), (1.0, 5, 5, 15, 15)),
        gt_bbox=[5, 5, 15, 15], gt_label=2,
        pred_bbox=[5, 5, 15, 15], pred_label=0)  # wrong class, IoU 1
    return [a, c, d]


def evaluate(metric, samples):
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)


def test_metric_on_hand_made_cases():
    metrics = evaluate(WSOLMetric(), hand_made_samples())
    expected = {
        'top1_cls': 200 / 3,  # A, C
        'top1_loc': 100 / 3,  # A only: C's box misses, D's class is wrong
        'gt_known_loc': 200 / 3,  # A, D
        # Best thresholds t in [0.05, 0.2]: A 1, C 1, D 0.51.
        'maxboxacc_v2@30': 100.0,
        'maxboxacc_v2@50': 100.0,
        # No threshold suits all three: at best two of them (t <= 0.2).
        'maxboxacc_v2@70': 200 / 3,
    }
    expected['maxboxacc_v2'] = (100 + 100 + 200 / 3) / 3
    assert metrics == pytest.approx(expected)


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
    with pytest.raises(ValueError, match='cam_curve_interval'):
        WSOLMetric(cam_curve_interval=0)
    with pytest.raises(ValueError, match='IoU thresholds'):
        WSOLMetric(iou_thrs=(0.5, 1.5))
