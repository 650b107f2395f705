"""Calibration of class predictions: ECE, AURC and E-AURC.

The EPSD paper (Section E) compares one-shot EPSD with its iterative variant
on these two numbers; they apply to any model that predicts one class with a
confidence per image (mmpretrain classifiers, the CAM localiser).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.structures import BaseDataElement

from epsd_mm.registry import METRICS


def expected_calibration_error(confidences: np.ndarray,
                               correct: np.ndarray,
                               num_bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins.

    ``ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|`` (Naeini et al., AAAI
    2015; Guo et al., "On Calibration of Modern Neural Networks", ICML 2017),
    where bin ``B_m`` holds the samples with confidence in
    ``((m - 1) / M, m / M]`` -- bins are closed on the right, and a
    confidence of exactly 0 falls in the first bin. Empty bins contribute
    nothing.

    Args:
        confidences (np.ndarray): Confidence of each prediction, in
            ``[0, 1]``, shape ``(n, )``.
        correct (np.ndarray): Whether each prediction is right (bool or
            0/1), shape ``(n, )``.
        num_bins (int): Number ``M`` of bins. Defaults to 15.

    Returns:
        float: The ECE as a fraction in ``[0, 1]``.
    """
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0, 1, num_bins + 1)
    # side='left' puts a confidence equal to an edge into the bin it closes.
    bins = np.clip(
        np.searchsorted(edges, confidences, side='left') - 1, 0,
        num_bins - 1)
    conf_sums = np.bincount(bins, weights=confidences, minlength=num_bins)
    hit_sums = np.bincount(bins, weights=correct, minlength=num_bins)
    # |B_m| / n * |acc - conf| = |sum(correct) - sum(conf)| / n per bin.
    return float(np.abs(hit_sums - conf_sums).sum() / len(confidences))


def risk_coverage_curve(confidences: np.ndarray,
                        correct: np.ndarray) -> np.ndarray:
    """Selective risk at every coverage ``k / n``, ``k = 1 .. n``.

    The samples are ranked by decreasing confidence; the risk at coverage
    ``k / n`` is the 0/1 error rate of the ``k`` most confident ones.
    Samples with equal confidence cannot be told apart by any threshold, so
    their order is averaged out: each sample's 0/1 loss is replaced by the
    mean loss of its tie group. The curve is then the expectation over all
    orders of the ties, and does not depend on the input order.

    Args:
        confidences (np.ndarray): Confidence of each prediction, ``(n, )``.
        correct (np.ndarray): Whether each prediction is right, ``(n, )``.

    Returns:
        np.ndarray: The risks, shape ``(n, )``.
    """
    confidences = np.asarray(confidences, dtype=np.float64)
    order = np.argsort(-confidences, kind='stable')
    errors = 1.0 - np.asarray(correct, dtype=np.float64)[order]
    _, starts, sizes = np.unique(
        -confidences[order], return_index=True, return_counts=True)
    errors = np.repeat(np.add.reduceat(errors, starts) / sizes, sizes)
    return np.cumsum(errors) / np.arange(1, len(errors) + 1)


def aurc(confidences: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve (Geifman et al., "Bias-Reduced
    Uncertainty Estimation for Deep Neural Classifiers", ICLR 2019).

    ``AURC = 1/n * sum_{k=1..n} risk(k / n)`` with the risks of
    :func:`risk_coverage_curve` (ties averaged over their orders). Lower is
    better: confident predictions should be the right ones.

    Args:
        confidences (np.ndarray): Confidence of each prediction, ``(n, )``.
        correct (np.ndarray): Whether each prediction is right, ``(n, )``.

    Returns:
        float: The AURC as a fraction in ``[0, 1]``.
    """
    return float(risk_coverage_curve(confidences, correct).mean())


def optimal_aurc(correct: np.ndarray) -> float:
    """AURC of the ideal confidence ranking (every right prediction ranked
    above every wrong one) at the same accuracy.

    This is the exact finite-sample value; ``r + (1 - r) ln(1 - r)`` for the
    error rate ``r`` (Geifman et al.) is its large-``n`` approximation.

    Args:
        correct (np.ndarray): Whether each prediction is right, ``(n, )``.

    Returns:
        float: The optimal AURC as a fraction in ``[0, 1]``.
    """
    correct = np.asarray(correct, dtype=bool)
    num_right = int(correct.sum())
    coverage = np.arange(1, len(correct) + 1)
    # The k most confident hold max(0, k - num_right) errors.
    return float((np.maximum(coverage - num_right, 0) / coverage).mean())


@METRICS.register_module()
class CalibrationMetric(BaseMetric):
    """ECE, AURC and E-AURC of single-label class predictions.

    The confidence of a prediction is its maximum softmax probability, and
    the prediction is right when its class is the ground-truth class.

    * ``ece``: :func:`expected_calibration_error` with ``num_bins``
      equal-width bins closed on the right, ``((m - 1) / M, m / M]``.
    * ``aurc``: :func:`aurc`, the area under the risk-coverage curve with
      ties in confidence averaged over their orders.
    * ``eaurc``: ``aurc`` minus the :func:`optimal_aurc` at the same
      accuracy (the excess AURC of Geifman et al.), which removes the part of
      AURC that only reflects the error rate.

    All three are reported in percent (like mmpretrain's accuracy); lower is
    better. Some papers print AURC and E-AURC in per mille (x 1000): divide
    those by 10 to compare.

    The prediction format is read from each sample:

    * mmpretrain ``DataSample``: ``pred_score`` holds the full softmax
      vector (confidence = its maximum, class = its argmax, as mmpretrain's
      ``Accuracy`` top-1) and ``gt_label`` the class.
    * mmdet ``DetDataSample`` of an image-level classifier such as
      :class:`~epsd_mm.models.CAMLocalizer`: ``pred_instances`` holds one
      instance whose ``scores`` / ``labels`` are the top-1 softmax
      probability and class, and the class is the ``gt_label`` metainfo (add
      ``'gt_label'`` to the ``meta_keys`` of ``mmdet.PackDetInputs``).

    Args:
        num_bins (int): Number of ECE bins. Defaults to 15.
        collect_device (str): ``'cpu'`` or ``'gpu'``, where results are
            gathered in distributed evaluation. Defaults to ``'cpu'``.
        prefix (str, optional): Prefix of the metric names. Defaults to
            None (``'calibration'``).
    """

    default_prefix: Optional[str] = 'calibration'

    def __init__(self,
                 num_bins: int = 15,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(
                f'CalibrationMetric: num_bins must be a positive int, got '
                f'{num_bins!r} (the standard ECE uses 15).')
        self.num_bins = num_bins

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Reduce each prediction to its confidence and correctness.

        Args:
            data_batch (dict): The batch from the dataloader (unused).
            data_samples (Sequence[dict]): Predictions of the model, as
                dicts (``DataSample.to_dict()``) or data elements.
        """
        for sample in data_samples:
            if isinstance(sample, BaseDataElement):
                sample = sample.to_dict()
            confidence, label = _top1(sample)
            self.results.append(
                dict(
                    confidence=confidence,
                    correct=label == _gt_label(sample)))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Compute ECE, AURC and E-AURC over all results.

        Args:
            results (list[dict]): Results of :meth:`process` from all ranks.

        Returns:
            dict[str, float]: ``ece``, ``aurc`` and ``eaurc``, in percent.
        """
        if not results:
            raise ValueError(
                'CalibrationMetric: no predictions to evaluate; check that '
                'the evaluation dataloader is not empty.')
        confidences = np.array([r['confidence'] for r in results])
        correct = np.array([r['correct'] for r in results])
        area = aurc(confidences, correct)
        return dict(
            ece=100 * expected_calibration_error(confidences, correct,
                                                 self.num_bins),
            aurc=100 * area,
            eaurc=100 * (area - optimal_aurc(correct)))


def _top1(sample: dict) -> Tuple[float, int]:
    """Confidence (max softmax probability) and class of one prediction."""
    if 'pred_score' in sample:
        score = torch.as_tensor(sample['pred_score']).detach().float().cpu()
        if score.dim() != 1 or len(score) < 2:
            raise ValueError(
                'CalibrationMetric: pred_score must be the vector of class '
                'probabilities of one sample, got shape '
                f'{tuple(score.shape)}.')
        if score.min() < 0 or abs(float(score.sum()) - 1) > 1e-3:
            raise ValueError(
                'CalibrationMetric: pred_score must be softmax probabilities '
                '(non-negative, summing to 1), got sum '
                f'{float(score.sum()):.4f} and min {float(score.min()):.4f}. '
                'Use a head whose predict() '
                "applies softmax (mmpretrain's ClsHead does).")
        confidence, label = score.max(dim=0)
        return float(confidence), int(label)
    if 'pred_instances' in sample:
        instances = sample['pred_instances']
        scores = torch.as_tensor(instances['scores']).detach().float().cpu()
        labels = torch.as_tensor(instances['labels']).detach().cpu()
        if len(scores) != 1 or len(labels) != 1:
            raise ValueError(
                'CalibrationMetric: needs one class prediction per image, '
                f'but pred_instances holds {len(scores)} instances. It '
                'evaluates image-level classifiers such as CAMLocalizer, not '
                'multi-object detectors.')
        if not 0 <= float(scores[0]) <= 1:
            raise ValueError(
                'CalibrationMetric: pred_instances.scores must be the top-1 '
                f'softmax probability, got {float(scores[0])}.')
        return float(scores[0]), int(labels[0])
    raise KeyError(
        'CalibrationMetric: the prediction has neither pred_score '
        '(mmpretrain DataSample) nor pred_instances (one class per image, '
        f'e.g. CAMLocalizer); its keys are {sorted(sample)}.')


def _gt_label(sample: dict) -> int:
    """The single ground-truth class of one sample."""
    if sample.get('gt_label') is None:
        raise KeyError(
            "CalibrationMetric: the sample has no 'gt_label'. mmpretrain's "
            "PackInputs sets it; with mmdet.PackDetInputs add 'gt_label' to "
            'its meta_keys (and use a dataset that provides it, e.g. '
            'CUB200Dataset).')
    label = torch.as_tensor(sample['gt_label'])
    if label.numel() != 1:
        raise ValueError(
            'CalibrationMetric: evaluates single-label predictions, but '
            f'gt_label has {label.numel()} entries.')
    return int(label.reshape(-1)[0])
