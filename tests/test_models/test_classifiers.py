"""SelfDistillClassifier: mmpretrain classifiers with DLB / PS-KD / CS-KD,
on demo CIFAR data read by mmpretrain's CIFAR10 class through the demo
config's pipeline and data preprocessor."""
import copy
import itertools
import math
import os
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

from epsd_mm.datasets.demo_cifar import write_cifar_demo
from epsd_mm.deploy import deploy_config, plain_model_cfg
from epsd_mm.losses import DLBLoss
from epsd_mm.models import SelfDistillClassifierMixin, trace_forward
from epsd_mm.pruning import ChannelGraph, get_masks, prunable_parameters
from epsd_mm.registry import MODELS
from epsd_mm.sd_methods import CSKD, DLB, PSKD

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(REPO_ROOT, 'configs', 'demo', 'epsd_resnet_cifar_demo.py')
# Top-level helper variables no component reads (cheaper pretty_text).
UNUSED_TOP_LEVEL = ('train_pipeline', 'test_pipeline', 'data_preprocessor',
                    'dataset_type', 'data_root', 'max_epochs', 'width',
                    'vis_backends')
_counter = itertools.count()


# --------------------------------------------------------------------------
# Helpers: the demo config at test size, real preprocessed batches
# --------------------------------------------------------------------------
@pytest.fixture(scope='session')
def cifar_root(tmp_path_factory) -> str:
    """Demo CIFAR data: 20 train images (2 per class), 10 test images."""
    root = str(tmp_path_factory.mktemp('cifar_demo'))
    return write_cifar_demo(root, num_train=20, num_test=10)


def make_cfg(cifar_root, work_dir, overrides=None) -> Config:
    """The demo config on the tiny data: one epoch of 3 iterations (batches
    of 8, 8 and 4), ProsPr with one inner step on one batch, validation at
    the end."""
    cfg = Config.fromfile(DEMO)
    for key in UNUSED_TOP_LEVEL:
        cfg.pop(key, None)
    name = f'cls{next(_counter)}_{os.getpid()}'
    cfg.merge_from_dict({
        'work_dir': work_dir,
        'experiment_name': name,
        'visualizer.name': name,
        'train_dataloader.dataset.data_root': cifar_root,
        'train_dataloader.batch_size': 8,
        'train_dataloader.num_workers': 0,
        'val_dataloader.dataset.data_root': cifar_root,
        'val_dataloader.batch_size': 10,
        'val_dataloader.num_workers': 0,
        'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 1,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 1,
        'default_hooks.pruning.num_batches': 1,
        'default_hooks.pruning.criterion_cfg': dict(num_steps=1),
        'env_cfg.torch_num_threads': 1,  # see conftest.make_tiny_cfg
    })
    if overrides:
        cfg.merge_from_dict(overrides)
    cfg.test_dataloader = cfg.val_dataloader
    return cfg


@pytest.fixture
def cfg(cifar_root, tmp_path) -> Config:
    return make_cfg(cifar_root, str(tmp_path))


def build_model(cfg, sd='keep', seed=0, **changes):
    model_cfg = copy.deepcopy(cfg.model)
    if sd != 'keep':
        model_cfg.sd = sd
    model_cfg.update(changes)
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def build_plain(cfg, state_dict) -> ImageClassifier:
    """mmpretrain's own ImageClassifier from the config, via
    ``plain_model_cfg``, holding the given weights."""
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        plain = MODELS.build(plain_model_cfg(cfg.model))
    assert type(plain) is ImageClassifier
    plain.load_state_dict(state_dict, strict=True)
    return plain.eval()


def batches(cfg, batch_size=4, split='train', sampler=None):
    """Batches of the demo data through the config's pipeline, in file
    order (or from ``sampler``)."""
    loader = copy.deepcopy(cfg[f'{split}_dataloader'])
    loader.batch_size = batch_size
    loader.sampler = sampler or dict(type='DefaultSampler', shuffle=False)
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        return list(Runner.build_dataloader(loader, seed=0))


def preprocess(model, data, training=True):
    data = model.data_preprocessor(data, training=training)
    return data['inputs'], data['data_samples']


def labels_of(samples):
    return torch.cat([s.gt_label for s in samples])


class Capture:
    """Records the backbone's inputs and the logits of the head's ``fc``."""

    def __init__(self, model):
        self.inputs, self.logits = [], []
        self.handles = [
            model.backbone.register_forward_pre_hook(
                lambda m, args: self.inputs.append(args[0].detach().clone())),
            model.head.fc.register_forward_hook(
                lambda m, args, out: self.logits.append(out.detach().clone()))
        ]

    def remove(self):
        for handle in self.handles:
            handle.remove()


def sgd_step(model, losses, lr=0.5):
    loss, _ = model.parse_losses(losses)
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            if param.grad is not None:
                param -= lr * param.grad


def kl_t2(student, teacher, temperature):
    """T^2 KL(softmax(teacher/T) || softmax(student/T)), batch mean."""
    p = torch.softmax(teacher / temperature, 1)
    kl = (p * (torch.log_softmax(teacher / temperature, 1) -
               torch.log_softmax(student / temperature, 1))).sum(1)
    return kl.mean() * temperature**2


# --------------------------------------------------------------------------
# Building, plain config, errors
# --------------------------------------------------------------------------
def test_builds_from_demo_config_as_an_image_classifier(cfg):
    assert cfg.model.type == 'epsd_mm.SelfDistillClassifier'
    assert cfg.model._scope_ == 'mmpretrain'  # inherited from mmpretrain::
    model = build_model(cfg)
    assert type(model).__name__ == 'SelfDistillImageClassifier'
    assert isinstance(model, ImageClassifier)
    assert isinstance(model, SelfDistillClassifierMixin)
    assert isinstance(model.sd, DLB) and isinstance(model.sd.loss, DLBLoss)
    assert model.sd.loss.temperature == 3.0
    assert model.head.fc.in_features == 64  # width 8 x 8
    # SD state is not part of the module tree; the weights are mmpretrain's
    plain = build_plain(cfg, model.state_dict())
    assert set(model.state_dict()) == set(plain.state_dict())


def test_plain_model_cfg_round_trip(cfg):
    plain = plain_model_cfg(cfg.model)
    assert plain.type == 'mmpretrain.ImageClassifier'
    assert 'sd' not in plain and 'classifier_type' not in plain
    assert {k: v for k, v in plain.items() if k != 'type'} == {
        k: v
        for k, v in cfg.model.items()
        if k not in ('type', 'sd', 'classifier_type')
    }
    assert cfg.model.sd.type == 'DLB'  # the input is left alone
    # the default classifier_type when the config leaves it out
    bare = copy.deepcopy(cfg.model)
    bare.pop('classifier_type')
    assert plain_model_cfg(bare).type == 'mmpretrain.ImageClassifier'
    assert plain_model_cfg(plain) == plain  # already plain: unchanged


def test_deploy_config_builds_mmpretrains_classifier():
    """The deployment config of the demo: mmpretrain's ImageClassifier in
    mmpretrain's scope, no SD or pruning hooks (the demo data and the
    calibration metric stay epsd_mm's)."""
    cfg, changes = deploy_config(Config.fromfile(DEMO))
    assert cfg.model.type == 'mmpretrain.ImageClassifier'
    assert 'sd' not in cfg.model and 'classifier_type' not in cfg.model
    assert cfg.default_scope == 'mmpretrain'
    assert not {'pruning', 'self_distill', 'finite_loss'} & set(
        cfg.default_hooks)
    assert any('SelfDistillClassifier -> mmpretrain.ImageClassifier' in c
               for c in changes)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MMPRETRAIN_MODELS.build(cfg.model)
    assert type(model) is ImageClassifier


@pytest.mark.parametrize('sd, method_cls', [
    (dict(type='PSKD', loss=dict(alpha_T=0.5)), PSKD),
    (dict(type='CSKD'), CSKD),
    (None, type(None)),
])
def test_sd_method_built_in_our_scope(cfg, sd, method_cls):
    model = build_model(cfg, sd=sd)
    assert type(model.sd) is method_cls
    assert model.sd_enabled is (sd is not None)
    if method_cls is PSKD:
        assert model.sd.loss.alpha_T == 0.5


@pytest.mark.parametrize('changes', [
    dict(train_cfg=dict(augments=dict(type='Mixup', alpha=0.8))),
    dict(data_preprocessor=dict(
        num_classes=10,
        batch_augments=dict(augments=dict(type='CutMix', alpha=1.0)))),
])
def test_batch_augments_refused_with_sd(cfg, changes):
    with pytest.raises(ValueError, match='batch augment.*model.sd=None'):
        build_model(cfg, **changes)
    assert build_model(cfg, sd=None, **changes).sd is None  # plain: fine


def test_wrong_classifier_or_head_explains(cfg):
    with pytest.raises(TypeError, match='ImageClassifier and its subclasses'):
        build_model(cfg, classifier_type='mmpretrain.TimmClassifier')
    with pytest.raises(KeyError, match='not a registered model'):
        build_model(cfg, classifier_type='mmpretrain.NoSuchClassifier')
    head = dict(
        type='MultiLabelLinearClsHead', num_classes=10, in_channels=64)
    with pytest.raises(TypeError, match='single-label mmpretrain ClsHead'):
        build_model(cfg, head=head)
    old = copy.deepcopy(cfg.model)
    old.pop('sd')
    old.sd_loss = dict(type='DLBLoss')
    with pytest.raises(TypeError, match=r"sd=dict\(type='DLB'"):
        with DefaultScope.overwrite_default_scope('epsd_mm'):
            MODELS.build(old)


def test_multi_label_and_soft_labels_explain(cfg):
    model = build_model(cfg).eval()
    inputs, samples = preprocess(model, batches(cfg)[0])
    samples[1].set_gt_label([1, 3])  # a multi-label sample
    with pytest.raises(ValueError, match='exactly one class per image'):
        model.loss(inputs, samples)
    inputs, samples = preprocess(model, batches(cfg)[0])
    samples[0].set_gt_score(torch.full((10, ), 0.1))  # e.g. Mixup targets
    with pytest.raises(ValueError, match='soft labels.*model.sd=None'):
        model.loss(inputs, samples)


# --------------------------------------------------------------------------
# The SD methods on real batches
# --------------------------------------------------------------------------
def test_dlb_step(cfg):
    model = build_model(cfg).train()
    data = batches(cfg)
    inputs1, samples1 = preprocess(model, data[0])
    inputs2, samples2 = preprocess(model, data[1])
    capture = Capture(model)

    losses1 = model.loss(inputs1, samples1)
    assert set(losses1) == {'loss', 'loss_dlb'}
    assert losses1['loss_dlb'].item() == 0  # no previous batch yet
    assert losses1['loss_dlb'].requires_grad
    sgd_step(model, losses1)
    prev_inputs, prev_samples, prev_logits = model.sd.get_state()
    assert torch.equal(prev_inputs, inputs1)
    assert torch.equal(prev_logits, capture.logits[0])

    losses2 = model.loss(inputs2, samples2)
    assert capture.inputs[1].shape[0] == 8
    assert torch.equal(capture.inputs[1][4:], inputs1)  # the same tensors
    now = capture.logits[1]
    expected = kl_t2(now[4:].double(), prev_logits.double(), 3.0)
    assert expected.item() > 1e-4
    assert losses2['loss_dlb'].item() == pytest.approx(
        expected.item(), rel=1e-4)
    # the head's cross-entropy covers both halves (DLB paper)
    labels = torch.cat([labels_of(samples2), labels_of(samples1)])
    assert losses2['loss'].item() == pytest.approx(
        F.cross_entropy(now, labels).item(), rel=1e-5)
    assert torch.equal(model.sd.get_state()[2], now[:4])
    capture.remove()


def test_pskd_replaces_the_head_loss(cfg):
    # train mode: BN normalises with batch statistics (logits of a sane
    # size at initialisation), deterministic for the same batch
    model = build_model(cfg, sd=dict(type='PSKD')).train()
    inputs, samples = preprocess(model, batches(cfg)[0])
    teacher = build_model(cfg, sd=None, seed=1).train()
    model.sd.teacher = teacher
    model.sd.progress = 0.0
    with torch.no_grad():
        losses = model.loss(inputs, samples)
        with model.sd_disabled():
            plain = model.loss(inputs, samples)
    assert set(losses) == {'loss_pskd'} and set(plain) == {'loss'}
    # at progress 0 the target is the one-hot label: PS-KD == the head's CE
    assert losses['loss_pskd'].item() == pytest.approx(
        plain['loss'].item(), rel=1e-5)
    model.sd.progress = 1.0
    with torch.no_grad():
        late = model.loss(inputs, samples)['loss_pskd'].item()
        log_p = torch.log_softmax(model(inputs, mode='tensor'), 1)
        q = (0.2 * F.one_hot(labels_of(samples), 10) +
             0.8 * torch.softmax(teacher(inputs, mode='tensor'), 1))
    expected = (q * (torch.log(q) - log_p)).sum(1).mean()
    assert late == pytest.approx(expected.item(), rel=1e-4)


def test_cskd_pairs_of_the_same_class(cfg):
    model = build_model(
        cfg, sd=dict(type='CSKD', loss=dict(temperature=4.0))).eval()
    data = batches(
        cfg, sampler=dict(type='epsd_mm.ClassPairSampler', shuffle=True))
    inputs, samples = preprocess(model, data[0])
    labels = labels_of(samples)
    assert torch.equal(labels[0::2], labels[1::2])  # (anchor, partner)
    capture = Capture(model)
    losses = model.loss(inputs, samples)
    assert set(losses) == {'loss', 'loss_cskd'}
    anchors, partners = capture.logits
    assert torch.equal(capture.inputs[0], inputs[0::2])
    assert torch.equal(capture.inputs[1], inputs[1::2])
    assert losses['loss'].item() == pytest.approx(
        F.cross_entropy(anchors, labels[0::2]).item(), rel=1e-5)
    assert losses['loss_cskd'].item() == pytest.approx(
        kl_t2(anchors, partners, 4.0).item(), rel=1e-4)
    # gradients flow through the anchors only
    grads = torch.autograd.grad(
        losses['loss_cskd'], list(model.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    capture.remove()
    with pytest.raises(ValueError, match='pairs'):
        model.loss(inputs[:3], samples[:3])
    shuffled = samples[1:] + samples[:1]  # partners of other classes
    with pytest.raises(ValueError, match='shares no class'):
        model.loss(inputs, shuffled)


# --------------------------------------------------------------------------
# Plain behaviour: sd off and inference are mmpretrain's
# --------------------------------------------------------------------------
def test_predicts_like_the_plain_classifier(cfg):
    model = build_model(cfg).train()
    # BN statistics and weights moved away from their initial values
    sgd_step(model, model.loss(*preprocess(model, batches(cfg)[0])))
    model.eval()
    plain = build_plain(cfg, model.state_dict())
    data = batches(cfg, batch_size=10, split='val')[0]
    ours = preprocess(model, data, training=False)
    theirs = preprocess(plain, copy.deepcopy(data), training=False)
    with torch.no_grad():
        assert torch.equal(
            model(ours[0], mode='tensor'), plain(theirs[0], mode='tensor'))
        pred_ours = model(*ours, mode='predict')
        pred_theirs = plain(*theirs, mode='predict')
        train = batches(cfg)[0]
        with model.sd_disabled():
            loss_ours = model.loss(*preprocess(model, copy.deepcopy(train)))
        loss_theirs = plain.loss(*preprocess(plain, train))
    assert len(pred_ours) == len(pred_theirs) == 10
    for a, b in zip(pred_ours, pred_theirs):
        assert torch.equal(a.pred_score, b.pred_score)
        assert torch.equal(a.pred_label, b.pred_label)
        assert a.pred_score.shape == (10, )
    assert set(loss_ours) == set(loss_theirs) == {'loss'}
    assert torch.equal(loss_ours['loss'], loss_theirs['loss'])


def test_channel_tracing_reaches_every_layer(cfg):
    """Channel pruning traces the classifier with ``mode='tensor'`` (backbone,
    neck, head): groups are cut in the backbone only, never the logits."""
    model = build_model(cfg)
    graph = ChannelGraph(model, torch.randn(1, 3, 32, 32), trace_forward,
                         ('backbone', ))
    cut = {m for group in graph.groups.values() for m in group.modules}
    assert cut and all(m.startswith('backbone.') for m in cut)


# --------------------------------------------------------------------------
# EPSD through a Runner, and tools/train.py
# --------------------------------------------------------------------------
RUNS = {
    # as configs/cls/resnet18_cifar10/epsd_*.py do it
    'dlb': ({}, 'loss_dlb'),
    'dlb_it3': ({
        'default_hooks.pruning.rounds': 3
    }, 'loss_dlb'),
    'pskd': ({
        'model.sd': dict(_delete_=True, type='PSKD')
    }, 'loss_pskd'),
    'cskd': ({
        'model.sd': dict(
            _delete_=True, type='CSKD', loss=dict(temperature=4.0)),
        'train_dataloader.sampler': dict(
            _delete_=True, type='epsd_mm.ClassPairSampler', shuffle=True),
    }, 'loss_cskd'),
}


def read_log(work_dir):
    paths = [
        osp.join(dp, f) for dp, _, fs in os.walk(work_dir) for f in fs
        if f.endswith('.log')
    ]
    assert len(paths) == 1, paths
    with open(paths[0], encoding='utf-8') as f:
        return f.read()


def val_line(log):
    """The one line of the final validation's metrics."""
    lines = [
        line for line in log.splitlines()
        if 'Epoch(val)' in line and 'accuracy/top1' in line
    ]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.e2e
@pytest.mark.parametrize('run', sorted(RUNS))
def test_epsd_trains_through_runner(cifar_root, tmp_path, run):
    overrides, loss_key = RUNS[run]
    labels = []

    class RecordBatches(Hook):

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            labels.append(labels_of(data_batch['data_samples']))

    runner = Runner.from_cfg(make_cfg(cifar_root, str(tmp_path), overrides))
    runner.register_hook(RecordBatches())
    runner.train()
    model = runner.model
    assert type(model.sd).__name__ == run.split('_')[0].upper()
    # exactly 90% of the backbone's prunable weights are zero, in one
    # round or three
    masks = get_masks(model)
    prunable = prunable_parameters(model, ('backbone', ))
    assert masks.keys() == prunable.keys()
    total = sum(p.numel() for p in prunable.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * total)
    for name, mask in masks.items():
        assert (prunable[name].detach()[~mask] == 0).all()
    log = read_log(str(tmp_path))
    assert 'on the sd loss' in log
    train = [l for l in log.splitlines() if 'Epoch(train)' in l]
    value = float(train[-1].split(f'{loss_key}: ')[1].split()[0])
    assert math.isfinite(value) and value > 0
    line = val_line(log)
    for key in ('accuracy/top1: ', 'calibration/ece: ', 'calibration/aurc: ',
                'sparsity: 0.9000'):
        assert key in line, line
    if run == 'dlb_it3':
        for r in (1, 2, 3):
            assert f'EarlyPruningHook: round {r}/3: scoring' in log
    if run == 'cskd':
        for batch in labels:
            assert len(batch) % 2 == 0
            assert torch.equal(batch[0::2], batch[1::2])


@pytest.mark.e2e
def test_train_tool_prints_one_metrics_line(cifar_root, tmp_path, helpers):
    """``tools/train.py`` on the demo config: accuracy, calibration and the
    measured sparsity in one validation line; ``rounds=3`` (EPSD-It) from
    the command line reaches the same sparsity, logging each round."""
    cfg = make_cfg(cifar_root, str(tmp_path / 'unused'))
    cfg_path = str(tmp_path / 'demo.py')
    cfg.dump(cfg_path)
    proc = helpers.run_python(
        osp.join(REPO_ROOT, 'tools', 'train.py'),
        cfg_path,
        '--work-dir',
        str(tmp_path / 'work'),
        '--cfg-options',
        'default_hooks.pruning.rounds=3',
        cwd=str(tmp_path))
    assert proc.returncode == 0, helpers.failure_text(proc)
    line = val_line(proc.stdout)
    metrics = dict(
        item.split(': ') for item in line.split('    ')[1].split('  '))
    assert {'accuracy/top1', 'calibration/ece', 'calibration/aurc',
            'calibration/eaurc', 'sparsity'} <= set(metrics)
    assert metrics['sparsity'] == '0.9000'
    assert 0 <= float(metrics['accuracy/top1']) <= 100
    targets = [
        l.split('target sparsity ')[1] for l in proc.stdout.splitlines()
        if 'EarlyPruningHook: round' in l and 'target sparsity' in l
    ]
    assert len(targets) == 3 and targets[-1] == '0.9000.'
