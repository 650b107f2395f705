import itertools

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.dataset import pseudo_collate
from mmengine.evaluator import Evaluator
from mmengine.structures import InstanceData
from mmpretrain.structures import DataSample

from epsd_mm.datasets.cub import CUB200Dataset
from epsd_mm.datasets.demo_cifar import DemoCIFAR10, write_cifar_demo
from epsd_mm.datasets.demo_cub import write_cub_demo
from epsd_mm.evaluation import CalibrationMetric
from epsd_mm.evaluation.calibration_metric import (aurc,
                                                   expected_calibration_error,
                                                   optimal_aurc,
                                                   risk_coverage_curve)
from epsd_mm.registry import METRICS, MODELS


# Independent, deliberately naive references ---------------------------------
def reference_ece(conf, correct, num_bins=15):
    """Loop over bins (lo, hi]; the first bin also takes 0."""
    n, total = len(conf), 0.0
    for m in range(num_bins):
        lo, hi = m / num_bins, (m + 1) / num_bins
        members = [i for i in range(n)
                   if lo < conf[i] <= hi or (m == 0 and conf[i] == 0)]
        if members:
            acc = sum(correct[i] for i in members) / len(members)
            avg_conf = sum(conf[i] for i in members) / len(members)
            total += len(members) / n * abs(acc - avg_conf)
    return total


def reference_aurc_one_order(conf, correct):
    """Risk of the k most confident, averaged over k (ties: given order)."""
    order = sorted(range(len(conf)), key=lambda i: -conf[i])
    errors, risks = 0, []
    for k, i in enumerate(order, start=1):
        errors += 1 - correct[i]
        risks.append(errors / k)
    return sum(risks) / len(risks)


def reference_aurc_over_tie_orders(conf, correct):
    """Mean AURC over every input permutation (Python's sort is stable, so
    this averages over all orders of the ties)."""
    values = [
        reference_aurc_one_order([conf[i] for i in perm],
                                 [correct[i] for i in perm])
        for perm in itertools.permutations(range(len(conf)))
    ]
    return sum(values) / len(values)


# Functions against hand-computed values -------------------------------------
def test_ece_by_hand():
    # Bins of width 1/15: 0.95 -> (14/15, 1]; 0.6 = 9/15 closes (8/15, 9/15];
    # 0.3 -> (4/15, 5/15].
    conf = [0.95, 0.95, 0.6, 0.6, 0.3]
    correct = [1, 0, 1, 1, 0]
    # 2/5 * |0.5 - 0.95| + 2/5 * |1 - 0.6| + 1/5 * |0 - 0.3|
    assert expected_calibration_error(conf, correct) == pytest.approx(0.40)
    assert expected_calibration_error([0.7] * 4,
                                      [1, 1, 0, 1]) == pytest.approx(0.05)


def test_ece_bins_are_closed_on_the_right():
    # 0.4 = 6/15 closes the bin (5/15, 6/15]; 0.41 opens the next one.
    split = 0.5 * abs(1 - 0.4) + 0.5 * abs(0 - 0.41)
    assert expected_calibration_error([0.4, 0.41], [1, 0]) == pytest.approx(
        split)
    # In one bin they would cancel: |0.5 - 0.405|.
    assert expected_calibration_error([0.41, 0.42], [1, 0]) == pytest.approx(
        abs(0.5 - 0.415))
    # 0 and 1 fall in the first and last bin.
    assert expected_calibration_error([0.0, 1.0], [1, 1]) == pytest.approx(
        0.5)
    # Fewer bins merge them: with 1 bin, |acc - mean conf|.
    assert expected_calibration_error([0.4, 0.41], [1, 0],
                                      num_bins=1) == pytest.approx(0.095)


def test_aurc_by_hand():
    conf = [0.9, 0.8, 0.7, 0.6]
    correct = [1, 0, 1, 0]
    # Risks at coverage 1/4 .. 4/4: 0, 1/2, 1/3, 2/4.
    np.testing.assert_allclose(
        risk_coverage_curve(conf, correct), [0, 1 / 2, 1 / 3, 1 / 2])
    assert aurc(conf, correct) == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 4)
    # Ideal ranking at 50% accuracy: 0, 0, 1/3, 2/4.
    assert optimal_aurc(correct) == pytest.approx((1 / 3 + 1 / 2) / 4)
    # Input order does not matter.
    assert aurc(conf[::-1], correct[::-1]) == pytest.approx(
        aurc(conf, correct))


def test_aurc_ties_are_averaged_over_orders():
    # The two 0.9s: wrong first gives risks 1, 1/2, 1/3 -> 11/18;
    # right first gives 0, 1/2, 1/3 -> 5/18. Their mean is 8/18.
    conf = [0.9, 0.9, 0.5]
    assert aurc(conf, [0, 1, 1]) == pytest.approx(8 / 18)
    assert aurc(conf, [1, 0, 1]) == pytest.approx(8 / 18)


def test_aurc_extremes():
    # All right: zero risk everywhere. All wrong: risk 1.
    assert aurc([0.9, 0.5, 0.7], [1, 1, 1]) == 0
    assert aurc([0.9, 0.5, 0.7], [0, 0, 0]) == 1
    # Right ones ranked first reach the optimum; reversed ranks do worse.
    assert aurc([0.9, 0.8, 0.3], [1, 1, 0]) == pytest.approx(
        optimal_aurc([1, 1, 0]))
    assert aurc([0.3, 0.8, 0.9], [1, 1, 0]) > optimal_aurc([1, 1, 0])


@pytest.mark.parametrize('seed', range(4))
def test_against_reference_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.1, 1.0, 200).tolist()
    correct = (rng.uniform(size=200) < np.array(conf)).astype(int).tolist()
    assert expected_calibration_error(conf, correct) == pytest.approx(
        reference_ece(conf, correct))
    assert expected_calibration_error(conf, correct, 7) == pytest.approx(
        reference_ece(conf, correct, 7))
    assert aurc(conf, correct) == pytest.approx(
        reference_aurc_one_order(conf, correct))
    # Optimal AURC: the same reference on an ideal ranking.
    ideal = [1.0 - 0.5 * (1 - c) - 1e-3 * i for i, c in enumerate(correct)]
    assert optimal_aurc(correct) == pytest.approx(
        reference_aurc_one_order(ideal, correct))


@pytest.mark.parametrize('seed', range(3))
def test_ties_against_brute_force_over_orders(seed):
    rng = np.random.default_rng(seed)
    conf = rng.choice([0.3, 0.6, 0.9], 6).tolist()  # many ties
    correct = rng.integers(0, 2, 6).tolist()
    assert aurc(conf, correct) == pytest.approx(
        reference_aurc_over_tie_orders(conf, correct))


# The metric on both sample formats -----------------------------------------
def cls_sample(score, gt_label):
    score = torch.tensor(score)
    return DataSample().set_gt_label(gt_label).set_pred_score(
        score).set_pred_label(int(score.argmax())).to_dict()


def det_sample(score, label, gt_label):
    sample = DetDataSample(metainfo=dict(gt_label=gt_label))
    sample.pred_instances = InstanceData(
        scores=torch.tensor([score]),
        labels=torch.tensor([label]),
        bboxes=torch.zeros(1, 4))
    return sample.to_dict()


def evaluate(samples, **kwargs):
    metric = METRICS.build(dict(type='CalibrationMetric', **kwargs))
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)


def test_metric_reads_mmpretrain_and_cam_samples_alike():
    conf = [0.9, 0.8, 0.7, 0.6]
    correct = [1, 0, 1, 0]
    cls = []
    for c, right in zip(conf, correct):
        rest = (1 - c) / 2
        cls.append(cls_sample([c, rest, rest], gt_label=0 if right else 1))
    det = [
        det_sample(c, 2, gt_label=2 if right else 0)
        for c, right in zip(conf, correct)
    ]
    expected = dict(
        ece=100 * reference_ece(conf, correct),
        aurc=100 * (1 / 2 + 1 / 3 + 1 / 2) / 4,
        eaurc=100 * ((1 / 2 + 1 / 3 + 1 / 2) - (1 / 3 + 1 / 2)) / 4)
    for samples in (cls, det):
        result = evaluate(samples)
        assert result.keys() == expected.keys()
        for key, value in expected.items():
            assert result[key] == pytest.approx(value, abs=1e-5), key


def test_metric_rejects_what_it_cannot_read():
    with pytest.raises(ValueError, match='softmax probabilities'):
        evaluate([cls_sample([2.0, -1.0, 0.5], 0)])  # logits
    with pytest.raises(KeyError, match='neither pred_score'):
        evaluate([dict(pred_label=torch.tensor([1]), gt_label=1)])
    with pytest.raises(KeyError, match='meta_keys'):
        sample = det_sample(0.8, 1, 1)
        del sample['gt_label']
        evaluate([sample])
    with pytest.raises(ValueError, match='one class prediction per image'):
        sample = det_sample(0.8, 1, 1)
        sample['pred_instances'] = dict(
            scores=torch.tensor([0.8, 0.5]), labels=torch.tensor([1, 2]))
        evaluate([sample])
    with pytest.raises(ValueError, match='single-label'):
        sample = cls_sample([0.8, 0.1, 0.1], 0)
        sample['gt_label'] = torch.tensor([0, 2])
        evaluate([sample])
    with pytest.raises(ValueError, match='num_bins'):
        CalibrationMetric(num_bins=0)
    with pytest.raises(ValueError, match='no predictions'):
        CalibrationMetric().compute_metrics([])


def test_in_mmengine_evaluator_with_a_real_mmpretrain_classifier(tmp_path):
    """Real CIFAR-layout data, mmpretrain pipeline and ResNet: the evaluator
    reports calibration next to mmpretrain's accuracy, and the numbers equal
    the references on the model's own scores."""
    torch.manual_seed(0)
    write_cifar_demo(str(tmp_path), num_train=20, num_test=24)
    dataset = DemoCIFAR10(
        data_root=str(tmp_path),
        split='test',
        pipeline=[dict(type='mmpretrain.PackInputs')])
    model = MODELS.build(
        dict(
            type='mmpretrain.ImageClassifier',
            # children (the head's loss) resolve in mmpretrain whatever
            # default scope an earlier test left
            _scope_='mmpretrain',
            data_preprocessor=dict(
                type='mmpretrain.ClsDataPreprocessor',
                num_classes=10,
                mean=[125.3, 123.0, 113.9],
                std=[51.6, 50.8, 51.3]),
            backbone=dict(
                type='mmpretrain.ResNet_CIFAR',
                depth=18,
                stem_channels=8,
                base_channels=8),
            neck=dict(type='mmpretrain.GlobalAveragePooling'),
            head=dict(
                type='mmpretrain.LinearClsHead',
                num_classes=10,
                in_channels=64))).eval()
    evaluator = Evaluator([
        dict(type='mmpretrain.Accuracy'),
        dict(type='epsd_mm.CalibrationMetric')
    ])
    conf, correct = [], []
    for start in range(0, len(dataset), 8):
        data = pseudo_collate(
            [dataset[i] for i in range(start, start + 8)])
        with torch.no_grad():
            outputs = model.val_step(data)
        evaluator.process(outputs, data)
        for out in outputs:
            conf.append(float(out.pred_score.max()))
            correct.append(int(out.pred_score.argmax() == out.gt_label))
    metrics = evaluator.evaluate(len(dataset))
    assert metrics['accuracy/top1'] == pytest.approx(
        100 * np.mean(correct), abs=1e-4)
    assert metrics['calibration/ece'] == pytest.approx(
        100 * reference_ece(conf, correct), abs=1e-4)
    assert len(set(conf)) == len(conf)  # no ties: one order is the curve
    assert metrics['calibration/aurc'] == pytest.approx(
        100 * reference_aurc_one_order(conf, correct), abs=1e-4)
    assert 0 <= metrics['calibration/eaurc'] <= metrics['calibration/aurc']


def test_in_mmengine_evaluator_with_a_real_cam_localizer(tmp_path):
    """CAMLocalizer's detection samples (top-1 softmax score and class in
    pred_instances, gt_label in the metainfo) on the CUB-layout demo data,
    next to WSOLMetric: the class hits agree with its top1_cls."""
    torch.manual_seed(0)
    write_cub_demo(
        str(tmp_path), num_classes=3, images_per_class=6, image_size=48)
    meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape',
                 'scale_factor', 'gt_label')
    dataset = CUB200Dataset(
        data_root=str(tmp_path),
        split='train',
        pipeline=[
            dict(type='mmdet.LoadImageFromFile'),
            dict(type='mmdet.Resize', scale=(48, 48), keep_ratio=False),
            dict(type='mmdet.LoadAnnotations', with_bbox=True),
            dict(type='mmdet.PackDetInputs', meta_keys=meta_keys)
        ])
    model = MODELS.build(
        dict(
            type='epsd_mm.CAMLocalizer',
            data_preprocessor=dict(
                type='mmdet.DetDataPreprocessor',
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                bgr_to_rgb=True),
            backbone=dict(
                type='mmdet.ResNet',
                depth=18,
                base_channels=8,
                strides=(1, 2, 1, 1),
                out_indices=(3, )),
            head=dict(type='epsd_mm.CAMHead', num_classes=3,
                      in_channels=64))).eval()
    evaluator = Evaluator([
        dict(type='epsd_mm.WSOLMetric'),
        dict(type='epsd_mm.CalibrationMetric')
    ])
    data = pseudo_collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        outputs = model.test_step(data)
    evaluator.process(outputs, data)
    conf = [float(out.pred_instances.scores[0]) for out in outputs]
    correct = [
        int(out.pred_instances.labels[0] == out.gt_label) for out in outputs
    ]
    metrics = evaluator.evaluate(len(dataset))
    assert metrics['wsol/top1_cls'] == pytest.approx(100 * np.mean(correct))
    assert metrics['calibration/ece'] == pytest.approx(
        100 * reference_ece(conf, correct), abs=1e-4)
    assert len(set(conf)) == len(conf)
    assert metrics['calibration/aurc'] == pytest.approx(
        100 * reference_aurc_one_order(conf, correct), abs=1e-4)
