import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS as MMSEG_MODELS

from epsd_mm.deploy import deploy_config, input_shape_from_cfg, plain_model_cfg

CONFIGS = osp.join(osp.dirname(__file__), '..', '..', 'configs')
VOC_DEMO = osp.join(CONFIGS, 'demo', 'epsd_deeplab_voc_demo.py')
CUB_DEMO = osp.join(CONFIGS, 'demo', 'epsd_cam_cub_demo.py')
BACKBONE = dict(type='mmseg.ResNetV1c', depth=18)


@pytest.mark.parametrize(
    'segmentor', ['mmseg.EncoderDecoder', 'mmseg.CascadeEncoderDecoder'])
def test_plain_model_cfg_of_sd_plugins(segmentor):
    cfg = dict(
        type='SelfDistillSegmentor',
        segmentor_type=segmentor,
        backbone=BACKBONE,
        sd=dict(type='DLB', loss=dict(type='DLBLoss', temperature=3.0)))
    assert plain_model_cfg(cfg) == dict(type=segmentor, backbone=BACKBONE)
    assert 'sd' in cfg  # the input is left alone


def test_plain_model_cfg_keeps_other_models():
    cam = dict(
        type='epsd_mm.CAMLocalizer',
        backbone=BACKBONE,
        sd=dict(type='CSKD'))
    assert plain_model_cfg(cam) == dict(
        type='epsd_mm.CAMLocalizer', backbone=BACKBONE)
    plain = dict(type='EncoderDecoder', _scope_='mmseg', backbone=BACKBONE)
    assert plain_model_cfg(plain) == plain
    # a slim model is no self-distilling wrapper: its model_type stays
    slim = dict(
        type='epsd_mm.SlimModel',
        model_type='mmseg.EncoderDecoder',
        slim_spec=dict(layers={}),
        backbone=BACKBONE)
    assert plain_model_cfg(slim) == slim


def test_deploy_config_of_the_voc_demo_needs_only_mmseg():
    cfg, changes = deploy_config(Config.fromfile(VOC_DEMO))
    assert 'pruning' not in cfg.default_hooks
    assert 'self_distill' not in cfg.default_hooks
    assert 'checkpoint' in cfg.default_hooks
    assert cfg.model.type == 'mmseg.EncoderDecoder'
    assert 'sd' not in cfg.model
    assert cfg.default_scope == 'mmseg'
    assert 'epsd_mm' not in cfg.pretty_text
    assert 'finite_loss' not in cfg.default_hooks
    assert len(changes) == 5
    # mmseg's own registry builds it
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MMSEG_MODELS.build(cfg.model)
    assert type(model).__name__ == 'EncoderDecoder'


def test_deploy_config_of_the_cub_demo():
    cfg, changes = deploy_config(Config.fromfile(CUB_DEMO))
    assert cfg.model.type == 'epsd_mm.CAMLocalizer'
    assert 'sd' not in cfg.model
    assert cfg.default_scope == 'epsd_mm'  # CAMLocalizer is ours
    assert set(cfg.default_hooks) == {
        'timer', 'logger', 'param_scheduler', 'checkpoint', 'sampler_seed',
        'visualization'
    }
    # a deployed localiser sees images without labels
    assert cfg.model.test_cfg.cam_class == 'pred'
    assert cfg.labelled_test_cfg.cam_class == 'gt'  # for test_onnx.py
    assert any('cam_class' in c for c in changes)


def test_deploy_config_drops_only_our_custom_hooks():
    cfg = Config.fromfile(VOC_DEMO)
    cfg.custom_hooks = [
        dict(type='SelfDistillHook'),  # bare name, epsd_mm default scope
        dict(type='EMAHook'),
        dict(type='mmseg.SegVisualizationHook'),
    ]
    cfg.default_hooks.pruning.type = 'GradualPruningHook'
    deployed, _ = deploy_config(cfg)
    assert [h.type for h in deployed.custom_hooks
            ] == ['EMAHook', 'mmseg.SegVisualizationHook']
    assert 'pruning' not in deployed.default_hooks
    # EMAHook, named without prefix, still resolves: the scope stays
    # mmseg since it is not an epsd_mm type
    assert deployed.default_scope == 'mmseg'


def test_deploy_config_keeps_the_scope_a_bare_epsd_mm_type_needs():
    cfg = Config.fromfile(VOC_DEMO)
    cfg.train_dataloader.sampler = dict(type='ClassPairSampler')
    deployed, _ = deploy_config(cfg)
    assert deployed.default_scope == 'epsd_mm'


def test_input_shape_from_cfg():
    assert input_shape_from_cfg(Config.fromfile(VOC_DEMO)) == (96, 96)
    cub = Config.fromfile(CUB_DEMO)
    assert input_shape_from_cfg(cub) == (96, 96)  # its fixed test Resize
    cub.test_dataloader.dataset.pipeline[1].keep_ratio = True
    with pytest.raises(ValueError, match='--shape'):
        input_shape_from_cfg(cub)
