"""Every config loads, its model builds in the config's scope, and its
pruning / SD hooks are valid."""
import glob
import os.path as osp
from functools import lru_cache

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import (DATA_SAMPLERS, DATASETS, HOOKS, MODELS,
                               DefaultScope)

import epsd_mm  # noqa: F401
from epsd_mm.engine import (EarlyPruningHook, GradualPruningHook,
                            SelfDistillHook)
from epsd_mm.models import trace_forward
from epsd_mm.pruning import CRITERIA, ChannelGraph, prunable_parameters
from epsd_mm.sd_methods import CrossCorrelation

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(
    osp.relpath(path, REPO_ROOT)
    for path in glob.glob(osp.join(REPO_ROOT, 'configs', '**', '*.py'),
                          recursive=True)
    if '_base_' not in osp.relpath(path, REPO_ROOT).split(osp.sep))


def _default_options(hook) -> bool:
    """Whether the hook's criterion runs with its own defaults."""
    criterion = hook.pruner.criterion
    return criterion.options == type(criterion)().options


def _load(rel_path):
    return Config.fromfile(osp.join(REPO_ROOT, rel_path))


@lru_cache(maxsize=None)
def _load_shared(rel_path):
    """A config several tests compare with (loaded once; do not modify)."""
    return _load(rel_path)


def test_configs_found():
    assert 'configs/epsd_deeplab_voc.py' in CONFIGS
    assert 'configs/demo/epsd_deeplab_voc_demo.py' in CONFIGS
    assert len([c for c in CONFIGS if c.startswith('configs/deeplab_voc/')
                ]) >= 7


@pytest.mark.parametrize('rel_path', CONFIGS)
def test_config_builds(rel_path):
    cfg = _load(rel_path)
    assert cfg.default_scope == 'epsd_mm'
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
        hooks = {
            name: HOOKS.build(hook_cfg)
            for name, hook_cfg in cfg.default_hooks.items()
            if name in ('pruning', 'self_distill')
        }
        # the data parts resolve in their scope (an inherited mmpretrain::
        # dataset carries its `_scope_`, which the Runner's build honours)
        loader = cfg.train_dataloader
        for registry, part in ((DATASETS, loader.dataset),
                               (DATA_SAMPLERS, loader.sampler)):
            with registry.switch_scope_and_registry(
                    part.get('_scope_', cfg.default_scope)) as scoped:
                assert scoped.get(part.type) is not None, part.type
    sd = getattr(model, 'sd', None)
    pruning = hooks.get('pruning')
    if isinstance(pruning, GradualPruningHook):
        # self-distilled pruning distils from the unpruned self
        assert isinstance(sd, CrossCorrelation)
        assert prunable_parameters(model, pruning.pruner.scopes)
    elif pruning is not None:
        assert isinstance(pruning, EarlyPruningHook)
        # the pruning scope holds prunable layers of the built model
        assert prunable_parameters(model, pruning.pruner.scopes)
        if pruning.loss == 'sd':
            assert sd is not None, 'EPSD scores with the SD loss'
    if 'self_distill' in hooks:
        assert isinstance(hooks['self_distill'], SelfDistillHook)
        if sd is not None:
            assert hasattr(model, 'sd_enabled')


VOC_VARIANTS = {
    # config: (criterion, scoring loss, SD method) -- None: no pruning
    'configs/epsd_deeplab_voc.py': ('prospr', 'sd', 'DLB'),
    'configs/deeplab_voc/epsd_dlb.py': ('prospr', 'sd', 'DLB'),
    'configs/deeplab_voc/dense.py': (None, None, None),
    'configs/deeplab_voc/dense_sd.py': (None, None, 'DLB'),
    'configs/deeplab_voc/epsd_pskd.py': ('prospr', 'sd', 'PSKD'),
    'configs/deeplab_voc/epsd_cskd.py': ('prospr', 'sd', 'CSKD'),
    'configs/deeplab_voc/simple_combination.py': ('prospr', 'task', 'DLB'),
    'configs/deeplab_voc/snip_sd.py': ('snip', 'task', 'DLB'),
    'configs/deeplab_voc/random_sd.py': ('random', None, 'DLB'),
}


@pytest.mark.parametrize('rel_path', sorted(VOC_VARIANTS))
def test_voc_variants_are_what_they_say(rel_path):
    criterion, loss, sd_type = VOC_VARIANTS[rel_path]
    cfg = _load(rel_path)
    # all of them are mmseg's DeepLabV3 R50-D8 VOC12aug recipe
    assert cfg.model.type == 'epsd_mm.SelfDistillSegmentor'
    assert cfg.model.backbone.type == 'ResNetV1c'
    assert cfg.model.backbone.depth == 50
    assert cfg.model.decode_head.type == 'ASPPHead'
    assert cfg.train_cfg.max_iters == 20000
    assert cfg.train_dataloader.dataset.type == 'ConcatDataset'
    sd = cfg.model.get('sd')
    assert (sd or {}).get('type') == sd_type
    sd_loss = (sd or {}).get('loss')
    pruning = cfg.default_hooks.get('pruning')
    if criterion is None:
        assert pruning is None
        return
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        hook = HOOKS.build(pruning)
    assert hook.pruner.sparsity == 0.9
    assert hook.pruner.criterion.name == criterion and hook.loss == loss
    assert hook.pruner.scopes == ('backbone', )
    if criterion == 'prospr':  # EPSD's defaults are the criterion's own
        assert _default_options(hook)
        assert {
            k: CRITERIA.build('prospr').options[k]
            for k in ('num_steps', 'lr', 'first_order')
        } == dict(num_steps=3, lr=0.1, first_order=False)
    if sd_type == 'DLB':
        assert sd_loss.temperature == 3.0 and sd_loss.loss_weight == 1.0
    if sd_type == 'PSKD':
        assert sd_loss.alpha_T == 0.8 and set(sd_loss) == {'type', 'alpha_T'}
    if sd_type == 'CSKD':
        assert sd_loss.temperature == 4.0
        assert cfg.train_dataloader.batch_size % 2 == 0
        assert cfg.train_dataloader.sampler.type == 'epsd_mm.ClassPairSampler'


def test_demo_config_is_cpu_sized():
    cfg = _load('configs/demo/epsd_deeplab_voc_demo.py')
    assert cfg.model.backbone.depth == 18
    assert cfg.model.backbone.norm_cfg.type == 'BN'  # not SyncBN
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model.data_preprocessor.size == (96, 96)
    assert cfg.default_hooks.pruning.type == 'epsd_mm.EarlyPruningHook'


def test_user_config_inherits_ours_through_the_package(tmp_path):
    """Configs are MIM package data: a user's config inherits
    ``epsd_mm::...`` the way it inherits ``mmseg::...``."""
    user = tmp_path / 'my_epsd.py'
    # MMEngine requires a folder: `epsd_mm::deeplab_voc/epsd_dlb.py` is
    # configs/epsd_deeplab_voc.py under a name it resolves
    user.write_text("_base_ = ['epsd_mm::deeplab_voc/epsd_dlb.py']\n"
                    'default_hooks = dict(pruning=dict(sparsity=0.8))\n')
    cfg = Config.fromfile(str(user))
    assert cfg.default_hooks.pruning.type == 'epsd_mm.EarlyPruningHook'
    assert cfg.default_hooks.pruning.sparsity == 0.8
    assert cfg.model.sd.type == 'DLB'
    assert cfg.model.decode_head.type == 'ASPPHead'  # from mmseg:: below


CHANNEL_VARIANTS = {
    # config: (criterion, scoring loss, SD method)
    'configs/deeplab_voc/epsd_channel.py': ('prospr', 'sd', 'DLB'),
    'configs/deeplab_voc/simple_combination_channel.py':
    ('prospr', 'task', 'DLB'),
    'configs/deeplab_voc/l1_channel.py': ('magnitude', None, 'DLB'),
    'configs/deeplab_voc/random_channel.py': ('random', None, 'DLB'),
    'configs/cam_cub/epsd_channel.py': ('prospr', 'sd', 'CSKD'),
    'configs/cam_cub/simple_combination_channel.py':
    ('prospr', 'task', 'CSKD'),
    'configs/cam_cub/l1_channel.py': ('magnitude', None, 'CSKD'),
    'configs/cam_cub/random_channel.py': ('random', None, 'CSKD'),
    'configs/demo/epsd_channel_deeplab_voc_demo.py': ('prospr', 'sd', 'DLB'),
    'configs/demo/epsd_channel_cam_cub_demo.py': ('prospr', 'sd', 'CSKD'),
}


@pytest.mark.parametrize('rel_path', sorted(CHANNEL_VARIANTS))
def test_channel_variants_are_what_they_say(rel_path):
    """Structured variants: the dense recipe of their task with channel
    pruning at 50% (global, 5% floor per group); they differ from EPSD only
    in what their name says."""
    criterion, loss, sd_type = CHANNEL_VARIANTS[rel_path]
    cfg = _load(rel_path)
    recipe = _load(('configs/demo/epsd_deeplab_voc_demo.py'
                    if 'deeplab_voc_demo' in rel_path else
                    'configs/demo/epsd_cam_cub_demo.py'
                    if 'cam_cub_demo' in rel_path else
                    'configs/epsd_deeplab_voc.py'
                    if 'deeplab_voc' in rel_path else
                    'configs/epsd_cam_cub.py'))
    assert cfg.model == recipe.model
    assert cfg.train_dataloader == recipe.train_dataloader
    assert cfg.model.sd.type == sd_type
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        hook = HOOKS.build(cfg.default_hooks.pruning)
    assert hook.pruner.granularity == 'channel'
    assert hook.pruner.criterion.name == criterion and hook.loss == loss
    assert hook.pruner.sparsity == 0.5 and hook.pruner.min_density == 0.05
    assert hook.pruner.selection == 'global' and hook.pruner.rounds == 1
    assert hook.pruner.scopes == ('backbone', ) and _default_options(hook)


@pytest.mark.parametrize('rel_path', [
    'configs/demo/epsd_channel_deeplab_voc_demo.py',
    'configs/demo/epsd_channel_cam_cub_demo.py'
])
def test_channel_demo_models_trace_into_groups(rel_path):
    """Every layer of the demo models is reached by the traced forward, and
    the backbone's channels form groups (the heads are never cut)."""
    graph = _traced_groups(rel_path)
    cut = {m for group in graph.groups.values() for m in group.modules}
    assert cut and all(m.startswith('backbone.') for m in cut)


def _traced_groups(rel_path: str) -> ChannelGraph:
    """The channel groups of a config's model within its pruning scopes."""
    cfg = _load(rel_path)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
        hook = HOOKS.build(cfg.default_hooks.pruning)
    return ChannelGraph(model, torch.randn(1, 3, 64, 64), trace_forward,
                        hook.pruner.scopes)


WHOLE_MODEL = ('backbone', 'decode_head', 'auxiliary_head')


@pytest.mark.parametrize('rel_path, twin, round_to', [
    ('configs/deeplab_voc/epsd_channel_full.py',
     'configs/deeplab_voc/epsd_channel.py', 16),
    ('configs/demo/epsd_channel_full_deeplab_voc_demo.py',
     'configs/demo/epsd_channel_deeplab_voc_demo.py', 1),
])
def test_whole_model_channel_configs(rel_path, twin, round_to):
    """The whole-model variants differ from their backbone-only twin in the
    scopes (and, for R50-D8, the channel multiple) alone; on the demo model
    the heads are cut too, their class channels never."""
    cfg, base = _load(rel_path), _load(twin)
    assert cfg.default_hooks.pruning.pop('scopes') == WHOLE_MODEL
    assert cfg.default_hooks.pruning.pop('round_to', 1) == round_to
    assert cfg.to_dict() == base.to_dict()
    if 'demo' not in rel_path:
        return
    graph = _traced_groups(rel_path)
    cut = {m for group in graph.groups.values() for m in group.modules}
    assert {m.split('.')[0] for m in cut} == set(WHOLE_MODEL)
    assert not {'decode_head.conv_seg', 'auxiliary_head.conv_seg'} & cut
    assert graph.output_groups == [
        'decode_head.conv_seg', 'auxiliary_head.conv_seg'
    ]


CLS_FAMILIES = {
    # family: (sparsity, backbone type, dataset type, num_classes)
    'resnet18_cifar10': (0.59, 'ResNet_CIFAR', 'CIFAR10', 10),
    'vgg19_cifar100': (0.59, 'VGG', 'CIFAR100', 100),
    'mobilenetv2_tinyimagenet': (0.79, 'MobileNetV2',
                                 'mmpretrain.CustomDataset', 200),
    'resnet50_imagenet': (0.9, 'ResNet', 'ImageNet', 1000),
}
CLS_VARIANTS = {
    # variant: (criterion, scoring loss, SD method) -- None: no pruning
    'dense': (None, None, None),
    'dense_sd': (None, None, 'DLB'),
    'epsd_dlb': ('prospr', 'sd', 'DLB'),
    'epsd_pskd': ('prospr', 'sd', 'PSKD'),
    'epsd_cskd': ('prospr', 'sd', 'CSKD'),
    'simple_combination': ('prospr', 'task', 'DLB'),
    'snip_sd': ('snip', 'task', 'DLB'),
    'random_sd': ('random', None, 'DLB'),
}


def test_cls_configs_found():
    """Every classification family has its EPSD config and all baselines."""
    for family in CLS_FAMILIES:
        assert f'configs/cls/epsd_{family}.py' in CONFIGS
        for variant in CLS_VARIANTS:
            assert f'configs/cls/{family}/{variant}.py' in CONFIGS


@pytest.mark.parametrize('family', sorted(CLS_FAMILIES))
@pytest.mark.parametrize('variant', sorted(CLS_VARIANTS))
def test_cls_variants_are_what_they_say(family, variant):
    """The variants of a family share its model, data and schedule and
    differ only in what their name says; accuracy and calibration are
    evaluated together."""
    sparsity, backbone, dataset, num_classes = CLS_FAMILIES[family]
    criterion, loss, sd_type = CLS_VARIANTS[variant]
    cfg = _load(f'configs/cls/{family}/{variant}.py')
    main = _load_shared(f'configs/cls/epsd_{family}.py')
    assert cfg.model.type == 'epsd_mm.SelfDistillClassifier'
    assert cfg.model.classifier_type == 'mmpretrain.ImageClassifier'
    assert cfg.model.backbone.type == backbone
    assert cfg.model.head.num_classes == num_classes
    assert cfg.train_dataloader.dataset.type == dataset
    assert cfg.train_cfg == main.train_cfg
    assert cfg.optim_wrapper == main.optim_wrapper
    assert cfg.param_scheduler == main.param_scheduler
    assert {k: v for k, v in cfg.model.items() if k != 'sd'} == \
        {k: v for k, v in main.model.items() if k != 'sd'}
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        types = [metric.type for metric in evaluator]
        assert types == ['mmpretrain.Accuracy', 'epsd_mm.CalibrationMetric']
    sd = cfg.model.get('sd')
    assert (sd or {}).get('type') == sd_type
    if sd_type == 'DLB':
        assert sd.loss.temperature == 3.0 and sd.loss.loss_weight == 1.0
    if sd_type == 'PSKD':
        assert sd.loss.alpha_T == 0.8
    if sd_type == 'CSKD':
        assert sd.loss.temperature == 4.0 and sd.loss.loss_weight == 1.0
        assert cfg.train_dataloader.batch_size % 2 == 0
        assert cfg.train_dataloader.sampler.type == 'epsd_mm.ClassPairSampler'
    else:
        assert cfg.train_dataloader == main.train_dataloader
    pruning = cfg.default_hooks.get('pruning')
    if criterion is None:
        assert pruning is None
        return
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        hook = HOOKS.build(pruning)
    assert hook.pruner.sparsity == sparsity
    assert hook.pruner.criterion.name == criterion and hook.loss == loss
    assert hook.pruner.scopes == ('backbone', ) and hook.pruner.rounds == 1
    assert hook.pruner.granularity == 'weight' and _default_options(hook)
    if variant == 'epsd_dlb':
        assert cfg.default_hooks == main.default_hooks
