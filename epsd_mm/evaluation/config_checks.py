"""Config checks of the evaluation side, run by the tools before a run."""
import inspect
from typing import List, Sequence, Tuple


def _metric_cfgs(evaluator, path: str = '') -> List[Tuple[str, dict]]:
    """Metric configs of an evaluator config (a dict, a list of them, or
    ``dict(metrics=[...])``), each with its ``--cfg-options`` key path below
    the evaluator (e.g. ``'.1'`` for the second metric of a list)."""
    if isinstance(evaluator, dict):
        return _metric_cfgs(evaluator['metrics'], f'{path}.metrics') \
            if 'metrics' in evaluator else [(path, evaluator)]
    if isinstance(evaluator, (list, tuple)):
        return [
            m for i, e in enumerate(evaluator)
            for m in _metric_cfgs(e, f'{path}.{i}')
        ]
    return []


def _is_wsol_metric(metric_type) -> bool:
    name = getattr(metric_type, '__name__', metric_type)
    return isinstance(name, str) and name.split('.')[-1] == 'WSOLMetric'


def check_cam_threshold(
    cfg,
    evaluators: Sequence[str] = ('val_evaluator', 'test_evaluator')
) -> None:
    """Raise when a ``WSOLMetric`` disagrees with the model's
    ``test_cfg.cam_threshold``.

    The metric would find out at the first evaluation, possibly hours into
    training; ``tools/train.py`` and ``tools/test.py`` call this first.

    Args:
        cfg (Config): A runner config.
        evaluators (Sequence[str]): The evaluator keys the run uses.
            Defaults to ``('val_evaluator', 'test_evaluator')``.
    """
    metrics = [(key, path, metric) for key in evaluators
               for path, metric in _metric_cfgs(cfg.get(key))
               if _is_wsol_metric(metric.get('type'))]
    if not metrics:
        return
    from epsd_mm.models.cam_localizer import CAMLocalizer
    from .wsol_metric import WSOLMetric
    test_cfg = (cfg.get('model') or {}).get('test_cfg') or {}
    model_thr = test_cfg.get('cam_threshold',
                             CAMLocalizer.DEFAULT_TEST_CFG['cam_threshold'])
    default = inspect.signature(WSOLMetric).parameters['cam_threshold'].default
    for key, path, metric in metrics:
        metric_thr = metric.get('cam_threshold', default)
        if metric_thr != model_thr:
            raise ValueError(
                f'{key}: WSOLMetric has cam_threshold={metric_thr} but '
                f'model.test_cfg.cam_threshold is {model_thr}. They must '
                "agree: the metric names and checks the model's boxes by "
                f'it. Set them to one value, e.g. --cfg-options '
                f'{key}{path}.cam_threshold={model_thr}')
