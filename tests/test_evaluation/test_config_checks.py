import copy
import os.path as osp

import pytest
from mmengine.config import Config

from epsd_mm.evaluation.config_checks import check_cam_threshold

CONFIGS = osp.join(osp.dirname(__file__), '../../configs')


@pytest.fixture(scope='module')
def cub_cfg():
    return Config.fromfile(osp.join(CONFIGS, 'demo/epsd_cam_cub_demo.py'))


def test_cub_configs_agree(cub_cfg):
    check_cam_threshold(cub_cfg)
    # segmentation configs have no WSOLMetric
    check_cam_threshold(
        Config.fromfile(osp.join(CONFIGS, 'demo/epsd_deeplab_voc_demo.py')))


@pytest.mark.parametrize('key', ['val_evaluator', 'test_evaluator'])
def test_changed_model_threshold_is_caught_before_the_run(cub_cfg, key):
    cfg = copy.deepcopy(cub_cfg)
    cfg.merge_from_dict({'model.test_cfg.cam_threshold': 0.3})
    with pytest.raises(ValueError) as err:
        check_cam_threshold(cfg, (key, ))
    assert f'{key}: WSOLMetric has cam_threshold=0.2 but ' \
        'model.test_cfg.cam_threshold is 0.3' in str(err.value)
    # the WSOL metric is the first of the CUB evaluators (calibration next)
    assert f'--cfg-options {key}.0.cam_threshold=0.3' in str(err.value)
    cfg.merge_from_dict({f'{key}.0.cam_threshold': 0.3})
    check_cam_threshold(cfg, (key, ))


def test_evaluator_forms_and_defaults():
    model = dict(
        type='epsd_mm.CAMLocalizer', test_cfg=dict(cam_threshold=0.4))
    for evaluator in (dict(type='WSOLMetric'),
                      [dict(type='DumpResults'),
                       dict(type='epsd_mm.WSOLMetric')],
                      dict(type='Evaluator',
                           metrics=[dict(type='WSOLMetric')])):
        cfg = Config(dict(model=model, test_evaluator=evaluator))
        with pytest.raises(ValueError, match='cam_threshold=0.2 but'):
            check_cam_threshold(cfg)  # the metric's default
    # the model's default (0.2) against an explicit metric value
    cfg = Config(
        dict(
            model=dict(type='epsd_mm.CAMLocalizer'),
            val_evaluator=dict(type='WSOLMetric', cam_threshold=0.25)))
    with pytest.raises(
            ValueError, match='model.test_cfg.cam_threshold is 0.2'):
        check_cam_threshold(cfg)
