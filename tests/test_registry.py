"""The epsd_mm registry scope and its links to mmengine / mmseg / mmdet."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope

import epsd_mm
from epsd_mm import registry

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
REGISTRY_NAMES = ('RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'HOOKS',
                  'DATASETS', 'DATA_SAMPLERS', 'TRANSFORMS', 'MODELS',
                  'MODEL_WRAPPERS', 'WEIGHT_INITIALIZERS', 'OPTIMIZERS',
                  'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS',
                  'PARAM_SCHEDULERS', 'METRICS', 'EVALUATOR', 'VISUALIZERS',
                  'VISBACKENDS', 'LOG_PROCESSORS')


@pytest.fixture
def epsd_scope():
    """Run with default scope 'epsd_mm', restoring the previous one."""
    previous = DefaultScope.get_current_instance()
    init_default_scope('epsd_mm')
    yield
    if previous is not None:
        DefaultScope.get_instance(
            f'restore-{previous.instance_name}',
            scope_name=previous.scope_name)


@pytest.mark.parametrize('name', REGISTRY_NAMES)
def test_registry_scope_and_parent(name):
    import mmengine.registry as mm_registry
    ours = getattr(registry, name)
    assert ours.scope == 'epsd_mm'
    assert ours.parent is getattr(mm_registry, name)
    # the parent knows its child by scope, which makes `epsd_mm.X` resolvable
    # from any other scope
    assert ours.parent._children['epsd_mm'] is ours


@pytest.mark.parametrize('registry_name, type_name', [
    ('HOOKS', 'EarlyPruningHook'),
    ('HOOKS', 'SelfDistillHook'),
    ('HOOKS', 'FiniteLossHook'),
    ('MODELS', 'SelfDistillSegmentor'),
    ('MODELS', 'DLBLoss'),
    ('MODELS', 'PSKDLoss'),
    ('MODELS', 'CSKDLoss'),
])
def test_components_registered(registry_name, type_name):
    ours = getattr(registry, registry_name)
    cls = ours.get(type_name)
    assert cls is not None and cls is ours.module_dict[type_name]
    assert cls.__module__.startswith('epsd_mm.')
    # and reachable from mmengine's root with the scope prefix
    import mmengine.registry as mm_registry
    assert getattr(mm_registry, registry_name).get(
        f'epsd_mm.{type_name}') is cls


def test_hook_builds_from_mmengine_root():
    from mmengine.registry import HOOKS
    from epsd_mm.engine import EarlyPruningHook
    hook = HOOKS.build(
        dict(type='epsd_mm.EarlyPruningHook', sparsity=0.5,
             criterion='snip'))
    assert isinstance(hook, EarlyPruningHook)
    assert hook.pruner.sparsity == 0.5 and hook.pruner.criterion.name == 'snip'


def test_epsd_config_builds_mmseg_segmentor(epsd_scope):
    """Our config inherits mmseg's DeepLabV3 via ``mmseg::``; the model is
    built from mmengine's root registry inside the epsd_mm scope."""
    from mmengine.registry import MODELS
    from mmseg.models.backbones import ResNetV1c
    from mmseg.models.decode_heads import ASPPHead, FCNHead
    from mmseg.models.segmentors import EncoderDecoder
    from epsd_mm.losses import DLBLoss
    from epsd_mm.models import SelfDistillSegmentorMixin
    from epsd_mm.sd_methods import DLB

    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs', 'epsd_deeplab_voc.py'))
    assert cfg.default_scope == 'epsd_mm'
    # keep the build cheap: the mmseg parts stay, only the widths shrink
    cfg.model.backbone.update(depth=18, stem_channels=8, base_channels=8)
    cfg.model.decode_head.update(in_channels=64, channels=8)
    cfg.model.auxiliary_head.update(in_channels=32, channels=8)
    model = MODELS.build(cfg.model)
    assert isinstance(model, SelfDistillSegmentorMixin)
    assert isinstance(model, EncoderDecoder)
    assert isinstance(model.backbone, ResNetV1c)
    assert isinstance(model.decode_head, ASPPHead)
    assert isinstance(model.auxiliary_head, FCNHead)
    assert isinstance(model.sd, DLB) and isinstance(model.sd.loss, DLBLoss)
    assert model.sd.loss.temperature == 3.0
    assert model.decode_head.num_classes == 21
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 32), mode='tensor')
    assert out.shape == (1, 21, 4, 4)


def test_mmdet_model_builds_through_our_scope(epsd_scope):
    from mmdet.models.backbones import ResNet
    from mmengine.registry import MODELS
    model = MODELS.build(dict(type='mmdet.ResNet', depth=18, base_channels=8))
    assert type(model) is ResNet
    model.eval()  # mmdet's ResNet.train() returns None
    outs = model(torch.rand(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [8, 16, 32, 64]
    # a whole detector: as in a dict inherited from an ``mmdet::`` config,
    # ``_scope_`` makes its parts resolve in mmdet's scope while building
    from mmdet.models.detectors import RetinaNet
    detector = MODELS.build(
        dict(
            _scope_='mmdet',
            type='RetinaNet',
            backbone=dict(
                type='ResNet', depth=18, base_channels=8, out_indices=(3, )),
            neck=dict(
                type='FPN',
                in_channels=[64],
                out_channels=16,
                num_outs=1),
            bbox_head=dict(
                type='RetinaHead',
                num_classes=3,
                in_channels=16,
                feat_channels=16,
                stacked_convs=1,
                anchor_generator=dict(
                    type='AnchorGenerator',
                    octave_base_scale=4,
                    scales_per_octave=1,
                    ratios=[1.0],
                    strides=[32]),
                bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
                loss_cls=dict(type='FocalLoss', use_sigmoid=True),
                loss_bbox=dict(type='L1Loss')),
            data_preprocessor=dict(type='DetDataPreprocessor')))
    assert isinstance(detector, RetinaNet)
    assert type(detector.backbone) is ResNet
    # the scope was only switched while building
    assert DefaultScope.get_current_instance().scope_name == 'epsd_mm'


def test_mm_packages_and_compiled_ops_import():
    import mmdet.models  # noqa: F401
    import mmseg.models  # noqa: F401,F811
    from mmcv.ops import nms, roi_align
    # the compiled ops really run (mmcv-lite would fail here)
    feats = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    rois = torch.tensor([[0, 0, 0, 4, 4]], dtype=torch.float32)
    out = roi_align(feats, rois, (2, 2), 1.0, 2, 'avg', True)
    assert out.shape == (1, 1, 2, 2)
    assert torch.isfinite(out).all()
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]],
                         dtype=torch.float32)
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]


def test_package_version():
    assert isinstance(epsd_mm.__version__, str)


def test_import_is_lazy_and_explains_missing_task_libraries(tmp_path):
    """``import epsd_mm`` needs no mm task library; a component whose
    library is missing says so when a config asks for it."""
    import subprocess
    import sys
    script = tmp_path / 'no_mmdet.py'
    script.write_text(
        'import sys\n'
        "sys.modules['mmdet'] = None  # as if mmdet were not installed\n"
        'import epsd_mm, epsd_mm.pruning\n'
        "assert not any(m.split('.')[0] in ('mmseg', 'mmdet', 'mmpretrain')"
        ' for m in sys.modules if sys.modules[m] is not None)\n'
        'from mmengine.registry import MODELS\n'
        "seg = MODELS.get('epsd_mm.SelfDistillSegmentor')\n"
        "assert seg is not None  # mmseg is there\n"
        'try:\n'
        "    MODELS.get('epsd_mm.CAMLocalizer')\n"
        'except KeyError as error:\n'
        "    assert 'mmdet' in str(error) and 'cam_localizer' in str(error)\n"
        "    print('explained')\n")
    out = subprocess.run([sys.executable, str(script)],
                         capture_output=True,
                         text=True,
                         cwd=REPO_ROOT,
                         env={'PYTHONPATH': REPO_ROOT, 'PATH': ''})
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'explained' in out.stdout
